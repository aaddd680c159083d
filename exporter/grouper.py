"""Grouper: maps tracked processes to named groups and accumulates their metrics.

Each identity is matched against the config once (again after an exec or a reload) and
keeps its group name. With ``children`` on, a process that no matcher names joins the
group of its nearest named ancestor, found through the ppid map of the same reading.

Counters. A group's counter is ``base + the sum of its members' current values``. A
member joins with a baseline (``base -= baseline``) and leaves with its last values
(``base += last``), so:

* processes already running at the first reading count from then (their past is not the
  group's history, as in process-exporter), and so does a process whose past procsnap
  could not see (unreadable until now); a process that started since the last reading
  counts in full;
* a process that moves (exec, or a reload that names it differently) leaves its old group
  with its values at the last reading and joins the new one with the same values: the
  growth since the last reading counts once, in the new group;
* a counter that becomes readable for the first time counts from then (``Step.readable``);
* a reported counter never decreases and is never negative.

CPU is summed in clock ticks (exact integers) and shown in seconds.

Empty groups keep their counters (rates stay continuous) unless their name is per
process ({{.PID}}, {{.StartTime}}) or ``remove_empty_groups`` is set: then they go at
once. A group of the default config (one per comm) goes after ``empty_grace_seconds``
empty, so churning comms do not pile up series. After a reload, a group without members
goes unless the new config names it literally.

``update()`` works on copies and swaps them in at the end: an exception leaves the
grouper as it was before that reading.
"""

from __future__ import annotations

import logging
from collections import Counter
from operator import add, itemgetter
from dataclasses import dataclass, field
from typing import Optional

from exporter.config import Facts
from exporter.kubernetes import NOT_IN_A_POD
from exporter.redact import redact

log = logging.getLogger("procsnap")
from exporter.reader import F
from exporter.tracker import at_pid, index_of

# process-exporter's state buckets, from the one-letter stat state.
STATE_NAMES = ("Running", "Sleeping", "Waiting", "Zombie", "Other")
_STATE_OF = {"R": "Running", "S": "Sleeping", "D": "Waiting", "Z": "Zombie"}
_MAX_ANCESTRY = 4096  # a ppid chain longer than any real one means a loop in a fixture
OTHER = "other"  # the group of processes beyond --max-groups
MAX_LABEL_LENGTH = 1024  # characters of a label value (group name, pod label); longer ones are cut
_NO_MATCH = object()

# cumulative per-process counters, and per-process gauges summed over a group
COUNTERS = (
    "utime_ticks",
    "stime_ticks",
    "read_bytes",
    "write_bytes",
    "major_faults",
    "minor_faults",
    "ctx_voluntary",
    "ctx_nonvoluntary",
)
GAUGE_SUMS = ("rss_bytes", "vms_bytes", "swap_bytes", "open_fds", "num_threads", "pss_bytes", "swap_pss_bytes")
_COUNTER_AT = tuple(F[n] for n in COUNTERS)
_COUNTER_INDEX = {at: i for i, at in enumerate(_COUNTER_AT)}
_GAUGE_AT = tuple(F[n] for n in GAUGE_SUMS)
_SUMMED_AT = _COUNTER_AT + _GAUGE_AT  # the columns group_columns sums
_OPEN_FDS, _START, _STATE, _PPID, _WCHAN = F["open_fds"], F["start_ticks"], F["state"], F["ppid"], F["wchan"]
_PID = F["pid"]
_children = itemgetter(*(F[n] for n in ("cutime_ticks", "cstime_ticks", "cminor_faults", "cmajor_faults")))
# a seen child's counted values, per reaped-children field: (its own, its reaped children's)
_SEEN_CHILD = tuple((F[own], F[reaped]) for own, reaped in (
    ("utime_ticks", "cutime_ticks"), ("stime_ticks", "cstime_ticks"), ("minor_faults", "cminor_faults"),
    ("major_faults", "cmajor_faults")))
# where the credits go among COUNTERS: user, system, minor faults, major faults
_CREDIT_AT = tuple(COUNTERS.index(n) for n in ("utime_ticks", "stime_ticks", "minor_faults", "major_faults"))


