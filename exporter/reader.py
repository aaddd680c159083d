"""The reader: one batched read of every process under a procfs root, and the static facts
of the pids the tracker asks for. It reads and parses; it decides nothing (identity, exec,
what an error means: :mod:`exporter.tracker`).

Two backends give the same output:

* ``native``: the C extension ``exporter._reader`` (one getdents walk, files kept open
  across reads, the GIL released for the whole walk);
* ``python``: :class:`exporter.procfs.PythonReader`, the parser twin, used when the
  extension is not built and as the oracle the tests hold the C against.

A third reads the same records below /proc: ``bpf``, the extension ``exporter._bpf``
(a BPF task iterator loaded through libbpf; exporter/native/bpf/), with the static facts
still from /proc. It needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN), Linux >= 5.8 with
BTF, and the procfs root of procsnap's own pid namespace; where it cannot load, ``bpf``
and ``auto`` fall back to ``native`` (:attr:`Reader.fallback_reason` says why).

A record is a plain tuple laid out as :data:`FIELDS`: raw kernel units (clock ticks,
bytes, counts), ``None`` where a file could not be read. Numbers that do not fit in 64
bits make their file malformed.
"""

from __future__ import annotations

import errno
import importlib
import os
import resource
import time
from typing import NamedTuple, Optional

FIELDS = (
    "pid",
    "ppid",
    "comm",  # str, bad UTF-8 replaced
    "state",  # one letter of /proc/PID/stat: R S D Z T t X I ...
    "flags",  # stat flags (PF_KTHREAD = 0x00200000: a kernel thread)
    "start_ticks",  # stat starttime: clock ticks after boot; (pid, start_ticks) is the identity
    "utime_ticks",
    "stime_ticks",
    "minor_faults",
    "major_faults",
    "num_threads",
    "vms_bytes",
    "rss_bytes",
    "uid",  # real uid (status Uid, first column)
    "swap_bytes",  # status VmSwap; 0 without the line (kernel threads, zombies: no mm)
    "ctx_voluntary",
    "ctx_nonvoluntary",
    "read_bytes",  # io read_bytes (storage layer)
    "write_bytes",
    "open_fds",
    "tty_nr",  # stat tty_nr: 0 without a controlling terminal
    "mark",  # exec evidence from the mm addresses in stat; 0 when the kernel hides them
    "euid",  # effective uid (status Uid, second column): process-exporter's {{.Username}}
    "pss_bytes",  # smaps_rollup Pss (with smaps_max_rss only); 0 without an mm
    "swap_pss_bytes",  # smaps_rollup SwapPss
    "cutime_ticks",  # stat cutime: CPU of the children it reaped (and theirs), since it started
    "cstime_ticks",
    "cminor_faults",  # stat cminflt
    "cmajor_faults",
    "wchan",  # str of /proc/PID/wchan: where it sleeps in the kernel; "0" when running or hidden
)
F = {name: i for i, name in enumerate(FIELDS)}

# A thread of a multi-threaded process (read_facts with WANT_THREADS): task/TID/{stat,status,io,wchan}.
THREAD_FIELDS = (
    "tid",
    "comm",
    "state",
    "utime_ticks",
    "stime_ticks",
    "minor_faults",
    "major_faults",
    "ctx_voluntary",
    "ctx_nonvoluntary",
    "read_bytes",
    "write_bytes",
    "wchan",
)

# read_facts: what to read for a pid (bits)
WANT_CMDLINE, WANT_EXE, WANT_CGROUP, WANT_NOFILE, WANT_THREADS = 1, 2, 4, 8, 16
WANT_ALL = WANT_CMDLINE | WANT_EXE | WANT_CGROUP | WANT_NOFILE  # a new identity's static facts
UNLIMITED = 2**64 - 1  # a soft RLIMIT_NOFILE of "unlimited"
MALFORMED = -1  # the errno of a file that does not parse

PF_KTHREAD = 0x00200000


def reason(err: int) -> str:
    """An errno (or MALFORMED) as the reason label procsnap counts it under."""
    if err == MALFORMED:
        return "malformed"
    return errno.errorcode.get(err, str(err))


class Reading(NamedTuple):
    records: list  # tuples laid out as FIELDS, sorted by pid
    unreadable: list  # [(pid, errno)]: stat unreadable or malformed, the pid still there
    errors: dict  # {reason: count} of the other files
    timestamp: float  # epoch seconds when the walk started
    duration_seconds: float
    cpu_ticks: Optional[int] = None  # the machine's non-idle CPU ticks (/proc/stat) after the walk
    nofile: Optional[list] = None  # per record, its fd limit as Fact.nofile, where the walk reads it (bpf)


class Fact(NamedTuple):
    pid: int
    gone: bool  # exited, or the pid is another process now: the rest is None
    cmdline: object  # bytes or None
    exe: object
    cgroup: object
    nofile: object  # int (UNLIMITED for unlimited) or None
    threads: object  # [tuple laid out as THREAD_FIELDS] sorted by tid, or None (asked, < 2 read)


