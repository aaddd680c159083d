"""A reader made by hand, for tracker and grouper tests on sequences of readings.

:class:`FakeReader` has the reader's contract (``read``, ``read_facts``, ``close``): the
test puts records (laid out as exporter.reader.FIELDS) and the static facts of each
identity, and every read returns what is there now. It counts the facts asked for, so
tests can tell what the tracker memoizes.
"""

from exporter.app import Exporter
from exporter.grouper import Grouper
from exporter.hostfacts import HostFacts
from exporter.reader import FIELDS, THREAD_FIELDS, WANT_CMDLINE, WANT_NOFILE, WANT_THREADS, Fact, Reading
from exporter.snapshots import Process
from exporter.tracker import Tracker

BOOT = 1700000000
HZ = 100


def thread(tid, comm, state="S", utime=0, stime=0, minflt=0, majflt=0, ctxv=0, ctxnv=0, read=0, write=0,
           wchan="0"):
    t = (tid, comm, state, utime, stime, minflt, majflt, ctxv, ctxnv, read, write, wchan)
    assert len(t) == len(THREAD_FIELDS)
    return t


def rec(pid, comm, start=100, ppid=0, state="S", flags=0, utime=0, stime=0, minflt=0, majflt=0,
        threads=1, vms=8192, rss=4096, uid=0, swap=0, ctxv=0, ctxnv=0, read=0, write=0, fds=3,
        tty=0, mark=0, euid=None, pss=None, swap_pss=None, cutime=0, cstime=0, cminflt=0, cmajflt=0, wchan="0"):
    record = (pid, ppid, comm, state, flags, start, utime, stime, minflt, majflt, threads, vms, rss,
              uid, swap, ctxv, ctxnv, read, write, fds, tty, mark, uid if euid is None else euid, pss, swap_pss,
              cutime, cstime, cminflt, cmajflt, wchan)
    assert len(record) == len(FIELDS)
    return record


_PROCESS_DEFAULTS = dict(
    ppid=1, state="S", is_kernel_thread=False, start_ticks=100, start_time_seconds=BOOT + 1.0,
    cpu_user_seconds=0.0, cpu_system_seconds=0.0, minor_faults=0, major_faults=0, num_threads=1,
    rss_bytes=4096, vms_bytes=8192, swap_bytes=0, ctx_voluntary=0, ctx_nonvoluntary=0,
    read_bytes=0, write_bytes=0, open_fds=3, max_fds=1024, uid=0, username="root", tty=None,
    cmdline=None, exe=None, cgroup="0::/",
)


def proc(pid, comm, **fields) -> Process:
    """A Process record (what config matching and templates see), argv /usr/bin/COMM."""
    values = dict(_PROCESS_DEFAULTS, pid=pid, comm=comm, **fields)
    if values["cmdline"] is None:
        values["cmdline"] = (f"/usr/bin/{comm}",)
    return Process(**values)


class FakeReader:
    backend = "fake"
    walk_limits = False  # True: each reading gives the fd limits with its records, as the bpf reader does

    def __init__(self):
        self.records = {}  # pid -> record
        self.unreadable = {}  # pid -> errno: stat unreadable, the pid there
        self.facts = {}  # (pid, start) -> (cmdline bytes, exe bytes, cgroup bytes, nofile)
        self.threads = {}  # pid -> [thread tuples] (THREAD_FIELDS), given with put()
        self.asked = []  # (pid, want) of every fact request
        self.now = 1000.0
        self.cpu_ticks = None  # the machine's non-idle CPU ticks each read reports (None: unknown)

    def put(self, record, cmdline=None, exe=None, cgroup=b"0::/", nofile=1024, threads=None):
        """Put (or replace) a process; its facts are kept per identity unless given.
        ``threads``: [thread tuples] (see thread()), read when the record says >= 2."""
        pid, start = record[0], record[5]
        self.records[pid] = record
        if threads is not None:
            self.threads[pid] = threads
        self.unreadable.pop(pid, None)
        if cmdline is not None or (pid, start) not in self.facts:
            argv = cmdline if cmdline is not None else (f"/usr/bin/{record[2]}",)
            self.facts[(pid, start)] = ("\0".join(argv).encode() + b"\0", exe, cgroup, nofile)

    def remove(self, pid):
        self.records.pop(pid, None)
        self.unreadable.pop(pid, None)

    def hide(self, pid, err=13):
        """The pid's stat becomes unreadable (EACCES by default), the process still there."""
        self.records.pop(pid, None)
        self.unreadable[pid] = err

    def read(self):
        self.now += 15.0
        records = [self.records[pid] for pid in sorted(self.records)]
        limits = [self.facts[(r[0], r[5])][3] for r in records] if self.walk_limits else None
        return Reading(records, sorted(self.unreadable.items()), {}, self.now, 0.0, self.cpu_ticks, limits)

    def read_facts(self, requests):
        out = []
        for pid, start, want in requests:
            self.asked.append((pid, want))
            record = self.records.get(pid)
            if record is None or record[5] != start:
                out.append(Fact(pid, True, None, None, None, None, None))
                continue
            cmdline, exe, cgroup, nofile = self.facts[(pid, start)]
            threads = self.threads.get(pid) if want & WANT_THREADS else None
            if threads is not None and len(threads) < 2:
                threads = None
            if want & WANT_CMDLINE:
                out.append(Fact(pid, False, cmdline, exe, cgroup, nofile, threads))
            else:
                out.append(Fact(pid, False, None, None, None, nofile if want & WANT_NOFILE else None, threads))
        return out, {}

    def facts_read(self, pid) -> int:
        """How many times the full facts (cmdline...) of pid were asked for."""
        return sum(1 for p, want in self.asked if p == pid and want & WANT_CMDLINE)

    def close(self):
        pass


def exporter(config, reader=None, **grouper_options):
    """An Exporter over a FakeReader (clock ticks 100, boot time BOOT)."""
    reader = reader or FakeReader()
    facts = HostFacts(procfs="/nonexistent", clock_ticks=HZ, page_size=4096, boot_time=BOOT, ttys={})
    grouper = Grouper(config, HZ, BOOT, **grouper_options)
    return Exporter(Tracker(reader, facts), grouper)


def groups(exp) -> dict:
    """One scrape: {group name: GroupStats}."""
    return {g.name: g for g in exp.scrape().groups}


__all__ = ["BOOT", "HZ", "FakeReader", "exporter", "groups", "proc", "rec", "thread"]