@dataclass(slots=True)
class GroupStats:
    """What one group reports in one scrape. Counters are totals since the group was
    first seen and never decrease; a value that no member could be read for is None (the
    metric is then absent, not 0). An empty group's sums are 0, its oldest start time and
    worst fd ratio None."""

    name: str
    num_procs: int = 0
    cpu_user_seconds: Optional[float] = None
    cpu_system_seconds: Optional[float] = None
    read_bytes: Optional[int] = None
    write_bytes: Optional[int] = None
    major_faults: Optional[int] = None
    minor_faults: Optional[int] = None
    ctx_voluntary: Optional[int] = None
    ctx_nonvoluntary: Optional[int] = None
    rss_bytes: Optional[int] = None
    vms_bytes: Optional[int] = None
    swap_bytes: Optional[int] = None
    open_fds: Optional[int] = None
    worst_fd_ratio: Optional[float] = None
    oldest_start_time_seconds: Optional[float] = None
    num_threads: Optional[int] = None
    states: dict = field(default_factory=lambda: dict.fromkeys(STATE_NAMES, 0))
    # per thread name of the multi-threaded members: (name, thread count, counters), the
    # counters in THREAD_COUNTERS order (CPU in seconds), as process-exporter accumulates them
    threads: tuple = ()
    # (wchan, count) sorted: the members, and the threads of the multi-threaded ones, waiting
    # in the kernel there (process-exporter counts such a process and each of its threads)
    wchans: tuple = ()
    # proportional memory (--gather-smaps), summed over the members it was read for
    pss_bytes: Optional[int] = None
    swap_pss_bytes: Optional[int] = None
    # values of the config's extra_labels (namespace, pod, container), in its order
    labels: tuple = ()


def group_columns_py(records, groups, ngroups, summed, start, fds, limits, counted) -> list:
    """Per group index (``groups[i]``: record i's, or None): None without members, else
    (members, sums of the ``summed`` columns with None skipped, how many of each were not
    None, the least ``start``, the greatest ``fds`` / ``limits[i]`` (None or 0 limits
    skipped), a {value: count} dict per ``counted`` column). The twin of the C
    ``exporter._reader.group_columns``, which the grouper uses when the extension is built."""
    members: list = [[] for _ in range(ngroups)]
    for i, g in enumerate(groups):
        if g is not None:
            members[g].append(i)
    out = []
    for idx in members:
        if not idx:
            out.append(None)
            continue
        columns = list(zip(*[records[i] for i in idx]))
        starts = [v for v in columns[start] if v is not None]
        ratios = [o / m for o, m in zip(columns[fds], [limits[i] for i in idx]) if o is not None and m]
        out.append((len(idx), tuple(sum(filter(None, columns[c])) for c in summed),
                    tuple(len(idx) - columns[c].count(None) for c in summed), min(starts) if starts else None,
                    max(ratios) if ratios else None, tuple(dict(Counter(columns[c])) for c in counted)))
    return out


try:
    from exporter._reader import group_columns  # type: ignore[attr-defined]
except ImportError:  # the extension is not built
    group_columns = group_columns_py


# a thread's counters, in the order the tracker gives them (it gives CPU in clock ticks)
THREAD_COUNTERS = ("cpu_user_seconds", "cpu_system_seconds", "minor_faults", "major_faults", "ctx_voluntary",
                   "ctx_nonvoluntary", "read_bytes", "write_bytes")


