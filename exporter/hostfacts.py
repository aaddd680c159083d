"""Memoized facts about the host that the tracker and grouper need but that rarely change.

Clock ticks, page size and boot time are read once. The two lookup tables,
uid -> user name and tty device number -> terminal name, are memoized with refresh on a
miss: users and pseudo-terminals come and go, so a miss re-reads (rate-limited) rather
than trusting a table frozen at start.
"""

from __future__ import annotations

import os
import pwd
import stat as stat_mod
import threading
import time

from exporter.procfs import read_file


def read_boot_time(procfs: str) -> int:
    """btime of <procfs>/stat: the epoch second the host booted. Raises OSError or
    ValueError with a message naming that file. Like every /proc read, it never blocks
    (a FIFO in a fixture tree is an error) and reads at most 1 MiB."""
    path = os.path.join(procfs, "stat")
    try:
        data = read_file(path)  # /proc/stat is a regular file
    except OSError as e:
        raise OSError(e.errno, f"cannot read {path}: {e.strerror}") from None
    for line in data.split(b"\n"):
        if line.startswith(b"btime "):
            value = line[6:].strip()
            if not (value.isascii() and value.isdigit()) or len(value.lstrip(b"0")) > 19:
                raise ValueError(f"{path}: malformed btime line")
            return int(value)
    raise ValueError(f"{path} has no btime line (is {procfs} a procfs?)")


class UserNames(dict):
    """uid -> user name. A miss asks NSS again (a user may have been added since); an
    unknown uid maps to str(uid), as psutil and process-exporter do, and is asked again
    only after ``retry_seconds``."""

    def __init__(self, retry_seconds: float = 60.0):
        super().__init__()
        self._retry_seconds = retry_seconds
        self._unknown_until: dict[int, float] = {}
        self._lock = threading.Lock()

    def __missing__(self, uid: int) -> str:
        with self._lock:
            now = time.monotonic()
            if self._unknown_until.get(uid, 0.0) > now:
                return str(uid)
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._unknown_until[uid] = now + self._retry_seconds
                return str(uid)
            self._unknown_until.pop(uid, None)
            name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")  # labels are UTF-8
            self[uid] = name
            return name


class Terminals(dict):
    """tty device number (stat field tty_nr) -> name relative to /dev ("pts/3", "tty1").

    Built by scanning the device directory; a miss rescans at most once per
    ``rescan_seconds`` (new ptys appear all the time) and an unknown device maps to None.
    """

    def __init__(self, devroot: str = "/dev", rescan_seconds: float = 1.0):
        super().__init__()
        self._devroot = devroot
        self._rescan_seconds = rescan_seconds
        self._last_scan = float("-inf")
        self._lock = threading.Lock()

    def _scan(self) -> dict:
        found = {}
        for sub in ("", "pts"):
            directory = os.path.join(self._devroot, sub)
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if sub == "" and not name.startswith("tty"):
                    continue
                try:
                    st = os.stat(os.path.join(directory, name))
                except OSError:
                    continue
                if stat_mod.S_ISCHR(st.st_mode):
                    found.setdefault(st.st_rdev, f"{sub}/{name}" if sub else name)
        return found

    def __missing__(self, device: int):
        with self._lock:
            if device in self:  # another thread rescanned while we waited
                return dict.__getitem__(self, device)
            now = time.monotonic()
            if now - self._last_scan < self._rescan_seconds:
                return None
            self._last_scan = now
            self.clear()
            self.update(self._scan())
            return self.get(device)


class HostFacts:
    """Static facts of one host, computed once. Tests pin clock_ticks, page_size and
    boot_time, and may give the terminal map (tty_nr -> name) instead of a /dev scan."""

    def __init__(
        self,
        procfs: str = "/proc",
        devroot: str = "/dev",
        clock_ticks: int | None = None,
        page_size: int | None = None,
        boot_time: int | None = None,
        ttys: dict | None = None,
    ):
        self.procfs = procfs
        self.clock_ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
        self.page_size = page_size or os.sysconf("SC_PAGE_SIZE")
        self.boot_time = boot_time if boot_time is not None else read_boot_time(procfs)
        self.usernames = UserNames()
        self.ttys = Terminals(devroot) if ttys is None else ttys  # tty_nr -> name
