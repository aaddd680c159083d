"""The C reader (exporter._reader) gives exactly what its Python twin (exporter.procfs)
gives: the same records, the same unreadable pids, the same error counts, the same facts;
and the grouper's column sums in C (group_columns) are their Python twin's.

Fixture trees are built here with tmp_path (self-contained; tests/fixtures belongs to the
snapshot tests). Each scenario is read by both backends and compared value by value and
type by type (True is not 1 here); then the live /proc is compared on processes this test
starts itself. Nothing here needs root or looks at processes the test did not start.
"""

from __future__ import annotations

import errno
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import needs_native
from helpers import asleep, settle
import exporter.grouper as grouper_module
import exporter.tracker as tracker_module
from exporter.procfs import FILE_MAX, PythonReader
from exporter.reader import (
    F,
    KEPT_PER_PROCESS,
    FIELDS,
    MALFORMED,
    PF_KTHREAD,
    UNLIMITED,
    WANT_ALL,
    WANT_CGROUP,
    WANT_CMDLINE,
    WANT_EXE,
    WANT_NOFILE,
    WANT_THREADS,
    Fact,
    Reader,
    THREAD_FIELDS,
    keep_open_budget,
)

pytestmark = needs_native

PAGE = 4096
U64_MAX = 2**64 - 1
ROOT = os.geteuid() == 0

# -- fixture trees ------------------------------------------------------------------------

# The 50 fields after "(comm)" of a 52-field /proc/PID/stat line, with values that would be
# wrong if picked by mistake. The mm addresses are those of a real process.
STAT_FIELDS = (
    ("state", b"S"), ("ppid", 1), ("pgrp", None), ("session", None), ("tty", 0), ("tpgid", -1),
    ("flags", 0x400100), ("minflt", 10), ("cminflt", 7), ("majflt", 1), ("cmajflt", 9),
    ("utime", 150), ("stime", 25), ("cutime", 11), ("cstime", 13), ("priority", 20), ("nice", 0),
    ("threads", 1), ("itrealvalue", 0), ("start", 12345), ("vsize", 1000000), ("rss", 250),
    ("rsslim", U64_MAX), ("start_code", 0x55D0E0A00000), ("end_code", 0x55D0E0A4D1A9),
    ("start_stack", 0x7FFD2F9AC1D0), ("kstkesp", 0), ("kstkeip", 0), ("signal", 0),
    ("blocked", 0), ("sigignore", 0), ("sigcatch", 0), ("wchan", 0), ("nswap", 0), ("cnswap", 0),
    ("exit_signal", 17), ("processor", 1), ("rt_priority", 0), ("policy", 0), ("blkio", 0),
    ("guest_time", 0), ("cguest_time", 0), ("start_data", 0x55D0E0A5E010),
    ("end_data", 0x55D0E0A5F2A0), ("start_brk", 0x55D0E1C3B000), ("arg_start", 0x7FFD2F9AD1E2),
    ("arg_end", 0x7FFD2F9AD1F6), ("env_start", 0x7FFD2F9AD1F6), ("env_end", 0x7FFD2F9ADFE9),
    ("exit_code", 0),
)
assert len(STAT_FIELDS) == 50
STAT_NAMES = {name for name, _ in STAT_FIELDS}
MM_FIELDS = ("arg_start", "arg_end", "env_end", "start_code", "end_code", "start_stack")
# what the kernel shows of the mm to who may not ptrace the process (do_task_stat)
HIDDEN_MM = dict(start_code=1, end_code=1, start_stack=0, start_data=0, end_data=0, start_brk=0,
                 arg_start=0, arg_end=0, env_start=0, env_end=0)
NO_MM = dict(HIDDEN_MM, start_code=0, end_code=0)  # zombies and kernel threads: no mm at all


def stat_line(pid, comm: bytes, nfields: int = 52, **values) -> bytes:
    """A /proc/PID/stat line of nfields fields (pid and comm included). A value may be an
    int or the raw token (bytes)."""
    unknown = set(values) - STAT_NAMES
    assert not unknown, unknown
    tokens = []
    for name, default in STAT_FIELDS[: nfields - 2]:
        v = values.get(name, default)
        if v is None:
            v = pid
        tokens.append(v if isinstance(v, bytes) else str(v).encode())
    return str(pid).encode() + b" (" + comm + b") " + b" ".join(tokens) + b"\n"


def status_text(uid=1000, swap_kb=12, vol=5, nonvol=2, name=b"x", pad_lines=0, mm=True) -> bytes:
    lines = [b"Name:\t" + name, b"Umask:\t0022", b"State:\tS (sleeping)", b"Tgid:\t1"]
    lines += [b"Pad%05d:\t%d kB" % (i, i) for i in range(pad_lines)]
    lines += [f"Uid:\t{uid}\t{uid + 1}\t{uid + 2}\t{uid + 3}".encode(), b"Gid:\t0\t0\t0\t0"]
    if mm:
        lines += [b"VmRSS:\t     1000 kB", f"VmSwap:\t{swap_kb:>8} kB".encode()]
    lines += [b"Threads:\t1", f"voluntary_ctxt_switches:\t{vol}".encode(),
              f"nonvoluntary_ctxt_switches:\t{nonvol}".encode()]
    return b"\n".join(lines) + b"\n"


def io_text(read_bytes=4096, write_bytes=8192) -> bytes:
    return (b"rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 2\nread_bytes: %d\nwrite_bytes: %d\n"
            b"cancelled_write_bytes: 4096\n" % (read_bytes, write_bytes))


IO = io_text()
LIMITS = (
    b"Limit                     Soft Limit           Hard Limit           Units     \n"
    b"Max cpu time              unlimited            unlimited            seconds   \n"
    b"Max open files            1024                 4096                 files     \n"
    b"Max locked memory         8388608              8388608              bytes     \n"
)
DEFAULT = object()


class Fifo:
    """A named pipe in place of a file (mkfifo: no privilege needed)."""


class Dir:
    """A directory in place of a file."""


class Link:
    def __init__(self, target):
        self.target = target


class Mode:
    """A file with these bytes and permission bits (0: unreadable, except to root)."""

    def __init__(self, data: bytes, mode: int):
        self.data, self.mode = data, mode


def put(path, spec) -> None:
    if spec is None:
        return
    if isinstance(spec, Fifo):
        os.mkfifo(path)
    elif isinstance(spec, Dir):
        os.mkdir(path)
    elif isinstance(spec, Link):
        os.symlink(spec.target, path)
    elif isinstance(spec, Mode):
        with open(path, "wb") as f:
            f.write(spec.data)
        os.chmod(path, spec.mode)
    else:
        with open(path, "wb") as f:
            f.write(spec)


def add_proc(root, pid, comm=b"proc", stat=DEFAULT, status=DEFAULT, io=DEFAULT, limits=DEFAULT,
             cmdline=DEFAULT, cgroup=DEFAULT, exe=DEFAULT, fds=3, wchan=b"0", smaps_rollup=None, **stat_kw):
    """One /proc/PID directory. DEFAULT = a plausible file, None = missing, or a Fifo, Dir,
    Link or Mode."""
    d = root / str(pid)
    d.mkdir()
    files = {
        "stat": stat_line(pid, comm, **stat_kw) if stat is DEFAULT else stat,
        "status": status_text() if status is DEFAULT else status,
        "io": IO if io is DEFAULT else io,
        "limits": LIMITS if limits is DEFAULT else limits,
        "cmdline": b"/usr/bin/" + comm + b"\0--flag\0" if cmdline is DEFAULT else cmdline,
        "cgroup": b"0::/user.slice/x.scope\n" if cgroup is DEFAULT else cgroup,
        "wchan": wchan,
        "smaps_rollup": smaps_rollup,
    }
    for name, spec in files.items():
        put(os.fsencode(d / name), spec)
    if exe is DEFAULT:
        exe = b"/usr/bin/" + comm.replace(b"/", b"_").replace(b"\0", b"")
    if exe == b"":
        put(os.fsencode(d / "exe"), b"")  # a regular file, not a symlink
    elif exe is not None:
        put(os.fsencode(d / "exe"), exe if isinstance(exe, (Fifo, Dir, Link, Mode)) else Link(exe))
    if fds is not None:
        (d / "fd").mkdir()
        for i in range(fds):
            os.symlink("/dev/null", d / "fd" / str(i))
    return d


def remove_proc(root, pid) -> None:
    d = root / str(pid)
    for name in os.listdir(d):
        p = d / name
        if p.is_dir() and not p.is_symlink():
            for q in os.listdir(p):
                os.unlink(p / q)
            os.rmdir(p)
        else:
            os.unlink(p)
    os.rmdir(d)


def make_root(tmp_path):
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_bytes(b"cpu  1 2 3 4\nbtime 1700000000\nprocesses 10\n")
    (root / "self").mkdir()  # non-numeric names are not processes
    (root / "12abc").mkdir()
    return root