class Grouper:
    def __init__(self, config, clock_ticks: int, boot_time: float, children: bool = True,
                 remove_empty_groups: bool = False, empty_grace_seconds: Optional[float] = None,
                 recheck: bool = False, recheck_seconds: Optional[float] = None, pods=None,
                 count_reaped: bool = True, redact: bool = True, max_groups: Optional[int] = None):
        """``recheck`` (process-exporter's -recheck): a process no matcher named is
        matched again at every update, for ``recheck_seconds`` after its start when
        given (-recheck-with-time-limit), else for its whole life. ``pods``: an
        exporter.kubernetes.PodDirectory, for the pod template fields and extra_labels.
        ``count_reaped``: credit the CPU and faults of reaped children procsnap never saw
        to the group of the process that reaped them (see :meth:`_Update.reaped_credits`).
        ``redact``: secrets of command lines never reach a group name (exporter.redact).
        ``max_groups``: beyond this many groups, new ones fold into one named "other"."""
        self.config = config
        self.clock_ticks = clock_ticks
        self.boot_time = boot_time
        self.children = children
        self.remove_empty_groups = remove_empty_groups
        self.empty_grace_seconds = empty_grace_seconds
        self.recheck = recheck
        self.recheck_seconds = recheck_seconds
        self.pods = pods
        self.count_reaped = count_reaped
        self.redact = redact
        self.max_groups = max_groups
        self.groups_folded = 0  # processes whose new group was folded into "other" (max_groups)
        self._warned_full = None  # the config the "max groups reached" warning was logged for
        self.reaped_scaled = 0  # updates whose reaped-children CPU was scaled back to the machine's
        # A group is a key (name, extra label values): the values of the config's
        # extra_labels, () without them.
        self.group_of: dict = {}  # identity -> group key, or None (not exported)
        self.base: dict = {}  # key -> [counter] (exited members' last values - baselines)
        self.reported: dict = {}  # key -> (last reported counter totals; None: never read)
        self.per_process: dict = {}  # key -> the name differs for every process
        self.empty_since: dict = {}  # key -> timestamp of the first reading it was empty at
        self.thread_totals: dict = {}  # key -> {thread name: (count, counters)} of the last update
        self._reload = None  # a config to switch to at the next update
        self._indices = None  # (identities, keys, each identity's index in keys) of the last update

    def reload(self, config) -> None:
        """Use a new config from the next update: every identity is matched again; group
        totals are kept for names that survive."""
        self._reload = config

    def to_recheck(self, now: float) -> list:
        """With recheck on: the identities no matcher named (within the time limit after
        their start), whose static facts the tracker should read again."""
        if not self.recheck:
            return []
        limit, boot, hz = self.recheck_seconds, self.boot_time, self.clock_ticks
        return [identity for identity, name in self.group_of.items()
                if name is None and (limit is None or boot + identity[1] / hz + limit > now)]

    def update(self, step) -> list:
        """Advance by one tracker step; return [GroupStats] sorted by name (then labels)."""
        work = _Update(self, step)
        stats = work.run()
        work.commit()
        return stats


def safe_label(value: str) -> str:
    """A label value: valid UTF-8 (a surrogate a YAML escape made becomes U+FFFD) and at most
    MAX_LABEL_LENGTH characters (cut, with "…" at the end)."""
    if len(value) > MAX_LABEL_LENGTH:
        value = value[: MAX_LABEL_LENGTH - 1] + "\u2026"
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


