"""The snapshot contract: one batched read of every process under a procfs root.

``snapshot()`` returns a :class:`Snapshot` whose ``processes`` are :class:`Process`
records. Two backends fill the same records:

* ``native``: the C extension ``exporter._collector`` (one getdents walk, files kept
  open across snapshots, the GIL released for the whole walk);
* ``python``: :mod:`exporter.procfs`, a pure-Python twin, used when the extension is
  not built and as the oracle the tests hold the C against.

Units are final (seconds, bytes, counts): both backends convert in the same order so
their floats are bit-identical. A field the kernel would not let us read is ``None``,
never 0, and the reason is counted in ``Snapshot.errors`` (errno name -> count, plus
``"malformed"`` for a file we could not parse). A process that exits mid-walk is
dropped quietly.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple, Optional, Sequence

from exporter.hostfacts import HostFacts


class Process(NamedTuple):
    """One process as seen by one snapshot. Text is valid UTF-8 (bad bytes replaced)."""

    pid: int
    ppid: int
    comm: str
    state: str  # one letter of /proc/PID/stat: R S D Z T t X I ...
    is_kernel_thread: bool  # PF_KTHREAD in stat flags
    start_ticks: int  # raw stat starttime; (pid, start_ticks) is the identity
    start_time_seconds: float  # epoch seconds: boot_time + start_ticks / clock_ticks
    cpu_user_seconds: Optional[float]
    cpu_system_seconds: Optional[float]
    minor_faults: Optional[int]
    major_faults: Optional[int]
    num_threads: Optional[int]
    rss_bytes: Optional[int]
    vms_bytes: Optional[int]
    swap_bytes: Optional[int]  # status VmSwap; None for kernel threads (no mm)
    ctx_voluntary: Optional[int]
    ctx_nonvoluntary: Optional[int]
    read_bytes: Optional[int]  # io read_bytes (storage layer), None if io unreadable
    write_bytes: Optional[int]
    open_fds: Optional[int]
    max_fds: Optional[int]  # soft RLIMIT_NOFILE; None when unlimited or unreadable
    uid: Optional[int]  # real uid (status Uid, first column)
    username: Optional[str]  # name of uid, or str(uid) when no user has it
    tty: Optional[str]  # "pts/3", "tty1"; None when there is no controlling tty
    cmdline: Optional[Sequence[str]]  # tuple (memoized per identity, shared between snapshots); () for zombies and kernel threads
    exe: Optional[str]
    cgroup: Optional[str]  # text of /proc/PID/cgroup, trailing newline stripped

    @property
    def identity(self) -> tuple[int, int]:
        return (self.pid, self.start_ticks)


# The extension builds records by position: keep it in step with this order.
FIELDS = Process._fields


class Snapshot(NamedTuple):
    processes: list  # list[Process]
    timestamp: float  # epoch seconds when the walk started
    duration_seconds: float
    errors: dict  # reason -> count: errno names ("EACCES", "EPERM", ...) and "malformed"
    backend: str


def _native_module():
    try:
        from exporter import _collector  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _collector


def native_available() -> bool:
    return _native_module() is not None


class Collector:
    """Takes snapshots of one procfs root, keeping what it may keep between them:
    open files (native), static facts per identity (cmdline, exe, cgroup).

    Thread-safe: concurrent ``snapshot()`` calls are serialized by the backend.
    """

    def __init__(self, procfs: str = "/proc", backend: str = "native", facts: HostFacts | None = None):
        if backend not in ("native", "python"):
            raise ValueError(f"backend must be 'native' or 'python', not {backend!r}")
        self.procfs = procfs
        self.facts = facts or HostFacts(procfs=procfs)
        if backend == "native":
            module = _native_module()
            if module is None:
                raise RuntimeError("the native collector (exporter._collector) is not built; use backend='python'")
            self._impl = module.Collector(
                procfs, Process, self.facts.clock_ticks, self.facts.page_size, self.facts.boot_time
            )
        else:
            from exporter.procfs import PythonCollector

            self._impl = PythonCollector(procfs, self.facts.clock_ticks, self.facts.page_size, self.facts.boot_time)
        self.backend = backend

    def snapshot(self) -> Snapshot:
        started = time.time()
        t0 = time.perf_counter()
        processes, errors = self._impl.collect(self.facts.usernames, self.facts.ttys)
        return Snapshot(processes, started, time.perf_counter() - t0, errors, self.backend)

    def close(self) -> None:
        """Release what the collector keeps open (the native backend's file descriptors)."""
        self._impl.close()


_default_collectors: dict[tuple[str, str], Collector] = {}
_default_lock = threading.Lock()


def snapshot(procfs: str = "/proc", backend: str = "native") -> Snapshot:
    """One snapshot of every process under ``procfs``.

    Collectors are kept per (procfs, backend) so repeated calls reuse open files and
    memoized static facts.
    """
    key = (procfs, backend)
    with _default_lock:
        collector = _default_collectors.get(key)
        if collector is None:
            collector = _default_collectors[key] = Collector(procfs, backend)
    return collector.snapshot()
