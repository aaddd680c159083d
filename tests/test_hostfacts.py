"""Memoized host facts: boot time, pinned constants, uid -> user name and tty -> name maps
that refresh on a miss (rate-limited), never frozen at start.

Runs as any user: the one test that needs device nodes it makes (the /dev scan on a
made-up /dev) is root-only; the others use the pseudo-terminals anyone may open, or a
scripted scan."""

from __future__ import annotations

import os
import pwd
import stat
import threading
import time

import pytest

from conftest import DEVICES, PROC_BASIC, make_devroot
from exporter import hostfacts
from exporter.hostfacts import HostFacts, Terminals, UserNames, read_boot_time


class FakeClock:
    """Stands in for the time module inside exporter.hostfacts."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(hostfacts, "time", fake)
    return fake


# -- static facts --------------------------------------------------------------------------


def test_boot_time_from_fixture():
    assert read_boot_time(PROC_BASIC) == 1700000000


def test_boot_time_without_btime(tmp_path):
    (tmp_path / "stat").write_bytes(b"cpu  1 2 3 4\nbtimex 5\nctxt 7\n")
    with pytest.raises(ValueError):
        read_boot_time(str(tmp_path))


def test_host_facts_pinned_and_defaults(tmp_path):
    pinned = HostFacts(procfs=PROC_BASIC, devroot=str(tmp_path), clock_ticks=100, page_size=4096)
    assert (pinned.clock_ticks, pinned.page_size, pinned.boot_time) == (100, 4096, 1700000000)
    assert isinstance(pinned.ttys, Terminals) and pinned.ttys[os.makedev(136, 3)] is None  # empty devroot
    given = {os.makedev(136, 3): "pts/3"}
    assert HostFacts(procfs=PROC_BASIC, ttys=given).ttys is given  # a terminal map instead of a scan
    live = HostFacts()
    assert live.clock_ticks == os.sysconf("SC_CLK_TCK")
    assert live.page_size == os.sysconf("SC_PAGE_SIZE")
    assert live.boot_time == read_boot_time("/proc")
    assert HostFacts(procfs=PROC_BASIC, boot_time=0).boot_time == 0  # 0 is a value, not "unset"


# -- uid -> user name ------------------------------------------------------------------------


def test_usernames_known_and_unknown():
    names = UserNames()
    assert names[0] == pwd.getpwuid(0).pw_name == "root"
    assert dict(names) == {0: "root"}  # memoized
    unknown = 3999999
    with pytest.raises(KeyError):
        pwd.getpwuid(unknown)
    assert names[unknown] == "3999999"
    assert unknown not in names  # not memoized as a name: asked again later


def test_usernames_refresh_on_a_miss(monkeypatch, clock):
    """A user added after start is found on a later miss, once the retry window passed;
    within it NSS is not asked again."""
    calls = []
    users = {}

    def getpwuid(uid):
        calls.append(uid)
        if uid not in users:
            raise KeyError(uid)
        return pwd.struct_passwd((users[uid], "x", uid, uid, "", "/", "/bin/sh"))

    monkeypatch.setattr(hostfacts.pwd, "getpwuid", getpwuid)
    names = UserNames(retry_seconds=60)
    assert names[4242] == "4242"
    users[4242] = "alice"  # useradd
    clock.now += 30
    assert names[4242] == "4242"  # still within the retry window: no NSS call
    assert calls == [4242]
    clock.now += 31
    assert names[4242] == "alice"
    assert names[4242] == "alice"
    assert calls == [4242, 4242]  # found once, then memoized
    assert dict(names) == {4242: "alice"}


def test_usernames_concurrent_misses():
    names = UserNames()
    results = []

    def look():
        results.append((names[0], names[3999999]))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [("root", "3999999")] * 8


# -- tty device -> name ----------------------------------------------------------------------


def mknod(path, major, minor):
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(major, minor))


@pytest.mark.skipif(os.geteuid() != 0, reason="makes character device nodes (root only)")
def test_dev_scan_gives_terminal_names(tmp_path):
    """The scan of a device directory with real device nodes: char devices named tty* in
    the root and everything in pts/, keyed by st_rdev; a new node is found by the rescan
    of a miss, a removed one forgotten."""
    dev = make_devroot(tmp_path / "dev")
    ttys = Terminals(dev, rescan_seconds=0)
    assert ttys[os.makedev(136, 3)] == "pts/3"
    assert dict(ttys) == {os.makedev(136, 3): "pts/3", os.makedev(136, 300): "pts/300", os.makedev(4, 1): "tty1"}
    assert ttys[os.makedev(*DEVICES["null"])] is None  # /dev/null is no terminal
    assert os.path.isfile(os.path.join(dev, "tty9"))  # a regular file named tty9 is none either
    # stat's tty_nr is the kernel's new_encode_dev: for pts/300 the minor is split around
    # the major; st_rdev uses the same layout, so the map keys match tty_nr
    assert ttys[(300 & 0xFF) | (136 << 8) | ((300 & ~0xFF) << 12)] == "pts/300"

    mknod(os.path.join(dev, "pts", "7"), 136, 7)
    assert ttys[os.makedev(136, 7)] == "pts/7"
    os.unlink(os.path.join(dev, "pts", "3"))
    assert ttys[os.makedev(136, 8)] is None  # a miss: rescans
    assert os.makedev(136, 3) not in ttys
    assert ttys[os.makedev(136, 3)] is None


@pytest.fixture
def pty():
    """open() -> (tty_nr, name relative to /dev) of a new pseudo-terminal, closed at the end."""
    fds = []

    def open_pty():
        master, slave = os.openpty()
        fds.extend((master, slave))
        return os.fstat(slave).st_rdev, os.ttyname(slave)[len("/dev/"):]

    yield open_pty
    for fd in fds:
        os.close(fd)


def test_terminals_find_pseudo_terminals(pty):
    """The real /dev, as any user: a pty opened before the first scan is found, and one
    opened after it by the rescan of the miss."""
    first, first_name = pty()
    ttys = Terminals("/dev", rescan_seconds=0)
    assert first_name.startswith("pts/")
    assert ttys[first] == first_name
    second, second_name = pty()
    assert second not in ttys
    assert ttys[second] == second_name
    assert ttys[first] == first_name


class ScriptedTerminals(Terminals):
    """Terminals whose scan returns what the test says (and counts the scans)."""

    def __init__(self, devices, **kw):
        super().__init__("/nonexistent", **kw)
        self.devices = devices
        self.scans = 0

    def _scan(self):
        self.scans += 1
        return dict(self.devices)


def test_terminals_rescan_when_a_device_appears_or_goes():
    ttys = ScriptedTerminals({1: "pts/1"}, rescan_seconds=0)
    assert ttys[1] == "pts/1" and ttys.scans == 1
    assert ttys[1] == "pts/1" and ttys.scans == 1  # a hit does not scan
    assert ttys[2] is None and ttys.scans == 2
    ttys.devices[2] = "pts/2"
    assert ttys[2] == "pts/2" and ttys.scans == 3
    del ttys.devices[1]
    assert ttys[3] is None  # a miss rescans: the device that went away is forgotten
    assert 1 not in ttys and ttys[1] is None


def test_terminals_rescan_is_rate_limited(clock):
    ttys = ScriptedTerminals({1: "pts/1"}, rescan_seconds=1.0)
    assert ttys[1] == "pts/1"  # the first miss scans
    ttys.devices[9] = "pts/9"
    clock.now += 0.5
    assert ttys[9] is None and ttys.scans == 1  # within the window: no rescan
    assert ttys[1] == "pts/1"  # hits are unaffected
    clock.now += 0.6
    assert ttys[9] == "pts/9" and ttys.scans == 2


def test_terminals_missing_devroot(tmp_path):
    ttys = Terminals(str(tmp_path / "nope"), rescan_seconds=0)
    assert ttys[os.makedev(136, 3)] is None
    assert dict(ttys) == {}


def test_terminals_concurrent_misses():
    """Eight threads missing at once: the ones that waited for the scan of another use
    it (one scan), and every thread gets the names."""
    gate = threading.Barrier(8)

    class Slow(ScriptedTerminals):
        def _scan(self):
            time.sleep(0.05)  # the other threads queue on the lock meanwhile
            return super()._scan()

    ttys = Slow({3: "pts/3", 300: "pts/300"}, rescan_seconds=0)
    results = []

    def look():
        gate.wait()
        results.append(tuple(ttys[m] for m in (3, 300)))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [("pts/3", "pts/300")] * 8
    assert ttys.scans == 1


def test_boot_time_from_a_fifo_or_a_huge_number_is_a_clear_error(tmp_path):
    """The root's stat is read like every /proc file: never blocking, and a number beyond
    64 bits is malformed (it would overflow the start-time arithmetic)."""
    from exporter.hostfacts import read_boot_time

    fifo_root = tmp_path / "fifo"
    fifo_root.mkdir()
    os.mkfifo(fifo_root / "stat")
    with pytest.raises(OSError, match=f"cannot read {fifo_root}/stat"):
        read_boot_time(str(fifo_root))  # a blocking open would hang here
    huge_root = tmp_path / "huge"
    huge_root.mkdir()
    (huge_root / "stat").write_bytes(b"cpu 1 2 3\nbtime " + b"9" * 400 + b"\n")
    with pytest.raises(ValueError, match="malformed btime"):
        read_boot_time(str(huge_root))
    (huge_root / "stat").write_bytes(b"btime 1700000000\n")
    assert read_boot_time(str(huge_root)) == 1700000000
