"""The parser twin of exporter/native/parse.c, and a plain Python reader built on it.

The parsers follow the same rules as the C, byte for byte: Python's ``bytes.split()``
whitespace, ASCII-digit numbers that fit in 64 bits (more digits make the file
malformed: the kernel prints u64), the comm between the first '(' and the LAST ')'.
The tests hold the two equal on fixtures, on garbled files and on live /proc.

:class:`PythonReader` gives the same output as the C reader (:mod:`exporter.reader`),
without kept files: it is the fallback when the extension is not built.
"""

from __future__ import annotations

import errno
import os
import resource
import stat as stat_mod
import threading

from exporter.reader import MALFORMED, UNLIMITED, WANT_CGROUP, WANT_CMDLINE, WANT_EXE, WANT_NOFILE, WANT_THREADS

FILE_MAX = 1 << 20  # files are read whole up to this (PS_FILE_MAX); cmdline is cut there
U64_MAX = 2**64 - 1
GONE = (errno.ENOENT, errno.ESRCH)  # errnos of a process that may have exited
EXE_CAP = 4096


class Malformed(ValueError):
    """A /proc file that does not parse."""


def uint(token: bytes) -> int:
    if not (token.isascii() and token.isdigit()):
        raise Malformed(token)
    digits = token.lstrip(b"0") or b"0"
    if len(digits) > 20:  # beyond u64 (and before int() would refuse thousands of digits)
        raise Malformed(token[:32])
    value = int(digits)
    if value > U64_MAX:
        raise Malformed(token)
    return value


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & U64_MAX


def parse_stat(data: bytes) -> dict:
    """/proc/PID/stat -> the fields we use. comm is cut at the LAST ')' because a comm may
    itself contain ')' and spaces. vsize and rss may be missing (None); anything up to
    starttime must be there. ``mark``: exec evidence mixed from the mm addresses
    (parse_stat in parse.c says which), 0 when the kernel hides them."""
    left = data.find(b"(")
    right = data.rfind(b")")
    if left < 0 or right < left:
        raise Malformed("no (comm)")
    rest = data[right + 1 :].split()[:49]
    if len(rest) < 20:  # state (field 3) .. starttime (field 22)
        raise Malformed("short stat")
    fields = {
        "comm": data[left + 1 : right],
        "state": rest[0],
        "ppid": uint(rest[1]),
        "tty_nr": uint(rest[4]),
        "flags": uint(rest[6]),
        "minflt": uint(rest[7]),
        "majflt": uint(rest[9]),
        "utime": uint(rest[11]),
        "stime": uint(rest[12]),
        "cminflt": uint(rest[8]),  # of the children it reaped
        "cmajflt": uint(rest[10]),
        "cutime": uint(rest[13]),
        "cstime": uint(rest[14]),
        "num_threads": uint(rest[17]),
        "starttime": uint(rest[19]),
        "vsize": uint(rest[20]) if len(rest) > 20 else None,
        "rss": uint(rest[21]) if len(rest) > 21 else None,
        "mark": 0,
    }
    if len(rest) == 49:
        arg_start, arg_end, env_end, start_code, end_code, start_stack = (
            uint(rest[i]) for i in (45, 46, 48, 23, 24, 25)
        )
        if arg_start:
            mark = (arg_start ^ _rotl(arg_end, 13) ^ _rotl(env_end, 29) ^ _rotl(start_code, 41)
                    ^ _rotl(end_code, 47) ^ _rotl(start_stack, 53))
            fields["mark"] = mark or 1
    return fields


def parse_keyed(data: bytes, keys: dict) -> dict:
    """Lines "Key:<space/tab>value ..." -> {name: first number after the colon} for the
    wanted keys (a later line of the same key wins); a wanted line whose value is not a
    number is Malformed."""
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
        found[name] = uint(tokens[0])
    return found