def nasty_tree(root):
    add_proc(root, 1, comm=b"init", status=status_text(uid=0))
    add_proc(root, 2, comm=b"a) b (c")
    add_proc(root, 3, comm=b"x) Z 1 1")  # a comm that looks like fields
    add_proc(root, 4, comm=b"new\nline")
    add_proc(root, 5, comm=b"caf\xc3")  # cut inside a UTF-8 character
    add_proc(root, 6, comm=b"\xff\xfebad", cmdline=b"ab\xff\xfe\0c\0")  # invalid UTF-8
    add_proc(root, 7, stat=b"7 (short) S 1 1 1 0 -1\n")  # short stat: malformed
    add_proc(root, 8, comm=b"zombie", state=b"Z", cmdline=b"", exe=None, fds=0, vsize=0, rss=0,
             status=status_text(mm=False), **NO_MM)
    add_proc(root, 9, comm=b"kthreadd", flags=0x00208040, cmdline=b"", exe=None, io=None, fds=0,
             vsize=0, rss=0, status=b"Name:\tkthreadd\nUid:\t0\t0\t0\t0\nvoluntary_ctxt_switches:\t9\n"
             b"nonvoluntary_ctxt_switches:\t0\n", **NO_MM)
    add_proc(root, 10, comm=b"noio", io=None)  # missing io: ENOENT counted, fields None
    (root / "11").mkdir()  # a pid dir with no files: gone, dropped quietly
    add_proc(root, 12, comm=b"garbled", status=b"Uid:\tabc\t0\nVmSwap:\t5 kB\n")
    big_stat = stat_line(13, b"big").rstrip(b"\n") + b" " * 5000 + b"99\n"  # > 4096 bytes
    add_proc(root, 13, stat=big_stat)
    add_proc(root, 14, stat=b"14 (" + b"c" * 5000 + b") S 1\n")  # ')' beyond 4096, short
    add_proc(root, 15, comm=b"novsz", nfields=22)  # vsize and rss missing
    add_proc(root, 16, comm=b"norss", nfields=23)  # rss missing
    add_proc(root, 17, comm=b"tty", tty=34816 + 3)
    add_proc(root, 18, comm=b"emptycmd", cmdline=b"\0")
    add_proc(root, 19, comm=b"cmdnul", cmdline=b"a\0\0b")  # no trailing NUL
    add_proc(root, 20, comm=b"cg", cgroup=b"0::/caf\xc3\n\n")
    add_proc(root, 21, comm=b"exe", exe=b"/opt/\xff\xfe/bin")
    add_proc(root, 22, comm=b"nolimits", limits=None)  # ENOENT counted
    add_proc(root, 23, comm=b"unlim", limits=LIMITS.replace(b"1024     ", b"unlimited"))
    add_proc(root, 24, comm=b"badlim", limits=b"Max open files   lots\n")
    add_proc(root, 25, comm=b"nofdline", limits=b"Max cpu time 1 1\n")
    add_proc(root, 26, comm=b"nofd", fds=None)  # ENOENT counted
    d = add_proc(root, 27, comm=b"fdfile", fds=None)
    (d / "fd").write_bytes(b"")  # ENOTDIR
    add_proc(root, 28, stat=Dir())  # not a regular file: EINVAL, unreadable
    add_proc(root, 29, comm=b"huge", utime=2**53 + 1, stime=10**30, start=2**64 + 7, rss=2**62,
             vsize=10**25, minflt=2**64, tty=2**65 + 5)
    add_proc(root, 30, comm=b"keys", status=b"Uid :\t1\nUid:\t7\nUid:\t8 8\nVmSwapX:\t1\n"
             b"VmSwap:\t3 kB\nvoluntary_ctxt_switches:\t1\nvoluntary_ctxt_switches:\t2\n",
             io=b"read_bytes:\t5\nwrite_bytes:   \n")  # later key wins; empty value malformed
    add_proc(root, 31, comm=b"badnum", minflt=b"1e3")
    add_proc(root, 32, comm=b"neg", io=b"read_bytes: -5\nwrite_bytes: 1\n")
    add_proc(root, 33, comm=b"nul\0in", status=b"Uid\0:\t5\nUid:\t6\n" + b"\0" * 10)
    add_proc(root, 34, stat=b"garbage without parens\n")
    add_proc(root, 35, stat=b"")
    add_proc(root, 36, comm=b"ws", stat=stat_line(36, b"ws").replace(b" ", b"\t\x0b\x0c\r "))
    add_proc(root, 37, comm=b"ws1c", stat=stat_line(37, b"ws1c").replace(b" 1 ", b" 1\x1c ", 1))
    add_proc(root, 38, comm=b"uid_big", status=status_text(uid=2**40))
    add_proc(root, 39, comm=b"Web Content")  # spaces
    add_proc(root, 40, comm=b"")
    add_proc(root, 41, comm=b"a) (b")
    add_proc(root, 42, comm=b"io000", io=Mode(IO, 0))  # EACCES unless root
    add_proc(root, 43, comm=b"iodir", io=Dir())  # EINVAL
    add_proc(root, 44, comm=b"iolink", io=Link("nowhere"))  # ENOENT, the process is there
    add_proc(root, 45, comm=b"nostatus", status=None)
    add_proc(root, 46, stat=Link("nowhere"))  # stat vanished: dropped quietly
    add_proc(root, 47, stat=Link("../1/stat"))
    (root / "48").write_bytes(b"")  # a file, not a directory: ENOTDIR, unreadable
    add_proc(root, 49, comm=b"crlf", status=status_text(uid=49).replace(b"\n", b"\r\n"))
    add_proc(root, 50, comm=b"manyfds", fds=300)
    add_proc(root, 51, comm=b"twolim", limits=LIMITS + b"Max open files 7 7 files\n")
    add_proc(root, 52, comm=b"long", stat=stat_line(52, b"long").rstrip(b"\n") + b" 1 2 3 x y\n")
    add_proc(root, 53, comm=b"rssover", rss=2**52)  # rss * 4096 > 2**64-1: malformed
    add_proc(root, 54, comm=b"rssmax", rss=2**52 - 1)
    add_proc(root, 55, comm=b"swapover", status=status_text(swap_kb=2**54))  # * 1024 overflows
    add_proc(root, 56, comm=b"swapmax", status=status_text(swap_kb=2**54 - 1))
    add_proc(root, 57, comm=b"u64max", utime=U64_MAX)
    add_proc(root, 58, comm=b"u64over", utime=U64_MAX + 1)
    add_proc(root, 59, comm=b"((")
    add_proc(root, 60, comm=b"nonl", stat=stat_line(60, b"nonl").rstrip(b"\n"))
    add_proc(root, 61, comm=b"exefile", exe=b"")  # readlink of a regular file: EINVAL
    add_proc(root, 62, comm=b"cmd000", cmdline=Mode(b"secret\0", 0))
    add_proc(root, 63, comm=b"hidden", **HIDDEN_MM)
    add_proc(root, 0o100, comm=b"octal")  # "64"
    os.rename(root / "64", root / "0064")  # leading zeros: pid 64 read from "64/" -> gone
    add_proc(root, 65, comm=b"waits", wchan=b"do_select")
    add_proc(root, 66, comm=b"nowchan", wchan=None)  # a kernel without CONFIG_KALLSYMS: None, no error
    add_proc(root, 67, comm=b"wchandir", wchan=Dir())  # EINVAL
    add_proc(root, 68, comm=b"wchanbad", wchan=b"caf\xc3")
    add_proc(root, 2147483647, comm=b"pidmax")
    for name in ("2147483648", "99999999999", "-1", "+5", "\u0661\u0662", "1 2", "0x10"):
        add_proc(root, name, comm=b"notapid")


# -- comparing the backends ---------------------------------------------------------------


def typed(x):
    """x with the type of every value beside it: equal only when the values and their types
    are (True == 1 but not here)."""
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [typed(v) for v in x])
    if isinstance(x, dict):
        return ("dict", sorted((repr(k), typed(v)) for k, v in x.items()))
    return (type(x).__name__, x)


def diff(x, y):
    return {f: (u, v) for f, u, v in zip(FIELDS, x, y) if typed(u) != typed(v)}


def pair(root, keep="off"):
    return Reader(str(root), "native", PAGE, keep), Reader(str(root), "python", PAGE, keep)


def read_both(nat, py):
    """One read by each: equal records, unreadable lists and error dicts. The native one."""
    a, b = nat.read(), py.read()
    for rec in a.records + b.records:
        assert type(rec) is tuple and len(rec) == len(FIELDS), rec
    assert [r[0] for r in a.records] == [r[0] for r in b.records]
    for x, y in zip(a.records, b.records):
        assert typed(x) == typed(y), (x[0], diff(x, y))
    assert typed(a.unreadable) == typed(b.unreadable)
    assert a.errors == b.errors
    return a


def facts_both(nat, py, requests):
    fa, ea = nat.read_facts(requests)
    fb, eb = py.read_facts(requests)
    assert len(fa) == len(requests)
    for x, y in zip(fa, fb):
        assert type(x) is Fact and typed(x) == typed(y), (x, y)
    assert ea == eb
    return fa, ea


def requests_of(reading, want=WANT_ALL):
    reqs = [(r[0], r[F["start_ticks"]], want) for r in reading.records]
    reqs += [(pid, 0, want) for pid, _ in reading.unreadable]  # malformed stat: gone
    return reqs


def compare(root):
    """Both backends through exporter.reader, and the raw C and Python readers (int errno
    keys, -1 malformed), on one tree. The native Reading, and the facts of every record."""
    nat, py = pair(root)
    a = read_both(nat, py)
    facts, ferrors = facts_both(nat, py, requests_of(a))
    from exporter import _reader

    raw_c = _reader.Reader(str(root), PAGE, 0)
    raw_py = PythonReader(str(root), PAGE)
    ra, rb = raw_c.read(), raw_py.read()
    assert typed(ra) == typed(rb)
    reqs = requests_of(a, WANT_ALL)
    assert typed(raw_c.read_facts(reqs)) == typed(raw_py.read_facts(reqs))
    nat.close()
    return a, {f.pid: f for f in facts}, ferrors


# -- fixture trees: both backends alike ---------------------------------------------------


