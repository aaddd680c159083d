"""Tracker: the one place that knows which process is which.

Identity is (pid, start_ticks). From one reading to the next the tracker tells which
identities started, exec'd or exited, and keeps, per identity, the static facts it asked
the reader for once (cmdline, exe, cgroup, user), its fd limit (re-read every
``LIMITS_EVERY`` reads, staggered by pid, unless the reading gives it: bpf) and its last
record. When no process started or exited since the last reading, what it keeps per
identity is updated where a record changed, not built anew.

* Exec is seen from evidence that changes on every exec: the comm, or the mm addresses in
  stat (the record's ``mark``: arg_start and friends, shown to who may ptrace the
  process). python -> python keeps the comm but not the addresses. A mark that turns 0
  (a zombie, or a process we may no longer look into) is no exec.
* Unreadable is not exited: a pid whose stat could not be read this time, while its
  directory is there, keeps its identity and its last record (and the read error is
  counted), so it is never counted twice when it comes back.
* A counter that could be read before and not now (io of a process that turned
  non-dumpable) keeps its last value; one that becomes readable for the first time is
  reported in ``Step.readable``, so the grouper counts it from then on, not from birth.

``step()`` computes the next state without changing the current one; ``commit()`` makes
it current. A scrape that fails half-way leaves the tracker as it was.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import compress, repeat
from operator import add, contains, is_not, itemgetter, mod, not_, sub
from typing import NamedTuple, Optional

from exporter.reader import F, PF_KTHREAD, THREAD_FIELDS, WANT_ALL, WANT_CMDLINE, WANT_NOFILE, WANT_THREADS, reason

LIMITS_EVERY = 16  # re-read a known process' fd limit every 16th read (staggered by pid)

PID, START, COMM, MARK = F["pid"], F["start_ticks"], F["comm"], F["mark"]
# Counters whose file may become unreadable while the process lives (status, io); the
# stat ones (CPU, faults) come with the record itself.
CARRIED = tuple(F[n] for n in ("ctx_voluntary", "ctx_nonvoluntary", "read_bytes", "write_bytes"))
_pids = itemgetter(PID)
_first = itemgetter(0)
_starts = itemgetter(START)
# a record's key: what tells a new process, an exec, or children reaped since the last read
KEY = (PID, START, COMM, MARK, *(F[n] for n in ("cutime_ticks", "cstime_ticks", "cminor_faults", "cmajor_faults")))
_keys = itemgetter(*KEY)
_children = itemgetter(*(F[n] for n in ("cutime_ticks", "cstime_ticks", "cminor_faults", "cmajor_faults")))
_carried = itemgetter(*CARRIED)
_nthreads = itemgetter(F["num_threads"])
_CTXV, _CTXNV = F["ctx_voluntary"], F["ctx_nonvoluntary"]
# a thread's counters (THREAD_FIELDS 3..10: CPU, faults, context switches, io); None as 0
_thread_counts = itemgetter(3, 4, 5, 6, 7, 8, 9, 10)
_t_ctxv, _t_ctxnv = itemgetter(4), itemgetter(5)  # the context switches among those counters
_NO_GROWTH = (0,) * 8
_t_names = itemgetter(THREAD_FIELDS.index("comm"))
_t_states = itemgetter(THREAD_FIELDS.index("state"))
_t_wchans = itemgetter(THREAD_FIELDS.index("wchan"))


def _growth(now: list, old: list) -> tuple:
    """What the counters of threads grew, summed: now[i] - old[i] over the threads with an
    old value (None: first seen, grown by nothing)."""
    if None in old:
        now = list(compress(now, old))
        old = list(filter(None, old))
    if not old:
        return _NO_GROWTH
    return tuple(map(sub, map(sum, zip(*now)), map(sum, zip(*old))))


def at_pid(pid: int, identities: list) -> Optional[int]:
    """The index of pid's (first) identity in sorted identities, or None."""
    i = bisect_left(identities, (pid,))
    return i if i < len(identities) and identities[i][0] == pid else None


