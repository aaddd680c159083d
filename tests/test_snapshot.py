"""The snapshot collector (issue 2): both backends, on fake /proc trees and on the live /proc.

* exact records on tests/fixtures/proc-basic (the nasty cases of DESIGN.md's test techniques);
* the C and the Python readers give equal snapshots, on fixtures and on live /proc;
* on live /proc, the values agree with psutil for processes this test spawns;
* another user's io and exe come out None, counted as EACCES (reader run as nobody);
* the native walk releases the GIL; repeated snapshots do not leak; static facts are
  memoized per identity (pid, starttime) and re-read on exec and pid reuse.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import psutil
import pytest

from conftest import PROC_BASIC, make_proc_trees, needs_native, pinned_facts
from exporter.hostfacts import HostFacts
from exporter.collector import Collector, Process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = 1700000000
KiB = 1024
MiB = 1 << 20


def by_pid(snapshot) -> dict:
    records = {}
    for p in snapshot.processes:
        assert isinstance(p, Process), type(p)
        assert p.pid not in records, f"pid {p.pid} twice in one snapshot"
        records[p.pid] = p
    return records


def rec(**fields) -> Process:
    return Process(**fields)


# The expected records of proc-basic, written out by hand from the raw values in
# tests/fixtures/make_proc_trees.py (clock_ticks 100, page_size 4096, btime 1700000000).
# Start ticks are multiples of 25 so the epoch seconds are exact binary fractions.
EXPECTED = {
    1: rec(pid=1, ppid=0, comm="init", state="S", is_kernel_thread=False, start_ticks=25,
           start_time_seconds=1700000000.25, cpu_user_seconds=2.5, cpu_system_seconds=1.75,
           minor_faults=1201, major_faults=31, num_threads=1, rss_bytes=3300 * 4096, vms_bytes=171880448,
           swap_bytes=0, ctx_voluntary=1500, ctx_nonvoluntary=42, read_bytes=123456789, write_bytes=98765,
           open_fds=6, max_fds=1024, uid=0, username="root", tty=None, cmdline=("/sbin/init", "splash"),
           exe="/usr/lib/systemd/systemd", cgroup="0::/init.scope"),
    # kernel thread: PF_KTHREAD, no VmSwap -> swap None, empty cmdline, no exe (not an error)
    2: rec(pid=2, ppid=0, comm="kthreadd", state="S", is_kernel_thread=True, start_ticks=50,
           start_time_seconds=1700000000.5, cpu_user_seconds=0.03, cpu_system_seconds=0.47,
           minor_faults=0, major_faults=0, num_threads=1, rss_bytes=0, vms_bytes=0,
           swap_bytes=None, ctx_voluntary=59, ctx_nonvoluntary=1, read_bytes=0, write_bytes=0,
           open_fds=3, max_fds=1024, uid=0, username="root", tty=None, cmdline=(),
           exe=None, cgroup="0::/"),
    # comm "a) b (c": cut at the last ')'
    10: rec(pid=10, ppid=1, comm="a) b (c", state="S", is_kernel_thread=False, start_ticks=1075,
            start_time_seconds=1700000010.75, cpu_user_seconds=10.1, cpu_system_seconds=5.1,
            minor_faults=210, major_faults=11, num_threads=4, rss_bytes=1000 * 4096, vms_bytes=20971520,
            swap_bytes=128 * KiB, ctx_voluntary=100, ctx_nonvoluntary=10, read_bytes=4096, write_bytes=8192,
            open_fds=3, max_fds=1024, uid=0, username="root", tty=None,
            cmdline=("/usr/bin/paren", "a) b (c"), exe="/usr/bin/paren",
            cgroup="0::/system.slice/paren.service"),
    # comm "x) Z 1 1" pretends state Z and ppid 1; the truth is S and 10
    11: rec(pid=11, ppid=10, comm="x) Z 1 1", state="S", is_kernel_thread=False, start_ticks=1150,
            start_time_seconds=1700000011.5, cpu_user_seconds=11.11, cpu_system_seconds=6.11,
            minor_faults=311, major_faults=12, num_threads=2, rss_bytes=1100 * 4096, vms_bytes=31457280,
            swap_bytes=0, ctx_voluntary=111, ctx_nonvoluntary=11, read_bytes=1111, write_bytes=2222,
            open_fds=3, max_fds=1024, uid=0, username="root", tty=None, cmdline=("/usr/bin/spoof",),
            exe="/usr/bin/spoof", cgroup="0::/user.slice"),
    # comm with spaces (that looks like a status key); unlimited open files -> max_fds None
    12: rec(pid=12, ppid=1, comm="Uid: 7 spaces", state="S", is_kernel_thread=False, start_ticks=1225,
            start_time_seconds=1700000012.25, cpu_user_seconds=12.12, cpu_system_seconds=7.12,
            minor_faults=412, major_faults=13, num_threads=3, rss_bytes=1200 * 4096, vms_bytes=41943040,
            swap_bytes=64 * KiB, ctx_voluntary=121, ctx_nonvoluntary=12, read_bytes=1212, write_bytes=2424,
            open_fds=5, max_fds=None, uid=0, username="root", tty=None,
            cmdline=("/usr/bin/spaces", "--flag", "two words"), exe="/usr/bin/spaces", cgroup="0::/"),
    # comm with a newline; a uid that no user has -> username str(uid)
    13: rec(pid=13, ppid=1, comm="new\nline", state="S", is_kernel_thread=False, start_ticks=1350,
            start_time_seconds=1700000013.5, cpu_user_seconds=13.13, cpu_system_seconds=8.13,
            minor_faults=513, major_faults=14, num_threads=1, rss_bytes=1300 * 4096, vms_bytes=52428800,
            swap_bytes=0, ctx_voluntary=131, ctx_nonvoluntary=13, read_bytes=1313, write_bytes=2626,
            open_fds=3, max_fds=1024, uid=3999999, username="3999999", tty=None,
            cmdline=("/usr/bin/newline",), exe="/usr/bin/newline",
            cgroup="0::/user.slice/user-3999999.slice"),
    # comm cut inside a UTF-8 character -> replacement character
    14: rec(pid=14, ppid=1, comm="abcdefghijklmn\ufffd", state="S", is_kernel_thread=False, start_ticks=1475,
            start_time_seconds=1700000014.75, cpu_user_seconds=14.14, cpu_system_seconds=9.14,
            minor_faults=614, major_faults=15, num_threads=1, rss_bytes=1400 * 4096, vms_bytes=62914560,
            swap_bytes=0, ctx_voluntary=141, ctx_nonvoluntary=14, read_bytes=1414, write_bytes=2828,
            open_fds=3, max_fds=1024, uid=0, username="root", tty=None,
            cmdline=("/usr/bin/caf\u00e9-long-name",), exe="/usr/bin/caf\u00e9-long-name", cgroup="0::/"),
    # cmdline (no trailing NUL) and exe that are not UTF-8 -> replaced
    15: rec(pid=15, ppid=1, comm="binary", state="S", is_kernel_thread=False, start_ticks=1550,
            start_time_seconds=1700000015.5, cpu_user_seconds=15.15, cpu_system_seconds=10.15,
            minor_faults=715, major_faults=16, num_threads=1, rss_bytes=1500 * 4096, vms_bytes=73400320,
            swap_bytes=0, ctx_voluntary=151, ctx_nonvoluntary=15, read_bytes=1515, write_bytes=3030,
            open_fds=3, max_fds=1024, uid=0, username="root", tty=None,
            cmdline=("/usr/bin/prog", "--name=\ufffd\ufffd", "caf\ufffd"), exe="/usr/bin/prog\ufffd",
            cgroup="0::/"),
    # 16: short stat -> dropped, "malformed"
    # zombie: state Z, cmdline (), no mm -> swap None, no exe (not an error)
    17: rec(pid=17, ppid=10, comm="defunct", state="Z", is_kernel_thread=False, start_ticks=1775,
            start_time_seconds=1700000017.75, cpu_user_seconds=17.17, cpu_system_seconds=12.17,
            minor_faults=817, major_faults=17, num_threads=1, rss_bytes=0, vms_bytes=0,
            swap_bytes=None, ctx_voluntary=171, ctx_nonvoluntary=17, read_bytes=1717, write_bytes=3434,
            open_fds=3, max_fds=1024, uid=0, username="root", tty=None, cmdline=(),
            exe=None, cgroup="0::/system.slice/paren.service"),
    # no io file -> read/write None, counted ENOENT
    18: rec(pid=18, ppid=1, comm="noio", state="S", is_kernel_thread=False, start_ticks=1850,
            start_time_seconds=1700000018.5, cpu_user_seconds=18.18, cpu_system_seconds=13.18,
            minor_faults=918, major_faults=18, num_threads=1, rss_bytes=1800 * 4096, vms_bytes=83886080,
            swap_bytes=0, ctx_voluntary=181, ctx_nonvoluntary=18, read_bytes=None, write_bytes=None,
            open_fds=3, max_fds=1024, uid=0, username="root", tty=None, cmdline=("/usr/bin/noio",),
            exe="/usr/bin/noio", cgroup="0::/"),
    # 19: empty directory (exited) -> dropped quietly
    # controlling terminals
    20: rec(pid=20, ppid=1, comm="sh20", state="S", is_kernel_thread=False, start_ticks=2025,
            start_time_seconds=1700000020.25, cpu_user_seconds=20.0, cpu_system_seconds=2.0,
            minor_faults=1000, major_faults=20, num_threads=1, rss_bytes=200 * 4096, vms_bytes=20 * MiB,
            swap_bytes=20 * KiB, ctx_voluntary=40, ctx_nonvoluntary=60, read_bytes=20000, write_bytes=40000,
            open_fds=3, max_fds=1024, uid=0, username="root", tty="pts/3", cmdline=("-sh",),
            exe="/usr/bin/dash", cgroup="0::/user.slice"),
    21: rec(pid=21, ppid=1, comm="sh21", state="S", is_kernel_thread=False, start_ticks=2150,
            start_time_seconds=1700000021.5, cpu_user_seconds=21.0, cpu_system_seconds=2.1,
            minor_faults=1050, major_faults=21, num_threads=1, rss_bytes=210 * 4096, vms_bytes=21 * MiB,
            swap_bytes=21 * KiB, ctx_voluntary=42, ctx_nonvoluntary=63, read_bytes=21000, write_bytes=42000,
            open_fds=3, max_fds=1024, uid=0, username="root", tty="tty1", cmdline=("-sh",),
            exe="/usr/bin/dash", cgroup="0::/user.slice"),
    22: rec(pid=22, ppid=1, comm="sh22", state="S", is_kernel_thread=False, start_ticks=2250,
            start_time_seconds=1700000022.5, cpu_user_seconds=22.0, cpu_system_seconds=2.2,
            minor_faults=1100, major_faults=22, num_threads=1, rss_bytes=220 * 4096, vms_bytes=22 * MiB,
            swap_bytes=22 * KiB, ctx_voluntary=44, ctx_nonvoluntary=66, read_bytes=22000, write_bytes=44000,
            open_fds=3, max_fds=1024, uid=0, username="root", tty="pts/300", cmdline=("-sh",),
            exe="/usr/bin/dash", cgroup="0::/user.slice"),
}
EXPECTED_ERRORS = {"malformed": 1, "ENOENT": 1}
TTY_PIDS = (20, 21, 22)


_opened: list = []


def new(procfs, backend, facts=None) -> Collector:
    """A Collector closed when the test ends, pass or fail: a native collector on /proc
    keeps up to three files per process open, and the budget it sizes from RLIMIT_NOFILE
    is its own, so leftovers would starve the next test's collector."""
    c = Collector(procfs, backend, facts)
    _opened.append(c)
    return c