def test_nasty_tree(tmp_path):
    root = make_root(tmp_path)
    nasty_tree(root)
    a, facts, ferrors = compare(root)
    rec = {r[0]: dict(zip(FIELDS, r)) for r in a.records}
    bad = dict(a.unreadable)
    # spot checks that the scenarios do what they say
    assert rec[2]["comm"] == "a) b (c" and rec[41]["comm"] == "a) (b" and rec[59]["comm"] == "(("
    assert rec[3]["comm"] == "x) Z 1 1" and rec[3]["state"] == "S"
    assert rec[4]["comm"] == "new\nline" and rec[39]["comm"] == "Web Content" and rec[40]["comm"] == ""
    assert rec[5]["comm"] == "caf\ufffd" and rec[6]["comm"] == "\ufffd\ufffdbad"
    assert rec[33]["comm"] == "nul\0in" and rec[33]["uid"] == 6
    for pid in (7, 14, 29, 31, 34, 35, 37, 53, 58):
        assert bad[pid] == MALFORMED, pid
    assert bad[28] == errno.EINVAL and bad[48] == errno.ENOTDIR
    assert len(bad) == 11
    for pid in (11, 46, 64, 2147483648):
        assert pid not in rec and pid not in bad
    assert rec[2147483647]["comm"] == "pidmax"
    assert rec[8]["state"] == "Z" and rec[8]["mark"] == 0 and rec[8]["swap_bytes"] == 0  # no mm: none swapped
    assert rec[9]["flags"] & PF_KTHREAD and rec[9]["read_bytes"] is None and rec[9]["mark"] == 0
    assert rec[9]["swap_bytes"] == 0 and rec[9]["ctx_voluntary"] == 9
    assert rec[10]["read_bytes"] is None and rec[10]["uid"] == 1000
    assert rec[1]["read_bytes"] == 4096 and rec[1]["write_bytes"] == 8192 and rec[1]["uid"] == 0
    assert rec[1]["swap_bytes"] == 12 * 1024 and rec[1]["open_fds"] == 3 and rec[1]["mark"] != 0
    assert rec[12]["uid"] is None and rec[12]["swap_bytes"] is None
    assert rec[13]["rss_bytes"] == 250 * 4096
    assert rec[15]["vms_bytes"] is None and rec[15]["rss_bytes"] is None and rec[15]["mark"] == 0
    assert rec[16]["vms_bytes"] == 1000000 and rec[16]["rss_bytes"] is None
    assert rec[17]["tty_nr"] == 34819
    assert rec[26]["open_fds"] is None and rec[27]["open_fds"] is None and rec[50]["open_fds"] == 300
    assert rec[30]["uid"] == 8 and rec[30]["ctx_voluntary"] == 2 and rec[30]["read_bytes"] is None
    assert rec[32]["read_bytes"] is None and rec[36]["ppid"] == 1
    assert rec[38]["uid"] == 2**40
    assert rec[42]["read_bytes"] == (4096 if ROOT else None)
    assert rec[43]["read_bytes"] is None and rec[44]["read_bytes"] is None
    assert rec[45]["uid"] is None and rec[45]["ctx_voluntary"] is None
    assert rec[47]["comm"] == "init" and rec[47]["pid"] == 47
    assert rec[49]["uid"] == 49
    assert rec[52]["mark"] == rec[1]["mark"]  # fields past 52 are ignored
    assert rec[54]["rss_bytes"] == (2**52 - 1) * 4096
    assert rec[55]["swap_bytes"] is None and rec[55]["uid"] is None and rec[55]["ctx_voluntary"] is None
    assert rec[56]["swap_bytes"] == (2**54 - 1) * 1024
    assert rec[57]["utime_ticks"] == U64_MAX
    assert rec[60]["comm"] == "nonl" and rec[60]["mark"] == rec[1]["mark"]
    assert rec[63]["mark"] == 0
    assert rec[1]["wchan"] == "0" and rec[65]["wchan"] == "do_select" and rec[66]["wchan"] is None
    assert [rec[1][f] for f in ("cutime_ticks", "cstime_ticks", "cminor_faults", "cmajor_faults")] == [11, 13, 7, 9]
    assert rec[67]["wchan"] is None and rec[68]["wchan"] == "caf\ufffd"
    # malformed: status of 12 and 55, io of 30 and 32; ENOENT: io of 9, 10, 44, fd of 26,
    # status of 45; ENOTDIR: fd of 27; EINVAL: io of 43, wchan of 67; EACCES: io of 42 (not to root)
    assert a.errors == {"malformed": 4, "ENOENT": 5, "ENOTDIR": 1, "EINVAL": 2, **({} if ROOT else {"EACCES": 1})}
    # the facts
    assert facts[1] == (1, False, b"/usr/bin/init\0--flag\0", b"/usr/bin/init", b"0::/user.slice/x.scope\n", 1024, None)
    assert facts[6].cmdline == b"ab\xff\xfe\0c\0" and facts[21].exe == b"/opt/\xff\xfe/bin"
    assert facts[8].exe is None and facts[8].cmdline == b"" and facts[19].cmdline == b"a\0\0b"
    assert facts[20].cgroup == b"0::/caf\xc3\n\n"
    assert facts[22].nofile is None and facts[23].nofile == UNLIMITED and facts[51].nofile == 1024
    assert facts[24].nofile is None and facts[25].nofile is None
    assert facts[61].exe is None and not facts[61].gone
    assert facts[62].cmdline == (b"secret\0" if ROOT else None)
    for pid in bad:
        assert facts[pid] == (pid, True, None, None, None, None, None)
    # ENOENT: limits of 22; malformed: limits of 24 and 25; EINVAL: exe of 61; EACCES: cmdline of 62
    assert ferrors == {"ENOENT": 1, "malformed": 2, "EINVAL": 1, **({} if ROOT else {"EACCES": 1})}


@pytest.mark.parametrize("case", ["empty", "one", "kthread_only", "all_missing", "no_pids", "unreadable_only"])
def test_small_trees(tmp_path, case):
    root = make_root(tmp_path)
    if case == "one":
        add_proc(root, 4242, comm=b"one")
    elif case == "kthread_only":
        add_proc(root, 2, comm=b"kworker/0:1-events", flags=0x04208060, cmdline=b"", exe=None,
                 io=b"", status=b"Name:\tkworker\n", fds=0, **NO_MM)
    elif case == "all_missing":
        add_proc(root, 5, status=None, io=None, limits=None, cmdline=None, cgroup=None, exe=None, fds=None)
    elif case == "no_pids":
        for name in ("sys", "net", "1x", "x1", ".1"):
            (root / name).mkdir()
    elif case == "unreadable_only":
        add_proc(root, 3, stat=b"3 (x\n")
    a, facts, _ = compare(root)
    count = len(a.records) + len(a.unreadable)
    assert count == {"empty": 0, "no_pids": 0}.get(case, 1)
    if case == "all_missing":
        r = dict(zip(FIELDS, a.records[0]))
        assert r["uid"] is None and r["read_bytes"] is None and r["open_fds"] is None
        assert a.errors == {"ENOENT": 3}
        assert facts[5] == (5, False, None, None, None, None, None)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_root_errors(tmp_path, kind):
    root = tmp_path / "nope"
    if kind == "file":
        root.write_bytes(b"")
    for backend in ("native", "python"):
        r = Reader(str(root), backend, PAGE, "off")
        with pytest.raises(OSError, match="cannot list") as info:
            r.read()
        assert info.value.errno == (errno.ENOENT if kind == "missing" else errno.ENOTDIR), backend


# -- numbers -------------------------------------------------------------------------------

NUMBERS = [
    pytest.param(b"18446744073709551615", U64_MAX, id="u64max"),
    pytest.param(b"18446744073709551616", None, id="u64max+1"),
    pytest.param(b"99999999999999999999", None, id="20digits"),
    pytest.param(b"184467440737095516150", None, id="21digits"),
    pytest.param(b"0" * 22 + b"18446744073709551615", U64_MAX, id="zeros+u64max"),
    pytest.param(b"9" * 400, None, id="400digits"),
    pytest.param(b"0" * 399 + b"7", 7, id="399zeros+7"),
    pytest.param(b"1" + b"0" * 399, None, id="1e399"),
]


def number_tree(root, where: str, token: bytes):
    """pid 7 with token as one number of file `where`; pid 8 plain beside it."""
    kw = {}
    if where == "stat":
        kw["utime"] = token
    elif where == "status":
        kw["status"] = status_text().replace(b"voluntary_ctxt_switches:\t5", b"voluntary_ctxt_switches:\t" + token)
    elif where == "io":
        kw["io"] = IO.replace(b"write_bytes: 8192", b"write_bytes: " + token)
    elif where == "limits":
        kw["limits"] = LIMITS.replace(b"1024     ", token + b" ")
    add_proc(root, 7, comm=b"num", **kw)
    add_proc(root, 8, comm=b"plain")


def check_number(a, facts, ferrors, where, expected):
    rec = {r[0]: dict(zip(FIELDS, r)) for r in a.records}
    assert 8 in rec and facts[8].nofile == 1024
    if where == "stat":
        if expected is None:
            assert a.unreadable == [(7, MALFORMED)] and 7 not in rec and facts[7].gone
        else:
            assert a.unreadable == [] and rec[7]["utime_ticks"] == expected
    elif where == "status":
        got = [rec[7][f] for f in ("uid", "swap_bytes", "ctx_voluntary", "ctx_nonvoluntary")]
        if expected is None:
            assert got == [None] * 4 and a.errors == {"malformed": 1}
        else:
            assert got == [1000, 12 * 1024, expected, 2] and a.errors == {}
    elif where == "io":
        got = [rec[7]["read_bytes"], rec[7]["write_bytes"]]
        if expected is None:
            assert got == [None, None] and a.errors == {"malformed": 1}
        else:
            assert got == [4096, expected] and a.errors == {}
    elif where == "limits":
        assert facts[7].nofile == expected and not facts[7].gone
        assert ferrors == ({"malformed": 1} if expected is None else {})


@pytest.mark.parametrize("where", ["stat", "status", "io", "limits"])
@pytest.mark.parametrize("token,expected", NUMBERS)
def test_numbers_fit_in_64_bits(tmp_path, where, token, expected):
    """Numbers of 20+ digits: above 2**64-1 the file is malformed, in both backends."""
    root = make_root(tmp_path)
    number_tree(root, where, token)
    a, facts, ferrors = compare(root)
    check_number(a, facts, ferrors, where, expected)


@pytest.mark.parametrize("where", ["stat", "status", "io", "limits"])
@pytest.mark.parametrize("token,expected", [
    pytest.param(b"9" * 5000, None, id="5000digits"),
    pytest.param(b"0" * 4400 + b"7", 7, id="4400zeros+7"),
])
def test_numbers_beyond_python_digit_limit(tmp_path, where, token, expected):
    root = make_root(tmp_path)
    number_tree(root, where, token)
    nat = Reader(str(root), "native", PAGE, "off")
    a = nat.read()
    facts, ferrors = nat.read_facts(requests_of(a))
    check_number(a, {f.pid: f for f in facts}, ferrors, where, expected)  # the C is right
    compare(root)


# -- garbled files -------------------------------------------------------------------------