def index_of(identity: tuple, identities: list) -> Optional[int]:
    """The index of identity in sorted identities, or None."""
    i = bisect_left(identities, identity)
    return i if i < len(identities) and identities[i] == identity else None


def changed_records_py(records, previous, key, nones) -> tuple:
    """(changed, gone, holes): indices of the records without a previous record of the same
    (pid, start) (``key[0]``, ``key[1]``) or whose ``key`` columns differ from it; of the
    previous records without a record of the same (pid, start); of the records with None in
    a ``nones`` column. The twin of the C ``exporter._reader.changed_records``, which also
    wants both lists sorted by pid, one record per pid."""
    identity, keyed = itemgetter(key[0], key[1]), itemgetter(*key)
    before = {identity(p): keyed(p) for p in previous}  # of an identity twice: its last
    changed, seen = [], set()
    for i, rec in enumerate(records):
        this = identity(rec)
        if this not in seen and before.get(this) != keyed(rec):
            changed.append(i)
        seen.add(this)
    gone, told = [], set()  # an identity gone is told once
    for j, p in enumerate(previous):
        this = identity(p)
        if this not in seen and this not in told:
            gone.append(j)
            told.add(this)
    holes = [i for i, rec in enumerate(records) if any(rec[c] is None for c in nones)]
    return changed, gone, holes


try:
    from exporter._reader import changed_records  # type: ignore[attr-defined]
except ImportError:  # the extension is not built
    changed_records = changed_records_py


class Proc:
    """The static facts of one identity: read once, again only after an exec."""

    __slots__ = ("pid", "start_ticks", "start_time_seconds", "comm", "mark", "is_kernel_thread",
                 "cmdline", "exe", "cgroup", "uid", "username", "effective_username")

    def __init__(self, record, fact, start_time_seconds: float, username: Optional[str],
                 effective_username: Optional[str]):
        self.pid = record[PID]
        self.start_ticks = record[START]
        self.start_time_seconds = start_time_seconds
        self.comm = record[COMM]
        self.mark = record[MARK]
        self.is_kernel_thread = bool(record[F["flags"]] & PF_KTHREAD)
        self.cmdline = parse_cmdline(fact.cmdline)
        self.exe = None if fact.exe is None else fact.exe.decode("utf-8", "replace")
        self.cgroup = None if fact.cgroup is None else fact.cgroup.decode("utf-8", "replace").rstrip("\n")
        self.uid = record[F["uid"]]
        self.username = username  # of the real uid
        self.effective_username = effective_username  # process-exporter's {{.Username}}

    def with_mark(self, mark: int) -> "Proc":
        twin = object.__new__(Proc)
        for name in Proc.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.mark = mark
        return twin


def parse_cmdline(data: Optional[bytes]) -> Optional[tuple]:
    """/proc/PID/cmdline -> argv. All trailing NULs go (setproctitle pads with them), as
    prometheus/procfs does; () for kernel threads and zombies; None when unreadable."""
    if data is None:
        return None
    if not data:
        return ()
    data = data.rstrip(b"\0")  # b"\0\0" leaves b"": one empty argument, as procfs splits it
    return tuple(arg.decode("utf-8", "replace") for arg in data.split(b"\0"))


