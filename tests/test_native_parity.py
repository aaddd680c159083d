"""The C collector (exporter._collector) gives exactly what the Python twin gives.

Fixture trees are built here with tmp_path (self-contained; tests/fixtures belongs to the
snapshot tests). Each scenario is read by both backends and the snapshots must be equal
record by record and in their error counts; then the live /proc is compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from exporter.hostfacts import HostFacts
from exporter.collector import Collector, Process, native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="exporter._collector is not built")

BTIME = 1700000000


class FakeTtys(dict):
    """tty_nr -> a name derived from the number, so both backends see the same table."""

    def __missing__(self, device):
        return f"pts/{device & 0xFF}"


def facts(root) -> HostFacts:
    f = HostFacts(procfs=str(root), clock_ticks=100, page_size=4096)
    f.ttys = FakeTtys()
    return f


def stat_line(
    pid,
    comm: bytes,
    state=b"S",
    ppid=1,
    tty=0,
    flags=0x400100,
    minflt=10,
    majflt=1,
    utime=150,
    stime=25,
    threads=1,
    start=12345,
    vsize=1000000,
    rss=250,
    ntail=None,
) -> bytes:
    """A /proc/PID/stat line; ntail cuts the fields after ')' to that many."""
    after = [state, ppid, ppid, ppid, tty, b"-1", flags, minflt, 0, majflt, 0, utime, stime,
             0, 0, 20, 0, threads, 0, start, vsize, rss] + [0] * 30
    after = [a if isinstance(a, bytes) else str(a).encode() for a in after]
    if ntail is not None:
        after = after[:ntail]
    return str(pid).encode() + b" (" + comm + b") " + b" ".join(after) + b"\n"


def status_text(uid=1000, swap_kb=12, vol=5, nonvol=2, comm=b"x") -> bytes:
    lines = [
        b"Name:\t" + comm,
        b"Umask:\t0022",
        b"State:\tS (sleeping)",
        b"Tgid:\t1",
        f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}".encode(),
        b"Gid:\t0\t0\t0\t0",
        b"VmRSS:\t     1000 kB",
        f"VmSwap:\t{swap_kb:>8} kB".encode(),
        b"Threads:\t1",
        f"voluntary_ctxt_switches:\t{vol}".encode(),
        f"nonvoluntary_ctxt_switches:\t{nonvol}".encode(),
    ]
    return b"\n".join(lines) + b"\n"


IO = b"rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"
LIMITS = (
    b"Limit                     Soft Limit           Hard Limit           Units     \n"
    b"Max cpu time              unlimited            unlimited            seconds   \n"
    b"Max open files            1024                 4096                 files     \n"
    b"Max locked memory         8388608              8388608              bytes     \n"
)
DEFAULT = object()


def add_proc(
    root,
    pid,
    comm=b"proc",
    stat=DEFAULT,
    status=DEFAULT,
    io=DEFAULT,
    limits=DEFAULT,
    cmdline=DEFAULT,
    cgroup=DEFAULT,
    exe=DEFAULT,
    fds=3,
    **stat_kw,
):
    """One /proc/PID directory. DEFAULT = a plausible file, None = missing."""
    d = root / str(pid)
    d.mkdir()
    files = {
        "stat": stat_line(pid, comm, **stat_kw) if stat is DEFAULT else stat,
        "status": status_text() if status is DEFAULT else status,
        "io": IO if io is DEFAULT else io,
        "limits": LIMITS if limits is DEFAULT else limits,
        "cmdline": b"/usr/bin/" + comm + b"\0--flag\0" if cmdline is DEFAULT else cmdline,
        "cgroup": b"0::/user.slice/x.scope\n" if cgroup is DEFAULT else cgroup,
    }
    for name, data in files.items():
        if data is not None:
            (d / name).write_bytes(data)
    if exe is DEFAULT:
        exe = b"/usr/bin/" + comm.replace(b"/", b"_").replace(b"\0", b"")
    if exe is not None:
        os.symlink(exe, os.fsencode(d / "exe"))
    if fds is not None:
        (d / "fd").mkdir()
        for i in range(fds):
            os.symlink("/dev/null", d / "fd" / str(i))
    return d


def make_root(tmp_path):
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_bytes(b"cpu  1 2 3 4\nbtime %d\nprocesses 10\n" % BTIME)
    (root / "self").mkdir()  # non-numeric names are not processes
    (root / "12abc").mkdir()
    return root


def nasty_tree(root):
    add_proc(root, 1, comm=b"init", status=status_text(uid=0))
    add_proc(root, 2, comm=b"a) b (c")
    add_proc(root, 3, comm=b"x) Z 1 1")
    add_proc(root, 4, comm=b"new\nline")
    add_proc(root, 5, comm=b"caf\xc3")  # cut inside a UTF-8 character
    add_proc(root, 6, comm=b"bad", cmdline=b"ab\xff\xfe\0c\0")
    add_proc(root, 7, stat=b"7 (short) S 1 1 1 0 -1\n")  # short stat: malformed, dropped
    add_proc(root, 8, comm=b"zombie", state=b"Z", cmdline=b"", exe=None, fds=0)
    add_proc(root, 9, comm=b"kthreadd", flags=0x00208040, cmdline=b"", exe=None, io=None, fds=0,
             status=b"Name:\tkthreadd\nUid:\t0\t0\t0\t0\nvoluntary_ctxt_switches:\t9\n"
                    b"nonvoluntary_ctxt_switches:\t0\n")
    add_proc(root, 10, comm=b"noio", io=None)  # missing io: ENOENT counted, fields None
    (root / "11").mkdir()  # a pid dir with no files: gone, dropped quietly
    add_proc(root, 12, comm=b"garbled", status=b"Uid:\tabc\t0\nVmSwap:\t5 kB\n")
    big_stat = stat_line(13, b"big") .rstrip(b"\n") + b" " * 5000 + b"99\n"  # > 4096 bytes
    add_proc(root, 13, stat=big_stat)
    add_proc(root, 14, stat=b"14 (" + b"c" * 5000 + b") S 1\n")  # ')' beyond the cap
    add_proc(root, 15, comm=b"novsz", ntail=20)  # vsize and rss missing
    add_proc(root, 16, comm=b"novrss", ntail=21)  # rss missing
    add_proc(root, 17, comm=b"tty", tty=34816 + 3)
    add_proc(root, 18, comm=b"emptycmd", cmdline=b"\0")  # -> ("",)
    add_proc(root, 19, comm=b"cmdnul", cmdline=b"a\0\0b")  # no trailing NUL
    add_proc(root, 20, comm=b"cg", cgroup=b"0::/caf\xc3\n\n")
    add_proc(root, 21, comm=b"exe", exe=b"/opt/\xff\xfe/bin")
    add_proc(root, 22, comm=b"nolimits", limits=None)  # ENOENT counted
    add_proc(root, 23, comm=b"unlim", limits=LIMITS.replace(b"1024   ", b"unlimited"))
    add_proc(root, 24, comm=b"badlim", limits=b"Max open files   lots\n")
    add_proc(root, 25, comm=b"nofdline", limits=b"Max cpu time 1 1\n")
    add_proc(root, 26, comm=b"nofd", fds=None)  # ENOENT counted
    d = add_proc(root, 27, comm=b"fdfile", fds=None)
    (d / "fd").write_bytes(b"")  # ENOTDIR
    d = add_proc(root, 28, stat=None)
    (d / "stat").mkdir()  # EISDIR: counted, dropped
    add_proc(root, 29, comm=b"huge", utime=2**53 + 1, stime=10**30, start=2**64 + 7, rss=2**62,
             vsize=10**25, minflt=2**64, tty=2**65 + 5)
    add_proc(root, 30, comm=b"keys", status=b"Uid :\t1\nUid:\t7\nUid:\t8 8\nVmSwapX:\t1\n"
             b"VmSwap:\t3 kB\nvoluntary_ctxt_switches:\t1\nvoluntary_ctxt_switches:\t2\n",
             io=b"read_bytes:\t5\nwrite_bytes:   \n")  # later key wins; empty value malformed
    add_proc(root, 31, comm=b"badnum", stat=stat_line(31, b"badnum", minflt=b"1e3"))
    add_proc(root, 32, comm=b"neg", io=b"read_bytes: -5\nwrite_bytes: 1\n")
    add_proc(root, 33, comm=b"nul\0in", status=b"Uid\0:\t5\nUid:\t6\n" + b"\0" * 10)
    add_proc(root, 34, stat=b"garbage without parens\n")
    add_proc(root, 35, stat=b"")
    add_proc(root, 36, comm=b"ws", stat=stat_line(36, b"ws").replace(b" ", b"\t\x0b\x0c\r "))
    add_proc(root, 37, comm=b"ws1c", stat=stat_line(37, b"ws1c").replace(b" 1 ", b" 1\x1c ", 1))
    add_proc(root, 38, comm=b"uid_big", status=status_text(uid=2**40))
    add_proc(root, 0o100, comm=b"octal")  # "64"
    os.rename(root / "64", root / "0064")  # leading zeros: pid 64 read from "64/" -> gone


def compare(root):
    py = Collector(str(root), "python", facts(root))
    nat = Collector(str(root), "native", facts(root))
    try:
        a, b = py.snapshot(), nat.snapshot()
        assert a.backend == "python" and b.backend == "native"
        assert [p.pid for p in b.processes] == [p.pid for p in a.processes]
        for x, y in zip(a.processes, b.processes):
            assert type(y) is Process
            assert y == x, {f: (u, v) for f, u, v in zip(Process._fields, x, y) if u != v}
            # bit-identical floats, not merely ==
            for f in ("start_time_seconds", "cpu_user_seconds", "cpu_system_seconds"):
                assert repr(getattr(x, f)) == repr(getattr(y, f))
        assert b.errors == a.errors
        return a, b
    finally:
        py.close()
        nat.close()


def test_nasty_tree(tmp_path):
    root = make_root(tmp_path)
    nasty_tree(root)
    a, b = compare(root)
    by_pid = {p.pid: p for p in b.processes}
    # spot checks that the scenarios do what they say
    assert by_pid[2].comm == "a) b (c"
    assert by_pid[3].comm == "x) Z 1 1" and by_pid[3].state == "S"
    assert by_pid[5].comm == "caf\ufffd"
    assert by_pid[6].cmdline == ("ab\ufffd\ufffd", "c")
    assert 7 not in by_pid and 11 not in by_pid and 14 not in by_pid and 28 not in by_pid
    assert by_pid[8].cmdline == () and by_pid[8].exe is None
    assert by_pid[9].is_kernel_thread and by_pid[9].read_bytes is None and by_pid[9].swap_bytes is None
    assert by_pid[12].uid is None and by_pid[12].swap_bytes is None
    assert by_pid[13].rss_bytes == 250 * 4096
    assert by_pid[15].vms_bytes is None and by_pid[15].rss_bytes is None
    assert by_pid[16].vms_bytes == 1000000 and by_pid[16].rss_bytes is None
    assert by_pid[17].tty == "pts/3"
    assert by_pid[18].cmdline == ("",) and by_pid[19].cmdline == ("a", "", "b")
    assert by_pid[20].cgroup == "0::/caf\ufffd"
    assert by_pid[23].max_fds is None and by_pid[1].max_fds == 1024
    assert by_pid[29].start_ticks == 2**64 + 7 and by_pid[29].minor_faults == 2**64
    assert by_pid[30].uid == 8 and by_pid[30].ctx_voluntary == 2 and by_pid[30].read_bytes is None
    assert by_pid[36].ppid == 1 and 37 not in by_pid
    assert b.errors["malformed"] >= 8 and b.errors["ENOENT"] >= 3
    assert {"ENOTDIR", "EISDIR"} <= set(b.errors)


@pytest.mark.parametrize(
    "case",
    ["empty", "one", "kthread_only", "all_missing"],
)
def test_small_trees(tmp_path, case):
    root = make_root(tmp_path)
    if case == "one":
        add_proc(root, 4242, comm=b"one")
    elif case == "kthread_only":
        add_proc(root, 2, comm=b"kworker/0:1-events", flags=0x04208060, cmdline=b"", exe=None,
                 io=b"", status=b"Name:\tkworker\n", fds=0)
    elif case == "all_missing":
        add_proc(root, 5, stat=DEFAULT, status=None, io=None, limits=None, cmdline=None, cgroup=None,
                 exe=None, fds=None)
    compare(root)


def test_sequence_exec_reuse_and_exit(tmp_path):
    """Static facts are cached per (pid, start_ticks, comm) alike in both backends."""
    root = make_root(tmp_path)
    add_proc(root, 100, comm=b"sh", cmdline=b"sh\0", start=500)
    add_proc(root, 101, comm=b"stay", cmdline=b"stay\0", start=501)
    add_proc(root, 102, comm=b"dies", start=502)
    py = Collector(str(root), "python", facts(root))
    nat = Collector(str(root), "native", facts(root))

    def both():
        a, b = py.snapshot(), nat.snapshot()
        assert b.processes == a.processes and b.errors == a.errors
        return {p.pid: p for p in b.processes}

    try:
        first = both()
        again = both()
        assert again == first
        assert again[101].cmdline is first[101].cmdline  # the memoized tuple is shared
        # same identity, new cmdline text: both keep the memoized cmdline
        (root / "101" / "cmdline").write_bytes(b"changed\0")
        assert both()[101].cmdline == ("stay",)
        # exec: comm changes -> static facts re-read
        (root / "100" / "stat").write_bytes(stat_line(100, b"python3", start=500))
        (root / "100" / "cmdline").write_bytes(b"python3\0-m\0x\0")
        assert both()[100].cmdline == ("python3", "-m", "x")
        # pid reuse: start_ticks changes -> re-read
        (root / "101" / "stat").write_bytes(stat_line(101, b"stay", start=9000))
        assert both()[101].cmdline == ("changed",)
        # exit
        for name in os.listdir(root / "102"):
            p = root / "102" / name
            if p.is_dir() and not p.is_symlink():
                for q in os.listdir(p):
                    os.unlink(p / q)
                os.rmdir(p)
            else:
                os.unlink(p)
        os.rmdir(root / "102")
        assert 102 not in both()
        # a malformed stat drops the process and forgets its facts (both backends)
        (root / "101" / "stat").write_bytes(b"101 (stay) S\n")
        both()
        (root / "101" / "cmdline").write_bytes(b"after\0")
        (root / "101" / "stat").write_bytes(stat_line(101, b"stay", start=9000))
        assert both()[101].cmdline == ("after",)
        nat.close()
        py.close()
        both()  # usable after close
    finally:
        py.close()
        nat.close()


def test_root_errors(tmp_path):
    missing = tmp_path / "nope"
    for backend in ("python", "native"):
        c = Collector(str(missing), backend, HostFacts(procfs=str(missing), clock_ticks=100,
                                                       page_size=4096, boot_time=BTIME))
        with pytest.raises(FileNotFoundError, match="cannot list procfs root"):
            c.snapshot()


def test_bad_record_type():
    from exporter import _collector

    with pytest.raises(TypeError):
        _collector.Collector("/proc", dict, 100, 4096, 0)
    with pytest.raises(TypeError):
        _collector.Collector("/proc", tuple, 100, 4096, 0)
    with pytest.raises(ValueError):
        _collector.Collector("/proc", Process, 0, 4096, 0)


# -- live /proc ------------------------------------------------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def sleepers():
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(5)]
    deadline = time.monotonic() + 10
    for p in procs:  # settled in their sleep: nothing about them changes any more
        while open(f"/proc/{p.pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[0] != b"S":
            assert time.monotonic() < deadline, "sleep did not go to sleep"
            time.sleep(0.01)
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def test_live_proc(sleepers):
    py = Collector("/proc", "python")
    nat = Collector("/proc", "native")
    try:
        nat.snapshot()  # warm: the kept fds exist from here on
        b = nat.snapshot()
        a = py.snapshot()
        c = nat.snapshot()
    finally:
        py.close()
    na = {p.pid: p for p in a.processes}
    nb = {p.pid: p for p in b.processes}
    nc = {p.pid: p for p in c.processes}
    me = os.getpid()
    stable = [
        pid for pid in nb
        if pid in na and pid in nc and pid != me
        and nb[pid][:6] == nc[pid][:6] and nb[pid][7:9] == nc[pid][7:9]  # identity, state, cpu
        and nb[pid][:6] == na[pid][:6]
    ]
    assert len(stable) >= 0.5 * len(nb)
    same = [pid for pid in stable if nb[pid] == na[pid] or nc[pid] == na[pid]]
    assert len(same) >= 0.5 * len(stable), [
        {f: (u, v) for f, u, v in zip(Process._fields, na[pid], nb[pid]) if u != v}
        for pid in stable if pid not in same
    ][:5]
    for s in sleepers:  # idle processes match exactly
        assert nb[s.pid] == na[s.pid], (nb[s.pid], na[s.pid])
        assert nb[s.pid].cmdline == ("sleep", "60")
    for f in ("pid", "ppid", "comm", "start_ticks", "start_time_seconds", "uid", "username",
              "exe", "cmdline", "cgroup", "max_fds", "is_kernel_thread"):
        assert getattr(nb[me], f) == getattr(na[me], f), f
    assert nb[me].cmdline == tuple(sys.orig_argv)
    assert set(b.errors) - {"ENOENT", "ESRCH"} == set(a.errors) - {"ENOENT", "ESRCH"}

    # the native backend keeps 4 fds per process (stat, status, io, fd dir); close() gives them back
    before = _open_fds()
    nat.close()
    after = _open_fds()
    assert before - after >= 4 * len(sleepers)


def test_live_exit_is_seen(tmp_path):
    nat = Collector("/proc", "native")
    try:
        p = subprocess.Popen(["sleep", "60"])
        assert p.pid in {x.pid for x in nat.snapshot().processes}
        p.kill()
        p.wait()
        snap = nat.snapshot()
        assert p.pid not in {x.pid for x in snap.processes}
        assert "ESRCH" not in snap.errors
    finally:
        nat.close()


def test_threads_serialize(tmp_path):
    root = make_root(tmp_path)
    nasty_tree(root)
    nat = Collector(str(root), "native", facts(root))
    expected = nat.snapshot()
    results, errors = [], []

    def run():
        try:
            for _ in range(50):
                s = nat.snapshot()
                results.append(s.processes == expected.processes and s.errors == expected.errors)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nat.close()
    assert not errors and all(results) and len(results) == 200


def _garble(rng, data: bytes) -> bytes:
    alphabet = b"() :\n\t\x0b\x0c\r\x1c0123456789-kB\0\xff\xc3\xa9"
    data = bytearray(data)
    for _ in range(rng.randrange(4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.choice(alphabet)
        elif op == 1:
            del data[pos:]
        elif op == 2:
            data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
        elif op == 3:
            data[pos : pos + rng.randrange(1, 8)] = b""
    return bytes(data)


@pytest.mark.parametrize("seed", range(5))
def test_garbled_random(tmp_path, seed):
    """Randomly garbled files: both backends agree on every record and every count."""
    import random

    rng = random.Random(seed)
    root = make_root(tmp_path)
    for pid in range(1, 60):
        comm = bytes(rng.choice(b"ab) (\xc3\xa9x\n") for _ in range(rng.randrange(0, 10)))
        add_proc(
            root,
            pid,
            comm=comm.replace(b"/", b""),
            stat=_garble(rng, stat_line(pid, comm, utime=rng.randrange(10**20), start=rng.randrange(10**6))),
            status=_garble(rng, status_text(uid=rng.randrange(70000))),
            io=_garble(rng, IO),
            limits=_garble(rng, LIMITS),
            cmdline=_garble(rng, b"/bin/x\0-a\0\xff\0"),
            cgroup=_garble(rng, b"0::/a\n"),
        )
    compare(root)


def test_fd_budget(sleepers):
    """With a small RLIMIT_NOFILE, only (soft - 512) / 4 processes keep their fds; the
    others are read with open/pread/close, and the results do not change."""
    code = r"""
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (600, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from exporter.collector import Collector
base = len(os.listdir("/proc/self/fd"))
nat, py = Collector("/proc", "native"), Collector("/proc", "python")
for _ in range(3):
    b = nat.snapshot()
a = py.snapshot()
kept = len(os.listdir("/proc/self/fd")) - base
assert kept <= 4 * ((600 - 512) // 4) + 1, kept
na = {p.pid: p for p in a.processes}
pids = [int(x) for x in sys.argv[1:]]
for pid in pids:
    mine = [p for p in b.processes if p.pid == pid][0]
    assert mine == na[pid], (mine, na[pid])
print("ok", kept)
"""
    out = subprocess.run([sys.executable, "-c", code] + [str(p.pid) for p in sleepers],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_fd_limit_is_reread_every_16th_walk_by_both_backends():
    """prlimit runs for a new identity, then only when (pid + walk number) % 16 == 0: a
    changed limit shows at that walk, identically in both backends, never later."""
    import resource

    child = subprocess.Popen(["sleep", "60"])
    try:
        hard = resource.prlimit(child.pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(child.pid, resource.RLIMIT_NOFILE, (100, hard))
        native, python = Collector("/proc", "native"), Collector("/proc", "python")
        changed_at = None
        seen = []
        for walk in range(1, 21):
            if walk == 3:
                resource.prlimit(child.pid, resource.RLIMIT_NOFILE, (200, hard))
                changed_at = walk
            got = [next(p.max_fds for p in c.snapshot().processes if p.pid == child.pid) for c in (native, python)]
            assert got[0] == got[1], (walk, got)
            seen.append(got[0])
            reread = [w for w in range(changed_at or walk + 1, walk + 1) if (child.pid + w) % 16 == 0]
            assert got[0] == (200 if reread else 100), (walk, got, reread)
        assert seen[0] == 100 and seen[-1] == 200
        native.close()
        python.close()
    finally:
        child.kill()
        child.wait()