def _garble(rng, data: bytes) -> bytes:
    alphabet = b"() :\n\t\x0b\x0c\r\x1c0123456789-kB\0\xff\xc3\xa9"
    data = bytearray(data)
    for _ in range(rng.randrange(5)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.choice(alphabet)
        elif op == 1:
            del data[pos:]
        elif op == 2:
            data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
        elif op == 3:
            data[pos : pos + rng.randrange(1, 8)] = b""
        else:  # long digit runs: around 2**64 (20 digits) and well beyond
            data[pos:pos] = bytes(rng.choice(b"0123456789") for _ in range(rng.choice((1, 5, 18, 19, 20, 21, 40))))
    return bytes(data)


def _big(rng) -> int:
    return rng.choice((rng.randrange(10**6), U64_MAX, U64_MAX + 1, rng.randrange(10**25), 2**63))


def _garbled_files(rng, pid) -> dict:
    comm = bytes(rng.choice(b"ab) (\xc3\xa9x\n") for _ in range(rng.randrange(0, 10)))
    return {
        "stat": _garble(rng, stat_line(pid, comm, utime=_big(rng), start=rng.randrange(10**6),
                                       minflt=_big(rng), rss=_big(rng), arg_start=_big(rng),
                                       nfields=rng.choice((22, 44, 51, 52, 52, 52)))),
        "status": _garble(rng, status_text(uid=rng.randrange(70000), swap_kb=_big(rng), vol=_big(rng))),
        "io": _garble(rng, io_text(_big(rng), _big(rng))),
        "limits": _garble(rng, LIMITS.replace(b"1024", str(_big(rng)).encode())),
        "cmdline": _garble(rng, b"/bin/x\0-a\0\xff\0"),
        "cgroup": _garble(rng, b"0::/a\n"),
    }


@pytest.mark.parametrize("seed", range(12))
def test_garbled_random(tmp_path, seed):
    """Randomly garbled files: both backends agree on every record, every unreadable pid,
    every count and every fact; then the files are garbled again (and pids come and go)
    under readers that live across the reads."""
    rng = random.Random(seed)
    root = make_root(tmp_path)
    for pid in range(1, 80):
        add_proc(root, pid, **_garbled_files(rng, pid))
    a, facts, _ = compare(root)
    assert len(a.records) + len(a.unreadable) == 79
    nat, py = pair(root)
    for round in range(4):
        if round:
            for pid in rng.sample(range(1, 80), 30):
                for name, data in _garbled_files(rng, pid).items():
                    (root / str(pid) / name).write_bytes(data)
        a = read_both(nat, py)
        fresh = Reader(str(root), "native", PAGE, "off").read()
        assert typed((fresh.records, fresh.unreadable)) == typed((a.records, a.unreadable))
        # facts asked with random wants and starts (right, wrong, and of pids not there)
        reqs = [(r[0], rng.choice((r[F["start_ticks"]], r[F["start_ticks"]] + 1)), rng.randrange(16))
                for r in a.records]
        reqs += [(pid, rng.randrange(10**6), rng.randrange(16)) for pid in range(1, 90)]
        facts_both(nat, py, reqs)


# -- sequences: exec, pid reuse, exit -------------------------------------------------------


def test_sequence_exec_reuse_and_exit(tmp_path):
    """Readers that live across reads (the C one caches per pid) agree with each other and
    with a fresh native reader at every step."""
    root = make_root(tmp_path)
    add_proc(root, 100, comm=b"sh", cmdline=b"sh\0", start=500)
    add_proc(root, 101, comm=b"stay", cmdline=b"stay\0", start=501)
    add_proc(root, 102, comm=b"dies", start=502)
    add_proc(root, 103, comm=b"python3", start=503)
    nat, py = pair(root)

    def step():
        a = read_both(nat, py)
        fresh = Reader(str(root), "native", PAGE, "off").read()
        assert typed(fresh.records) == typed(a.records) and fresh.unreadable == a.unreadable
        facts, _ = facts_both(nat, py, requests_of(a))
        return {r[0]: dict(zip(FIELDS, r)) for r in a.records}, a, {f.pid: f for f in facts}

    first, _, f0 = step()
    again, _, _ = step()
    assert typed(again) == typed(first)
    assert f0[101].cmdline == b"stay\0"
    # exec that changes the comm (same mm addresses)
    (root / "100" / "stat").write_bytes(stat_line(100, b"python3", start=500))
    (root / "100" / "cmdline").write_bytes(b"python3\0-m\0x\0")
    now, _, f = step()
    assert now[100]["comm"] == "python3" and now[100]["start_ticks"] == 500
    assert now[100]["mark"] == first[100]["mark"] and f[100].cmdline == b"python3\0-m\0x\0"
    # exec that keeps the comm (python -> python): the mm addresses change
    (root / "103" / "stat").write_bytes(stat_line(103, b"python3", start=503, arg_start=0x7FFD00000000,
                                                  arg_end=0x7FFD00000020, start_code=0x560000000000))
    now, _, _ = step()
    assert now[103]["comm"] == "python3" and now[103]["mark"] not in (0, first[103]["mark"])
    # pid reuse: starttime changes; the old identity is gone for read_facts
    (root / "101" / "stat").write_bytes(stat_line(101, b"stay", start=9000))
    (root / "101" / "cmdline").write_bytes(b"changed\0")
    now, a, f = step()
    assert now[101]["start_ticks"] == 9000 and f[101].cmdline == b"changed\0"
    old, _ = facts_both(nat, py, [(101, 501, WANT_ALL)])
    assert old == [(101, True, None, None, None, None, None)]
    # exit
    remove_proc(root, 102)
    now, a, _ = step()
    assert 102 not in now and 102 not in dict(a.unreadable)
    gone, errors = facts_both(nat, py, [(102, 502, WANT_ALL)])
    assert gone == [(102, True, None, None, None, None, None)] and errors == {}
    # a malformed stat: unreadable, not gone; then readable again
    (root / "101" / "stat").write_bytes(b"101 (stay) S\n")
    now, a, _ = step()
    assert 101 not in now and a.unreadable == [(101, MALFORMED)]
    (root / "101" / "stat").write_bytes(stat_line(101, b"stay", start=9000))
    now, a, _ = step()
    assert now[101]["start_ticks"] == 9000 and a.unreadable == []
    # a new pid appears, the comm goes back: the C's comm cache follows
    add_proc(root, 104, comm=b"late", start=504)
    (root / "100" / "stat").write_bytes(stat_line(100, b"sh", start=500))
    now, _, _ = step()
    assert now[104]["comm"] == "late" and now[100]["comm"] == "sh"
    # comms of the same length (bash -> dash), on an exec and on a pid reuse
    (root / "100" / "stat").write_bytes(stat_line(100, b"sx", start=500))
    (root / "104" / "stat").write_bytes(stat_line(104, b"LATE", start=7777))
    now, _, _ = step()
    assert now[100]["comm"] == "sx" and now[104]["comm"] == "LATE" and now[104]["start_ticks"] == 7777
    nat.close()
    py.close()
    step()  # usable after close


@pytest.mark.parametrize("field", MM_FIELDS)
def test_mark_follows_mm_addresses(tmp_path, field):
    """An exec maps a new mm: any of the six addresses changing changes the mark."""
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"p")
    nat, py = pair(root)
    before = read_both(nat, py).records[0][F["mark"]]
    default = dict(STAT_FIELDS)[field]
    (root / "10" / "stat").write_bytes(stat_line(10, b"p", **{field: default + 0x1000}))
    after = read_both(nat, py).records[0][F["mark"]]
    assert before != 0 and after != 0 and after != before


def test_mark_ignores_what_changes_without_exec(tmp_path):
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"p")
    nat, py = pair(root)
    before = read_both(nat, py).records[0][F["mark"]]
    (root / "10" / "stat").write_bytes(stat_line(
        10, b"q", state=b"R", utime=9999, stime=999, minflt=12345, majflt=77, threads=9, vsize=10**9,
        rss=10**5, kstkesp=123, kstkeip=456, processor=3, signal=1, start_data=1, end_data=2,
        start_brk=3, env_start=4, exit_code=5))
    assert read_both(nat, py).records[0][F["mark"]] == before != 0


@pytest.mark.parametrize("case", ["hidden", "no_mm", "arg_start_0", "44_fields", "47_fields",
                                  "50_fields", "22_fields"])
def test_mark_zero(tmp_path, case):
    """0 when the kernel hides the addresses (arg_start 0: who may not ptrace), when there
    is no mm (zombies, kernel threads) and for stat lines without the addresses."""
    root = make_root(tmp_path)
    kw = {"hidden": HIDDEN_MM, "no_mm": NO_MM, "arg_start_0": {"arg_start": 0}}.get(case, {})
    if case.endswith("_fields"):
        kw = {"nfields": int(case.split("_")[0])}
    add_proc(root, 10, comm=b"p", **kw)
    add_proc(root, 11, comm=b"p")
    a = read_both(*pair(root))
    assert [r[F["mark"]] for r in a.records][0] == 0
    assert a.records[1][F["mark"]] != 0  # the same line with the addresses has one


def test_mark_is_never_0_when_shown(tmp_path):
    """A mix that happens to be 0 reads 1: 0 means 'hidden' only."""
    root = make_root(tmp_path)
    zero = dict(arg_start=1 << 13, arg_end=1, env_end=0, start_code=0, end_code=0, start_stack=0)
    add_proc(root, 10, comm=b"p", **zero)
    assert read_both(*pair(root)).records[0][F["mark"]] == 1


# -- read_facts --------------------------------------------------------------------------