STATUS_KEYS = {
    b"Uid": "uid",
    b"VmSwap": "swap_kb",
    b"voluntary_ctxt_switches": "ctx_voluntary",
    b"nonvoluntary_ctxt_switches": "ctx_nonvoluntary",
}
IO_KEYS = {b"read_bytes": "read_bytes", b"write_bytes": "write_bytes"}
SMAPS_KEYS = {b"Pss": "pss_kb", b"SwapPss": "swap_pss_kb"}


def parse_effective_uid(data: bytes) -> int:
    """The second number of the first "Uid:" line of /proc/PID/status."""
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            tokens = line[4:].split()
            if len(tokens) < 2:
                raise Malformed(line)
            return uint(tokens[1])
    raise Malformed("no Uid line")


def parse_limits_nofile(data: bytes) -> int:
    """The soft limit of 'Max open files' in /proc/PID/limits; UNLIMITED when unlimited."""
    for line in data.split(b"\n"):
        if line.startswith(b"Max open files"):
            tokens = line[len(b"Max open files") :].split()
            if not tokens:
                raise Malformed(line)
            if tokens[0] == b"unlimited":
                return UNLIMITED
            return uint(tokens[0])
    raise Malformed("no Max open files line")


def is_procfs(path: str) -> bool:
    """True when path is the root of a mounted procfs (as the C checks it)."""
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


def pid_of(name: str):
    """The pid a root entry names, or None: ASCII digits without a leading zero
    (str.isdigit() also takes '²' and '١٢'), at most a pid_t."""
    if not (name.isascii() and name.isdigit()) or name[0] == "0":  # "0", "007": no pid's name
        return None
    pid = int(name)
    return pid if pid <= PID_MAX else None