def _native_module():
    try:
        from exporter import _reader  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _reader


def native_available() -> bool:
    return _native_module() is not None


_bpf_import_error: Optional[str] = None


def _bpf_module():
    global _bpf_import_error
    try:
        return importlib.import_module("exporter._bpf")
    except ModuleNotFoundError as e:
        _bpf_import_error = None if e.name == "exporter._bpf" else str(e)
    except ImportError as e:  # built but not loadable (libbpf.so.1 missing where it runs)
        _bpf_import_error = str(e)
    return None


BTF_PATH = "/sys/kernel/btf/vmlinux"


def bpf_unavailable(procfs: str = "/proc") -> Optional[str]:
    """Why the bpf backend cannot run here (before trying to load it), or None."""
    if _bpf_module() is None:
        if _bpf_import_error:
            return f"the BPF reader (exporter._bpf) does not load: {_bpf_import_error}"
        return "the BPF reader (exporter._bpf) is not built: clang and libbpf-dev were missing at build time"
    if not os.path.exists(BTF_PATH):
        return f"the kernel has no BTF ({BTF_PATH}; CONFIG_DEBUG_INFO_BTF)"
    try:
        own = os.readlink(os.path.join(procfs, "self")) == str(os.getpid())
    except OSError:
        own = False
    if not own:
        return (f"{procfs} is not the procfs of procsnap's pid namespace (the task iterator sees the "
                "namespace procsnap runs in: in a container, share the host's, e.g. hostPID)")
    return None


class _BpfBackend:
    """read() from the BPF task iterator (the records, and each one's fd limit);
    read_facts() (cmdline, exe, cgroup, threads: once per identity, as the tracker asks)
    from a /proc reader that keeps no files open."""

    def __init__(self, procfs, page_size, wchan, smaps_max_rss, reject=False):
        self._args = (procfs, page_size, wchan, smaps_max_rss, reject)
        self._bpf = _bpf_module().Reader(*self._args)
        module = _native_module()
        if module is not None:
            self._facts = module.Reader(procfs, page_size, 0, wchan, smaps_max_rss)
        else:
            from exporter.procfs import PythonReader

            self._facts = PythonReader(procfs, page_size, wchan, smaps_max_rss)

    def read(self):
        if self._bpf is None:  # closed: loaded again
            self._bpf = _bpf_module().Reader(*self._args)
        return self._bpf.read()

    def read_facts(self, requests):
        return self._facts.read_facts(requests)

    def kept(self) -> int:
        return self._facts.kept()

    def kept_threads(self) -> int:
        return self._facts.kept_threads()

    def describe(self) -> str:
        return self._bpf.describe() if self._bpf is not None else ""

    def close(self) -> None:
        if self._bpf is not None:
            self._bpf.close()
            self._bpf = None
        self._facts.close()


# Each kept-open /proc file pins about 4.4 KiB of kernel memory (its seq_file buffer and
# struct file). A kept process that sleeps keeps two, stat and schedstat (its status, io
# and wchan are given from memory while it does not run); one seen running keeps all
# five. "auto" keeps the files of at most this many processes: about 17 MiB while they
# sleep, up to 2.5 times that if all of them run; the others are opened and closed at
# each read. A thread of a multi-threaded process that ran since its last read keeps its
# five files (task/TID/{stat,status,io,wchan,schedstat}: about 22 KiB) while it keeps
# running; one found idle gives them back. "auto" keeps those of at most KEEP_THREADS_AUTO
# threads (up to about 66 MiB on a host whose threads all run between scrapes). Kept fds
# stay within RLIMIT_NOFILE's soft limit less FD_RESERVE.
KEEP_OPEN_AUTO = 2000
KEEP_THREADS_AUTO = 3000
KEPT_PER_PROCESS = 5  # stat, status, io, wchan, schedstat (PS_KEPT_FDS)
FD_RESERVE = 512  # descriptors left to the rest of procsnap (sockets, config, ...): PS_FD_RESERVE