class Step(NamedTuple):
    """What one reading changed, and the tracker's state after it (not yet committed)."""

    records: list  # this read's records, plus the last one of each unreadable identity
    identities: list  # (pid, start_ticks) of each record
    limits: list  # fd limit of each record's identity (UNLIMITED: unlimited; None: unknown)
    holes: set  # identities whose record lacks a carried counter (never read yet)
    procs: dict  # identity -> Proc
    last: dict  # identity -> record
    nofile: dict  # identity -> fd limit (UNLIMITED: unlimited; None: unknown)
    started: list  # identities first seen now
    from_now: set  # of those, the ones whose past procsnap did not see (count from now)
    execed: list  # identities that exec'd (facts read again)
    refreshed: list  # identities whose facts were read again on request (recheck)
    exited: list  # [(identity, last record)]
    readable: list  # [(identity, field, value)]: a counter readable for the first time
    previous: dict  # identity -> record of the last step (the committed state)
    threads: dict  # identity -> {tid: counters} of multi-threaded processes (read each step)
    thread_states: dict  # identity -> the state letters of its threads
    thread_wchans: dict  # identity -> the wchans of its threads (str or None each)
    thread_deltas: dict  # identity -> {thread name: (its threads, the sum of what their counters grew since the last step)}
    # [(identity, growth of cutime, cstime, cminflt, cmajflt)] of identities read both times:
    # the children they reaped meanwhile (all their CPU and faults, seen or not)
    reaped: list
    machine_cpu_ticks: Optional[int]  # non-idle CPU ticks of the machine since the last step
    errors: dict  # reason -> count of this read (stat of unreadable pids included)
    cpu_ticks: Optional[int]  # the machine's non-idle CPU ticks at this read (/proc/stat)
    unreadable_pids: frozenset
    timestamp: float
    first: bool


