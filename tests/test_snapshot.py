"""The snapshot contract (exporter.snapshots): both backends, on fake /proc trees and on the
live /proc.

* exact records on tests/fixtures/proc-basic, and on trees of odd files (cmdline read
  whole and cut only at 1 MiB, all trailing NULs dropped, numbers over 2**64-1 malformed);
* the C and the Python readers give equal snapshots: fixtures, a big tree, a changing
  tree, and the live /proc (judged on the test's own children only);
* on live /proc, the values agree with psutil for processes this test spawns; a 300 KB
  command line comes back whole; an exec that keeps the comm is seen (the stat mark);
* another user's io and exe come out None, counted EACCES (a snapshot taken as nobody,
  judged on processes the test started);
* the native walk releases the GIL; repeated snapshots do not leak; kept files (3 per
  process: stat, status, io) go with their process;
* static facts are memoized per identity (pid, starttime) and re-read on exec (comm or
  mark) and pid reuse; the fd limit is re-read every 16th read; a pid whose stat cannot
  be read keeps its identity and its last record (unreadable is not exited).

Every fixture test runs as any user (pinned host facts with a terminal map); the only
root-only tests are the snapshot as nobody here and the /dev scan in test_hostfacts.py.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import traceback

import psutil
import pytest

from conftest import FIXTURE_TTYS, PROC_BASIC, make_proc_trees, needs_native, pinned_facts
from exporter.hostfacts import HostFacts
from exporter.reader import KEPT_PER_PROCESS, WANT_ALL, WANT_NOFILE, keep_open_budget, parse_keep_open
import exporter.procfs  # noqa: F401  (imported before the nobody child needs it: it may not read the tree)
import exporter.snapshots as snapshot_module
from exporter.snapshots import Process, Snapshotter
from exporter.tracker import LIMITS_EVERY


BOOT = 1700000000
KiB = 1024
MiB = 1 << 20
FILE_MAX = 1 << 20  # files are read whole up to this; cmdline is cut there
U64_MAX = 2**64 - 1
DEADLINE = 30  # seconds: only to catch a hang, never a timing assertion


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
           swap_bytes=0, ctx_voluntary=59, ctx_nonvoluntary=1, read_bytes=0, write_bytes=0,
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
            swap_bytes=0, ctx_voluntary=171, ctx_nonvoluntary=17, read_bytes=1717, write_bytes=3434,
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
    # controlling terminals (names from the FIXTURE_TTYS map of pinned_facts)
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

# The raw stat values of two proc-basic pids (as make_proc_trees.make_basic writes them),
# for tests that rewrite their stat.
STAT_ARGS = {
    10: dict(comm=b"a) b (c", ppid=1, minflt=210, majflt=11, utime=1010, stime=510, num_threads=4,
             starttime=1075, vsize=20971520, rss=1000),
    11: dict(comm=b"x) Z 1 1", ppid=10, minflt=311, majflt=12, utime=1111, stime=611, num_threads=2,
             starttime=1150, vsize=31457280, rss=1100),
}
ARG_START = 140731853970146  # the arg_start (stat field 48) make_proc_trees.stat_bytes writes


def fixture_stat(pid, arg_start=None, **changes) -> bytes:
    """The stat of pid 10 or 11 of proc-basic, with changes; arg_start changes the mm
    addresses (the exec mark) without changing anything else."""
    args = dict(STAT_ARGS[pid], **changes)
    data = make_proc_trees.stat_bytes(pid, args.pop("comm"), **args)
    if arg_start is not None:
        old = b" %d " % ARG_START
        assert data.count(old) == 1, data
        data = data.replace(old, b" %d " % arg_start)
    return data


_opened: list = []


def new(procfs, backend, facts=None, keep_open="auto") -> Snapshotter:
    """A Snapshotter closed when the test ends, pass or fail: a native one on /proc keeps
    up to three files per process open, and the budget it sizes from RLIMIT_NOFILE is its
    own, so leftovers would starve the next test's."""
    s = Snapshotter(procfs, backend, facts, keep_open)
    _opened.append(s)
    return s


@pytest.fixture(autouse=True)
def _close_snapshotters():
    yield
    while _opened:
        _opened.pop().close()


def snapper(procfs, backend, ttys=None) -> Snapshotter:
    """A Snapshotter on a fixture tree with pinned host facts (any user: no /dev scan)."""
    return new(str(procfs), backend, pinned_facts(str(procfs), ttys))


def spy_facts(s: Snapshotter) -> list:
    """Records each read_facts call of the snapshotter's reader: a list of request lists."""
    calls = []
    real = s.reader.read_facts

    def read_facts(requests):
        calls.append(list(requests))
        return real(requests)

    s.reader.read_facts = read_facts
    return calls


def asked_all(calls) -> list:
    """Pids whose static facts (WANT_ALL) were asked for, over the calls."""
    return sorted(pid for requests in calls for pid, _, want in requests if want & WANT_ALL == WANT_ALL)


