"""Memoized host facts: boot time, pinned constants, uid -> user name and tty -> name maps
that refresh on a miss (rate-limited), never frozen at start."""

from __future__ import annotations

import os
import pwd
import stat
import threading

import pytest

from conftest import PROC_BASIC, make_devroot
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
    assert pinned.cpu_count >= 1
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


@pytest.fixture
def dev(tmp_path):
    try:
        return make_devroot(tmp_path / "dev")
    except PermissionError:
        pytest.skip("cannot make character devices here (needs root / CAP_MKNOD)")


def mknod(path, major, minor):
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(major, minor))


def test_terminals_map(dev):
    ttys = Terminals(dev, rescan_seconds=0)
    assert ttys[os.makedev(136, 3)] == "pts/3"
    assert ttys[os.makedev(136, 300)] == "pts/300"
    assert ttys[os.makedev(4, 1)] == "tty1"
    # only char devices named tty* in the root, and everything in pts/
    assert dict(ttys) == {os.makedev(136, 3): "pts/3", os.makedev(136, 300): "pts/300", os.makedev(4, 1): "tty1"}
    assert ttys[os.makedev(1, 3)] is None  # /dev/null is no terminal


def test_tty_nr_encoding_matches_device_numbers(dev):
    """stat's tty_nr is the kernel's new_encode_dev: for pts/300 the minor is split
    around the major; st_rdev uses the same layout, so the map keys match tty_nr."""
    ttys = Terminals(dev)
    tty_nr = (300 & 0xFF) | (136 << 8) | ((300 & ~0xFF) << 12)
    assert ttys[tty_nr] == "pts/300"


def test_terminals_rescan_when_a_device_appears(dev):
    ttys = Terminals(dev, rescan_seconds=0)
    new = os.makedev(136, 7)
    assert ttys[new] is None
    mknod(os.path.join(dev, "pts", "7"), 136, 7)
    assert ttys[new] == "pts/7"
    # a device that went away is forgotten at the next rescan
    os.unlink(os.path.join(dev, "pts", "3"))
    assert ttys[os.makedev(136, 8)] is None  # a miss: rescans
    assert os.makedev(136, 3) not in ttys
    assert ttys[os.makedev(136, 3)] is None


def test_terminals_rescan_is_rate_limited(dev, clock):
    ttys = Terminals(dev, rescan_seconds=1.0)
    assert ttys[os.makedev(136, 3)] == "pts/3"  # the first miss scans
    mknod(os.path.join(dev, "pts", "9"), 136, 9)
    clock.now += 0.5
    assert ttys[os.makedev(136, 9)] is None  # within the window: no rescan
    assert ttys[os.makedev(136, 3)] == "pts/3"  # hits are unaffected
    clock.now += 0.6
    assert ttys[os.makedev(136, 9)] == "pts/9"


def test_terminals_missing_devroot(tmp_path):
    ttys = Terminals(str(tmp_path / "nope"), rescan_seconds=0)
    assert ttys[os.makedev(136, 3)] is None
    assert dict(ttys) == {}


def test_terminals_concurrent_misses(dev):
    ttys = Terminals(dev, rescan_seconds=0)
    results = []

    def look():
        results.append(tuple(ttys[os.makedev(136, m)] for m in (3, 300, 77)))

    threads = [threading.Thread(target=look) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [("pts/3", "pts/300", None)] * 8
