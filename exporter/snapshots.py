"""The snapshot contract: every process under a procfs root, as :class:`Process` records.

``snapshot()`` is the library entry point (the exporter itself works on the tracker's
steps, which carry the same facts without building a record per process). Each call is
one reading: identities, exec detection, static-fact memoisation and unreadable-is-not-
exited are the tracker's (:mod:`exporter.tracker`), so repeated calls reuse what the
previous ones read.

A field the kernel would not let us read is ``None``, never 0; the reasons are counted in
``Snapshot.errors`` (errno name -> count, ``"malformed"`` for a file that does not parse).
"""

from __future__ import annotations

import threading
from itertools import chain, compress
from operator import and_, eq, is_, not_
from typing import NamedTuple, Optional, Sequence

from exporter.hostfacts import HostFacts
from exporter.reader import UNLIMITED, F, Reader
from exporter.tracker import Tracker, index_of


class Process(NamedTuple):
    """One process as seen by one snapshot. Text is valid UTF-8 (bad bytes replaced)."""

    pid: int
    ppid: int
    comm: str
    state: str  # one letter of /proc/PID/stat: R S D Z T t X I ...
    is_kernel_thread: bool  # PF_KTHREAD in stat flags
    start_ticks: int  # raw stat starttime; (pid, start_ticks) is the identity
    start_time_seconds: float  # epoch seconds: boot_time + start_ticks / clock_ticks
    cpu_user_seconds: float
    cpu_system_seconds: float
    minor_faults: int
    major_faults: int
    num_threads: int
    rss_bytes: Optional[int]
    vms_bytes: Optional[int]
    swap_bytes: Optional[int]  # status VmSwap; 0 for kernel threads and zombies (no mm)
    ctx_voluntary: Optional[int]
    ctx_nonvoluntary: Optional[int]
    read_bytes: Optional[int]  # io read_bytes (storage layer), None if io unreadable
    write_bytes: Optional[int]
    open_fds: Optional[int]
    max_fds: Optional[int]  # soft RLIMIT_NOFILE; None when unlimited or unreadable
    uid: Optional[int]  # real uid (status Uid, first column)
    username: Optional[str]  # name of uid, or str(uid) when no user has it
    tty: Optional[str]  # "pts/3", "tty1"; None when there is no controlling tty
    cmdline: Optional[Sequence[str]]  # argv, trailing NULs trimmed; () for kernel threads and zombies
    exe: Optional[str]
    cgroup: Optional[str]  # text of /proc/PID/cgroup, trailing newline stripped


class Snapshot(NamedTuple):
    processes: list  # list[Process], sorted by pid
    timestamp: float  # epoch seconds when the walk started
    duration_seconds: float
    errors: dict  # reason -> count: errno names ("EACCES", "EPERM", ...) and "malformed"
    backend: str


_NAMES = ("pid", "ppid", "comm", "state", "start_ticks", "utime_ticks", "stime_ticks", "minor_faults",
          "major_faults", "num_threads", "rss_bytes", "vms_bytes", "swap_bytes", "ctx_voluntary",
          "ctx_nonvoluntary", "read_bytes", "write_bytes", "open_fds", "uid", "tty_nr")
(_PID, _PPID, _COMM, _STATE, _START, _UTIME, _STIME, _MINFLT, _MAJFLT, _THREADS, _RSS, _VMS, _SWAP,
 _CTXV, _CTXNV, _READ, _WRITE, _FDS, _UID, _TTY) = (F[name] for name in _NAMES)


def _max_fds(nofile):
    return None if nofile == UNLIMITED else nofile


def _tty(ttys, tty_nr: int):
    """The terminal's name, None without one (0) or when the map does not know it."""
    if not tty_nr:
        return None
    try:
        return ttys[tty_nr]
    except KeyError:
        return None


def processes(step, facts: HostFacts, last=None) -> tuple:
    """The Process records of one tracker step, and the identities among them whose user or
    terminal name is not known yet. ``last``: that pair of the snapshot before, with its
    step. Where the tracker gave its identities again (none started, none gone), a process
    whose record object, fd limit and static facts are the same keeps its Process, unless
    a name of it was not known then (a known one stays the same)."""
    hz, names, ttys = facts.clock_ticks, facts.usernames, facts.ttys
    identities, records, limits = step.identities, step.records, step.limits
    if last is not None and last[0].identities is identities:
        before, made, unsure = last
        out = list(made)
        kept = list(map(and_, map(is_, records, before.records), map(eq, limits, before.limits)))
        for identity in chain(step.execed, step.refreshed, unsure):  # facts read again, names unknown then
            kept[index_of(identity, identities)] = False
        redo = compress(range(len(records)), map(not_, kept))
    else:
        out = [None] * len(records)
        redo = range(len(records))
    unsure = []
    for i in redo:
        identity, r = identities[i], records[i]
        proc = step.procs[identity]
        uid, tty_nr = r[_UID], r[_TTY]
        user, tty = None if uid is None else names[uid], _tty(ttys, tty_nr)
        if (uid is not None and uid not in names) or (tty_nr and tty is None):  # str(uid), None: for now
            unsure.append(identity)
        out[i] = Process(
            r[_PID], r[_PPID], r[_COMM], r[_STATE], proc.is_kernel_thread, r[_START],
            proc.start_time_seconds, r[_UTIME] / hz, r[_STIME] / hz, r[_MINFLT], r[_MAJFLT],
            r[_THREADS], r[_RSS], r[_VMS], r[_SWAP], r[_CTXV], r[_CTXNV], r[_READ], r[_WRITE],
            r[_FDS], _max_fds(limits[i]), uid, user,
            tty, proc.cmdline, proc.exe, proc.cgroup,
        )
    return out, unsure


class Snapshotter:
    """Repeated snapshots of one procfs root (a reader and a tracker kept between them)."""

    def __init__(self, procfs: str = "/proc", backend: str = "native", facts: HostFacts | None = None,
                 keep_open: str = "auto"):
        self.facts = facts or HostFacts(procfs=procfs)
        self.reader = Reader(procfs, backend, self.facts.page_size, keep_open)
        self.tracker = Tracker(self.reader, self.facts)
        self.backend = backend
        self._lock = threading.Lock()
        self._last = None  # (step, processes, identities of unknown names) of the last snapshot

    def snapshot(self) -> Snapshot:
        with self._lock:
            reading = self.reader.read()
            step = self.tracker.step(reading)
            self.tracker.commit(step)
            made, unsure = processes(step, self.facts, self._last)
            self._last = (step, made, unsure)
        return Snapshot(made, reading.timestamp, reading.duration_seconds, step.errors, self.backend)

    def close(self) -> None:
        self.reader.close()


_default: dict = {}
_default_lock = threading.Lock()


def snapshot(procfs: str = "/proc", backend: str = "native") -> Snapshot:
    """One snapshot of every process under ``procfs``. A Snapshotter is kept per (procfs,
    backend), so repeated calls reuse open files and memoized static facts."""
    key = (procfs, backend)
    with _default_lock:
        snapshotter = _default.get(key)
        if snapshotter is None:
            snapshotter = _default[key] = Snapshotter(procfs, backend)
    return snapshotter.snapshot()
