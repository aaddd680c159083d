"""The pure-Python snapshot reader: the same contract as the C collector.

It is the fallback when the extension is not built and the oracle the tests hold the C
against, so it follows the C step by step: the same files, the same read caps (one read of
at most CAP bytes per file), the same parsing rules, the same error accounting, the same
unit conversions in the same order. Where the two would differ, fix both.

Per process and snapshot: ``stat`` (must parse, else the process is dropped), ``status``,
``io``, the fd count and the fd limit. Static facts (``cmdline``, ``exe``, ``cgroup``) are
read only when an identity (pid, starttime) is first seen or its comm changed (exec).
"""

from __future__ import annotations

import errno
import os
import resource
import threading

from exporter.collector import Process

# One read of at most this many bytes per file; a longer file is cut (the C uses the same).
STAT_CAP = 4096
STATUS_CAP = 8192
IO_CAP = 4096
LIMITS_CAP = 8192
CMDLINE_CAP = 65536
CGROUP_CAP = 8192
NOFILE_EVERY = 16  # prlimit a known process every 16th walk (PS_NOFILE_EVERY in the C)

PF_KTHREAD = 0x00200000
# errnos that mean "the process is gone", not "we may not read it"
GONE = (errno.ENOENT, errno.ESRCH)


class Malformed(ValueError):
    """A /proc file that does not parse; the process is dropped and counted."""


def _uint(token: bytes) -> int:
    if not token.isdigit():
        raise Malformed(token)
    return int(token)


def parse_stat(data: bytes):
    """/proc/PID/stat -> dict of the fields we use. comm is cut at the LAST ')' because a
    comm may itself contain ')' and spaces. vsize and rss may be missing (None); anything
    up to starttime must be there."""
    left = data.find(b"(")
    right = data.rfind(b")")
    if left < 0 or right < left:
        raise Malformed("no (comm)")
    rest = data[right + 1 :].split()
    if len(rest) < 20:  # state (field 3) .. starttime (field 22)
        raise Malformed("short stat")

    def optional(i):
        return _uint(rest[i]) if len(rest) > i else None

    return {
        "comm": data[left + 1 : right],
        "state": rest[0],
        "ppid": _uint(rest[1]),
        "tty_nr": _uint(rest[4]),
        "flags": _uint(rest[6]),
        "minflt": _uint(rest[7]),
        "majflt": _uint(rest[9]),
        "utime": _uint(rest[11]),
        "stime": _uint(rest[12]),
        "num_threads": _uint(rest[17]),
        "starttime": _uint(rest[19]),
        "vsize": optional(20),
        "rss": optional(21),
    }


def parse_keyed(data: bytes, keys: dict) -> dict:
    """Lines "Key:<space/tab>value ..." -> {key: first integer after the colon} for the
    wanted keys; a line whose value is not a number is Malformed."""
    found = {}
    for line in data.split(b"\n"):
        colon = line.find(b":")
        if colon < 0:
            continue
        name = keys.get(line[:colon])
        if name is None:
            continue
        tokens = line[colon + 1 :].split()
        if not tokens:
            raise Malformed(line)
        found[name] = _uint(tokens[0])
    return found


STATUS_KEYS = {
    b"Uid": "uid",
    b"VmSwap": "swap_kb",
    b"voluntary_ctxt_switches": "ctx_voluntary",
    b"nonvoluntary_ctxt_switches": "ctx_nonvoluntary",
}
IO_KEYS = {b"read_bytes": "read_bytes", b"write_bytes": "write_bytes"}


def parse_limits_nofile(data: bytes):
    """The soft limit of 'Max open files' in /proc/PID/limits; None when unlimited."""
    for line in data.split(b"\n"):
        if line.startswith(b"Max open files"):
            tokens = line[len(b"Max open files") :].split()
            if not tokens:
                raise Malformed(line)
            if tokens[0] == b"unlimited":
                return None
            return _uint(tokens[0])
    raise Malformed("no Max open files line")


