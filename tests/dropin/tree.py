"""Fake /proc trees that process-exporter 0.7.10 (``-procfs DIR``) and procsnap
(``--path.procfs DIR``) both read, built at test time and changed between scrapes.

What process-exporter 0.7.10 reads (its proc/read.go and proc/tracker.go, checked by
running it on these trees):

* ``DIR/stat``, its ``btime`` line, once at start (start times are ``btime + starttime /
  100``): without the file it exits at start ("Error initializing");
* ``DIR/PID/stat``: a pid without it is skipped silently;
* ``status`` (effective uid, VmSwap, context switches) and ``limits`` (Max open files): a
  process without either is left out of every family and counted in
  ``namedprocess_scrape_procread_errors`` -- by the update at start only;
* ``io``, the ``fd/`` listing, ``wchan`` and, with ``-gather-smaps`` (its default),
  ``smaps_rollup``: each one missing makes the process a partial error
  (``namedprocess_scrape_partial_errors``, one per process per update, the update at start
  included; several missing files still count 1) and reads as 0;
* ``cmdline`` and ``cgroup`` once per process (its "static" facts); ``exe`` never;
* ``task/TID/{stat,status,io,cmdline,cgroup,wchan}`` of every process at every update
  (``-threads=false`` only hides the thread families): with two or more threads read, the
  process' context switches are the sum over ``task/*/status`` and each thread's state is
  added to the process' own (the leader counts twice); a ``wchan`` other than ``0`` is
  counted in ``namedprocess_namegroup_threads_wchan``, with or without ``-threads``.

So every process here has all of those files; a spec leaves one out with ``missing``.
A real kernel's aggregation is kept: ``PID/stat`` CPU and faults and ``PID/io`` are sums
over the threads, those that exited included; ``PID/status`` context switches are the
leader thread's own; the process state is the leader's; a zombie or kernel thread has no
memory, no Vm lines and no open files. ``wchan`` is ``0`` unless a spec says otherwise (what
the kernel shows a reader without ptrace access, or for a running task).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Optional

from conftest import make_proc_trees

CLOCK_TICKS = 100  # USER_HZ: both exporters divide starttime/utime/stime by it
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

STATE_WORDS = {
    "R": "running", "S": "sleeping", "D": "disk sleep", "T": "stopped", "t": "tracing stop",
    "Z": "zombie", "X": "dead", "I": "idle",
}

LIMITS = make_proc_trees.LIMITS  # the limits file the fixture trees use, {soft} and {hard}


@dataclass
class Task:
    """One thread (task/TID/). The leader is the task whose tid is the pid."""

    tid: int
    comm: bytes
    state: str = "S"
    utime: int = 0  # clock ticks
    stime: int = 0
    minflt: int = 0
    majflt: int = 0
    ctx: tuple = (0, 0)  # (voluntary, nonvoluntary)
    read_bytes: int = 0
    write_bytes: int = 0
    wchan: bytes = b"0"  # what the kernel shows without ptrace access, or for a running task
    start_ticks: Optional[int] = None  # None: the process' start

    def grow(self, utime=0, stime=0, minflt=0, majflt=0, ctx=(0, 0), read_bytes=0, write_bytes=0):
        self.utime += utime
        self.stime += stime
        self.minflt += minflt
        self.majflt += majflt
        self.ctx = (self.ctx[0] + ctx[0], self.ctx[1] + ctx[1])
        self.read_bytes += read_bytes
        self.write_bytes += write_bytes


@dataclass
class Proc:
    """One process directory. ``tasks[0]`` is the leader; a process with one task is
    single-threaded. ``missing`` names files left out (e.g. {"io"})."""

    pid: int
    cmdline: bytes
    tasks: list
    ppid: int = 1
    uids: tuple = (0, 0, 0, 0)  # status Uid: real, effective, saved set, filesystem
    start_ticks: int = 100
    vsize: int = 64 << 20
    rss_pages: int = 1000
    swap_kb: int = 0
    fds: int = 4
    nofile: tuple = (1024, 524288)  # Max open files soft, hard ("unlimited" allowed)
    exe: Optional[str] = None
    cgroup: bytes = b"0::/system.slice/app.service\n"
    smaps: Optional[tuple] = None  # (Pss kB, SwapPss kB) for smaps_rollup, None: no file
    code_base: int = 0x55AA00000000  # startcode/endcode/... of stat: they change on exec
    missing: frozenset = frozenset()
    kthread: bool = False
    dead: Optional[Task] = None  # what exited threads left in the process totals (the kernel keeps it)

    def __post_init__(self):
        if self.dead is None:
            self.dead = Task(0, b"")

    @property
    def leader(self) -> Task:
        return self.tasks[0]

    @property
    def comm(self) -> bytes:
        return self.leader.comm

    def grow(self, **kw):
        """Grow the leader's counters (see Task.grow)."""
        self.leader.grow(**kw)

    def end_thread(self, tid: int) -> Task:
        """A thread exits: its CPU time, faults and I/O stay in the process' stat and io
        (as the kernel keeps them), its context switches leave task/ with it."""
        assert tid != self.pid, "the leader ends with the process"
        task = next(t for t in self.tasks if t.tid == tid)
        self.tasks.remove(task)
        self.dead.grow(task.utime, task.stime, task.minflt, task.majflt, (0, 0), task.read_bytes, task.write_bytes)
        return task

    def add_thread(self, comm: Optional[bytes] = None, **kw) -> Task:
        tid = max(t.tid for t in self.tasks) + 1
        task = Task(tid, comm if comm is not None else self.comm, **kw)
        self.tasks.append(task)
        return task