def test_read_facts_stale_start_is_gone(tmp_path):
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"p", start=500, limits=None)  # its ENOENT must not be counted
    add_proc(root, 11, comm=b"q", start=600)
    nat, py = pair(root)
    a = read_both(nat, py)
    assert [r[F["start_ticks"]] for r in a.records] == [500, 600]
    (root / "10" / "stat").write_bytes(stat_line(10, b"p", start=501))  # the pid is another process now
    reqs = [(10, 500, WANT_ALL), (11, 600, WANT_ALL), (11, 599, WANT_CMDLINE), (12, 0, WANT_ALL),
            (10, 501, WANT_NOFILE)]
    facts, errors = facts_both(nat, py, reqs)
    assert facts[0] == (10, True, None, None, None, None, None)
    assert facts[1] == (11, False, b"/usr/bin/q\0--flag\0", b"/usr/bin/q", b"0::/user.slice/x.scope\n", 1024, None)
    assert facts[2] == (11, True, None, None, None, None, None)
    assert facts[3] == (12, True, None, None, None, None, None)
    assert facts[4] == (10, False, None, None, None, None, None)  # nofile asked: its limits is missing
    assert errors == {"ENOENT": 1}


@pytest.mark.parametrize("want,expected", [
    (WANT_NOFILE, (None, None, None, 1024)),
    (WANT_CMDLINE, (b"/usr/bin/p\0--flag\0", None, None, None)),
    (WANT_EXE, (None, b"/usr/bin/p", None, None)),
    (WANT_CGROUP, (None, None, b"0::/user.slice/x.scope\n", None)),
    (WANT_CMDLINE | WANT_NOFILE, (b"/usr/bin/p\0--flag\0", None, None, 1024)),
    (0, (None, None, None, None)),
    (WANT_ALL, (b"/usr/bin/p\0--flag\0", b"/usr/bin/p", b"0::/user.slice/x.scope\n", 1024)),
])
def test_read_facts_want(tmp_path, want, expected):
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"p", start=500)
    facts, errors = facts_both(*pair(root), [(10, 500, want)])
    assert tuple(facts[0]) == (10, False) + expected + (None,) and errors == {}


@pytest.mark.parametrize("soft,expected", [(b"unlimited", UNLIMITED), (b"0", 0), (b"1048576", 1048576),
                                           (b"Unlimited", None), (b"", None), (b"-1", None)])
def test_read_facts_nofile(tmp_path, soft, expected):
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"p", start=500, limits=b"Limit Soft Hard Units\nMax open files  " + soft + b"\n")
    facts, errors = facts_both(*pair(root), [(10, 500, WANT_NOFILE)])
    assert facts[0] == (10, False, None, None, None, expected, None)
    assert errors == ({} if expected is not None else {"malformed": 1})


# -- files are read whole -------------------------------------------------------------------


def test_status_of_20k_is_read_whole(tmp_path):
    root = make_root(tmp_path)
    status = status_text(uid=4321, swap_kb=77, vol=11, nonvol=22, pad_lines=1400)
    assert len(status) > 20 * 1024 and status.index(b"Uid:") > 20 * 1024 - 200
    add_proc(root, 10, comm=b"p", status=status, io=b"x" * 30000 + b"\nread_bytes: 3\nwrite_bytes: 4\n")
    a, _, _ = compare(root)
    r = dict(zip(FIELDS, a.records[0]))
    assert (r["uid"], r["swap_bytes"], r["ctx_voluntary"], r["ctx_nonvoluntary"]) == (4321, 77 * 1024, 11, 22)
    assert (r["read_bytes"], r["write_bytes"]) == (3, 4) and a.errors == {}


def _sized(size: int, tail: bytes, fill: bytes = b"x") -> bytes:
    """size bytes: a junk line, then tail (the part that must be seen)."""
    assert size > len(tail) + 1
    return fill * (size - len(tail) - 1) + b"\n" + tail


@pytest.mark.parametrize("size", [300_000, FILE_MAX - 1, FILE_MAX, FILE_MAX + 1, 3 * FILE_MAX])
def test_cmdline_whole_then_cut_at_1mib(tmp_path, size):
    root = make_root(tmp_path)
    cmdline = bytes(random.Random(size).choice(b"abc\0") for _ in range(size))
    add_proc(root, 10, comm=b"p", start=500, cmdline=cmdline)
    facts, errors = facts_both(*pair(root), [(10, 500, WANT_CMDLINE)])
    assert len(facts[0].cmdline) == min(size, FILE_MAX) == min(size, 1048576)
    assert facts[0].cmdline == cmdline[:FILE_MAX] and errors == {}


@pytest.mark.parametrize("where", ["stat", "status", "io", "limits", "cgroup"])
@pytest.mark.parametrize("size", [FILE_MAX - 1, FILE_MAX, FILE_MAX + 5000])
def test_files_of_1mib_or_more_are_malformed(tmp_path, where, size):
    root = make_root(tmp_path)
    kw = {
        "stat": lambda: {"stat": stat_line(10, b"p", start=500).rstrip(b"\n").ljust(size - 1) + b"\n"},
        "status": lambda: {"status": _sized(size, status_text(uid=4321))},
        "io": lambda: {"io": _sized(size, IO)},
        "limits": lambda: {"limits": _sized(size, LIMITS)},
        "cgroup": lambda: {"cgroup": _sized(size, b"0::/tail\n")},
    }[where]()
    add_proc(root, 10, comm=b"p", start=500, **kw)
    for name, data in kw.items():
        assert os.path.getsize(root / "10" / name) == size
    a, facts, ferrors = compare(root)
    ok = size < FILE_MAX
    if where == "stat":
        assert a.unreadable == ([] if ok else [(10, MALFORMED)])
        return
    r = dict(zip(FIELDS, a.records[0]))
    if where == "status":
        assert r["uid"] == (4321 if ok else None) and r["ctx_voluntary"] == (5 if ok else None)
    if where == "io":
        assert r["read_bytes"] == (4096 if ok else None)
    if where in ("status", "io"):
        assert a.errors == ({} if ok else {"malformed": 1})
    if where == "limits":
        assert facts[10].nofile == (1024 if ok else None)
    if where == "cgroup":
        assert facts[10].cgroup == (kw["cgroup"] if ok else None)
    if where in ("limits", "cgroup"):
        assert ferrors == ({} if ok else {"malformed": 1})