@pytest.fixture(autouse=True)
def _close_collectors():
    yield
    while _opened:
        _opened.pop().close()


def collector(procfs, backend, devroot):
    return new(procfs, backend, pinned_facts(procfs, devroot))


# --------------------------------------------------------------------------------------
# 1. exact records on the fixture tree
# --------------------------------------------------------------------------------------


def test_fixture_tree_is_committed_as_expected():
    """The committed tree has what the cases need (git drops empty directories)."""
    assert os.path.islink(os.path.join(PROC_BASIC, "1", "exe"))
    assert sorted(os.listdir(os.path.join(PROC_BASIC, "1", "fd"))) == ["0", "1", "2", "3", "4", "5"]
    assert os.listdir(os.path.join(PROC_BASIC, "19")) == [".gitkeep"]
    assert not os.path.exists(os.path.join(PROC_BASIC, "18", "io"))
    with open(os.path.join(PROC_BASIC, "13", "stat"), "rb") as f:
        assert b"(new\nline)" in f.read()


@pytest.mark.parametrize("pid", sorted(EXPECTED), ids=lambda pid: f"pid{pid}")
def test_fixture_record_exact(backend, devroot, pid):
    records = by_pid(collector(PROC_BASIC, backend, devroot).snapshot())
    assert records[pid]._asdict() == EXPECTED[pid]._asdict()