def proc(pid, comm: bytes, cmdline: bytes, *, threads=(), state="S", utime=0, stime=0, minflt=0, majflt=0,
         ctx=(0, 0), read_bytes=0, write_bytes=0, wchan=b"0", **kw) -> Proc:
    """A process whose leader has the given counters; ``threads`` are extra tasks given as
    dicts of Task fields (tid defaults to pid+1, pid+2 ...; comm to the process')."""
    leader = Task(pid, comm, state, utime, stime, minflt, majflt, ctx, read_bytes, write_bytes, wchan)
    p = Proc(pid, cmdline, [leader], **kw)
    for i, spec in enumerate(threads, 1):
        spec = dict(spec)
        tid = spec.pop("tid", pid + i)
        p.tasks.append(Task(tid, spec.pop("comm", comm), **spec))
    return p


def _stat_line(pid, comm, *, state, ppid, minflt, majflt, utime, stime, num_threads, start_ticks, vsize, rss,
               code_base, kthread) -> bytes:
    flags = 0x00208040 if kthread else 0x00400100
    code = code_base
    fields = [
        state, ppid, pid, pid, 0, -1, flags, minflt, 7, majflt, 9, utime, stime, 11, 13, 20, 0,
        num_threads, 0, start_ticks, vsize, rss, 18446744073709551615,
        code, code + 0x4DA9, 0x7FFC95969000 + (code >> 32), 0, 0, 0, 0, 0, 0, 0, 0, 0, 17, 1, 0, 0, 0, 0, 0,
        code + 0x8D30, code + 0x9380, code + 0x2000000, 0x7FFC9596A000 + (code >> 32),
        0x7FFC9596A016 + (code >> 32), 0x7FFC9596A016 + (code >> 32), 0x7FFC9596AFEB + (code >> 32), 0,
    ]
    rest = " ".join(str(f) for f in fields).encode()
    return b"%d (%s) %s\n" % (pid, comm, rest)