def rewrite(path, data: bytes):
    """Rewrite a file in place (same inode: a kept file descriptor sees the new bytes, as
    it would on procfs)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def copy_basic(tmp_path):
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    return root


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
    for pid in STAT_ARGS:  # the stat the rewriting tests start from is the committed one
        with open(os.path.join(PROC_BASIC, str(pid), "stat"), "rb") as f:
            assert f.read() == fixture_stat(pid)


@pytest.mark.parametrize("pid", sorted(EXPECTED), ids=lambda pid: f"pid{pid}")
def test_fixture_record_exact(backend, pid):
    records = by_pid(snapper(PROC_BASIC, backend).snapshot())
    assert records[pid]._asdict() == EXPECTED[pid]._asdict()


def test_fixture_snapshot_exact(backend):
    snap = snapper(PROC_BASIC, backend).snapshot()
    assert snap.backend == backend
    assert by_pid(snap) == EXPECTED
    # short stat (16): malformed; missing io (18): ENOENT; the empty dir (19), the missing
    # exe of the zombie and the kernel thread, and the non-pid entries count nothing
    assert snap.errors == EXPECTED_ERRORS
    assert [p.pid for p in snap.processes] == sorted(EXPECTED), "records in pid order"
    assert snap.duration_seconds >= 0 and abs(snap.timestamp - time.time()) < 60


def test_fixture_without_terminals(backend):
    """No terminal known: a tty_nr the map does not have maps to None (never a made-up
    name)."""
    snap = snapper(PROC_BASIC, backend, ttys={}).snapshot()
    expected = {pid: p._replace(tty=None) for pid, p in EXPECTED.items()}
    assert all(EXPECTED[pid].tty is not None for pid in TTY_PIDS)
    assert by_pid(snap) == expected
    assert snap.errors == EXPECTED_ERRORS


def test_fixture_second_snapshot_identical(backend):
    """The second read (memoized statics) sees the same."""
    s = snapper(PROC_BASIC, backend)
    first = s.snapshot()
    second = s.snapshot()
    assert by_pid(second) == EXPECTED
    # static facts are read once per identity: their errors are not counted again, the
    # per-read files' are
    assert second.errors == EXPECTED_ERRORS
    for a, b in zip(first.processes, second.processes):
        assert a.cmdline is b.cmdline, f"pid {a.pid}: cmdline not shared between snapshots"


def test_non_pid_entries_are_skipped(backend, tmp_path):
    """Only all-ASCII-digit names are pids: '²' and '١٢' are digits to str.isdigit."""
    root = copy_basic(tmp_path)
    for name in ("\u00b2", "\u0661\u0662", "12a", "-1", " 1", "net", "2147483648", "99999999999999999999"):
        shutil.copytree(root / "1", root / name, symlinks=True)
    os.symlink("1", root / "self")
    snap = snapper(root, backend).snapshot()
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
    ordinary(44, cmdline=b"a" * 70000 + b"\0b\0")  # read whole: no 64 KiB cap
    ordinary(45, stat=b"45 odd45 S 1 45 45 0 -1 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n")  # no (comm)
    ordinary(46, stat=m.stat_bytes(46, b"neg", ppid=-1))  # a negative ppid does not parse
    d = ordinary(47, stat=None)
    os.mkdir(os.path.join(d, "stat"))  # not a regular file: EINVAL, dropped
    d = ordinary(48, fds=None)
    open(os.path.join(d, "fd"), "wb").close()  # ENOTDIR: open_fds None
    ordinary(49, exe=None, extra={"exe": b"not a link"})  # EINVAL: exe None
    ordinary(50, cmdline=b"a\0\0\0")  # every trailing NUL dropped
    ordinary(51, cgroup=b"0::/\n\n")  # trailing newlines stripped
    ordinary(52, nofile=("8", "16"))
    ordinary(53, cmdline=b"x" * (FILE_MAX + 5000) + b"\0y\0")  # cut at 1 MiB (not malformed)
    ordinary(54, cmdline=b"nginx: worker process" + b"\0" * 200)  # setproctitle padding
    ordinary(55, io=m.io_bytes(2**64, 7))  # over 2**64-1: malformed
    ordinary(56, io=m.io_bytes(U64_MAX, 7))  # 2**64-1 itself is a number
    ordinary(57, stat=m.stat_bytes(57, b"big", utime=2**64, starttime=5700))  # malformed: dropped
    ordinary(58, stat=m.stat_bytes(58, b"rss", starttime=5800, rss=2**52))  # rss * 4096 = 2**64: malformed
    ordinary(59, stat=m.stat_bytes(59, b"rss", starttime=5900, rss=2**52 - 1))  # 2**64 - 4096 fits
    ordinary(60, cmdline=b"a\0\0b\0\0")  # empty arguments inside are kept
    ordinary(61, status=m.status_bytes(61, b"odd61", swap_kb=2**54))  # VmSwap * 1024 = 2**64: malformed
    ordinary(62, status=m.status_bytes(62, b"odd62", swap_kb=1) + b"X" * FILE_MAX)  # 1 MiB: malformed


# 41 42 55 61 62 (status, io), 43 (limits), 45 46 57 58 (stat)
ODD_ERRORS = {"malformed": 10, "EINVAL": 2, "ENOTDIR": 1}
ODD_PIDS = [40, 41, 42, 43, 44, 48, 49, 50, 51, 52, 53, 54, 55, 56, 59, 60, 61, 62]


def test_odd_files(backend, tmp_path):
    root = str(tmp_path / "proc")
    make_odd_tree(root)
    snap = snapper(root, backend, ttys={}).snapshot()
    r = by_pid(snap)
    assert sorted(r) == ODD_PIDS
    assert snap.errors == ODD_ERRORS
    assert (r[40].comm, r[40].start_ticks, r[40].cpu_user_seconds, r[40].rss_bytes, r[40].vms_bytes) == (
        "old", 4000, 0.03, None, None)
    assert (r[41].uid, r[41].username, r[41].swap_bytes, r[41].ctx_voluntary) == (None, None, None, None)
    assert (r[42].read_bytes, r[42].write_bytes) == (None, None)
    assert r[43].max_fds is None and r[43].open_fds == 3
    assert r[44].cmdline == ("a" * 70000, "b")
    assert r[48].open_fds is None and r[48].max_fds == 1024
    assert r[49].exe is None and r[49].cmdline == ("/bin/odd49",)
    assert r[50].cmdline == ("a",)
    assert r[51].cgroup == "0::/"
    assert r[52].max_fds == 8
    assert r[53].cmdline == ("x" * FILE_MAX,)
    assert r[54].cmdline == ("nginx: worker process",)
    assert (r[55].read_bytes, r[55].write_bytes) == (None, None)
    assert (r[56].read_bytes, r[56].write_bytes) == (U64_MAX, 7)
    assert r[59].rss_bytes == 2**64 - 4096
    assert r[60].cmdline == ("a", "", "b")
    for pid in (61, 62):  # a malformed status gives none of its fields
        assert (r[pid].uid, r[pid].swap_bytes, r[pid].ctx_voluntary, r[pid].ctx_nonvoluntary) == (
            None, None, None, None), pid
    for pid in (41, 42, 43, 48, 49, 55, 56, 61, 62):  # what parsed is kept
        assert r[pid].vms_bytes == pid * 4096 and r[pid].rss_bytes == pid * 4096, pid
        assert r[pid].cpu_user_seconds == pid / 100 and r[pid].cmdline == (f"/bin/odd{pid}",), pid
    assert r[56].ctx_voluntary == 56 and r[55].uid == 0, "status of the io cases is readable"


def test_unlistable_root_raises(backend, tmp_path):
    s = new(str(tmp_path / "missing"), backend, pinned_facts(PROC_BASIC))
    with pytest.raises(OSError) as info:
        s.snapshot()
    assert str(tmp_path / "missing") in str(info.value)


def test_host_facts_pinned():
    facts = pinned_facts(PROC_BASIC)
    assert (facts.clock_ticks, facts.page_size, facts.boot_time) == (100, 4096, BOOT)
    assert {facts.ttys[tty] for tty in FIXTURE_TTYS} == {"pts/3", "pts/300", "tty1"}
    assert pinned_facts(PROC_BASIC, ttys={}).ttys[os.makedev(136, 3)] is None


# --------------------------------------------------------------------------------------
# 2. the two backends agree
# --------------------------------------------------------------------------------------


def both(procfs, ttys=None):
    return snapper(procfs, "python", ttys), snapper(procfs, "native", ttys)


@needs_native
def test_backends_equal_on_fixture(tmp_path):
    odd = str(tmp_path / "odd")
    make_odd_tree(odd)
    for tree, ttys in ((PROC_BASIC, None), (PROC_BASIC, {}), (odd, None)):
        py, c = both(tree, ttys)
        for _ in range(2):  # first read and memoized read
            a, b = py.snapshot(), c.snapshot()
            assert b.processes == a.processes
            assert b.errors == a.errors
        assert a.processes, tree


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
def test_backends_equal_on_big_tree(big_tree):
    py, c = both(big_tree, {})
    a, b = py.snapshot(), c.snapshot()
    assert len(a.processes) == 3000
    assert b.processes == a.processes and b.errors == a.errors == {}


@needs_native
def test_backends_equal_on_changing_tree(tmp_path):
    """Processes appear, exit, exec (new comm, or same comm and new mark) and turn
    unreadable between snapshots: both backends follow alike."""
    root = copy_basic(tmp_path)
    py, c = both(root)

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
    (root / "11" / "cmdline").write_bytes(b"/usr/bin/spoof\0again\0")
    (root / "11" / "stat").write_bytes(fixture_stat(11, arg_start=ARG_START + 64))  # exec, same comm
    (root / "30" / "stat").write_bytes(b"30 (x) S garbage\n")  # unreadable: carried
    snap = check()
    assert by_pid(snap)[12].cmdline == ("changed",)
    assert by_pid(snap)[11].cmdline == ("/usr/bin/spoof", "again")
    assert by_pid(snap)[30] == EXPECTED[11]._replace(pid=30)
    assert snap.errors == {"malformed": 2, "ENOENT": 1}
    shutil.rmtree(root / "30")  # the unreadable one exits
    snap = check()
    assert sorted(by_pid(snap)) == sorted(EXPECTED)


# The fields of a sleeping process that cannot change between two reads (rss can: the
# kernel may reclaim its file pages; it is compared within 1 MiB)
def without_rss(p: Process) -> Process:
    return p._replace(rss_bytes=None)


@pytest.fixture
def spawned():
    """spawn(argv, **popen_kw) -> Popen; every child is killed and reaped at the end."""
    procs = []

    def spawn(argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream:
                stream.close()


def read_stat(pid):
    """(comm, state) of a live pid, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    left, right = data.index(b"("), data.rindex(b")")
    return data[left + 1 : right].decode(), data[right + 2 : right + 3].decode()