def parse_cmdline(data: bytes) -> tuple:
    if not data:
        return ()
    if data.endswith(b"\0"):
        data = data[:-1]
    return tuple(arg.decode("utf-8", "replace") for arg in data.split(b"\0"))


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def is_procfs(path: str) -> bool:
    """True when path is the root of a mounted procfs (then fd-dir sizes are fd counts)."""
    real = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/self/mounts", "rb") as f:
            mounts = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return False
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, parts[2]
    return fstype == "proc" and best == real


def is_own_procfs(path: str) -> bool:
    """True when path is the procfs of our own pid namespace (then prlimit(pid) is right)."""
    try:
        return os.readlink(os.path.join(path, "self")) == str(os.getpid())
    except OSError:
        return False


PID_MAX = 0x7FFFFFFF


def _pid_of(name: str):
    """The pid a root entry names, or None: ASCII digits only (str.isdigit() also takes
    '²' and '١٢', which int() rejects or reads as another pid), at most a pid_t."""
    if not (name.isascii() and name.isdigit()):
        return None
    pid = int(name)
    return pid if pid <= PID_MAX else None


class PythonCollector:
    def __init__(self, procfs: str, clock_ticks: int, page_size: int, boot_time: int):
        self.procfs = procfs
        self.clock_ticks = clock_ticks
        self.page_size = page_size
        self.boot_time = boot_time
        self.fd_count_from_size = is_procfs(procfs)
        self.use_prlimit = is_own_procfs(procfs)
        # pid -> (start_ticks, comm bytes, cmdline, exe, cgroup)
        self._static: dict = {}
        self._nofile: dict = {}  # pid -> soft RLIMIT_NOFILE from prlimit, for _max_fds
        self._nofile_now: dict = {}
        self._gen = 0  # walks so far
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._static.clear()
            self._nofile.clear()

    def collect(self, usernames, ttys):
        with self._lock:
            errors: dict = {}
            records = []
            try:
                names = os.listdir(self.procfs)
            except OSError as e:
                raise OSError(e.errno, f"cannot list procfs root {self.procfs}: {e.strerror}") from None
            pids = sorted(pid for pid in map(_pid_of, names) if pid is not None)
            static = {}
            self._gen += 1
            self._nofile_now = {}
            for pid in pids:
                record = self._read_process(pid, errors, static, usernames, ttys)
                if record is not None:
                    records.append(record)
            self._static = static  # identities not seen in this walk are dropped
            self._nofile = {pid: soft for pid, soft in self._nofile_now.items() if pid in static}
            return records, errors

    # -- one process -------------------------------------------------------------

    def _read(self, pid: int, name: str, cap: int) -> bytes:
        fd = os.open(f"{self.procfs}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, cap, 0)
        finally:
            os.close(fd)

    def _gone(self, pid: int) -> bool:
        return not os.access(f"{self.procfs}/{pid}/stat", os.F_OK)

    def _secondary(self, pid, read, errors):
        """Run read(); None if the file is unreadable (counted) or the process vanished
        (raises _Vanished). Malformed content counts as 'malformed'."""
        try:
            return read()
        except Malformed:
            errors["malformed"] = errors.get("malformed", 0) + 1
        except OSError as e:
            if e.errno in GONE and self._gone(pid):
                raise _Vanished from None
            reason = errno.errorcode.get(e.errno, str(e.errno))
            errors[reason] = errors.get(reason, 0) + 1
        return None

    def _read_process(self, pid, errors, static, usernames, ttys):
        try:
            stat = parse_stat(self._read(pid, "stat", STAT_CAP))
        except Malformed:
            errors["malformed"] = errors.get("malformed", 0) + 1
            return None
        except OSError as e:
            if e.errno not in GONE:
                reason = errno.errorcode.get(e.errno, str(e.errno))
                errors[reason] = errors.get(reason, 0) + 1
            return None
        mine: dict = {}  # this process' errors: dropped with it if it vanishes half-way
        try:
            status = self._secondary(
                pid, lambda: parse_keyed(self._read(pid, "status", STATUS_CAP), STATUS_KEYS), mine
            )
            io = self._secondary(pid, lambda: parse_keyed(self._read(pid, "io", IO_CAP), IO_KEYS), mine)
            open_fds = self._secondary(pid, lambda: self._fd_count(pid), mine)
            known = self._static.get(pid)
            fresh = known is None or known[0] != stat["starttime"] or known[1] != stat["comm"]
            max_fds = self._secondary(pid, lambda: self._max_fds(pid, fresh), mine)
            facts = self._static_facts(pid, stat, mine)
        except _Vanished:
            return None
        for reason, count in mine.items():
            errors[reason] = errors.get(reason, 0) + count
        static[pid] = facts
        status = status or {}
        io = io or {}
        hz = self.clock_ticks
        uid = status.get("uid")
        swap_kb = status.get("swap_kb")
        return Process(
            pid,
            stat["ppid"],
            text(stat["comm"]),
            text(stat["state"]),
            bool(stat["flags"] & PF_KTHREAD),
            stat["starttime"],
            self.boot_time + stat["starttime"] / hz,
            stat["utime"] / hz,
            stat["stime"] / hz,
            stat["minflt"],
            stat["majflt"],
            stat["num_threads"],
            None if stat["rss"] is None else stat["rss"] * self.page_size,
            stat["vsize"],
            None if swap_kb is None else swap_kb * 1024,
            status.get("ctx_voluntary"),
            status.get("ctx_nonvoluntary"),
            io.get("read_bytes"),
            io.get("write_bytes"),
            open_fds,
            max_fds,
            uid,
            None if uid is None else usernames[uid],
            None if stat["tty_nr"] == 0 else ttys[stat["tty_nr"]],
            facts[2],
            facts[3],
            facts[4],
        )

    def _fd_count(self, pid: int) -> int:
        path = f"{self.procfs}/{pid}/fd"
        # Linux >= 6.2 gives the count as the size of a procfs fd directory, to whoever may
        # see the process (as `ls -ld` shows it); listing it needs ptrace access.
        if self.fd_count_from_size:
            size = os.stat(path).st_size
            if size > 0:
                return size
        return len(os.listdir(path))

    def _max_fds(self, pid: int, fresh: bool):
        if self.use_prlimit:
            # A limit seldom changes: prlimit a known identity only every NOFILE_EVERY
            # walks (staggered by pid), saving a syscall per process per scrape.
            soft = None if fresh else self._nofile.get(pid)
            try:
                if soft is None or (pid + self._gen) % NOFILE_EVERY == 0:
                    soft = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
                self._nofile_now[pid] = soft
                return None if soft == resource.RLIM_INFINITY else soft
            except PermissionError:
                pass  # another user's process: its limits file is world-readable
            except ProcessLookupError:
                raise OSError(errno.ESRCH, "gone") from None
        return parse_limits_nofile(self._read(pid, "limits", LIMITS_CAP))

    def _static_facts(self, pid: int, stat: dict, errors: dict):
        known = self._static.get(pid)
        if known is not None and known[0] == stat["starttime"] and known[1] == stat["comm"]:
            return known
        cmdline = self._secondary(pid, lambda: parse_cmdline(self._read(pid, "cmdline", CMDLINE_CAP)), errors)
        exe = self._readlink_exe(pid, errors)
        cgroup = self._secondary(
            pid, lambda: text(self._read(pid, "cgroup", CGROUP_CAP)).rstrip("\n"), errors
        )
        return (stat["starttime"], stat["comm"], cmdline, exe, cgroup)

    def _readlink_exe(self, pid: int, errors: dict):
        try:
            return text(os.readlink(os.fsencode(f"{self.procfs}/{pid}/exe")))
        except OSError as e:
            if e.errno in GONE:  # kernel threads and zombies have no exe: not an error
                if self._gone(pid):
                    raise _Vanished from None
                return None
            reason = errno.errorcode.get(e.errno, str(e.errno))
            errors[reason] = errors.get(reason, 0) + 1
            return None


class _Vanished(Exception):
    """The process exited while we were reading it."""