def _status(tgid, tid, name, *, state, ppid, uids, swap_kb, threads, ctx, kthread) -> bytes:
    name = name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
    lines = [
        b"Name:\t" + name,
        b"Umask:\t0022",
        b"State:\t%s (%s)" % (state.encode(), STATE_WORDS.get(state, "unknown").encode()),
        b"Tgid:\t%d" % tgid,
        b"Ngid:\t0",
        b"Pid:\t%d" % tid,
        b"PPid:\t%d" % ppid,
        b"TracerPid:\t0",
        b"Uid:\t%d\t%d\t%d\t%d" % tuple(uids),
        b"Gid:\t%d\t%d\t%d\t%d" % tuple(uids),
        b"FDSize:\t64",
        b"Groups:\t ",
        b"NStgid:\t%d" % tgid,
        b"NSpid:\t%d" % tid,
        b"NSpgid:\t%d" % tgid,
        b"NSsid:\t%d" % tgid,
        b"Kthread:\t%d" % int(kthread),
    ]
    if swap_kb is not None:
        lines += [
            b"VmPeak:\t   70000 kB", b"VmSize:\t   65536 kB", b"VmLck:\t       0 kB", b"VmPin:\t       0 kB",
            b"VmHWM:\t    4000 kB", b"VmRSS:\t    4000 kB", b"RssAnon:\t     116 kB", b"RssFile:\t    1588 kB",
            b"RssShmem:\t       0 kB", b"VmData:\t     360 kB", b"VmStk:\t     132 kB", b"VmExe:\t      20 kB",
            b"VmLib:\t    1528 kB", b"VmPTE:\t      40 kB", b"VmSwap:\t%8d kB" % swap_kb,
        ]
    lines += [
        b"HugetlbPages:\t       0 kB", b"CoreDumping:\t0", b"THP_enabled:\t1", b"Threads:\t%d" % threads,
        b"SigQ:\t0/96365", b"SigPnd:\t0000000000000000", b"ShdPnd:\t0000000000000000",
        b"SigBlk:\t0000000000000000", b"SigIgn:\t0000000000000000", b"SigCgt:\t0000000000000000",
        b"CapInh:\t0000000000000000", b"CapPrm:\t000001ffffffffff", b"CapEff:\t000001ffffffffff",
        b"CapBnd:\t000001ffffffffff", b"CapAmb:\t0000000000000000", b"NoNewPrivs:\t0", b"Seccomp:\t0",
        b"Seccomp_filters:\t0", b"Speculation_Store_Bypass:\tvulnerable", b"Cpus_allowed:\t3",
        b"Cpus_allowed_list:\t0-1", b"Mems_allowed:\t00000000,00000001", b"Mems_allowed_list:\t0",
        b"voluntary_ctxt_switches:\t%d" % ctx[0],
        b"nonvoluntary_ctxt_switches:\t%d" % ctx[1],
    ]
    return b"\n".join(lines) + b"\n"


def _io(read_bytes, write_bytes) -> bytes:
    # rchar/wchar are decoys: both exporters report the storage-layer read_bytes/write_bytes
    return (b"rchar: %d\nwchar: %d\nsyscr: 31\nsyscw: 17\nread_bytes: %d\nwrite_bytes: %d\n"
            b"cancelled_write_bytes: 0\n" % (read_bytes * 3 + 5, write_bytes * 3 + 5, read_bytes, write_bytes))


def _smaps_rollup(rss_kb, pss_kb, swap_kb, swap_pss_kb) -> bytes:
    return (
        b"559edefec000-7ffc9596a000 ---p 00000000 00:00 0                          [rollup]\n"
        b"Rss:            %8d kB\nPss:            %8d kB\nPss_Dirty:             116 kB\n"
        b"Pss_Anon:              116 kB\nPss_File:              205 kB\nPss_Shmem:               0 kB\n"
        b"Shared_Clean:         1604 kB\nShared_Dirty:            0 kB\nPrivate_Clean:          40 kB\n"
        b"Private_Dirty:         116 kB\nReferenced:           1760 kB\nAnonymous:             116 kB\n"
        b"KSM:                     0 kB\nLazyFree:                0 kB\nAnonHugePages:           0 kB\n"
        b"ShmemPmdMapped:          0 kB\nFilePmdMapped:           0 kB\nShared_Hugetlb:          0 kB\n"
        b"Private_Hugetlb:         0 kB\nSwap:           %8d kB\nSwapPss:        %8d kB\n"
        b"Locked:                  0 kB\n" % (rss_kb, pss_kb, swap_kb, swap_pss_kb)
    )


ROOT_STAT = make_proc_trees.ROOT_STAT_TEMPLATE  # btime %d


def _write(path, content: bytes):
    with open(path, "wb") as f:
        f.write(content)