class _Update:
    """One update's working copies of the grouper's state."""

    def __init__(self, grouper: Grouper, step):
        self.g = grouper
        self.step = step
        self.config = grouper._reload or grouper.config
        # groups the config names literally exist from the start (not per pod: which pods
        # will run them is not known)
        self.literal_keys = frozenset() if self.config.extra_labels else {(n, ()) for n in self.config.literal_names}
        self.group_of = dict(grouper.group_of)
        self.base = dict(grouper.base)
        self.copied: set = set()  # names whose base list is this update's own copy
        self.per_process = dict(grouper.per_process)
        self.empty_since = dict(grouper.empty_since)
        self.reported: dict = {}
        self.thread_totals_now: dict = {}
        self.threaded: dict = {}  # key -> identities of its multi-threaded members
        self.scaled = False  # the reaped credits were scaled back to the machine's CPU
        self.folded = 0  # processes folded into "other" by this update
        self.g_indices = None  # what the grouper keeps as its _indices

    def own_base(self, key) -> list:
        """The group's base list, copied before this update's first change to it."""
        base = self.base[key]
        if key not in self.copied:
            base = self.base[key] = list(base)
            self.copied.add(key)
        return base

    def shift(self, key, record, sign: int) -> None:
        if key is None:
            return
        base = self.own_base(key)
        for i, at in enumerate(_COUNTER_AT):
            value = record[at]
            if value is not None:
                base[i] += sign * value

    def run(self) -> list:
        step, group_of = self.step, self.group_of
        reloading = self.g._reload is not None

        for identity, last in step.exited:
            self.shift(group_of.pop(identity, None), last, +1)

        # identities to match again: exec'd ones, every known one on a reload, and with
        # recheck the ones no matcher named
        again = list(group_of) if reloading else step.execed
        rechecked = ()
        if step.refreshed and not reloading:
            rechecked = [i for i in step.refreshed if group_of.get(i, 0) is None]
            again = again + rechecked
        moved = []
        for identity in again:
            previous = step.previous.get(identity)
            key = group_of.pop(identity, None)
            if previous is not None:
                self.shift(key, previous, +1)
                moved.append((identity, previous))
        if rechecked:  # matched late by -recheck: counts from now, as process-exporter
            late, current = set(rechecked), step.last
            moved = [(i, current.get(i, p) if i in late else p) for i, p in moved]

        records, identities = step.records, step.identities
        if step.started or again:
            self.assign(set(step.started).union(again), identities, records)

        position = None
        for identity in step.started:
            if identity in step.from_now:
                if position is None:
                    position = dict(zip(identities, range(len(identities))))
                self.shift(group_of[identity], records[position[identity]], -1)
        for identity, previous in moved:  # the growth since the last reading counts here
            self.shift(group_of[identity], previous, -1)
        for identity, at, value in step.readable:
            key = group_of.get(identity)
            if key is not None:
                self.own_base(key)[_COUNTER_INDEX[at]] -= value

        if not self.g.remove_empty_groups:  # groups the config names literally exist from the start
            for key in self.literal_keys - self.base.keys():
                self.base[key] = [0] * len(COUNTERS)
                self.copied.add(key)
                self.per_process[key] = False

        credited = self.credit_reaped() if self.g.count_reaped and (step.reaped or step.started) else {}

        keys = sorted(self.base)
        args = (records, self.indices(keys, again, reloading), len(keys), _SUMMED_AT, _START,
                _OPEN_FDS, step.limits, (_STATE, _WCHAN))
        try:
            columns = group_columns(*args)
        except OverflowError:  # a value beyond 64 bits (a sum of thread counters): Python's ints
            columns = group_columns_py(*args)
        members = dict(zip(keys, columns))  # key -> its columns, None without members
        for identity in step.thread_states:  # the multi-threaded members, whose threads count too
            key = group_of.get(identity)
            if key is not None:
                self.threaded.setdefault(key, []).append(identity)

        stats = []
        for key, col in members.items():
            if col is None and self.drop(key, reloading):
                continue
            if col is None:
                self.empty_since.setdefault(key, step.timestamp)
            else:
                self.empty_since.pop(key, None)
            stats.append(self.stats(key, col))
        if credited:
            self.check_machine_cpu(stats, credited, members)
        return stats

    def indices(self, keys: list, again: list, reloading: bool) -> list:
        """Each identity's group as an index in keys (None: not exported). Where the tracker
        gave the last update's identities again (none started, none gone) and the keys
        are the same, the last list stands but for the identities matched again."""
        step, group_of = self.step, self.group_of
        identities = step.identities
        index = dict(zip(keys, range(len(keys))))
        last = self.g._indices
        if (last is not None and last[0] is identities and last[1] == keys and not reloading and not step.started
                and len(again) <= len(identities) // 16):
            groups = list(last[2])
            for identity in again:
                groups[index_of(identity, identities)] = index.get(group_of[identity])
        else:
            groups = list(map(index.get, map(group_of.__getitem__, identities)))
        self.g_indices = (identities, keys, groups)
        return groups

    # -- reaped children (process-exporter does not count them) -------------------------

    def reaped_credits(self) -> dict:
        """identity -> [user ticks, system ticks, minor faults, major faults] of the
        children it reaped since the last update that procsnap did not count: the growth of
        its cutime/cstime/cminflt/cmajflt (all of them for a process born since), minus
        what reaped children it had seen already counted (their last values, their own and
        their reaped children's). A child whose parent exited too is taken off the nearest
        ancestor still there. Never negative."""
        step = self.step
        credits = {identity: list(grown) for identity, grown in step.reaped}
        for identity in step.started:  # born since the last update: what it reaped is new too
            if identity not in step.from_now:
                credits[identity] = [v or 0 for v in _children(step.last[identity])]
        if step.exited:
            parent_of = {i[0]: i for i in credits}
            gone = {last[_PID]: last for _, last in step.exited}
            for _, last in step.exited:
                pid, hops = last[_PPID], 0
                while pid in gone and hops < len(gone):  # its parent exited too: up the chain
                    pid, hops = gone[pid][_PPID], hops + 1
                parent = parent_of.get(pid)
                if parent is not None:
                    credit = credits[parent]
                    for j, (own, reaped) in enumerate(_SEEN_CHILD):
                        credit[j] -= (last[own] or 0) + (last[reaped] or 0)
        return {identity: [max(v, 0) for v in credit] for identity, credit in credits.items()}

    def credit_reaped(self) -> dict:
        """Add the reaped credits to the groups of the reapers; key -> [user, system] ticks
        credited (for the machine check). A reaper in no group credits nobody."""
        credited: dict = {}
        for identity, credit in self.reaped_credits().items():
            key = self.group_of.get(identity)
            if key is None or not any(credit):
                continue
            base = self.own_base(key)
            for at, value in zip(_CREDIT_AT, credit):
                base[at] += value
            cpu = credited.setdefault(key, [0, 0])
            cpu[0] += credit[0]
            cpu[1] += credit[1]
        return credited

    def check_machine_cpu(self, stats: list, credited: dict, members: dict) -> None:
        """The groups' CPU growth may not exceed what /proc/stat says the machine spent: if
        it does, the reaped credits are scaled back by the excess (as Netdata's apps.plugin
        does) and the affected groups computed again."""
        machine = self.step.machine_cpu_ticks
        if machine is None:
            return
        growth = 0
        for key in self.reported:
            now, before = self.reported[key], self.g.reported.get(key)
            if now[0] is None or now[1] is None:
                continue
            growth += now[0] + now[1] - ((before[0] or 0) + (before[1] or 0) if before else 0)
        total = sum(u + s for u, s in credited.values())
        excess = growth - machine
        if excess <= 0 or total <= 0:
            return
        keep = max(0.0, 1.0 - excess / total)
        user_at, system_at = _CREDIT_AT[:2]
        for key, (user, system) in credited.items():
            base = self.own_base(key)
            base[user_at] -= user - int(user * keep)
            base[system_at] -= system - int(system * keep)
        self.scaled = True
        for i, s in enumerate(stats):
            key = (s.name, s.labels)
            if key in credited:
                stats[i] = self.stats(key, members.get(key))

    def drop(self, key, reloading: bool) -> bool:
        """Forget an empty group? (its counters restart if the key comes back)"""
        g = self.g
        since = self.empty_since.get(key, self.step.timestamp)
        literal = key in self.literal_keys
        gone = (
            self.per_process[key]
            or g.remove_empty_groups
            or (reloading and not literal)
            or (g.empty_grace_seconds is not None and self.step.timestamp - since >= g.empty_grace_seconds)
        )
        if gone:
            del self.base[key]
            del self.per_process[key]
            self.empty_since.pop(key, None)
        return gone

    def commit(self) -> None:
        g = self.g
        if g._reload is not None:
            g.config, g._reload = self.config, None
        g.group_of, g.base, g.reported = self.group_of, self.base, self.reported
        g.per_process, g.empty_since = self.per_process, self.empty_since
        g.thread_totals = self.thread_totals_now
        g._indices = self.g_indices
        g.reaped_scaled += self.scaled
        g.groups_folded += self.folded
        if self.folded and g._warned_full is not self.config:
            g._warned_full = self.config  # once per config, not per scrape
            log.warning("more than --max-groups=%d groups: the processes of new ones are counted in group %r "
                        "(procsnap_groups_dropped_total)", g.max_groups, OTHER)

    # -- assignment ------------------------------------------------------------------

    def assign(self, unassigned, identities, records) -> None:
        """Name the identities without a group (in pid order: an ancestor walk may name
        some on the way)."""
        group_of = self.group_of
        procs = self.step.procs
        for identity in sorted(unassigned):
            if identity in group_of:
                continue
            if self.match(identity, procs[identity]) is not _NO_MATCH:
                continue
            self.inherit(identity, records[index_of(identity, identities)], identities, records)

    def match(self, identity, p):
        """Name the identity by its own first matching matcher, or return _NO_MATCH."""
        g = self.g
        matcher, captures = self.config.match(p, g.redact)
        if matcher is None:
            return _NO_MATCH
        pod = g.pods.info(p.cgroup) if g.pods is not None else NOT_IN_A_POD
        argv = p.cmdline or ()
        if g.redact and argv:  # {{.ExeFull}} and {{.ExeBase}} come from argv[0]
            argv = (redact(argv[0]),) + argv[1:]
        facts = Facts(p.comm, argv, p.effective_username, p.pid, p.start_time_seconds, p.cgroup, captures,
                      p.start_ticks, g.boot_time, g.clock_ticks, pod)
        key = (safe_label(matcher.template.render(facts)),
               tuple(safe_label(getattr(pod, label)) for label in self.config.extra_labels))
        if key not in self.base and g.max_groups is not None and len(self.base) >= g.max_groups:
            self.folded += 1  # one group too many: into "other"
            key = (OTHER, ("",) * len(key[1]))
        self.group_of[identity] = key
        if key not in self.base:
            self.base[key] = [0] * len(COUNTERS)
            self.copied.add(key)
            self.per_process[key] = matcher.template.per_process and key[0] != OTHER
        return key

    def inherit(self, identity, rec, identities, records) -> None:
        """An identity no matcher names: with children on, it takes the group of its
        nearest named ancestor (deciding unassigned ancestors on the way), else None."""
        group_of, procs = self.group_of, self.step.procs
        chain = [identity]
        key = None
        seen = {identity[0]}
        pid = rec[_PPID]
        while self.g.children and pid not in seen and len(chain) < _MAX_ANCESTRY:
            i = at_pid(pid, identities)  # a bisection: these walks are few, a dict of every pid costs more
            if i is None:
                break
            seen.add(pid)
            ancestor, a = identities[i], records[i]
            if ancestor in group_of:
                key = group_of[ancestor]
                break
            key = self.match(ancestor, procs[ancestor])
            if key is not _NO_MATCH:
                break
            key = None
            chain.append(ancestor)
            pid = a[_PPID]
        for unnamed in chain:
            group_of[unnamed] = key

    # -- one group's numbers -----------------------------------------------------------

    def stats(self, key: tuple, col) -> GroupStats:
        """The group's numbers from its columns (group_columns; None: no members)."""
        step = self.step
        n = col[0] if col else 0
        sums, readable = (col[1], col[2]) if n else ((0,) * len(_SUMMED_AT), (0,) * len(_SUMMED_AT))
        before = self.g.reported.get(key)
        if before is None and key in self.literal_keys:  # named by the config: counts from 0
            before = (0,) * len(COUNTERS)
        base = self.base[key]
        totals = []
        for i in range(len(COUNTERS)):
            last = before[i] if before is not None else None
            if last is None and not readable[i]:
                totals.append(None)
                continue
            total = max(base[i] + sums[i], 0)
            if last is not None and total < last:
                total = last
            totals.append(total)
        self.reported[key] = tuple(totals)
        gauges = [sums[i] if not n or readable[i] else None for i in range(len(COUNTERS), len(_SUMMED_AT))]
        ratio = oldest = None
        states = dict.fromkeys(STATE_NAMES, 0)
        wchans = ()
        threaded = self.threaded.get(key, ())
        if n:
            ratio = col[4]
            # whole seconds, as process-exporter reports it (Go's Time.Unix())
            oldest = float(int(self.g.boot_time) + col[3] // self.g.clock_ticks)
            # process-exporter counts a multi-threaded process' state and each thread's
            counted = Counter(col[5][0])
            for identity in threaded:
                counted.update(step.thread_states[identity])
            for state, count in counted.items():
                states[_STATE_OF.get(state, "Other")] += count
            wchans = self.wchans(col[5][1], threaded)
        hz = self.g.clock_ticks
        user, system = (None if t is None else t / hz for t in totals[:2])
        rss, vms, swap, fds, threads, pss, swap_pss = gauges
        return GroupStats(key[0], n, user, system, *totals[2:], rss, vms, swap, fds, ratio, oldest, threads, states,
                          self.thread_totals(key, threaded), wchans, pss, swap_pss, key[1])

    def wchans(self, counted: dict, threaded) -> tuple:
        """(wchan, count) sorted, of the members' wchans (counted) and their threads'
        (process-exporter counts both for a multi-threaded process); "0" (running, or
        hidden) and no wchan are not counted."""
        counted = Counter(counted)
        for identity in threaded:
            counted.update(self.step.thread_wchans[identity])
        return tuple(sorted((w, c) for w, c in counted.items() if w and w != "0"))

    def thread_totals(self, key: tuple, threaded) -> tuple:
        """Per thread name in the group: how many threads, and counters as
        process-exporter keeps them: what grew this step plus the name's total of the last
        step (a name absent for a step starts again from 0)."""
        deltas = self.step.thread_deltas
        now: dict = {}  # thread name -> (its threads, what they grew)
        for identity in threaded:
            for thread_name, (count, grown) in deltas[identity].items():
                seen = now.get(thread_name)
                now[thread_name] = (seen[0] + count, tuple(map(add, seen[1], grown))) if seen else (count, grown)
        if not now:
            return ()
        before = self.g.thread_totals.get(key, {})
        totals = {}
        for thread_name, (count, summed) in now.items():
            old = before.get(thread_name)
            totals[thread_name] = (count, tuple(map(add, summed, old[1])) if old else summed)
        self.thread_totals_now[key] = totals
        hz = self.g.clock_ticks
        return tuple((thread_name, count, (counters[0] / hz, counters[1] / hz) + counters[2:])
                     for thread_name, (count, counters) in sorted(totals.items()))