def test_fixture_snapshot_exact(backend, devroot):
    snap = collector(PROC_BASIC, backend, devroot).snapshot()
    assert snap.backend == backend
    assert by_pid(snap) == EXPECTED
    # short stat (16): malformed; missing io (18): ENOENT; the empty dir (19), the missing
    # exe of the zombie and the kernel thread, and the non-pid entries count nothing
    assert snap.errors == EXPECTED_ERRORS
    assert [p.pid for p in snap.processes] == sorted(EXPECTED), "records in pid order"
    assert snap.duration_seconds >= 0 and abs(snap.timestamp - time.time()) < 60


def test_fixture_without_terminals(backend, empty_devroot):
    """tty-less device dir: a tty_nr no device has maps to None (never a made-up name)."""
    snap = collector(PROC_BASIC, backend, empty_devroot).snapshot()
    expected = {pid: p._replace(tty=None) for pid, p in EXPECTED.items()}
    assert by_pid(snap) == expected
    assert snap.errors == EXPECTED_ERRORS


def test_fixture_second_snapshot_identical(backend, devroot):
    """The second walk (memoized statics, kept files for the native backend) sees the same."""
    c = collector(PROC_BASIC, backend, devroot)
    first = c.snapshot()
    second = c.snapshot()
    assert by_pid(second) == EXPECTED
    # static facts are read once per identity: their errors are not counted again, the
    # per-scrape files' are
    assert second.errors == EXPECTED_ERRORS
    for a, b in zip(first.processes, second.processes):
        assert a.cmdline is b.cmdline, f"pid {a.pid}: cmdline not shared between snapshots"
    c.close()


def test_non_pid_entries_are_skipped(backend, devroot, tmp_path):
    """Only all-ASCII-digit names are pids: '²' and '١٢' are digits to str.isdigit."""
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    for name in ("\u00b2", "\u0661\u0662", "12a", "-1", " 1", "net", "2147483648", "99999999999999999999"):
        shutil.copytree(root / "1", root / name, symlinks=True)
    os.symlink("1", root / "self")
    snap = collector(str(root), backend, devroot).snapshot()
    assert by_pid(snap) == EXPECTED
    assert snap.errors == EXPECTED_ERRORS