class Tree:
    """A fake procfs at ``root``: add processes, ``write()``, change them, ``write()`` again.

    The boot time is a day before the tree is made, so processes given small start ticks
    started long before either exporter; ``now_ticks()`` is a start "now" (a process that
    starts between two scrapes).
    """

    def __init__(self, root, btime: Optional[int] = None):
        self.root = str(root)
        self.btime = int(time.time()) - 86400 if btime is None else btime
        self.procs: dict = {}
        self._written: set = set()

    def add(self, p: Proc) -> Proc:
        assert p.pid not in self.procs, p.pid
        self.procs[p.pid] = p
        return p

    def remove(self, pid: int) -> Proc:
        return self.procs.pop(pid)

    def __getitem__(self, pid) -> Proc:
        return self.procs[pid]

    def now_ticks(self, whole_second=True) -> int:
        """Ticks since boot for a process starting now: the next whole second (so that
        start times stay whole seconds), or the next tick."""
        since_boot = time.time() - self.btime
        if whole_second:
            return (math.floor(since_boot) + 1) * CLOCK_TICKS
        return math.floor(since_boot * CLOCK_TICKS) + 1

    def write(self):
        os.makedirs(self.root, exist_ok=True)
        _write(os.path.join(self.root, "stat"), ROOT_STAT % self.btime)
        _write(os.path.join(self.root, "uptime"), b"86400.00 170000.00\n")
        for pid in self._written - set(self.procs):
            shutil.rmtree(os.path.join(self.root, str(pid)))
        for p in self.procs.values():
            self._write_proc(p)
        self._written = set(self.procs)

    def _write_proc(self, p: Proc):
        d = os.path.join(self.root, str(p.pid))
        os.makedirs(d, exist_ok=True)
        tasks = p.tasks
        n = len(tasks)
        total = {k: sum(getattr(t, k) for t in tasks + [p.dead])
                 for k in ("utime", "stime", "minflt", "majflt", "read_bytes", "write_bytes")}
        leader = p.leader
        zombie = leader.state == "Z"  # no mm (no memory, no Vm lines), no open files
        swap = None if p.kthread or zombie else p.swap_kb
        vsize, rss, fds = (0, 0, 0) if zombie or p.kthread else (p.vsize, p.rss_pages, p.fds)
        files = {
            "stat": _stat_line(p.pid, p.comm, state=leader.state, ppid=p.ppid, minflt=total["minflt"],
                               majflt=total["majflt"], utime=total["utime"], stime=total["stime"],
                               num_threads=n, start_ticks=p.start_ticks, vsize=vsize, rss=rss,
                               code_base=p.code_base, kthread=p.kthread),
            "status": _status(p.pid, p.pid, p.comm, state=leader.state, ppid=p.ppid, uids=p.uids, swap_kb=swap,
                              threads=n, ctx=leader.ctx, kthread=p.kthread),
            "io": _io(total["read_bytes"], total["write_bytes"]),
            "cmdline": p.cmdline,
            "comm": p.comm + b"\n",
            "cgroup": p.cgroup,
            "wchan": leader.wchan,
            "limits": LIMITS.format(soft=p.nofile[0], hard=p.nofile[1]).encode(),
        }
        if p.smaps is not None:
            files["smaps_rollup"] = _smaps_rollup(p.rss_pages * PAGE_SIZE // 1024, p.smaps[0], p.swap_kb, p.smaps[1])
        for name, content in files.items():
            path = os.path.join(d, name)
            if name in p.missing:
                if os.path.lexists(path):
                    os.unlink(path)
            else:
                _write(path, content)
        # fd/: n entries (both exporters count the names)
        fd = os.path.join(d, "fd")
        if "fd" in p.missing:
            shutil.rmtree(fd, ignore_errors=True)
        else:
            os.makedirs(fd, exist_ok=True)
            have = set(os.listdir(fd))
            want = {str(i) for i in range(fds)}
            for name in have - want:
                os.unlink(os.path.join(fd, name))
            for name in want - have:
                _write(os.path.join(fd, name), b"")
        exe = os.path.join(d, "exe")
        if os.path.lexists(exe):
            os.unlink(exe)
        if p.exe is not None and "exe" not in p.missing:
            os.symlink(p.exe, exe)
        # task/TID/ for every thread, the leader's included (as the kernel has it)
        task_dir = os.path.join(d, "task")
        os.makedirs(task_dir, exist_ok=True)
        for name in set(os.listdir(task_dir)) - {str(t.tid) for t in tasks}:
            shutil.rmtree(os.path.join(task_dir, name))
        for t in tasks:
            td = os.path.join(task_dir, str(t.tid))
            os.makedirs(td, exist_ok=True)
            start = p.start_ticks if t.start_ticks is None else t.start_ticks
            tfiles = {
                "stat": _stat_line(t.tid, t.comm, state=t.state, ppid=p.ppid, minflt=t.minflt, majflt=t.majflt,
                                   utime=t.utime, stime=t.stime, num_threads=n, start_ticks=start, vsize=vsize,
                                   rss=rss, code_base=p.code_base, kthread=p.kthread),
                "status": _status(p.pid, t.tid, t.comm, state=t.state, ppid=p.ppid, uids=p.uids, swap_kb=swap,
                                  threads=n, ctx=t.ctx, kthread=p.kthread),
                "io": _io(t.read_bytes, t.write_bytes),
                "cmdline": p.cmdline,
                "comm": t.comm + b"\n",
                "cgroup": p.cgroup,
                "wchan": t.wchan,
            }
            for name, content in tfiles.items():
                _write(os.path.join(td, name), content)