def read_file(path: str, regular_only: bool = True) -> bytes:
    """At most FILE_MAX bytes of a /proc file, as the C reads one: never blocking (a FIFO
    in a fixture tree), and with ``regular_only`` (outside a real procfs) only a regular
    file (EINVAL otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if regular_only and not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return os.pread(fd, FILE_MAX, 0)
    finally:
        os.close(fd)


class _Gone(Exception):
    """The process exited while we were reading it."""


class PythonReader:
    """The reader's contract (``read``, ``read_facts``, ``close``) in plain Python."""

    def __init__(self, procfs: str, page_size: int, wchan: bool = True, smaps_max_rss=None):
        self.procfs = procfs
        self.page_size = page_size
        self.wchan = wchan
        self.smaps_max_rss = smaps_max_rss
        self.procfs_root = is_procfs(procfs)
        self.use_prlimit = is_own_procfs(procfs)
        self._lock = threading.Lock()

    def close(self) -> None:
        pass

    def kept(self) -> int:
        return 0

    def kept_threads(self) -> int:
        return 0

    # -- files --------------------------------------------------------------------------

    def _read(self, pid: int, name: str, cut: bool = False) -> bytes:
        """PID/name whole (up to FILE_MAX: cut there for cmdline, else Malformed). Never
        blocks on a FIFO; outside a real procfs only regular files are read."""
        data = read_file(f"{self.procfs}/{pid}/{name}", regular_only=not self.procfs_root)
        if len(data) >= FILE_MAX and not cut:
            raise Malformed(f"{name} of {FILE_MAX} bytes or more")
        return data

    def _gone(self, pid: int) -> bool:
        return not os.access(f"{self.procfs}/{pid}/stat", os.F_OK)

    def _try(self, pid, read, errors):
        """read() or None (the failure counted); raises _Gone when the process vanished."""
        try:
            return read()
        except Malformed:
            errors[MALFORMED] = errors.get(MALFORMED, 0) + 1
        except OSError as e:
            if e.errno in GONE and self._gone(pid):
                raise _Gone from None
            errors[e.errno] = errors.get(e.errno, 0) + 1
        return None

    def _status(self, pid: int) -> dict:
        data = self._read(pid, "status")
        status = parse_keyed(data, STATUS_KEYS)
        if "uid" in status:
            try:
                status["euid"] = parse_effective_uid(data)
            except Malformed:
                pass
        return status

    def _fd_count(self, pid: int) -> int:
        path = f"{self.procfs}/{pid}/fd"
        if self.procfs_root:  # Linux >= 6.2: the size of a procfs fd dir is the count
            size = os.stat(path).st_size
            if size > 0:
                return size
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return len(os.listdir(fd))
        finally:
            os.close(fd)

    def _smaps(self, pid: int, vsize, rss, errors) -> tuple:
        """(Pss, SwapPss) in bytes, None each when not read: read only up to smaps_max_rss,
        since the kernel walks every page table of the process to make smaps_rollup."""
        if vsize is None or rss is None:
            return None, None
        if vsize == 0:  # no mm (kernel thread, zombie): nothing mapped
            return 0, 0
        if rss > self.smaps_max_rss:
            return None, None
        kb = self._try(pid, lambda: parse_keyed(self._read(pid, "smaps_rollup"), SMAPS_KEYS), errors) or {}
        pss, swap_pss = (None if kb.get(key) is None else kb[key] * 1024 for key in ("pss_kb", "swap_pss_kb"))
        if max(pss or 0, swap_pss or 0) > U64_MAX:
            errors[MALFORMED] = errors.get(MALFORMED, 0) + 1
            return None, None
        return pss, swap_pss

    def _wchan(self, pid: int):
        try:
            return self._read(pid, "wchan").decode("utf-8", "replace")
        except FileNotFoundError:
            if self._gone(pid):
                raise _Gone from None
            return None  # no wchan file: a kernel built without CONFIG_KALLSYMS; no error

    # -- read ---------------------------------------------------------------------------

    def read(self):
        with self._lock:
            names = os.listdir(self.procfs)
            records, unreadable, errors = [], [], {}
            for pid in sorted(p for p in map(pid_of, names) if p is not None):
                self._process(pid, records, unreadable, errors)
            return records, unreadable, errors

    def _process(self, pid, records, unreadable, errors) -> None:
        try:
            st = parse_stat(self._read(pid, "stat"))
            rss = None if st["rss"] is None else st["rss"] * self.page_size
            if rss is not None and rss > U64_MAX:
                raise Malformed("rss")
        except Malformed:
            unreadable.append((pid, MALFORMED))
            return
        except OSError as e:
            if e.errno not in GONE:
                unreadable.append((pid, e.errno))
            return
        mine: dict = {}  # this process' errors: dropped with it if it vanishes half-way
        try:
            status = self._try(pid, lambda: self._status(pid), mine) or {}
            if "uid" in status:  # no VmSwap line: no mm (kernel thread, zombie), nothing swapped
                status.setdefault("swap_kb", 0)
            swap_kb = status.get("swap_kb")
            if swap_kb is not None and swap_kb * 1024 > U64_MAX:
                status, swap_kb = {}, None
                mine[MALFORMED] = mine.get(MALFORMED, 0) + 1
            io = self._try(pid, lambda: parse_keyed(self._read(pid, "io"), IO_KEYS), mine) or {}
            open_fds = self._try(pid, lambda: self._fd_count(pid), mine)
            wchan = self._try(pid, lambda: self._wchan(pid), mine) if self.wchan else None
            pss, swap_pss = (self._smaps(pid, st["vsize"], rss, mine) if self.smaps_max_rss is not None
                             else (None, None))
        except _Gone:
            return
        for err, count in mine.items():
            errors[err] = errors.get(err, 0) + count
        records.append((
            pid,
            st["ppid"],
            st["comm"].decode("utf-8", "replace"),
            st["state"].decode("utf-8", "replace"),
            st["flags"],
            st["starttime"],
            st["utime"],
            st["stime"],
            st["minflt"],
            st["majflt"],
            st["num_threads"],
            st["vsize"],
            rss,
            status.get("uid"),
            None if swap_kb is None else swap_kb * 1024,
            status.get("ctx_voluntary"),
            status.get("ctx_nonvoluntary"),
            io.get("read_bytes"),
            io.get("write_bytes"),
            open_fds,
            st["tty_nr"],
            st["mark"],
            status.get("euid"),
            pss,
            swap_pss,
            st["cutime"],
            st["cstime"],
            st["cminflt"],
            st["cmajflt"],
            wchan,
        ))

    # -- read_facts -----------------------------------------------------------------------

    def read_facts(self, requests):
        with self._lock:
            facts, errors = [], {}
            for pid, start, want in requests:
                facts.append(self._facts(pid, start, want, errors))
            return facts, errors

    def _facts(self, pid, start, want, errors):
        mine: dict = {}
        cmdline = exe = cgroup = nofile = threads = None
        try:
            if want & WANT_CMDLINE:
                cmdline = self._try(pid, lambda: self._read(pid, "cmdline", cut=True), mine)
            if want & WANT_EXE:
                exe = self._exe(pid, mine)
            if want & WANT_CGROUP:
                cgroup = self._try(pid, lambda: self._read(pid, "cgroup"), mine)
            if want & WANT_NOFILE:
                nofile = self._nofile(pid, mine)
            if want & WANT_THREADS:
                threads = self._threads(pid)
            if not self._still(pid, start):
                raise _Gone
        except _Gone:
            return (pid, True, None, None, None, None, None)
        for err, count in mine.items():
            errors[err] = errors.get(err, 0) + count
        return (pid, False, cmdline, exe, cgroup, nofile, threads)

    def _threads(self, pid):
        """task/TID/{stat,status,io,wchan} of each thread, sorted by tid; None when fewer than
        two could be read (one thread is the process itself). A thread whose stat does
        not read or parse is skipped; nothing is counted (threads come and go)."""
        try:
            fd = os.open(f"{self.procfs}/{pid}/task", os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                names = os.listdir(fd)
            finally:
                os.close(fd)
        except OSError:
            return None
        threads = []
        for tid in sorted(t for t in map(pid_of, names) if t is not None):
            try:
                st = parse_stat(self._read(pid, f"task/{tid}/stat"))
            except (OSError, Malformed):
                continue
            try:
                status = parse_keyed(self._read(pid, f"task/{tid}/status"), STATUS_KEYS)
            except (OSError, Malformed):
                status = {}
            try:
                io = parse_keyed(self._read(pid, f"task/{tid}/io"), IO_KEYS)
            except (OSError, Malformed):
                io = {}
            wchan = None
            if self.wchan:
                try:
                    wchan = self._read(pid, f"task/{tid}/wchan").decode("utf-8", "replace")
                except (OSError, Malformed):
                    pass
            threads.append((
                tid, st["comm"].decode("utf-8", "replace"), st["state"].decode("utf-8", "replace"),
                st["utime"], st["stime"], st["minflt"], st["majflt"],
                status.get("ctx_voluntary"), status.get("ctx_nonvoluntary"),
                io.get("read_bytes"), io.get("write_bytes"), wchan,
            ))
        return threads if len(threads) >= 2 else None

    def _exe(self, pid, errors):
        try:
            return os.readlink(os.fsencode(f"{self.procfs}/{pid}/exe"))[:EXE_CAP]
        except OSError as e:
            if e.errno in GONE:  # kernel threads and zombies have no exe: not an error
                if self._gone(pid):
                    raise _Gone from None
                return None
            errors[e.errno] = errors.get(e.errno, 0) + 1
            return None

    def _nofile(self, pid, errors):
        if self.use_prlimit:
            try:
                soft = resource.prlimit(pid, resource.RLIMIT_NOFILE)[0]
                return UNLIMITED if soft == resource.RLIM_INFINITY else soft
            except ProcessLookupError:
                raise _Gone from None
            except PermissionError:
                pass  # another user's process: its limits file is world-readable
            except OSError as e:
                errors[e.errno] = errors.get(e.errno, 0) + 1
                return None
        return self._try(pid, lambda: parse_limits_nofile(self._read(pid, "limits")), errors)

    def _still(self, pid, start) -> bool:
        try:
            return parse_stat(self._read(pid, "stat"))["starttime"] == start
        except (OSError, Malformed):
            return False