def _in_thread(fn, timeout=20.0):
    """fn() in a daemon thread: its result, or a failure when it does not return in time."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # pragma: no cover - reported below
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} hangs"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.mark.parametrize("backend", ["native", "python"])
@pytest.mark.parametrize("where", ["stat", "status", "io", "cmdline", "cgroup", "limits", "fd"])
def test_fifo_does_not_hang(tmp_path, backend, where):
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"p", start=500, **({"fds": None} if where == "fd" else {where: Fifo()}))
    if where == "fd":
        os.mkfifo(root / "10" / "fd")
    add_proc(root, 11, comm=b"q", start=600)
    r = Reader(str(root), backend, PAGE, "off")
    a = _in_thread(r.read)
    facts, ferrors = _in_thread(lambda: r.read_facts([(10, 500, WANT_ALL), (11, 600, WANT_ALL)]))
    assert [x[0] for x in a.records] == ([11] if where == "stat" else [10, 11])
    if where == "stat":
        assert a.unreadable == [(10, errno.EINVAL)] and a.errors == {}
        assert facts[0].gone
        return
    assert a.unreadable == [] and not facts[0].gone and facts[1].nofile == 1024
    r10 = dict(zip(FIELDS, a.records[0]))
    lost = {"status": "uid", "io": "read_bytes", "fd": "open_fds"}.get(where)
    if lost:
        assert r10[lost] is None and a.errors == {"ENOTDIR" if where == "fd" else "EINVAL": 1}
        assert ferrors == {}
    else:
        assert getattr(facts[0], {"limits": "nofile"}.get(where, where)) is None
        assert a.errors == {} and ferrors == {"EINVAL": 1}


def test_fifo_parity(tmp_path):
    root = make_root(tmp_path)
    for pid, where in enumerate(("stat", "status", "io", "cmdline", "cgroup", "limits"), start=10):
        add_proc(root, pid, comm=b"p", **{where: Fifo()})
    _in_thread(lambda: compare(root))


def smaps_text(pss_kb, swap_pss_kb=0) -> bytes:
    return (b"55d0e0a00000-7ffd2f9ad000 ---p 00000000 00:00 0                          [rollup]\n"
            b"Rss:    %d kB\nPss:    %d kB\nPss_Anon:    1 kB\nSwap:    0 kB\nSwapPss:    %d kB\n"
            % (pss_kb + 5, pss_kb, swap_pss_kb))


def test_smaps_parity(tmp_path):
    """Proportional memory, read alike by both backends: only up to smaps_max_rss; 0 for
    a process with no mm (vsize 0) without reading; unreadable or malformed counted."""
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"small", rss=100, smaps_rollup=smaps_text(300, 7))
    add_proc(root, 11, comm=b"big", rss=100_000, smaps_rollup=smaps_text(400_000))  # over the limit: not read
    add_proc(root, 12, comm=b"zombie", state=b"Z", vsize=0, rss=0, **NO_MM)  # no file needed
    add_proc(root, 13, comm=b"none")  # no smaps_rollup: ENOENT
    add_proc(root, 14, comm=b"bad", smaps_rollup=b"Pss: lots kB\n")  # malformed
    add_proc(root, 15, comm=b"huge", smaps_rollup=smaps_text(2**60))  # * 1024 overflows: malformed
    add_proc(root, 16, comm=b"old", smaps_rollup=b"Rss: 5 kB\n")  # no Pss line: None, no error
    limit = 1000 * PAGE
    nat, py = (Reader(str(root), backend, PAGE, "off", smaps_max_rss=limit) for backend in ("native", "python"))
    a = read_both(nat, py)
    rec = {r[0]: dict(zip(FIELDS, r)) for r in a.records}
    assert (rec[10]["pss_bytes"], rec[10]["swap_pss_bytes"]) == (300 * 1024, 7 * 1024)
    assert (rec[11]["pss_bytes"], rec[12]["pss_bytes"], rec[12]["swap_pss_bytes"]) == (None, 0, 0)
    assert [rec[pid]["pss_bytes"] for pid in (13, 14, 15, 16)] == [None] * 4
    assert a.errors == {"ENOENT": 1, "malformed": 2}
    off = read_both(*pair(root))  # not asked: nothing read, nothing counted
    assert {r[F["pss_bytes"]] for r in off.records} == {None} and off.errors == {}
    nat.close()


def add_threads(root, pid, threads) -> None:
    """task/TID/{stat,status,io,wchan} of a process: threads is {tid: {file: spec}}, a
    missing file name a plausible file, None a missing file."""
    task = root / str(pid) / "task"
    task.mkdir()
    for tid, files in threads.items():
        d = task / str(tid)
        d.mkdir()
        plausible = {"stat": stat_line(tid, b"worker-%d" % tid, utime=tid, state=b"S"),
                     "status": status_text(vol=tid, nonvol=1), "io": io_text(tid, 2 * tid), "wchan": b"futex_wait"}
        for name, spec in {**plausible, **files}.items():
            put(os.fsencode(d / name), spec)


def test_thread_parity(tmp_path):
    """task/TID/ read alike by both backends: sorted by tid, a thread without a parsable
    stat skipped, an unreadable status, io or wchan None (never an error: threads come and
    go), fewer than two threads read is none."""
    root = make_root(tmp_path)
    add_proc(root, 10, comm=b"pool", threads=4)
    add_threads(root, 10, {10: {"wchan": b"do_epoll_wait"}, 12: {"status": None, "wchan": None},
                           11: {"io": Dir(), "wchan": b"caf\xc3"}, 13: {"stat": b"garbage\n"}})
    add_proc(root, 20, comm=b"lonely", threads=2)
    add_threads(root, 20, {20: {}, 21: {"stat": None}})  # one thread read: none
    add_proc(root, 30, comm=b"notask", threads=2)  # no task/: none
    nat, py = pair(root)
    a = read_both(nat, py)
    facts, errors = facts_both(nat, py, requests_of(a, WANT_THREADS))
    by_pid = {f.pid: f for f in facts}
    threads = {t[0]: dict(zip(THREAD_FIELDS, t)) for t in by_pid[10].threads}
    assert list(threads) == [10, 11, 12]
    assert [threads[t]["wchan"] for t in (10, 11, 12)] == ["do_epoll_wait", "caf\ufffd", None]
    assert threads[11]["read_bytes"] is None and threads[11]["ctx_voluntary"] == 11
    assert threads[12]["ctx_voluntary"] is None and threads[12]["read_bytes"] == 12
    assert threads[10]["utime_ticks"] == 10 and threads[10]["comm"] == "worker-10"
    assert by_pid[20].threads is None and by_pid[30].threads is None
    assert errors == {}
    nat.close()


# -- threads ---------------------------------------------------------------------------


def test_threads_serialize(tmp_path):
    root = make_root(tmp_path)
    nasty_tree(root)
    nat = Reader(str(root), "native", PAGE, "off")
    expected = nat.read()
    reqs = requests_of(expected)
    expected_facts = nat.read_facts(reqs)
    results, failures = [], []

    def run(i):
        try:
            for k in range(30):
                if (i + k) % 3:
                    s = nat.read()
                    results.append(typed((s.records, s.unreadable, s.errors))
                                   == typed((expected.records, expected.unreadable, expected.errors)))
                else:
                    results.append(typed(nat.read_facts(reqs)) == typed(expected_facts))
        except Exception as e:  # pragma: no cover - reported below
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    nat.close()
    assert failures == [] and len(results) == 180 and all(results)


# -- live /proc: processes this test starts ------------------------------------------------


def _start_sleepers(n, args=()):
    procs = [subprocess.Popen(["sleep", "600", *args]) for _ in range(n)]
    settle([p.pid for p in procs])
    return procs


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture
def sleepers():
    procs = _start_sleepers(5)
    yield procs
    _stop(procs)


# values that do not move while a sleeping child sleeps (cpu, faults, rss may)
STABLE = ("pid", "ppid", "comm", "state", "flags", "start_ticks", "num_threads", "vms_bytes", "uid",
          "ctx_voluntary", "ctx_nonvoluntary", "read_bytes", "write_bytes", "open_fds", "tty_nr", "mark")


def _stable(rec):
    return tuple((f, type(rec[F[f]]).__name__, rec[F[f]]) for f in STABLE)


def test_live_parity(sleepers):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for i, p in enumerate(sleepers):
        resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (100 + i, hard))
    zombie = subprocess.Popen(["sleep", "600"])
    try:
        zombie.send_signal(signal.SIGKILL)  # not reaped until the end: a zombie meanwhile
        settle([zombie.pid], b"Z")
        children = [p.pid for p in sleepers] + [zombie.pid]
        nat = Reader("/proc", "native", None, "auto")
        py = Reader("/proc", "python", None, "off")
        readings = []
        for _ in range(3):  # the first native read opens the files it keeps, the next use them
            readings.append((nat.read(), py.read()))
        for a, b in readings:
            ra = {r[0]: r for r in a.records if r[0] in children}
            rb = {r[0]: r for r in b.records if r[0] in children}
            assert sorted(ra) == sorted(rb) == sorted(children)
            for pid in children:
                assert type(ra[pid]) is tuple and len(ra[pid]) == len(FIELDS)
                assert _stable(ra[pid]) == _stable(rb[pid]), pid
            assert not {pid for pid, _ in a.unreadable + b.unreadable} & set(children)
        for p in sleepers:
            r = dict(zip(FIELDS, ra[p.pid]))
            assert r["comm"] == "sleep" and r["state"] == "S" and r["ppid"] == os.getpid()
            assert r["uid"] == os.getuid() and r["mark"] != 0 and r["open_fds"] >= 3
        z = dict(zip(FIELDS, ra[zombie.pid]))
        assert z["state"] == "Z" and z["mark"] == 0 and z["vms_bytes"] == 0
        reqs = [(pid, ra[pid][F["start_ticks"]], WANT_ALL) for pid in children]
        facts, _ = facts_both(nat, py, reqs)
        exe = os.fsencode(os.path.realpath(shutil.which("sleep")))
        with open(f"/proc/{os.getpid()}/cgroup", "rb") as f:
            cgroup = f.read()
        for i, p in enumerate(sleepers):
            assert facts[i] == (p.pid, False, b"sleep\0" + b"600\0", exe, cgroup, 100 + i, None)
        assert facts[-1].exe is None and facts[-1].cmdline == b"" and not facts[-1].gone
        # exit between reads: gone from both, and read_facts says gone
        gone = sleepers[0]
        gone.kill()
        gone.wait()
        a = read_both_live(nat, py, children)
        assert gone.pid not in a
        facts, _ = facts_both(nat, py, [reqs[0]])
        assert facts == [(gone.pid, True, None, None, None, None, None)]
        nat.close()
    finally:
        zombie.wait()


def read_both_live(nat, py, children):
    a, b = nat.read(), py.read()
    ra = {r[0]: r for r in a.records if r[0] in children}
    rb = {r[0]: r for r in b.records if r[0] in children}
    assert sorted(ra) == sorted(rb)
    for pid in ra:
        assert _stable(ra[pid]) == _stable(rb[pid])
    return ra


def test_live_long_cmdline_read_whole():
    """A live cmdline of 300000 bytes (3 arguments of 100000) comes back whole."""
    args = [c * 99_999 for c in "abc"]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *args])
    try:
        settle([child.pid])
        nat, py = Reader("/proc", "native", None, "auto"), Reader("/proc", "python", None, "off")
        start = next(r[F["start_ticks"]] for r in nat.read().records if r[0] == child.pid)
        facts, _ = facts_both(nat, py, [(child.pid, start, WANT_CMDLINE)])
        expected = b"\0".join(os.fsencode(a) for a in child.args) + b"\0"
        assert len(facts[0].cmdline) == len(expected) > 300_000 and facts[0].cmdline == expected
    finally:
        _stop([child])


def test_live_proportional_memory():
    """A process with 64 MiB of private memory touched: its Pss is at least that and at
    most its rss; with a limit below its rss it is not read (None)."""
    code = "import sys, time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(600)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"1\n"
        for backend in ("native", "python"):
            mine = {}
            for limit in (UNLIMITED, 16 << 20):
                r = Reader("/proc", backend, None, "off", smaps_max_rss=limit)
                mine[limit] = next(dict(zip(FIELDS, x)) for x in r.read().records if x[0] == child.pid)
            big = mine[UNLIMITED]
            assert 64 << 20 <= big["pss_bytes"] <= big["rss_bytes"] and big["swap_pss_bytes"] is not None, big
            assert mine[16 << 20]["pss_bytes"] is None and mine[16 << 20]["rss_bytes"] > 16 << 20
    finally:
        _stop([child])


THREADED = r"""
import sys, threading, time
go = threading.Event()
def worker():
    import ctypes
    ctypes.CDLL(None).prctl(15, b"worker", 0, 0, 0)  # PR_SET_NAME: its comm
    while True:
        go.wait(); go.clear()
        sum(range(200000)); time.sleep(0.001)
        print("done", flush=True)
