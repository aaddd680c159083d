"""Grouper: maps tracked processes to named groups and accumulates their metrics.

Each identity is matched against the config once (again after exec) and keeps its group
name. With ``children`` on, a process that no matcher names joins the group of its
nearest named ancestor, found through the ppid map of the same snapshot.

Counters. A group's counter is ``base + sum of its members' cumulative values``; when a
member exits, its last values move into ``base``, so totals never go down when members
or threads exit or pids are reused, and nothing has to be kept per process. Processes
already running at the first snapshot start from 0 (their past is not the group's
history, as in process-exporter); processes that start later count in full. An exec'd
process that changes group counts in the new one only from then on. A reported counter
is also clamped to never decrease (a member turning unreadable must not take it down).

Empty groups keep their counters (rates stay continuous) unless their name is per
process ({{.PID}}, {{.StartTime}}) or ``remove_empty_groups`` is set: then they are
dropped, so series do not pile up with churn.

Per-process Python work is limited to what changed (started, exec'd, exited); the rest is
column sums over the snapshot's records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from exporter.config import Facts
from exporter.collector import FIELDS
from exporter.tracker import Tracker

# process-exporter's state buckets, from the one-letter stat state.
STATE_NAMES = ("Running", "Sleeping", "Waiting", "Zombie", "Other")
_STATE_OF = {"R": "Running", "S": "Sleeping", "D": "Waiting", "Z": "Zombie"}
_MAX_ANCESTRY = 4096  # a ppid chain longer than any real one means a loop in a fixture
_NO_MATCH = object()

# cumulative per-process counters, and per-process gauges summed over a group
COUNTERS = (
    "cpu_user_seconds",
    "cpu_system_seconds",
    "read_bytes",
    "write_bytes",
    "major_faults",
    "minor_faults",
    "ctx_voluntary",
    "ctx_nonvoluntary",
)
GAUGE_SUMS = ("rss_bytes", "vms_bytes", "swap_bytes", "open_fds", "num_threads")
_COUNTER_AT = tuple(FIELDS.index(n) for n in COUNTERS)
_GAUGE_AT = tuple(FIELDS.index(n) for n in GAUGE_SUMS)
_FLOAT_COUNTERS = frozenset(i for i, n in enumerate(COUNTERS) if n.startswith("cpu_"))
_OPEN_FDS, _MAX_FDS, _START_TIME, _STATE = (
    FIELDS.index(n) for n in ("open_fds", "max_fds", "start_time_seconds", "state")
)


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


class _Group:
    __slots__ = ("name", "per_process", "base", "reported", "members")

    def __init__(self, name: str, per_process: bool):
        self.name = name
        self.per_process = per_process
        self.base = [0] * len(COUNTERS)  # exited members' last values, minus baselines
        self.reported = [None] * len(COUNTERS)  # last reported totals (None: never readable)
        self.members = []  # this snapshot's processes

    def shift_base(self, process, sign: int) -> None:
        base = self.base
        for i, at in enumerate(_COUNTER_AT):
            value = process[at]
            if value is not None:
                base[i] += sign * value


class Grouper:
    def __init__(self, config, children: bool = True, remove_empty_groups: bool = False):
        self.config = config
        self.children = children
        self.remove_empty_groups = remove_empty_groups
        self.tracker = Tracker()
        self.groups: dict = {}  # name -> _Group
        self.group_of: dict = {}  # identity -> group name, or None (not exported)
        self._rematch = False

    def reload(self, config) -> None:
        """Use a new config: every identity is matched again at the next update; group
        totals are kept for names that survive."""
        self.config = config
        self._rematch = True

    def update(self, snapshot) -> list:
        """Advance by one snapshot; return [GroupStats] sorted by name."""
        processes = snapshot.processes
        changes = self.tracker.update(processes)
        group_of, groups = self.group_of, self.groups

        for identity, last in changes.exited:
            name = group_of.pop(identity, None)
            if name is not None and name in groups:
                groups[name].shift_base(last, +1)

        moved = []  # (identity, previous record) of exec'd members that left a group
        if self._rematch:
            self._rematch = False
            execed = [(k, self.tracker.records[k]) for k in group_of]
        else:
            execed = changes.execed
        for identity, previous in execed:
            name = group_of.pop(identity, None)
            if name is not None and name in groups:
                groups[name].shift_base(previous, +1)
                moved.append((identity, previous))

        if changes.started or execed:  # identities without a group yet
            self._assign_all(changes.identities, processes)
        if changes.first:  # processes already running start from 0
            for identity, p in zip(changes.identities, processes):
                name = group_of[identity]
                if name is not None:
                    groups[name].shift_base(p, -1)
        for identity, previous in moved:  # count only from the exec on
            name = group_of[identity]
            if name is not None:
                groups[name].shift_base(previous, -1)

        for group in groups.values():
            group.members = []
        for name, p in zip(map(group_of.__getitem__, changes.identities), processes):
            if name is not None:
                groups[name].members.append(p)

        stats = []
        for name in sorted(groups):
            group = groups[name]
            if not group.members and (group.per_process or self.remove_empty_groups):
                del groups[name]
                continue
            stats.append(_stats(group))
        return stats

    # -- assignment ------------------------------------------------------------------

    def _assign_all(self, identities, processes) -> None:
        group_of = self.group_of
        by_pid = None  # pid -> (identity, process), built only if an ancestry walk needs it
        for identity, p in zip(identities, processes):
            if identity in group_of:
                continue
            name = self._match(identity, p)
            if name is not _NO_MATCH:
                continue
            if by_pid is None:
                by_pid = {identity[0]: (identity, p) for identity, p in zip(identities, processes)}
            self._inherit(identity, p, by_pid)

    def _match(self, identity, p):
        """Name the identity by its own first matching matcher, or return _NO_MATCH."""
        matcher, captures = self.config.match(p)
        if matcher is None:
            return _NO_MATCH
        name = matcher.template.render(
            Facts(p.comm, p.cmdline or (), p.username, p.pid, p.start_time_seconds, p.cgroup, captures)
        )
        self.group_of[identity] = name
        if name not in self.groups:
            self.groups[name] = _Group(name, matcher.template.per_process)
        return name

    def _inherit(self, identity, p, by_pid: dict) -> None:
        """An identity no matcher names: with children on, it takes the group of its
        nearest named ancestor (deciding unassigned ancestors on the way), else None."""
        group_of = self.group_of
        chain = [identity]
        name = None
        seen = {p.pid}
        pid = p.ppid
        while self.children and pid in by_pid and pid not in seen and len(chain) < _MAX_ANCESTRY:
            seen.add(pid)
            ancestor, a = by_pid[pid]
            if ancestor in group_of:
                name = group_of[ancestor]
                break
            name = self._match(ancestor, a)
            if name is not _NO_MATCH:
                break
            name = None
            chain.append(ancestor)
            pid = a.ppid
        for unnamed in chain:
            group_of[unnamed] = name


def _stats(group: _Group) -> GroupStats:
    members = group.members
    n = len(members)
    # one column per field; a lone member (one group per process) is its own columns
    columns = list(zip(*members)) if n > 1 else [(v,) for v in members[0]] if n else None
    totals = []
    for i, at in enumerate(_COUNTER_AT):
        reported = group.reported[i]
        column = columns[at] if n else ()
        readable = n - column.count(None) if n else 0
        if reported is None and not readable:
            totals.append(None)
            continue
        total = group.base[i] + sum(filter(None, column))
        if i in _FLOAT_COUNTERS:
            total = round(total, 9)  # float sums drift by 1e-16 per exit
        if reported is not None and total < reported:
            total = reported
        total = max(total, 0)
        group.reported[i] = total
        totals.append(total)
    gauges = []
    for at in _GAUGE_AT:
        column = columns[at] if n else ()
        gauges.append(sum(filter(None, column)) if not n or column.count(None) < n else None)
    ratio = None
    oldest = None
    states = dict.fromkeys(STATE_NAMES, 0)
    if n:
        ratios = [o / m for o, m in zip(columns[_OPEN_FDS], columns[_MAX_FDS]) if o is not None and m]
        ratio = max(ratios) if ratios else None
        oldest = min(columns[_START_TIME])
        for state, count in Counter(columns[_STATE]).items():
            states[_STATE_OF.get(state, "Other")] += count
    rss, vms, swap, fds, threads = gauges
    return GroupStats(group.name, n, *totals, rss, vms, swap, fds, ratio, oldest, threads, states)