def keep_open_budget(setting: str) -> int:
    """Processes whose files may be kept open, from --procfs.keep-open (auto, off, or a
    number), capped by what RLIMIT_NOFILE leaves (5 files a process)."""
    setting = parse_keep_open(setting)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    by_fds = max(0, (soft - FD_RESERVE) // KEPT_PER_PROCESS)
    if setting == "off":
        return 0
    if setting == "auto":
        return min(KEEP_OPEN_AUTO, by_fds)
    return min(int(setting), by_fds)


def keep_threads_budget(setting: str) -> int:
    """Threads whose files may be kept open, from --procfs.keep-open (the reader also keeps
    every kept fd within RLIMIT_NOFILE)."""
    setting = parse_keep_open(setting)
    if setting == "off":
        return 0
    if setting == "auto":
        return KEEP_THREADS_AUTO
    return int(setting)


def parse_keep_open(text: str) -> str:
    """Validates a --procfs.keep-open value; raises ValueError with the reason."""
    value = text.strip().lower()
    if value in ("auto", "off"):
        return value
    if value == "all":
        return str(1 << 30)
    if value.isascii() and value.isdigit():
        return str(int(value))
    raise ValueError(f"invalid keep-open {text!r} (auto, off, all, or a number of processes)")


class Reader:
    """Reads one procfs root, keeping what it may keep between reads (native: open files).

    Thread-safe: concurrent calls are serialized by the backend.
    """

    def __init__(self, procfs: str = "/proc", backend: str = "native", page_size: int | None = None,
                 keep_open: str = "auto", wchan: bool = True, smaps_max_rss: int | None = None,
                 bpf_reject: bool = False, machine_cpu: bool = True):
        """``wchan``: read /proc/PID/wchan (and each thread's); without it the field is None.
        ``machine_cpu``: read the machine's CPU (/proc/stat) after each walk, for the check
        of reaped children's CPU (else Reading.cpu_ticks is None).
        ``smaps_max_rss``: read proportional memory (smaps_rollup) of the processes whose rss
        is at most that many bytes (None: of none). ``backend`` "bpf" or "auto": the BPF
        task iterator where it loads, else "native" (``backend`` then says "native" and
        ``fallback_reason`` why). ``bpf_reject`` (tests): the verifier refuses the program."""
        if backend not in ("native", "python", "bpf", "auto"):
            raise ValueError(f"backend must be 'native', 'python', 'bpf' or 'auto', not {backend!r}")
        self.procfs = procfs
        self.machine_cpu = machine_cpu
        self.requested = backend
        self.fallback_reason: Optional[str] = None
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        if backend in ("bpf", "auto"):
            reject = bpf_reject or os.environ.get("PROCSNAP_BPF_REJECT", "") not in ("", "0")
            self.fallback_reason = bpf_unavailable(procfs)
            if self.fallback_reason is None:
                try:
                    self._impl = _BpfBackend(procfs, self.page_size, wchan, smaps_max_rss, reject)
                except OSError as e:
                    self.fallback_reason = _bpf_load_reason(e)
            if self.fallback_reason is None:
                self.backend = "bpf"
                return
            backend = "native" if native_available() else "python"
        self.backend = backend
        if backend == "native":
            module = _native_module()
            if module is None:
                raise RuntimeError("the native reader (exporter._reader) is not built; use backend='python'")
            self._impl = module.Reader(procfs, self.page_size, keep_open_budget(keep_open), wchan, smaps_max_rss,
                                       keep_threads_budget(keep_open))
        else:
            from exporter.procfs import PythonReader

            self._impl = PythonReader(procfs, self.page_size, wchan, smaps_max_rss)

    def read(self) -> Reading:
        """Every process; raises OSError naming the root when it cannot be listed."""
        started = time.time()
        t0 = time.perf_counter()
        try:
            records, unreadable, errors, *nofile = self._impl.read()
        except OSError as e:
            raise OSError(e.errno, f"cannot list {self.procfs}: {e.strerror or e}") from None
        return Reading(records, unreadable, _named(errors), started, time.perf_counter() - t0,
                       machine_cpu_ticks(self.procfs) if self.machine_cpu else None, nofile[0] if nofile else None)

    def read_facts(self, requests) -> tuple:
        """[(pid, start_ticks, want)] -> ([Fact] in that order, {reason: count})."""
        if not requests:
            return [], {}
        facts, errors = self._impl.read_facts(requests)
        return [Fact(*f) for f in facts], _named(errors)

    def kept(self) -> int:
        """Processes whose files are kept open now."""
        return self._impl.kept()

    def kept_threads(self) -> int:
        """Threads whose files are kept open now."""
        return self._impl.kept_threads()

    def close(self) -> None:
        """Release what the reader keeps open."""
        self._impl.close()


def _bpf_load_reason(e: OSError) -> str:
    """A load failure as one line: what failed, and what it needs where it is a permission."""
    text = str(e.strerror or e)
    if e.errno == errno.EPERM:  # the bpf() call itself refused; the verifier says EACCES
        text = text.split(" (", 1)[0] + " (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)"
    elif e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, errno.ESRCH):
        text += " (needs Linux >= 5.8 with BTF for iter/task)"
    return text


def machine_cpu_ticks(procfs: str) -> Optional[int]:
    """Non-idle CPU ticks of the machine since boot (/proc/stat "cpu" line: user, nice,
    system, irq, softirq, steal; guest time is inside user), or None when unreadable."""
    from exporter.procfs import read_file

    try:
        first = read_file(f"{procfs}/stat").split(b"\n", 1)[0].split()
        if first[0] != b"cpu":
            return None
        ticks = [int(x) for x in first[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    if len(ticks) < 4:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (ticks + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def _named(errors: dict) -> dict:
    named: dict = {}
    for err, count in errors.items():
        key = reason(err)
        named[key] = named.get(key, 0) + count
    return named