class Tracker:
    def __init__(self, reader, facts):
        """``reader``: an :class:`exporter.reader.Reader`; ``facts``: HostFacts (clock
        ticks, boot time, user names)."""
        self.reader = reader
        self.facts = facts
        self.procs: dict = {}
        self.last: dict = {}
        self.nofile: dict = {}
        self.threads: dict = {}  # identity -> {tid: counters} of the last step
        self._records: list = []  # the last step's records, sorted by pid
        self._holes: set = set()  # identities whose last record lacks a carried counter
        self._identities: list = []  # the last step's identities, in the order of its records
        self._limits: list = []  # and their fd limits
        self._unreadable_pids: frozenset = frozenset()
        self._gen = 0  # reads so far (staggers the fd-limit re-reads)
        self._cpu_ticks: Optional[int] = None  # the machine's non-idle CPU ticks at the last step
        self._committed = False  # a step was committed: the next is not the first

    def start_time_seconds(self, start_ticks: int) -> float:
        return self.facts.boot_time + start_ticks / self.facts.clock_ticks

    def step(self, reading, refresh=()) -> Step:
        """The next state after ``reading``; ``refresh``: known identities whose static
        facts are to be read again (process-exporter's -recheck)."""
        records = reading.records
        limits = reading.nofile  # fd limits read with the records (bpf): none are asked as facts
        old_procs, old_last, old_records = self.procs, self.last, self._records
        errors = dict(reading.errors)
        first = not self._committed

        # unreadable is not exited: carry the last record of a known identity
        unreadable_pids = frozenset(pid for pid, _ in reading.unreadable)
        carried = False
        identities = None
        nofile = dict(self.nofile)
        if reading.unreadable:
            identities = list(zip(map(_pids, records), map(_starts, records)))
            if limits is not None:
                nofile.update(zip(identities, limits))
        for pid, err in reading.unreadable:
            key = reason(err)
            errors[key] = errors.get(key, 0) + 1
            found = at_pid(pid, self._identities)
            identity = None if found is None else self._identities[found]
            if identity is not None and identity in old_last:
                records.append(old_last[identity])
                identities.append(identity)
                carried = True
        if carried:
            order = sorted(range(len(records)), key=lambda i: identities[i][0])
            records = [records[i] for i in order]
            identities = [identities[i] for i in order]

        # which records differ from the last step's in their key (or are new), which of the
        # last step's are gone, which lack a carried counter
        in_order = True
        try:
            changed, gone, check = changed_records(records, old_records, KEY, CARRIED)
        except ValueError:  # not sorted, one per pid (a reader breaking its contract): sorted, the twin copes
            order = sorted(range(len(records)), key=lambda i: (records[i][PID], records[i][START]))
            records = [records[i] for i in order]
            if identities is not None:
                identities = [identities[i] for i in order]
            if limits is not None and not carried:
                limits = [limits[i] for i in order]
            changed, gone, check = changed_records_py(records, old_records, KEY, CARRIED)
            in_order = False
        # the same identities in the same order as the last step's (none started, none gone):
        # what is keyed by identity is then updated where a record changed, not built anew
        same = in_order and identities is None and not gone and len(records) == len(old_records) and self._committed
        if identities is None:
            identities = self._identities if same else list(zip(map(_pids, records), map(_starts, records)))
            if limits is not None and not (same and limits == self._limits):
                nofile.update(zip(identities, limits))

        # a counter readable before and not now keeps its last value
        readable = []
        if self._holes:  # identities whose last record had a hole: filled now? (records are sorted
            # by pid, one per pid: the reader's contract, and the carried ones were sorted in above)
            at = (index_of(identity, identities) for identity in self._holes)
            check = sorted(set(check).union(i for i in at if i is not None))
        for i in check:
            rec, identity = records[i], identities[i]
            before = old_last.get(identity)
            if before is None:
                continue
            patched = None
            for f in CARRIED:
                if rec[f] is None and before[f] is not None:
                    patched = patched or list(rec)
                    patched[f] = before[f]
                elif rec[f] is not None and before[f] is None:
                    readable.append((identity, f, rec[f]))
            if patched is not None:
                records[i] = tuple(patched)
        holes = {identities[i] for i in check if None in _carried(records[i])}  # for the next step

        # started, exec'd, reaped children: only identities whose key changed
        started, execed, remarked, reaped = [], [], [], []
        for key in map(_keys, map(records.__getitem__, changed)):
            identity = key[:2]
            proc = old_procs.get(identity)
            if proc is None:
                started.append(identity)
                continue
            if key[2] != proc.comm or (key[3] and proc.mark and key[3] != proc.mark):
                execed.append(identity)
            elif key[3] and key[3] != proc.mark:
                remarked.append((identity, key[3]))
            before = old_last.get(identity)
            if before is not None and _children(before) != key[4:]:
                reaped.append((identity, tuple(a - b for a, b in zip(key[4:], _children(before)))))
        moved = list(compress(range(len(records)), map(is_not, records, old_records))) if same else None
        if moved is not None and len(moved) < len(records) // 4:
            last = dict(old_last)
            for i in moved:
                last[identities[i]] = records[i]
        else:
            last = dict(zip(identities, records))
        exited = [((rec[PID], rec[START]), rec) for rec in map(old_records.__getitem__, gone)]

        # facts: everything for started and exec'd identities, the fd limit when due
        self._gen += 1
        gen = self._gen
        everything = WANT_ALL if limits is None else WANT_ALL & ~WANT_NOFILE
        want = {identity: everything for identity in started}
        want.update((identity, everything) for identity in execed)
        refreshed = [identity for identity in refresh if identity in last and identity not in want]
        want.update((identity, everything) for identity in refreshed)
        if limits is None:
            due = map(mod, map(add, map(_first, identities), repeat(gen)), repeat(LIMITS_EVERY))
            for identity in compress(identities, map(not_, due)):  # (pid + gen) % LIMITS_EVERY == 0
                if identity not in want:
                    want[identity] = WANT_NOFILE
        # threads, as process-exporter reads them: each step, for processes with two or more
        for identity in compress(identities, map(contains, repeat(range(2, 1 << 62)), map(_nthreads, records))):
            want[identity] = want.get(identity, 0) | WANT_THREADS
        requests = [(pid, start, bits) for (pid, start), bits in want.items()]
        facts, fact_errors = self.reader.read_facts(requests)
        for key, n in fact_errors.items():
            errors[key] = errors.get(key, 0) + n

        procs = dict(old_procs)
        for identity, _ in exited:
            del procs[identity]
            nofile.pop(identity, None)
        for identity, mark in remarked:
            procs[identity] = procs[identity].with_mark(mark)
        dropped = set()
        threads, thread_states, thread_wchans, thread_deltas = {}, {}, {}, {}
        for (pid, start, bits), fact in zip(requests, facts):
            identity = (pid, start)
            if fact.gone:
                if bits & WANT_CMDLINE:  # exited before its facts were read: not seen at all
                    dropped.add(identity)
                continue
            if fact.threads is not None:
                self._thread_step(identity, fact.threads, threads, thread_states, thread_wchans, thread_deltas)
            if bits & WANT_CMDLINE:
                record = records[index_of(identity, identities)]
                uid = record[F["uid"]]
                euid = record[F["euid"]]
                names = self.facts.usernames
                procs[identity] = Proc(record, fact, self.start_time_seconds(start),
                                       None if uid is None else names[uid], None if euid is None else names[euid])
            if bits & WANT_NOFILE and (fact.nofile is not None or bits & WANT_CMDLINE):
                nofile[identity] = fact.nofile  # UNLIMITED stays: the fd ratio is then about 0
        if threads:  # context switches summed over the threads, as process-exporter does
            for identity, counts in threads.items():
                i = index_of(identity, identities)
                rec = list(records[i])
                rec[_CTXV] = sum(map(_t_ctxv, counts.values()))
                rec[_CTXNV] = sum(map(_t_ctxnv, counts.values()))
                records[i] = last[identity] = tuple(rec)
        if dropped:
            keep = [i for i, identity in enumerate(identities) if identity not in dropped]
            records = [records[i] for i in keep]
            identities = [identities[i] for i in keep]
            started = [identity for identity in started if identity not in dropped]
            for identity in dropped:
                if identity in old_procs:  # an exec'd one that exited meanwhile
                    exited.append((identity, old_last[identity]))
                    del procs[identity]
                else:
                    procs.pop(identity, None)
                nofile.pop(identity, None)
            execed = [identity for identity in execed if identity not in dropped]

        from_now = set(started) if first else {i for i in started if i[0] in self._unreadable_pids}
        if dropped:  # read but not its facts: if it is there next time, its past is unseen
            unreadable_pids = unreadable_pids | {pid for pid, _ in dropped}
        if dropped:
            last = dict(zip(identities, records))
        aligned = limits is not None and not carried and not dropped
        return Step(
            records, identities, limits if aligned else list(map(nofile.get, identities)), holes, procs, last,
            nofile, started, from_now,
            execed, [identity for identity in refreshed if identity in procs], exited, readable, old_last,
            threads, thread_states, thread_wchans, thread_deltas, reaped,
            None if first or reading.cpu_ticks is None or self._cpu_ticks is None else reading.cpu_ticks - self._cpu_ticks,
            errors, reading.cpu_ticks, unreadable_pids, reading.timestamp, first,
        )

    def _thread_step(self, identity, read, threads, states, wchans, deltas) -> None:
        """A multi-threaded process' threads: their counters (None read as 0, as
        process-exporter does), states, wchans, and per thread name how many threads have
        it and what their counters grew since the last step, summed (a thread seen for the
        first time has grown by nothing)."""
        before = self.threads.get(identity, {})
        counts = list(map(_thread_counts, read))
        if any(map(contains, counts, repeat(None))):
            counts = [tuple(v or 0 for v in c) if None in c else c for c in counts]
        tids = list(map(_first, read))
        olds = list(map(before.get, tids))
        names = list(map(_t_names, read))
        if len(set(names)) == 1:  # one name (a pool of workers): column sums, no loop per thread
            parts = {names[0]: (counts, olds)}
        else:
            parts = {}
            for name, now, old in zip(names, counts, olds):
                part = parts.get(name)
                if part is None:
                    part = parts[name] = ([], [])
                part[0].append(now)
                part[1].append(old)
        deltas[identity] = {name: (len(now), _growth(now, old)) for name, (now, old) in parts.items()}
        threads[identity] = dict(zip(tids, counts))
        states[identity] = tuple(map(_t_states, read))
        wchans[identity] = tuple(map(_t_wchans, read))

    def commit(self, step: Step) -> None:
        self.procs = step.procs
        self.last = step.last
        self.nofile = step.nofile
        self._records = step.records
        self.threads = step.threads
        self._holes = step.holes
        self._identities = step.identities
        self._limits = step.limits
        self._unreadable_pids = step.unreadable_pids
        self._cpu_ticks = step.cpu_ticks
        self._committed = True