def make_odd_tree(root):
    """Files that parse badly or are not what they should be, one case per pid."""
    m = make_proc_trees
    m.write_root(root)

    def ordinary(pid, **kw):
        files = dict(stat=m.stat_bytes(pid, b"odd%d" % pid, utime=pid, starttime=pid * 100, vsize=pid * 4096,
                                       rss=pid),
                     status=m.status_bytes(pid, b"odd%d" % pid, uid=0, swap_kb=1, ctx=(pid, 1)),
                     io=m.io_bytes(pid, pid), cmdline=b"/bin/odd%d\0" % pid, exe="/bin/odd")
        files.update(kw)
        return m.write_pid(root, pid, **files)

    # 40: stat without vsize and rss (20 fields after comm): those two are None
    short = b"40 (old) S 1 40 40 0 -1 4194560 1 7 2 9 3 4 11 13 20 0 1 0 4000\n"
    ordinary(40, stat=short)
    ordinary(41, status=m.status_bytes(41, b"odd41").replace(b"Uid:\t0", b"Uid:\tx0"))  # malformed
    ordinary(42, io=b"rchar: 1\nread_bytes:\nwrite_bytes: 5\n")  # malformed
    ordinary(43, nofile=None, extra={"limits": b"Limit Soft Hard Units\nMax processes 5 5 processes\n"})
    ordinary(44, cmdline=b"a" * 70000 + b"\0b\0")  # cut at 64 KiB: one argument
    ordinary(45, stat=b"45 odd45 S 1 45 45 0 -1 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n")  # no (comm)
    ordinary(46, stat=m.stat_bytes(46, b"neg", ppid=-1))  # a negative ppid does not parse
    d = ordinary(47, stat=None)
    os.mkdir(os.path.join(d, "stat"))  # reading it fails with EISDIR: counted, dropped
    d = ordinary(48, fds=None)
    open(os.path.join(d, "fd"), "wb").close()  # ENOTDIR: open_fds None
    ordinary(49, exe=None, extra={"exe": b"not a link"})  # EINVAL: exe None
    ordinary(50, cmdline=b"a\0\0\0")  # empty arguments kept, one trailing NUL dropped
    ordinary(51, cgroup=b"0::/\n\n")  # trailing newlines stripped
    ordinary(52, nofile=("8", "16"))


ODD_ERRORS = {"malformed": 5, "EISDIR": 1, "ENOTDIR": 1, "EINVAL": 1}


def test_odd_files(backend, empty_devroot, tmp_path):
    root = str(tmp_path / "proc")
    make_odd_tree(root)
    snap = collector(root, backend, empty_devroot).snapshot()
    r = by_pid(snap)
    assert sorted(r) == [40, 41, 42, 43, 44, 48, 49, 50, 51, 52]
    assert snap.errors == ODD_ERRORS
    assert (r[40].comm, r[40].start_ticks, r[40].cpu_user_seconds, r[40].rss_bytes, r[40].vms_bytes) == (
        "old", 4000, 0.03, None, None)
    assert (r[41].uid, r[41].username, r[41].swap_bytes, r[41].ctx_voluntary) == (None, None, None, None)
    assert (r[42].read_bytes, r[42].write_bytes) == (None, None)
    assert r[43].max_fds is None and r[43].open_fds == 3
    assert r[44].cmdline == ("a" * 65536,)
    assert r[48].open_fds is None and r[48].max_fds == 1024
    assert r[49].exe is None and r[49].cmdline == ("/bin/odd49",)
    assert r[50].cmdline == ("a", "", "")
    assert r[51].cgroup == "0::/"
    assert r[52].max_fds == 8
    for pid in (41, 42, 43, 48, 49):  # what parsed is kept
        assert r[pid].vms_bytes == pid * 4096 and r[pid].rss_bytes == pid * 4096, pid


def test_unlistable_root_raises(backend, tmp_path):
    facts = HostFacts(procfs=PROC_BASIC, devroot=str(tmp_path), clock_ticks=100, page_size=4096)
    c = new(str(tmp_path / "missing"), backend, facts)
    with pytest.raises(OSError):
        c.snapshot()


def test_host_facts_pinned():
    facts = pinned_facts(PROC_BASIC, "/nonexistent")
    assert (facts.clock_ticks, facts.page_size, facts.boot_time) == (100, 4096, BOOT)


# --------------------------------------------------------------------------------------
# 2. the two backends agree
# --------------------------------------------------------------------------------------


def both(procfs, devroot):
    return (new(procfs, "python", pinned_facts(procfs, devroot)),
            new(procfs, "native", pinned_facts(procfs, devroot)))