threading.Thread(target=worker, name="worker", daemon=True).start()
for _ in range(8):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    go.set()
"""


def test_live_threads_remembered_while_idle_and_read_again_once_run():
    """The native reader gives a thread that has not run since its last read from memory
    (its schedstat unchanged): the same values as reading it (the twin reads every time);
    a thread that ran is read again."""
    child = subprocess.Popen([sys.executable, "-c", THREADED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        nat, py = Reader("/proc", "native", None, "auto"), Reader("/proc", "python", None, "off")
        start = next(r[F["start_ticks"]] for r in nat.read().records if r[0] == child.pid)
        req = [(child.pid, start, WANT_THREADS)]

        def both():
            (a,), _ = nat.read_facts(req)
            (b,), _ = py.read_facts(req)
            return {t[0]: t for t in a.threads}, {t[0]: t for t in b.threads}

        first, _ = both()
        for _ in range(3):  # the worker runs between reads; the sleepers do not
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"
            native, python = both()
            worker = next(tid for tid, t in native.items() if t[1] == "worker")
            assert native[worker][THREAD_FIELDS.index("ctx_voluntary")] > first[worker][THREAD_FIELDS.index("ctx_voluntary")]
            sleepers = [tid for tid, t in native.items() if t[1] != "worker" and tid != child.pid]
            assert len(sleepers) == 8 and all(native[t] == python[t] == first[t] for t in sleepers)
            first = native
        nat.close()
    finally:
        child.stdin.close()
        _stop([child])


THREAD_FILE = re.compile(r"/proc/(\d+)/task/(\d+)/(stat|status|io|wchan|schedstat)(?: \(deleted\))?")


def thread_fds(pid) -> dict:
    """Our fds on /proc/PID/task/TID/{stat,status,io,wchan,schedstat}: {tid: count}."""
    tids: dict = {}
    for target in _fd_targets():
        m = THREAD_FILE.fullmatch(target)
        if m and int(m.group(1)) == pid:
            tids[int(m.group(2))] = tids.get(int(m.group(2)), 0) + 1
    return tids


THREADED_QUIT = THREADED.replace("    while True:\n        go.wait(); go.clear()\n",
                                 "    while True:\n        go.wait(); go.clear()\n        if quit: return\n")
THREADED_QUIT = THREADED_QUIT.replace("go = threading.Event()\n", "go = threading.Event()\nquit = False\n")
THREADED_QUIT = THREADED_QUIT.replace("for line in sys.stdin:\n    go.set()\n",
                                      "for line in sys.stdin:\n    quit = line == 'quit\\n'\n    go.set()\n")


def test_live_running_thread_keeps_its_files_and_reads_the_same(nofile_raised):
    """A thread read again because it ran keeps its task/TID files open (within the
    threads' budget): the reads through them give what the twin reads afresh; the threads
    that sleep keep none; once the thread exits, its files are closed. (The main thread
    runs too: it reads the commands.)"""
    assert "if quit: return" in THREADED_QUIT and "quit = line" in THREADED_QUIT
    child = subprocess.Popen([sys.executable, "-c", THREADED_QUIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        nat, py = Reader("/proc", "native", None, "all"), Reader("/proc", "python", None, "off")
        off = Reader("/proc", "native", None, "off")
        start = next(r[F["start_ticks"]] for r in nat.read().records if r[0] == child.pid)
        off.read()
        req = [(child.pid, start, WANT_THREADS)]

        def run_worker():
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"
            asleep(child.pid)

        nat.read_facts(req)
        for i in range(4):  # the worker runs between reads; the sleepers do not
            run_worker()
            (a,), _ = nat.read_facts(req)
            (b,), _ = py.read_facts(req)
            (c,), _ = off.read_facts(req)
            native = {t[0]: t for t in a.threads}
            assert native == {t[0]: t for t in b.threads} == {t[0]: t for t in c.threads}
            worker = next(tid for tid, t in native.items() if t[1] == "worker")
            kept = thread_fds(child.pid)
            # read again (they ran): stat, status, io and wchan kept, and schedstat once probed
            assert sorted(kept) == [child.pid, worker] and all(4 <= n <= 5 for n in kept.values()), kept
            assert nat.kept_threads() == 2 and off.kept_threads() == 0
        child.stdin.write("quit\n")
        child.stdin.flush()
        for _ in range(100):
            if len(os.listdir(f"/proc/{child.pid}/task")) == 9:
                break
            time.sleep(0.05)
        (a,), _ = nat.read_facts(req)
        assert len(a.threads) == 9 and worker not in {t[0] for t in a.threads}
        assert list(thread_fds(child.pid)) == [child.pid] and nat.kept_threads() == 1
        nat.close()
        off.close()
    finally:
        child.stdin.close()
        _stop([child])


def test_live_thread_files_stay_within_the_open_files_limit():
    """Kept fds stay below RLIMIT_NOFILE's soft limit less 512 (FD_RESERVE): with room for
    3, the first of two running threads keeps 3 of its files and opens the others each
    read, the second (no room left) keeps none; the same values as a reader that keeps none."""
    code = COUNT_FDS + r"""
from exporter.reader import F, FD_RESERVE, Reader, WANT_THREADS
pid = int(sys.argv[1])
pattern = re.compile(sys.argv[2])
def fds():
    return count_fds(pattern)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (FD_RESERVE + 3, hard))
nat, off = Reader("/proc", "native", None, "all"), Reader("/proc", "native", None, "off")
start = next(r[F["start_ticks"]] for r in nat.read().records if r[0] == pid)
off.read()
req = [(pid, start, WANT_THREADS)]
for i in range(4):
    sys.stdout.write("go\n"); sys.stdout.flush()
    assert sys.stdin.readline() == "ran\n"
    (a,), _ = nat.read_facts(req)
    (b,), _ = off.read_facts(req)
    assert a.threads == b.threads and len(a.threads) == 10
    assert nat.kept() == 0 and nat.kept_threads() == (1 if i else 0), (nat.kept(), nat.kept_threads())
    assert fds() == (3 if i else 0), fds()