def wait_for_state(pid, comm, states="S"):
    """Wait (up to DEADLINE, to catch a hang) until pid runs comm in one of states."""
    deadline = time.monotonic() + DEADLINE
    while True:
        seen = read_stat(pid)
        if seen is not None and seen[0] == comm and seen[1] in states:
            return
        assert time.monotonic() < deadline, f"pid {pid}: {seen}, waiting for {comm} in {states}"
        time.sleep(0.01)


@needs_native
def test_backends_agree_on_live_proc(spawned):
    """On the live /proc, judged only on processes this test started: two sleeping
    children (a `sleep`, a python reading stdin) and a zombie give equal records."""
    sleeper = spawned(["sleep", "60"])
    reader = spawned([sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()",
                      "an arg"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    zombie = spawned(["true"])
    assert reader.stdout.readline() == b"ready\n"
    comm = os.path.basename(sys.executable)[:15]  # the kernel names it after the path exec'd
    wait_for_state(sleeper.pid, "sleep")
    wait_for_state(reader.pid, comm)
    wait_for_state(zombie.pid, "true", "Z")
    facts = HostFacts()
    py = new("/proc", "python", facts)
    c = new("/proc", "native", facts)
    for _ in range(2):  # first read and memoized read (native: through kept files)
        a, b = by_pid(py.snapshot()), by_pid(c.snapshot())
        for p in (sleeper, reader, zombie):
            assert p.pid in a and p.pid in b, p.args
            assert without_rss(b[p.pid]) == without_rss(a[p.pid]), p.args
            assert abs(b[p.pid].rss_bytes - a[p.pid].rss_bytes) <= MiB, p.args
    assert (a[sleeper.pid].cmdline, a[sleeper.pid].exe) == (("sleep", "60"), os.path.realpath(shutil.which("sleep")))
    assert a[reader.pid].cmdline[-1] == "an arg" and a[reader.pid].read_bytes is not None
    z = a[zombie.pid]
    assert (z.state, z.cmdline, z.exe, z.swap_bytes, z.ppid) == ("Z", (), None, 0, os.getpid())  # no mm: none swapped


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
        deadline = time.monotonic() + DEADLINE
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


def task_ctx(pid) -> tuple:
    """Context switches summed over /proc/PID/task/*/status (voluntary, involuntary)."""
    total = [0, 0]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                    total[key.startswith("non")] += int(value)
    return tuple(total)


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
        # a multi-threaded process' context switches are its threads' (as process-exporter
        # sums task/*/status); psutil gives the leader's alone
        voluntary, involuntary = task_ctx(popen.pid) if ps.num_threads() > 1 else (ctx.voluntary, ctx.involuntary)
        assert abs(r.ctx_voluntary - voluntary) <= 2 and abs(r.ctx_nonvoluntary - involuntary) <= 2, where
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
# 4. live command lines: read whole, and re-read after an exec that keeps the comm
# --------------------------------------------------------------------------------------

READY_THEN_READ = "import sys; print('ready', flush=True); sys.stdin.read()"


def test_live_long_cmdline_comes_back_whole(backend, spawned):
    """300 KB of arguments (each under the kernel's 128 KiB per-argument limit): the
    cmdline is read whole, past what a first 4 KiB (or 64 KiB) read gives."""
    args = [f"arg{i:04d}-" + "y" * 992 for i in range(300)]
    argv = [sys.executable, "-c", READY_THEN_READ, *args]
    assert len(b"\0".join(a.encode() for a in argv)) > 300_000
    child = spawned(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    s = new("/proc", backend)
    for _ in range(2):
        r = by_pid(s.snapshot())[child.pid]
        assert r.cmdline == tuple(argv)


EXEC_CHILD = textwrap.dedent(
    """
    import os, sys
    print("ready", flush=True)
    sys.stdin.readline()
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], "marker-after-exec"])
    """
)
AFTER_EXEC = "import sys; print('exec done', flush=True); sys.stdin.read()"


def test_live_exec_with_the_same_comm_is_seen(backend, spawned):
    """python -> python keeps the comm; the mm addresses of stat (the mark) change, and
    the cmdline is read again. The exec happens when the test says so (no timing)."""
    child = spawned([sys.executable, "-c", EXEC_CHILD, AFTER_EXEC, "marker-before-exec"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    s = new("/proc", backend)
    calls = spy_facts(s)
    before = by_pid(s.snapshot())[child.pid]
    assert before.cmdline[-1] == "marker-before-exec"
    again = by_pid(s.snapshot())[child.pid]
    assert again.cmdline is before.cmdline  # no exec yet: memoized
    child.stdin.write(b"go\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"exec done\n"
    calls.clear()
    after = by_pid(s.snapshot())[child.pid]
    assert (after.pid, after.start_ticks, after.comm) == (before.pid, before.start_ticks, before.comm)
    assert after.cmdline == (sys.executable, "-c", AFTER_EXEC, "marker-after-exec")
    assert child.pid in asked_all(calls), "static facts not read again after the exec"


# --------------------------------------------------------------------------------------
# unreadable files: another user's io and exe are None, counted EACCES (never 0)
# --------------------------------------------------------------------------------------

NOBODY = 65534
CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
PR_SET_DUMPABLE = 4
libc = ctypes.CDLL(None, use_errno=True)


def in_child(fn, timeout=DEADLINE):
    """fn() in a forked child; its JSON-able result comes back through a pipe. A child
    that hangs is ended by an alarm (a handler: a pid namespace's init ignores SIGALRM's
    default action)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        code = 1
        try:
            os.close(r)
            signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
            signal.alarm(timeout)
            out = {"result": fn()}
            code = 0
        except BaseException:
            out = {"exception": traceback.format_exc()}
        try:
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(child, 0)
    assert data, f"child ended with status {status} and no result"
    out = json.loads(data)
    assert "exception" not in out, out["exception"]
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out["result"]


def as_nobody(backend):
    """A snapshot of /proc as nobody: {"me": pid, "errors": ..., "records": [dict]}. The
    child sets itself dumpable again (changing uid clears it, which would make even its
    own /proc files root's), as an exec would. A fork, not an exec: the interpreter may
    live where nobody may not go (/root)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    if libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    s = Snapshotter("/proc", backend)
    try:
        snap = s.snapshot()
    finally:
        s.close()
    return {"me": os.getpid(), "uid": os.getuid(), "errors": snap.errors,
            "records": [p._asdict() for p in snap.processes]}


def nobody_scenario(backend, private_proc: bool):
    """As root: start a root `sleep` (its own fd limit: 555), snapshot as nobody, then as
    root. In a new pid namespace (private_proc), /proc holds only this process (pid 1),
    the sleep and the nobody child."""
    if private_proc:
        if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
            raise OSError(ctypes.get_errno(), "mount proc")
    resource.setrlimit(resource.RLIMIT_NOFILE, (555, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    sleep = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_state(sleep.pid, "sleep")
        with open(f"/proc/{sleep.pid}/cgroup", "rb") as f:
            cgroup = f.read().decode().rstrip("\n")
        nobody = in_child(lambda: as_nobody(backend))
        s = Snapshotter("/proc", backend)
        try:
            as_root = [p._asdict() for p in s.snapshot().processes]
        finally:
            s.close()
    finally:
        sleep.kill()
        sleep.wait()
    return {"init": os.getpid(), "sleep": sleep.pid, "cgroup": cgroup, "nobody": nobody, "root": as_root,
            "sleep_exe": os.path.realpath(shutil.which("sleep"))}


def in_new_pid_namespace(backend):
    """nobody_scenario in a new pid and mount namespace (with its own /proc), or None
    when namespaces are not available here."""
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
        return None
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "make / private")
    return in_child(lambda: nobody_scenario(backend, private_proc=True))


def test_other_users_io_and_exe_are_none_as_nobody(backend):
    """Judged only on processes this test started: a root `sleep`, read by a snapshot
    taken as nobody, has no io and no exe (each counted EACCES), and everything else
    that the root snapshot has."""
    if os.getuid() != 0:
        pytest.skip("needs root to start a root process and switch to nobody")
    out = in_child(lambda: in_new_pid_namespace(backend))
    private = out is not None
    if not private:  # no namespaces here: the same on the host's /proc
        out = in_child(lambda: nobody_scenario(backend, private_proc=False))
    nobody, sleep_pid, init = out["nobody"], out["sleep"], out["init"]
    assert nobody["uid"] == NOBODY
    seen = {r["pid"]: r for r in nobody["records"]}
    as_root = {r["pid"]: r for r in out["root"]}
    # Linux >= 6.2 gives anyone the fd count as the size of a procfs fd dir
    fd_dir_sizes = os.stat(f"/proc/{os.getpid()}/fd").st_size > 0

    sleep = seen[sleep_pid]
    assert (sleep["read_bytes"], sleep["write_bytes"], sleep["exe"]) == (None, None, None)
    root_sleep = as_root[sleep_pid]
    assert root_sleep["read_bytes"] is not None and root_sleep["exe"] == out["sleep_exe"]
    hidden = dict(read_bytes=None, write_bytes=None, exe=None)
    if not fd_dir_sizes:
        hidden["open_fds"] = None
    # (rss may change while it sleeps: the kernel can reclaim its file pages)
    assert abs(sleep["rss_bytes"] - root_sleep["rss_bytes"]) <= MiB
    assert dict(sleep, rss_bytes=0) == dict(root_sleep, rss_bytes=0, **hidden), \
        "nobody sees what root sees but io and exe"
    expected = dict(pid=sleep_pid, ppid=init, comm="sleep", state="S", is_kernel_thread=False, num_threads=1,
                    uid=0, username="root", tty=None, cmdline=["sleep", "60"], cgroup=out["cgroup"],
                    max_fds=555, open_fds=3 if fd_dir_sizes else None)
    assert {k: sleep[k] for k in expected} == expected
    for field in ("rss_bytes", "vms_bytes", "swap_bytes", "ctx_voluntary", "ctx_nonvoluntary"):
        assert sleep[field] is not None, field
    assert sleep["rss_bytes"] > 0 and sleep["vms_bytes"] > 0

    # the nobody child reads its own files
    me = seen[nobody["me"]]
    assert me["uid"] == NOBODY and me["read_bytes"] is not None and me["open_fds"] >= 3
    assert me["exe"] == os.path.realpath(sys.executable)

    # io and exe of each root process are counted (2 each): the sleep and its parent
    eacces = 2 * 2 + (0 if fd_dir_sizes else 2 * 2)
    if private:  # /proc holds only the processes this test started
        assert sorted(seen) == sorted([init, sleep_pid, nobody["me"]])
        assert nobody["errors"] == {"EACCES": eacces}
    else:
        assert nobody["errors"].get("EACCES", 0) >= eacces, nobody["errors"]


# --------------------------------------------------------------------------------------
# 5. the native walk releases the GIL
# --------------------------------------------------------------------------------------


@needs_native
def test_native_snapshot_releases_the_gil(big_tree):
    c = snapper(big_tree, "native", ttys={})
    c.snapshot()  # first read: memoizes

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
            walks.append(progress_during(c.reader._impl.read))
    finally:
        running[0] = False
        thread.join()
        sys.setswitchinterval(old_interval)

    # the measurement can tell: while the GIL is held the counter all but stops
    assert control[0] < 0.25 * control[1], control
    # while the native walk runs, the counter keeps counting at a good part of its pace
    # (about half of it here; a walk holding the GIL would give under 1%)
    assert sum(w[0] for w in walks) >= 0.2 * sum(w[1] for w in walks), walks
    assert min(w[0] for w in walks) > 0, walks


# --------------------------------------------------------------------------------------
# 6. repeated snapshots do not leak; kept files go with their process
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


def test_repeated_snapshots_do_not_leak(backend):
    gc.collect()  # snapshotters other tests left to the garbage collector hold files
    s = snapper(PROC_BASIC, backend)
    fds_before = open_fd_count()
    for _ in range(200):  # warm-up: memoized facts, allocator pools
        s.snapshot()
    fds_warm = open_fd_count()
    gc.collect()
    rss0 = vm_rss()
    tracemalloc.start()
    try:
        traced0 = tracemalloc.get_traced_memory()[0]
        for _ in range(LEAK_CALLS[backend]):
            snap = s.snapshot()
        assert by_pid(snap) == EXPECTED
        del snap
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced0
    finally:
        tracemalloc.stop()
    rss_growth = vm_rss() - rss0
    assert traced < 64 * KiB, f"{traced} bytes of Python objects kept after {LEAK_CALLS[backend]} snapshots"
    assert rss_growth < 5 * MiB, f"RSS grew {rss_growth} bytes"
    assert open_fd_count() == fds_warm, "files opened per snapshot are not closed"
    # files are kept open only on a real procfs: a fixture tree keeps none
    assert s.reader.kept() == 0
    assert fds_warm == fds_before, "files kept open on a fixture tree"


def test_exited_processes_leave_nothing_behind(backend, tmp_path):
    """Pids come and go: what is kept for a pid (files, facts, last record) goes when the
    pid does."""
    root = copy_basic(tmp_path)
    gc.collect()
    s = snapper(root, backend)
    s.snapshot()
    fds_warm = open_fd_count()
    for i in range(100):
        pid_dir = root / str(1000 + i)
        shutil.copytree(root / "10", pid_dir, symlinks=True)
        assert len(s.snapshot().processes) == len(EXPECTED) + 1
        shutil.rmtree(pid_dir)
    snap = s.snapshot()
    assert by_pid(snap) == EXPECTED
    assert open_fd_count() <= fds_warm
    assert sorted(pid for pid, _ in s.tracker.procs) == sorted(EXPECTED)
    assert sorted(pid for pid, _ in s.tracker.last) == sorted(EXPECTED)


def open_file_targets() -> list:
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass
    return targets


# what a sleeping process keeps open (sorted): its status, io and wchan are remembered while
# it does not run (a running one keeps those too: KEPT_PER_PROCESS files)
KEPT_NAMES = ["schedstat", "stat"]


def files_open_under(pids) -> dict:
    """pid -> the names of the files of /proc/<pid>/ this process has open."""
    found = {pid: [] for pid in pids}
    for target in open_file_targets():
        parts = target.split("/")
        if len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) in found:
            found[int(parts[2])].append("/".join(parts[3:]))
    return {pid: sorted(names) for pid, names in found.items()}


@pytest.fixture
def fd_limit_raised():
    """The soft RLIMIT_NOFILE raised to the hard one for the test (the keep-open budget is
    sized from it), restored after."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = old[1] if old[1] != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, old[1]))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


@needs_native
def test_native_releases_kept_files_of_exited_processes(spawned, fd_limit_raised):
    """On the live /proc the native backend keeps a sleeping process' stat and schedstat open
    between reads; once the process has exited, the next read closes them, and close()
    closes those of the living."""
    n = 20
    s = new("/proc", "native", keep_open=parse_keep_open("all"))
    s.snapshot()
    children = [spawned(["sleep", "60"]) for _ in range(n)]
    staying = [spawned(["sleep", "60"]) for _ in range(2)]
    for p in children + staying:
        wait_for_state(p.pid, "sleep")
    snap = by_pid(s.snapshot())
    assert all(p.pid in snap for p in children + staying)
    budget = keep_open_budget(parse_keep_open("all"))
    if len(snap) > budget:
        pytest.skip(f"{len(snap)} host processes, more than the keep-open budget ({budget})")
    kept = files_open_under(p.pid for p in children + staying)
    assert all(names == KEPT_NAMES for names in kept.values()), kept
    assert sum(len(names) for names in kept.values()) == len(KEPT_NAMES) * (n + 2) < KEPT_PER_PROCESS * (n + 2)

    for p in children:
        p.kill()
    for p in children:
        p.wait()
    snap = by_pid(s.snapshot())
    assert not any(p.pid in snap for p in children)
    left = files_open_under(p.pid for p in children)
    assert not any(left.values()), left
    assert files_open_under(p.pid for p in staying) == {p.pid: KEPT_NAMES for p in staying}
    s.close()
    assert s.reader.kept() == 0
    assert files_open_under(p.pid for p in staying) == {p.pid: [] for p in staying}


# --------------------------------------------------------------------------------------
# 7. static facts memoized per identity; unreadable is not exited
# --------------------------------------------------------------------------------------


def test_static_facts_read_once_per_identity(backend):
    """The first read asks the static facts of every process, later reads of none; the fd
    limit of each is read again once in every LIMITS_EVERY reads."""
    s = snapper(PROC_BASIC, backend)
    calls = spy_facts(s)
    s.snapshot()
    assert asked_all(calls) == sorted(EXPECTED)
    calls.clear()
    for _ in range(2 * LIMITS_EVERY):
        assert by_pid(s.snapshot()) == EXPECTED
    assert asked_all(calls) == []
    nofile = sorted(pid for requests in calls for pid, _, want in requests if want & WANT_NOFILE and not want & WANT_ALL & ~WANT_NOFILE)
    assert nofile == sorted(list(EXPECTED) * 2)


def test_fd_limit_is_read_again(backend, tmp_path):
    root = copy_basic(tmp_path)
    s = snapper(root, backend)
    assert by_pid(s.snapshot())[10].max_fds == 1024
    rewrite(root / "10" / "limits", make_proc_trees.LIMITS.format(soft=2048, hard=4096).encode())
    seen = [by_pid(s.snapshot())[10].max_fds for _ in range(LIMITS_EVERY)]
    assert seen.count(2048) >= 1 and seen[-1] == 2048, seen
    assert seen == sorted(seen), "the new limit, once seen, stays"


def test_static_facts_memoized_per_identity(backend, tmp_path):
    root = copy_basic(tmp_path)
    pid_dir = root / "10"
    s = snapper(root, backend)
    first = by_pid(s.snapshot())[10]
    assert first == EXPECTED[10]

    # same identity, same comm, same mark: cmdline, exe, cgroup are not read again; stat is
    rewrite(pid_dir / "cmdline", b"/usr/bin/rewritten\0by setproctitle\0")
    rewrite(pid_dir / "cgroup", b"0::/moved\n")
    os.unlink(pid_dir / "exe")
    os.symlink("/usr/bin/other", pid_dir / "exe")
    rewrite(pid_dir / "stat", fixture_stat(10, utime=2020))
    second = by_pid(s.snapshot())[10]
    assert second == EXPECTED[10]._replace(cpu_user_seconds=20.2)
    assert second.cmdline is first.cmdline

    # exec: a new comm on the same identity re-reads the static facts
    rewrite(pid_dir / "stat", fixture_stat(10, comm=b"rewritten", utime=2020))
    third = by_pid(s.snapshot())[10]
    assert third == EXPECTED[10]._replace(
        comm="rewritten", cpu_user_seconds=20.2, cmdline=("/usr/bin/rewritten", "by setproctitle"),
        exe="/usr/bin/other", cgroup="0::/moved")

    # pid reuse: a new starttime, the same comm, re-reads them too
    rewrite(pid_dir / "cmdline", b"/usr/bin/reused\0")
    rewrite(pid_dir / "stat", fixture_stat(10, comm=b"rewritten", starttime=5000))
    fourth = by_pid(s.snapshot())[10]
    assert (fourth.pid, fourth.start_ticks) == (10, 5000)
    assert fourth.start_time_seconds == BOOT + 50.0
    assert fourth.cmdline == ("/usr/bin/reused",)

    # unchanged again: memoized again
    rewrite(pid_dir / "cmdline", b"/usr/bin/ignored\0")
    assert by_pid(s.snapshot())[10].cmdline is fourth.cmdline


def test_exec_with_the_same_comm_is_seen_by_the_mark(backend, tmp_path):
    """python -> python keeps the comm: the mm addresses in stat (the mark) tell the exec.
    A mark the kernel hides (0) is no exec, nor is it when it shows again unchanged."""
    root = copy_basic(tmp_path)
    pid_dir = root / "10"
    s = snapper(root, backend)
    calls = spy_facts(s)
    first = by_pid(s.snapshot())[10]
    assert first.cmdline == EXPECTED[10].cmdline

    rewrite(pid_dir / "cmdline", b"/usr/bin/paren\0--after-exec\0")
    for arg_start in (0, ARG_START):  # hidden (zombie, or no ptrace access), then shown again
        calls.clear()
        rewrite(pid_dir / "stat", fixture_stat(10, arg_start=arg_start))
        assert by_pid(s.snapshot())[10].cmdline is first.cmdline, arg_start
        assert asked_all(calls) == [], arg_start

    calls.clear()
    rewrite(pid_dir / "stat", fixture_stat(10, arg_start=ARG_START + 4096))
    after = by_pid(s.snapshot())[10]
    assert asked_all(calls) == [10]
    assert after == EXPECTED[10]._replace(cmdline=("/usr/bin/paren", "--after-exec"))

    # the new mark is the identity's now: no exec at the next read
    calls.clear()
    rewrite(pid_dir / "cmdline", b"/usr/bin/ignored\0")
    assert by_pid(s.snapshot())[10].cmdline is after.cmdline
    assert asked_all(calls) == []


def test_mark_first_seen_is_no_exec(backend, tmp_path):
    """A process first read without its mark (0), then with one: no exec (the comm is the
    same); a later change of that mark is one."""
    root = copy_basic(tmp_path)
    pid_dir = root / "10"
    rewrite(pid_dir / "stat", fixture_stat(10, arg_start=0))
    s = snapper(root, backend)
    calls = spy_facts(s)
    first = by_pid(s.snapshot())[10]
    rewrite(pid_dir / "cmdline", b"/usr/bin/paren\0--after-exec\0")
    calls.clear()
    rewrite(pid_dir / "stat", fixture_stat(10))
    assert by_pid(s.snapshot())[10].cmdline is first.cmdline
    assert asked_all(calls) == []
    rewrite(pid_dir / "stat", fixture_stat(10, arg_start=ARG_START + 4096))
    assert by_pid(s.snapshot())[10].cmdline == ("/usr/bin/paren", "--after-exec")
    assert asked_all(calls) == [10]


def test_static_facts_dropped_when_the_process_is_gone(backend, tmp_path):
    root = copy_basic(tmp_path)
    s = snapper(root, backend)
    assert by_pid(s.snapshot())[11].cmdline == ("/usr/bin/spoof",)
    os.rename(root / "11", tmp_path / "11")
    assert 11 not in by_pid(s.snapshot())
    os.rename(tmp_path / "11", root / "11")
    rewrite(root / "11" / "cmdline", b"/usr/bin/back\0")
    # the same identity came back after a read without it: nothing stale is reused
    assert by_pid(s.snapshot())[11].cmdline == ("/usr/bin/back",)


def break_stat(path, how):
    """Make a stat file unreadable: content that does not parse, a directory in its
    place, or (not as root: root ignores file modes) mode 000."""
    if how == "malformed":
        rewrite(path, b"11 (x) S not numbers\n")
    elif how == "directory":
        os.unlink(path)
        os.mkdir(path)
    else:
        os.chmod(path, 0)


def mend_stat(path, data):
    if os.path.isdir(path):
        os.rmdir(path)
    if os.path.exists(path):
        os.chmod(path, 0o644)
        rewrite(path, data)
    else:
        with open(path, "wb") as f:
            f.write(data)


# how the stat breaks -> the reason it is counted under
BREAKS = {"malformed": "malformed", "directory": "EINVAL", "EACCES": "EACCES"}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_unreadable_stat_is_not_exited(backend, tmp_path, how):
    """A known pid whose stat cannot be read while its directory is there keeps its
    identity and its last record, the error counted; when the stat comes back it is the
    same identity (static facts not read again)."""
    if how == "EACCES" and os.geteuid() == 0:
        pytest.skip("root reads files of mode 000")
    root = copy_basic(tmp_path)
    stat = root / "11" / "stat"
    s = snapper(root, backend)
    calls = spy_facts(s)
    first = by_pid(s.snapshot())
    assert first == EXPECTED
    calls.clear()

    break_stat(stat, how)
    rewrite(root / "11" / "cmdline", b"/usr/bin/not-read\0")  # same identity: not read again
    rewrite(root / "11" / "io", make_proc_trees.io_bytes(9999, 9999))
    second = s.snapshot()
    assert by_pid(second) == EXPECTED  # pid 11 with its previous values
    assert by_pid(second)[11].cmdline is first[11].cmdline
    errors = dict(EXPECTED_ERRORS)
    errors[BREAKS[how]] = errors.get(BREAKS[how], 0) + 1
    assert second.errors == errors

    mend_stat(stat, fixture_stat(11, utime=3000))
    third = s.snapshot()
    assert by_pid(third)[11] == EXPECTED[11]._replace(cpu_user_seconds=30.0, read_bytes=9999, write_bytes=9999)
    assert by_pid(third)[11].cmdline is first[11].cmdline
    assert third.errors == EXPECTED_ERRORS
    assert asked_all(calls) == [], "the identity was taken for a new one"

    # unreadable again, then gone: exited
    break_stat(stat, how)
    assert by_pid(s.snapshot())[11].cpu_user_seconds == 30.0
    shutil.rmtree(root / "11")
    assert 11 not in by_pid(s.snapshot())


def test_counter_unreadable_later_keeps_its_last_value(backend, tmp_path):
    """io readable before and not now (a process turned non-dumpable) keeps its last
    value, the error counted; the rest of the record is read afresh."""
    root = copy_basic(tmp_path)
    s = snapper(root, backend)
    s.snapshot()
    os.unlink(root / "10" / "io")
    rewrite(root / "10" / "stat", fixture_stat(10, utime=2020))
    snap = s.snapshot()
    assert by_pid(snap)[10] == EXPECTED[10]._replace(cpu_user_seconds=20.2)
    assert snap.errors == {"malformed": 1, "ENOENT": 2}


def test_unreadable_stat_then_another_process(backend, tmp_path):
    """A pid unreadable for a while that comes back with another starttime is another
    process: its static facts are read."""
    root = copy_basic(tmp_path)
    stat = root / "11" / "stat"
    s = snapper(root, backend)
    s.snapshot()
    break_stat(stat, "malformed")
    assert by_pid(s.snapshot())[11] == EXPECTED[11]
    rewrite(root / "11" / "cmdline", b"/usr/bin/new-process\0")
    rewrite(stat, fixture_stat(11, starttime=9000))
    r = by_pid(s.snapshot())[11]
    assert (r.start_ticks, r.cmdline) == (9000, ("/usr/bin/new-process",))


def test_unreadable_stat_of_an_unknown_pid_is_not_listed(backend, tmp_path):
    """Unreadable at its first read: nothing to carry, the pid is not listed (16 of
    proc-basic, at every read), and the error is counted each time."""
    s = snapper(PROC_BASIC, backend)
    for _ in range(3):
        snap = s.snapshot()
        assert 16 not in by_pid(snap) and snap.errors == EXPECTED_ERRORS


def test_default_snapshot_function_reuses_its_snapshotter(backend):
    key = ("/proc", backend)
    with snapshot_module._default_lock:
        leftover = snapshot_module._default.pop(key, None)
    if leftover is not None:
        leftover.close()
    try:
        a = snapshot_module.snapshot("/proc", backend)
        kept = snapshot_module._default[key]
        assert isinstance(kept, Snapshotter)
        b = snapshot_module.snapshot("/proc", backend)
        assert snapshot_module._default[key] is kept
        assert a.backend == b.backend == backend
        me_a, me_b = by_pid(a)[os.getpid()], by_pid(b)[os.getpid()]
        assert me_a.cmdline is me_b.cmdline  # memoized in the kept snapshotter
    finally:
        with snapshot_module._default_lock:
            leftover = snapshot_module._default.pop(key, None)
        if leftover is not None:
            leftover.close()


@pytest.mark.parametrize("walk_limits", [False, True], ids=["limits-as-facts", "limits-with-records"])
def test_unchanged_processes_keep_their_process_objects(walk_limits):
    """Where nothing of a process changed (the same record object, as the bpf reader gives
    it, the same fd limit and static facts), the next snapshot gives the same Process;
    every snapshot equals one built from scratch, whatever changed: a counter, an fd
    limit, an exec, a start and an exit, a user name known only now."""
    from exporter.snapshots import Snapshotter, processes
    from exporter.tracker import Tracker
    from procs import FakeReader, rec

    reader = FakeReader()
    reader.walk_limits = walk_limits
    facts = HostFacts(procfs="/nonexistent", clock_ticks=100, page_size=4096, boot_time=1e9, ttys={})
    snapper = Snapshotter.__new__(Snapshotter)
    snapper.facts, snapper.reader, snapper.backend = facts, reader, "fake"
    snapper.tracker, snapper._lock, snapper._last = Tracker(reader, facts), threading.Lock(), None
    for pid in (10, 11, 12, 13):
        reader.put(rec(pid, "a", utime=pid), nofile=1024)

    def snap():
        made = snapper.snapshot().processes
        assert made == processes(snapper._last[0], facts)[0]  # from scratch
        return {p.pid: p for p in made}

    first = snap()
    again = snap()
    assert all(again[pid] is first[pid] for pid in first)
    reader.put(rec(10, "a", utime=99))  # a counter moved
    reader.facts[(11, 100)] = reader.facts[(11, 100)][:3] + (4096,)  # prlimit
    reader.put(rec(12, "b", utime=12), cmdline=("b",))  # exec
    third = snap()
    assert third[10] is not again[10] and third[10].cpu_user_seconds == 0.99
    assert (third[11] is again[11]) == (not walk_limits)  # as facts it is read every 16th step
    assert third[11].max_fds == (4096 if walk_limits else 1024)
    assert third[12] is not again[12] and third[12].comm == "b" and third[12].cmdline == ("b",)
    assert third[13] is again[13]
    reader.remove(13)
    reader.put(rec(14, "c"))
    reader.put(rec(15, "d", uid=54321))  # a uid no user has (yet)
    fourth = snap()
    assert sorted(fourth) == [10, 11, 12, 14, 15] and fourth[15].username == "54321"
    facts.usernames[54321] = "late"  # the user is added: its name shows though nothing else moved
    fifth = snap()
    assert fifth[15].username == "late" and fifth[14] is fourth[14]