@needs_native
def test_backends_equal_on_fixture(devroot, empty_devroot, tmp_path):
    odd = str(tmp_path / "odd")
    make_odd_tree(odd)
    for tree, dev in ((PROC_BASIC, devroot), (PROC_BASIC, empty_devroot), (odd, devroot)):
        py, c = both(tree, dev)
        for _ in range(2):  # first walk and memoized walk
            a, b = py.snapshot(), c.snapshot()
            assert b.processes == a.processes
            assert b.errors == a.errors
        c.close()


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    """3000 processes, built once per run; on tmpfs when there is one (30k files)."""
    import tempfile

    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        base = tempfile.mkdtemp(prefix="procsnap-big-", dir=shm)
    else:
        base = str(tmp_path_factory.mktemp("big"))
    try:
        root = os.path.join(base, "proc")
        make_proc_trees.make_big(root, 3000)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_native
def test_backends_equal_on_big_tree(big_tree, empty_devroot):
    py, c = both(big_tree, empty_devroot)
    a, b = py.snapshot(), c.snapshot()
    assert len(a.processes) == 3000
    assert b.processes == a.processes and b.errors == a.errors == {}
    c.close()


@needs_native
def test_backends_equal_on_changing_tree(devroot, tmp_path):
    """Processes appear, exit and exec between snapshots: both backends follow alike."""
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    py, c = both(str(root), devroot)

    def check():
        a, b = py.snapshot(), c.snapshot()
        assert b.processes == a.processes
        assert b.errors == a.errors
        return a

    check()
    os.rename(root / "10", tmp_path / "gone-10")  # exits
    shutil.copytree(root / "11", root / "30", symlinks=True)  # a new pid (same contents)
    (root / "12" / "cmdline").write_bytes(b"changed\0")  # memoized: not seen
    snap = check()
    assert 10 not in by_pid(snap) and 30 in by_pid(snap)
    assert by_pid(snap)[12].cmdline == EXPECTED[12].cmdline
    (root / "12" / "stat").write_bytes(make_proc_trees.stat_bytes(12, b"exec'd", starttime=1225))
    os.rename(tmp_path / "gone-10", root / "10")  # back (same identity: re-read from scratch)
    snap = check()
    assert by_pid(snap)[12].cmdline == ("changed",)
    c.close()


STABLE = ("pid", "ppid", "comm", "is_kernel_thread", "start_ticks", "start_time_seconds", "uid",
          "username", "tty", "cmdline", "exe", "cgroup", "max_fds")


def stable(p: Process) -> tuple:
    return tuple(getattr(p, f) for f in STABLE)


@needs_native
def test_backends_agree_on_live_proc():
    facts = HostFacts()
    py = new("/proc", "python", facts)
    c = new("/proc", "native", facts)
    # the native backend keeps files open in this process: let it settle, and keep the
    # garbage collector from closing other tests' collectors between the two walks
    gc.collect()
    gc.disable()
    try:
        c.snapshot()
        b = by_pid(c.snapshot())
        a = by_pid(py.snapshot())
    finally:
        gc.enable()
    common = [pid for pid in a if pid in b and a[pid].start_ticks == b[pid].start_ticks]
    assert len(common) >= 0.9 * max(len(a), len(b)), "too few processes in both walks"
    same = [pid for pid in common if stable(a[pid]) == stable(b[pid])]
    assert len(same) >= 0.95 * len(common), [
        (a[pid], b[pid]) for pid in common if stable(a[pid]) != stable(b[pid])][:3]
    me = os.getpid()
    assert stable(b[me]) == stable(a[me])
    # and the volatile fields of our own (running) process are close
    assert b[me].num_threads == a[me].num_threads
    # (open_fds of this process is not compared: the native collector's kept files come
    # and go with the host's processes between the two walks)
    assert b[me].open_fds > 0 and a[me].open_fds > 0
    assert abs(b[me].rss_bytes - a[me].rss_bytes) < 16 * MiB
    assert 0 <= a[me].cpu_user_seconds - b[me].cpu_user_seconds < 1.0  # python walked second
    c.close()