print("ok", flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", THREADED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        pattern = r"/proc/\d+/(task/\d+/)?(stat|status|io|wchan|schedstat)(?: \(deleted\))?"
        reader = subprocess.Popen([sys.executable, "-c", code, str(child.pid), pattern], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
        try:
            for _ in range(4):
                line = reader.stdout.readline()
                assert line == "go\n", (line, reader.wait(timeout=30))
                child.stdin.write("go\n")
                child.stdin.flush()
                assert child.stdout.readline() == "done\n"
                asleep(child.pid)
                reader.stdin.write("ran\n")
                reader.stdin.flush()
            assert reader.stdout.readline() == "ok\n", reader.wait(timeout=30)
        finally:
            reader.kill()
            reader.wait()
    finally:
        child.stdin.close()
        _stop([child])


ONE_THREAD = r"""
import sys
print("ready", flush=True)
for line in sys.stdin:  # each line: run a little, then sleep in the same place again
    sum(range(100000))
    print("done", flush=True)
"""


def test_live_process_remembered_while_idle_and_read_again_once_run(nofile_raised):
    """A single-threaded process that has not run since the last read (its schedstat, state
    and rss unchanged) has its status, io and wchan given from memory, with their files
    closed: the same values as the twin reads; once it ran they are read (and kept) again.
    Every process keeps (keep-open all), so the child does too however many the host has."""
    budget = keep_open_budget("all")
    if _live_pids() + 50 > budget:
        pytest.skip(f"more processes here than {budget} kept processes fit in RLIMIT_NOFILE")
    child = subprocess.Popen([sys.executable, "-c", ONE_THREAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        asleep(child.pid)  # asleep and not running for a while: not just passing through S
        nat, py = Reader("/proc", "native", None, "all"), Reader("/proc", "python", None, "off")
        compared = STABLE + ("euid", "swap_bytes", "wchan")

        def both():
            a = next(r for r in nat.read().records if r[0] == child.pid)
            b = next(r for r in py.read().records if r[0] == child.pid)
            assert [a[F[f]] for f in compared] == [b[F[f]] for f in compared]
            return dict(zip(FIELDS, a))

        def kept():
            return sorted(m.group(2) for m in map(KEPT_FILE.fullmatch, _fd_targets()) if m and int(m.group(1)) == child.pid)

        first = both()  # first seen: read whole, nothing but stat and schedstat kept
        assert first["state"] == "S" and first["wchan"] not in (None, "")
        for _ in range(2):
            idle = both()  # given from memory: status, io and wchan are not even open
            assert kept() == ["schedstat", "stat"] and idle["ctx_voluntary"] == first["ctx_voluntary"]
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"
            asleep(child.pid)
            ran = both()  # it ran: read again, and its files kept
            assert ran["ctx_voluntary"] > idle["ctx_voluntary"]
            assert kept() == ["io", "schedstat", "stat", "status", "wchan"]
            first = ran
        nat.close()
    finally:
        child.stdin.close()
        _stop([child])


def test_live_records_are_plain_tuples(sleepers):
    """The C builds records with PyTuple_New: plain tuples, hashed as tuples (set/dict keys)."""
    for backend in ("native", "python"):
        records = Reader("/proc", backend, None, "auto").read().records
        pids = {r[0] for r in records}
        assert {p.pid for p in sleepers} <= pids
        for rec in records:
            copy = tuple(list(rec))
            assert type(rec) is tuple and copy is not rec
            assert hash(rec) == hash(copy) and rec == copy and len(rec) == len(FIELDS)
        assert len(set(records)) == len(records)


def test_live_threads_serialize(sleepers):
    nat = Reader("/proc", "native", None, "auto")
    mine = {p.pid for p in sleepers}
    results, failures = [], []

    def run():
        try:
            for _ in range(15):
                a = nat.read()
                pids = [r[0] for r in a.records]
                results.append(pids == sorted(set(pids)) and mine <= set(pids)
                               and all(type(r) is tuple and len(r) == len(FIELDS) for r in a.records))
                facts, _ = nat.read_facts([(r[0], r[F["start_ticks"]], WANT_ALL) for r in a.records if r[0] in mine])
                results.append(len(facts) == len(mine) and not any(f.gone for f in facts))
        except Exception as e:  # pragma: no cover - reported below
            failures.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    nat.close()
    assert failures == [] and len(results) == 120 and all(results)


# -- the keep-open budget ------------------------------------------------------------------

KEPT_FILE = re.compile(r"/proc/(\d+)/(stat|status|io|wchan|schedstat)(?: \(deleted\))?")


def test_live_idle_process_is_read_whole_every_16th_read(tmp_path):
    """Given from memory at most 15 reads in a row: every 16th (staggered by pid) reads a
    sleeping process' status whole all the same (the kernel's per-CPU swap counters may
    move before stat's rss). Over 33 reads (strace): its status is opened at the first and
    at exactly 2 of the next 32, not at each."""
    child = subprocess.Popen(["sleep", "600"])
    try:
        settle([child.pid])
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from exporter.reader import Reader; "
                "r = Reader('/proc', 'native', None, 'off'); [r.read() for _ in range(33)]")
        trace = tmp_path / "trace"
        out = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace), sys.executable, "-c", code,
                              os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        status = re.compile(rf'openat\(\d+, "{child.pid}/status"')
        assert sum(bool(status.search(line)) for line in trace.read_text().splitlines()) == 3
    finally:
        _stop([child])


def _fd_targets() -> list:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return targets


def proc_fds(pids=None) -> int:
    """Our fds on a /proc/PID/{stat,status,io,wchan,schedstat} (of those pids only, when given)."""
    n = 0
    for target in _fd_targets():
        m = KEPT_FILE.fullmatch(target)
        if m and (pids is None or int(m.group(1)) in pids):
            n += 1
    return n


# for the scripts the tests run in a process of their own (with a lowered RLIMIT_NOFILE)
COUNT_FDS = r"""
import os, re, resource, sys
def count_fds(pattern):
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += bool(pattern.fullmatch(os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            pass
    return n
"""


def _live_pids() -> int:
    return sum(name.isdigit() for name in os.listdir("/proc"))


def test_keep_open_off_keeps_nothing(sleepers):
    mine = {p.pid for p in sleepers}
    before = proc_fds()
    r = Reader("/proc", "native", None, "off")
    for _ in range(2):
        assert mine <= {x[0] for x in r.read().records}
    assert r.kept() == 0 and proc_fds() == before and proc_fds(mine) == 0


@pytest.mark.parametrize("n", [1, 3])
def test_keep_open_number_is_a_cap(n):
    procs = _start_sleepers(n + 4)
    try:
        mine = {p.pid for p in procs}
        before = proc_fds()
        r = Reader("/proc", "native", None, str(n))
        for _ in range(2):
            assert mine <= {x[0] for x in r.read().records}
        assert r.kept() == n  # more processes than n are there: n of them keep
        assert 0 < proc_fds() - before <= KEPT_PER_PROCESS * n
        r.close()
        assert r.kept() == 0 and proc_fds() == before
    finally:
        _stop(procs)


def test_keep_open_auto_respects_the_budget():
    """With RLIMIT_NOFILE lowered to leave room for 4 processes, "auto" keeps 4 of 8."""
    code = COUNT_FDS + r"""
from exporter.reader import KEPT_PER_PROCESS, Reader, keep_open_budget
KEPT_FILE = re.compile(sys.argv[1])
def proc_fds():
    return count_fds(KEPT_FILE)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (512 + KEPT_PER_PROCESS * 4, hard))
assert keep_open_budget("auto") == 4 and keep_open_budget("100") == 4, keep_open_budget("auto")
mine = {int(p) for p in sys.argv[2:]}
before = proc_fds()
for setting, cap in (("auto", 4), ("100", 4), ("2", 2)):
    r = Reader("/proc", "native", None, setting)
    for _ in range(2):
        assert mine <= {x[0] for x in r.read().records}
    assert r.kept() == cap, (setting, r.kept())
    assert 0 < proc_fds() - before <= KEPT_PER_PROCESS * cap, (setting, proc_fds() - before)
    r.close()
print("ok")
"""
    procs = _start_sleepers(8)
    try:
        out = subprocess.run([sys.executable, "-c", code, KEPT_FILE.pattern,
                              *(str(p.pid) for p in procs)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
    finally:
        _stop(procs)


@pytest.fixture
def nofile_raised():
    """The soft RLIMIT_NOFILE at the hard limit (as procsnap sets it), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_kept_files_of_exited_processes_are_released(nofile_raised):
    n = 8
    budget = keep_open_budget("all")  # every process of the host, as far as fds allow
    if _live_pids() + n + 50 > budget:
        pytest.skip(f"more processes here than {budget} kept processes fit in RLIMIT_NOFILE")
    baseline = proc_fds()
    procs = _start_sleepers(n)
    mine = {p.pid for p in procs}
    try:
        r = Reader("/proc", "native", None, "all")
        for _ in range(2):
            assert mine <= {x[0] for x in r.read().records}
        kept_before = proc_fds()
        assert proc_fds(mine) == 2 * n  # stat and schedstat of each sleeping child are kept
        assert kept_before - baseline >= KEPT_PER_PROCESS * n and r.kept() >= n
    finally:
        _stop(procs)
    assert mine.isdisjoint(x[0] for x in r.read().records)
    assert proc_fds(mine) == 0  # released (a leaked one still reads /proc/PID/stat (deleted))
    # and none kept beyond the processes the reader counts (whatever else started meanwhile)
    assert proc_fds() - baseline <= KEPT_PER_PROCESS * r.kept(), (baseline, kept_before, proc_fds(), r.kept())
    r.close()
    assert r.kept() == 0 and proc_fds() == baseline


def test_pid_names_with_a_leading_zero_are_no_pids(tmp_path):
    """"007" would read 7/: one process counted twice. Neither backend takes it."""
    root = make_root(tmp_path)
    add_proc(root, 7, comm=b"seven", start=70)
    os.symlink("7", root / "007")
    os.symlink("7", root / "0")
    a = read_both(*pair(root))
    assert [r[0] for r in a.records] == [7] and a.unreadable == []


def test_read_facts_survives_requests_changed_while_read():
    """Converting an item may run Python code; the C works on a copy."""
    requests = []

    class Sneaky:
        def __iter__(self):
            requests.clear()
            return iter((os.getpid(), 0, WANT_NOFILE))

    requests.extend([Sneaky()] + [(os.getpid(), 0, WANT_NOFILE)] * 50)
    facts, _ = Reader("/proc", "native", PAGE, "off").read_facts(requests)
    assert len(facts) == 51 and all(f.gone for f in facts)  # start 0 is not ours: gone


# -- the grouper's sums in C (its sequences run with both: tests/test_grouper.py) -----------


def test_the_grouper_sums_in_c_when_built():
    from exporter import _reader

    assert grouper_module.group_columns is _reader.group_columns


@pytest.mark.parametrize("seed", range(40))
def test_group_columns_c_equals_python(seed):
    """Random records (None anywhere, values up to 2**64 - 1, unlimited and 0 fd limits) into
    random groups: the C sums are the twin's, exactly."""
    from exporter import _reader

    rnd = random.Random(seed)
    ngroups = rnd.randrange(0, 6)
    values = [None, 0, 1, 7, 2**53 + 1, 2**63, 2**64 - 1]
    records, groups, limits = [], [], []
    for _ in range(rnd.randrange(0, 60)):
        records.append(tuple(rnd.choice(values) for _ in range(8)) + (rnd.choice("RSDZ"), rnd.choice([None, "0", "ep_poll"])))
        groups.append(rnd.randrange(ngroups) if ngroups and rnd.random() < 0.8 else None)
        limits.append(rnd.choice([None, 0, 1, 3, 1024, UNLIMITED]))
    args = (records, groups, ngroups, (0, 1, 2, 5), 3, 4, limits, (8, 9))
    assert _reader.group_columns(*args) == grouper_module.group_columns_py(*args)


@pytest.mark.parametrize("bad", [
    ([(1,)], [0], 1, (3,), 0, 0, [None], ()),  # a column beyond the record
    ([(1, 2)], [1], 1, (0,), 0, 0, [None], ()),  # a group index beyond ngroups
    ([(1, 2)], [0, 0], 1, (0,), 0, 0, [None], ()),  # groups of another length
    ([(-1, 2)], [0], 1, (0,), 1, 1, [None], ()),  # not a 64-bit unsigned number
])
def test_group_columns_refuses_what_is_not_records(bad):
    from exporter import _reader

    with pytest.raises((ValueError, OverflowError)):
        _reader.group_columns(*bad)


# -- the tracker's diff in C (its sequences run with both: tests/test_grouper.py) ----------


def test_the_tracker_diffs_in_c_when_built():
    from exporter import _reader

    assert tracker_module.changed_records is _reader.changed_records


def _reading(rnd, pids, previous=None) -> list:
    """Random records (pid, start, comm, mark, counter) sorted by pid; with previous, many
    are the same tuple or equal to it, some another start (pid reuse) or another key."""
    before = {r[0]: r for r in previous or ()}
    out = []
    for pid in sorted(rnd.sample(pids, rnd.randrange(0, len(pids) + 1))):
        old, roll = before.get(pid), rnd.random()
        if old is not None and roll < 0.4:
            out.append(old)  # the same object
        elif old is not None and roll < 0.6:
            out.append(tuple(list(old)))  # equal, another object
        elif old is not None and roll < 0.7:
            out.append((pid, old[1] + 1) + old[2:])  # pid reused
        else:
            out.append((pid, rnd.choice([5, 6]), rnd.choice(["a", "b"]), rnd.choice([0, 2**64 - 1]),
                        rnd.choice([None, 0, 3])))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_changed_records_c_equals_python(seed):
    """Random readings one after the other: what C finds changed, gone and with holes is
    the twin's, which compares every key by value."""
    from exporter import _reader

    rnd = random.Random(seed)
    pids = rnd.sample(range(1, 60), rnd.randrange(1, 40))
    previous: list = []
    for _ in range(6):
        records = _reading(rnd, pids, previous)
        for key in ((0, 1, 2, 3), (0, 1)):
            got = _reader.changed_records(records, previous, key, (4,))
            assert got == tracker_module.changed_records_py(records, previous, key, (4,))
            assert list(got[2]) == [i for i, r in enumerate(records) if r[4] is None]
        previous = records


@pytest.mark.parametrize("records, previous", [
    ([(2, 1), (1, 1)], []),  # not sorted
    ([(1, 1), (1, 1)], []),  # two records of one pid
    ([], [(3, 1), (2, 1)]),  # the previous ones not sorted
    ([("1", 1)], []),  # a pid that is no int
    ([(1,)], [(1, 1)]),  # no start column
])
def test_changed_records_refuses_what_is_not_a_reading(records, previous):
    from exporter import _reader

    with pytest.raises((ValueError, TypeError)):
        _reader.changed_records(records, previous, (0, 1), ())


def test_changed_records_twin_tells_each_identity_once():
    """The twin runs when a reading breaks the contract (unsorted, a pid twice): an identity
    that is there twice is changed at most once, and gone at most once."""
    previous = [(5, 1, "a"), (3, 1, "a"), (5, 1, "a")]
    changed, gone, _ = tracker_module.changed_records_py([(7, 1, "a"), (7, 1, "a")], previous, (0, 1, 2), ())
    assert changed == [0] and gone == [0, 1]
    changed, gone, _ = tracker_module.changed_records_py([(5, 1, "b"), (5, 1, "b")], previous, (0, 1, 2), ())
    assert changed == [0] and gone == [1]