# --------------------------------------------------------------------------------------
# 3. live values agree with psutil for processes we spawn
# --------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time
    mode = sys.argv[1]
    keep = []
    if mode == "busy":
        t = time.process_time()
        while time.process_time() - t < 0.3:
            os.stat("/")
    elif mode == "threads":
        stop = threading.Event()
        keep = [threading.Thread(target=stop.wait, daemon=True) for _ in range(4)]
        for t in keep:
            t.start()
    elif mode == "files":
        keep = [open(os.devnull, "rb") for _ in range(20)]
    elif mode == "memory":
        keep = bytearray(64 << 20)
        for i in range(0, len(keep), 4096):
            keep[i] = 1
    elif mode == "writer":
        with open(sys.argv[2], "wb") as f:
            f.write(os.urandom(2 << 20))
            f.flush()
            os.fsync(f.fileno())
    elif mode == "tty":
        keep = os.open(sys.argv[2], os.O_RDWR)  # a session leader opening a tty: its ctty
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def children(tmp_path):
    master, slave = os.openpty()
    slave_name = os.ttyname(slave)
    os.close(slave)

    def nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (777, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    modes = {
        "busy": [], "threads": [], "files": [], "memory": [],
        "writer": [str(tmp_path / "written")], "tty": [slave_name],
    }
    procs = {}
    try:
        for mode, args in modes.items():
            procs[mode] = subprocess.Popen(
                [sys.executable, "-c", CHILD, mode, *args, "an arg with spaces"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                preexec_fn=nofile if mode == "files" else None,
            )
        for p in procs.values():
            assert p.stdout.readline() == b"ready\n"
        # let them settle into the blocking read (a loaded host may take a while)
        deadline = time.monotonic() + 10
        while any(psutil.Process(p.pid).status() != psutil.STATUS_SLEEPING for p in procs.values()):
            assert time.monotonic() < deadline, "children did not go to sleep"
            time.sleep(0.01)
        yield procs, slave_name
    finally:
        for p in procs.values():
            p.stdin.close()
        for p in procs.values():
            p.wait(10)
            p.stdout.close()
        os.close(master)


def test_live_values_agree_with_psutil(backend, children):
    procs, slave_name = children
    snap = new("/proc", backend).snapshot()
    records = by_pid(snap)
    for mode, popen in procs.items():
        r = records[popen.pid]
        ps = psutil.Process(popen.pid)
        with ps.oneshot():
            mem = ps.memory_info()
            cpu = ps.cpu_times()
            io = ps.io_counters()
            ctx = ps.num_ctx_switches()
            expected_static = (os.getpid(), tuple(ps.cmdline()), ps.exe(), ps.username(), ps.uids().real,
                               ps.num_threads(), ps.num_fds(), ps.rlimit(psutil.RLIMIT_NOFILE)[0], ps.terminal())
        where = f"{mode} child {popen.pid}"
        assert (r.ppid, r.cmdline, r.exe, r.username, r.uid, r.num_threads, r.open_fds, r.max_fds,
                None if r.tty is None else "/dev/" + r.tty) == expected_static, where
        assert r.cmdline[-1] == "an arg with spaces" and r.comm == ps.name(), where
        assert r.state == "S" and not r.is_kernel_thread, where
        assert abs(r.rss_bytes - mem.rss) <= 1 * MiB, where
        assert abs(r.vms_bytes - mem.vms) <= 1 * MiB, where
        assert abs(r.cpu_user_seconds - cpu.user) <= 0.05, where
        assert abs(r.cpu_system_seconds - cpu.system) <= 0.05, where
        assert abs(r.start_time_seconds - ps.create_time()) <= 0.02, where
        assert (r.read_bytes, r.write_bytes) == (io.read_bytes, io.write_bytes), where
        assert abs(r.ctx_voluntary - ctx.voluntary) <= 2 and abs(r.ctx_nonvoluntary - ctx.involuntary) <= 2, where
        assert r.swap_bytes is not None and r.minor_faults > 0, where
    # the children did what makes their numbers differ from each other
    rec_of = {mode: records[p.pid] for mode, p in procs.items()}
    assert rec_of["busy"].cpu_user_seconds + rec_of["busy"].cpu_system_seconds >= 0.25
    assert rec_of["threads"].num_threads == rec_of["busy"].num_threads + 4
    assert rec_of["files"].open_fds == rec_of["busy"].open_fds + 20
    assert rec_of["files"].max_fds == 777
    assert rec_of["memory"].rss_bytes >= rec_of["busy"].rss_bytes + 60 * MiB
    assert rec_of["writer"].write_bytes >= 2 * MiB
    assert rec_of["tty"].tty == slave_name[len("/dev/"):] and rec_of["busy"].tty is None


# --------------------------------------------------------------------------------------
# unreadable files: another user's io and exe are None, counted EACCES (never 0)
# --------------------------------------------------------------------------------------

NOBODY = 65534


def snapshot_as_nobody(backend) -> dict:
    """Take a snapshot of the live /proc in a forked child that switched to nobody.

    A fork, not an exec: the interpreter lives under /root (mode 0700), which nobody may not
    enter. The child sets itself dumpable again (changing uid clears it, which would make
    even its own /proc files root's), as exec would."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if libc.prctl(4, 1, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
            snap = Collector("/proc", backend).snapshot()
            out = {
                "me": os.getpid(), "uid": os.getuid(), "errors": snap.errors,
                "records": [[p.pid, p.uid, p.is_kernel_thread, p.open_fds, p.read_bytes, p.write_bytes,
                             p.exe, p.rss_bytes] for p in snap.processes],
            }
            code = 0
        except BaseException as e:
            out = {"exception": repr(e)}
        try:
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        chunks.append(f.read())
    _, status = os.waitpid(child, 0)
    out = json.loads(b"".join(chunks))
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def test_other_users_io_and_exe_are_none_as_nobody(backend):
    if os.getuid() != 0:
        pytest.skip("needs root to switch to nobody")
    result = snapshot_as_nobody(backend)
    assert result["uid"] == NOBODY
    others = [r for r in result["records"] if r[1] != NOBODY]
    assert others, "expected other users' processes (root's) on the host"
    for pid, uid, kthread, open_fds, read_bytes, write_bytes, exe, rss in others:
        assert (read_bytes, write_bytes) == (None, None), f"pid {pid}: io of another user's process"
        assert exe is None, f"pid {pid}: exe of another user's process"
        assert rss is not None  # stat is world-readable
        # the kernel (>= 6.2) gives anyone the fd count as the procfs fd dir's size; a size
        # of 0 (kernel threads have no fds) falls back to listing, which nobody may not
        assert open_fds is not None and open_fds > 0 or kthread and open_fds is None, (pid, open_fds)
    # io of each, and exe of each that has one (kernel threads have none), each counted
    with_exe = sum(1 for r in others if not r[2])
    assert result["errors"].get("EACCES", 0) >= len(others) + with_exe, result["errors"]
    mine = [r for r in result["records"] if r[0] == result["me"]]
    assert len(mine) == 1
    _, _, _, open_fds, read_bytes, write_bytes, exe, _ = mine[0]
    assert open_fds >= 3 and read_bytes is not None and write_bytes is not None
    assert exe == os.path.realpath(sys.executable)


# --------------------------------------------------------------------------------------
# 4. the native walk releases the GIL
# --------------------------------------------------------------------------------------


@needs_native
def test_native_snapshot_releases_the_gil(big_tree, empty_devroot):
    c = new(big_tree, "native", pinned_facts(big_tree, empty_devroot))
    facts = c.facts
    c.snapshot()  # first walk: opens and memoizes

    count = [0]
    running = [True]

    def counter():
        n = 0
        while running[0]:
            n += 1
            count[0] = n

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # a GIL-holding call lets the counter run only ~0.5 ms
    thread = threading.Thread(target=counter, daemon=True)
    thread.start()
    try:
        while count[0] == 0:
            time.sleep(0.001)

        def progress_during(call):
            """(counter progress during call(), progress while this thread then sleeps as
            long): the second is the pace the counter has on this machine right now."""
            b = count[0]
            t0 = time.perf_counter()
            call()
            took = time.perf_counter() - t0
            during = count[0] - b
            b = count[0]
            time.sleep(took)
            return during, count[0] - b

        # control: a C call that holds the GIL (bytes.count over 128 MiB) stalls the counter
        big = bytes(128 << 20)
        control = progress_during(lambda: big.count(b"\1"))
        del big

        walks = []
        for _ in range(3):
            walks.append(progress_during(lambda: c._impl.collect(facts.usernames, facts.ttys)))
    finally:
        running[0] = False
        thread.join()
        sys.setswitchinterval(old_interval)
        c.close()

    # the measurement can tell: while the GIL is held the counter all but stops
    assert control[0] < 0.25 * control[1], control
    # while the native walk runs, the counter keeps counting at a good part of its pace
    # (about half of it here; a walk holding the GIL would give under 1%)
    assert sum(w[0] for w in walks) >= 0.2 * sum(w[1] for w in walks), walks
    assert min(w[0] for w in walks) > 0, walks


# --------------------------------------------------------------------------------------
# 5. repeated snapshots do not leak
# --------------------------------------------------------------------------------------


def vm_rss() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# the python backend is ~10x slower per call (more under tracemalloc): 10^4 native
# snapshots, 300 python ones
LEAK_CALLS = {"native": 10_000, "python": 300}


def test_repeated_snapshots_do_not_leak(backend, devroot):
    gc.collect()  # collectors other tests left to the garbage collector hold files
    c = collector(PROC_BASIC, backend, devroot)
    fds_before = open_fd_count()
    for _ in range(200):  # warm-up: memoized facts, kept files, allocator pools
        c.snapshot()
    fds_warm = open_fd_count()
    gc.collect()
    rss0 = vm_rss()
    tracemalloc.start()
    try:
        traced0 = tracemalloc.get_traced_memory()[0]
        for _ in range(LEAK_CALLS[backend]):
            snap = c.snapshot()
        del snap
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced0
    finally:
        tracemalloc.stop()
    rss_growth = vm_rss() - rss0
    assert traced < 64 * KiB, f"{traced} bytes of Python objects kept after {LEAK_CALLS[backend]} snapshots"
    assert rss_growth < 5 * MiB, f"RSS grew {rss_growth} bytes"
    assert open_fd_count() == fds_warm, "files opened per snapshot are not closed"
    assert fds_warm - fds_before <= 4 * len(EXPECTED) + 8, "more kept files than processes need"
    c.close()
    assert open_fd_count() <= fds_before, "close() did not release the kept files"


def test_exited_processes_release_kept_files(backend, devroot, tmp_path):
    """Pids come and go: what is kept for a pid goes when the pid does."""
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    gc.collect()
    c = collector(str(root), backend, devroot)
    c.snapshot()
    fds_warm = open_fd_count()
    for i in range(100):
        pid_dir = root / str(1000 + i)
        shutil.copytree(root / "10", pid_dir, symlinks=True)
        assert len(c.snapshot().processes) == len(EXPECTED) + 1
        shutil.rmtree(pid_dir)
    snap = c.snapshot()
    assert by_pid(snap) == EXPECTED
    assert open_fd_count() <= fds_warm
    c.close()


def open_file_targets() -> list:
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass
    return targets


def files_open_under(pids) -> dict:
    """pid -> the files of /proc/<pid>/ this process has open (one pass over our fds)."""
    found = {pid: [] for pid in pids}
    for target in open_file_targets():
        parts = target.split("/")
        if len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) in found:
            found[int(parts[2])].append(target)
    return found


@needs_native
def test_native_releases_kept_files_of_exited_processes():
    """On the live /proc the native backend keeps a process' files open between walks;
    once the process has exited, the next walk closes them (no fd leak per exited pid)."""
    c = new("/proc", "native")
    c.snapshot()
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(20)]
    try:
        snap = by_pid(c.snapshot())
        kept = files_open_under(p.pid for p in children)
        assert all(p.pid in snap for p in children)
        host_processes = len(snap)
    finally:
        for p in children:
            p.kill()
        for p in children:
            p.wait()
    snap = by_pid(c.snapshot())
    assert not any(p.pid in snap for p in children)
    leaked = files_open_under(p.pid for p in children)
    assert not any(leaked.values()), leaked
    c.close()
    assert files_open_under([1]) == {1: []}
    if not any(kept.values()):
        # the kept-file budget (from RLIMIT_NOFILE) went to lower pids: nothing to release
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        pytest.skip(f"{host_processes} host processes used up the kept-file budget (RLIMIT_NOFILE {soft})")


# --------------------------------------------------------------------------------------
# 6. static facts memoized per identity
# --------------------------------------------------------------------------------------


def rewrite(path, data: bytes):
    """Rewrite a file in place (same inode: a kept file descriptor sees the new bytes, as
    it would on procfs)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def test_static_facts_memoized_per_identity(backend, devroot, tmp_path):
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    pid_dir = root / "10"
    c = collector(str(root), backend, devroot)
    first = by_pid(c.snapshot())[10]
    assert first == EXPECTED[10]

    def stat(comm=b"a) b (c", starttime=1075, utime=1010):
        return make_proc_trees.stat_bytes(10, comm, ppid=1, minflt=210, majflt=11, utime=utime, stime=510,
                                          num_threads=4, starttime=starttime, vsize=20971520, rss=1000)

    # same identity, same comm: cmdline, exe, cgroup are not read again; stat is
    rewrite(pid_dir / "cmdline", b"/usr/bin/rewritten\0by setproctitle\0")
    rewrite(pid_dir / "cgroup", b"0::/moved\n")
    os.unlink(pid_dir / "exe")
    os.symlink("/usr/bin/other", pid_dir / "exe")
    rewrite(pid_dir / "stat", stat(utime=2020))
    second = by_pid(c.snapshot())[10]
    assert second == EXPECTED[10]._replace(cpu_user_seconds=20.2)
    assert second.cmdline is first.cmdline

    # exec: a new comm on the same identity re-reads the static facts
    rewrite(pid_dir / "stat", stat(comm=b"rewritten", utime=2020))
    third = by_pid(c.snapshot())[10]
    assert third == EXPECTED[10]._replace(
        comm="rewritten", cpu_user_seconds=20.2, cmdline=("/usr/bin/rewritten", "by setproctitle"),
        exe="/usr/bin/other", cgroup="0::/moved")

    # pid reuse: a new starttime, the same comm, re-reads them too
    rewrite(pid_dir / "cmdline", b"/usr/bin/reused\0")
    rewrite(pid_dir / "stat", stat(comm=b"rewritten", starttime=5000))
    fourth = by_pid(c.snapshot())[10]
    assert fourth.identity == (10, 5000)
    assert fourth.start_time_seconds == BOOT + 50.0
    assert fourth.cmdline == ("/usr/bin/reused",)

    # unchanged again: memoized again
    rewrite(pid_dir / "cmdline", b"/usr/bin/ignored\0")
    assert by_pid(c.snapshot())[10].cmdline is fourth.cmdline
    c.close()


def test_static_facts_dropped_when_the_process_is_gone(backend, devroot, tmp_path):
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    c = collector(str(root), backend, devroot)
    assert by_pid(c.snapshot())[11].cmdline == ("/usr/bin/spoof",)
    os.rename(root / "11", tmp_path / "11")
    assert 11 not in by_pid(c.snapshot())
    os.rename(tmp_path / "11", root / "11")
    rewrite(root / "11" / "cmdline", b"/usr/bin/back\0")
    # the same identity came back after a walk without it: nothing stale is reused
    assert by_pid(c.snapshot())[11].cmdline == ("/usr/bin/back",)
    c.close()


def test_default_snapshot_function_reuses_collectors(backend):
    from exporter import collector as snapshot_module

    key = ("/proc", backend)
    try:
        a = snapshot_module.snapshot("/proc", backend)
        kept = snapshot_module._default_collectors[key]
        b = snapshot_module.snapshot("/proc", backend)
        assert snapshot_module._default_collectors[key] is kept
        assert a.backend == b.backend == backend
        me_a, me_b = by_pid(a)[os.getpid()], by_pid(b)[os.getpid()]
        assert me_a.cmdline is me_b.cmdline  # memoized in the kept collector
    finally:
        with snapshot_module._default_lock:
            leftover = snapshot_module._default_collectors.pop(key, None)
        if leftover is not None:
            leftover.close()
