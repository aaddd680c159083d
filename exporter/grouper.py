"""Grouper: maps tracked processes to named groups and accumulates their metrics.

Each identity is matched against the config once (again after exec) and keeps its group
name. With ``children`` on, a process that no matcher names joins the group of its
nearest named ancestor, found through the ppid map of the same snapshot.

Group counters are sums of per-process increments, so they never go down when members or
threads exit or pids are reused. An empty group keeps its counters (rates stay
continuous) unless its name is per process ({{.PID}}, {{.StartTime}}) or
``remove_empty_groups`` is set: then it is dropped, so series don't pile up with churn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from exporter.config import Facts
from exporter.tracker import COUNTERS, UNASSIGNED, Tracker

# process-exporter's state buckets, from the one-letter stat state.
STATE_NAMES = ("Running", "Sleeping", "Waiting", "Zombie", "Other")
_STATE_OF = {"R": "Running", "S": "Sleeping", "D": "Waiting", "Z": "Zombie"}
_MAX_ANCESTRY = 4096  # a ppid chain longer than any real one means a loop in a fixture


@dataclass
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


_GAUGE_SUMS = ("rss_bytes", "vms_bytes", "swap_bytes", "open_fds", "num_threads")


class _Group:
    __slots__ = ("name", "per_process", "totals", "members")

    def __init__(self, name: str, per_process: bool):
        self.name = name
        self.per_process = per_process
        self.totals = [None] * len(COUNTERS)  # None until some member was readable
        self.members = []  # this snapshot's processes


class Grouper:
    def __init__(self, config, children: bool = True, remove_empty_groups: bool = False):
        self.config = config
        self.children = children
        self.remove_empty_groups = remove_empty_groups
        self.tracker = Tracker()
        self.groups: dict = {}  # name -> _Group
        # group name -> made by a per-process template ({{.PID}}): such groups go once empty
        self._per_process_names: dict = {}

    def reload(self, config) -> None:
        """Use a new config: every identity is matched again, group totals are kept for
        names that survive."""
        self.config = config
        for t in self.tracker.tracked.values():
            t.group = UNASSIGNED

    def update(self, snapshot) -> list:
        """Advance by one snapshot; return [GroupStats] sorted by name."""
        current, _exited = self.tracker.update(snapshot.processes)
        by_pid = {t.pid: (t, p) for t, p, _ in current}
        for group in self.groups.values():
            group.members = []
        for t, p, deltas in current:
            name = t.group
            if name is UNASSIGNED:
                name = self._assign(t.pid, by_pid)
            if name is None:
                continue
            group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = _Group(name, self._per_process_names.get(name, False))
            group.members.append(p)
            totals = group.totals
            for i, d in enumerate(deltas):
                if d is not None:
                    totals[i] = d if totals[i] is None else totals[i] + d
        stats = []
        for name in sorted(self.groups):
            group = self.groups[name]
            if not group.members and (group.per_process or self.remove_empty_groups):
                del self.groups[name]
                self._per_process_names.pop(name, None)
                continue
            stats.append(_stats(group))
        return stats

    # -- assignment ------------------------------------------------------------------

    def _assign(self, pid: int, by_pid: dict):
        """Decide the group of the identity at pid (and of unassigned ancestors on the
        way): its own first matching matcher, else (children on) its nearest named
        ancestor's group, else None."""
        start = pid
        chain = []
        group = None
        seen = set()
        while pid in by_pid and pid not in seen and len(chain) < _MAX_ANCESTRY:
            seen.add(pid)
            t, p = by_pid[pid]
            if t.group is not UNASSIGNED:
                group = t.group
                break
            matcher, captures = self.config.match(p)
            if matcher is not None:
                group = t.group = matcher.template.render(
                    Facts(p.comm, p.cmdline or (), p.username, p.pid, p.start_time_seconds, p.cgroup, captures)
                )
                self._per_process_names[group] = matcher.template.per_process
                break
            chain.append(t)
            if not self.children:
                break
            pid = p.ppid
        for t in chain:
            t.group = group
        return by_pid[start][0].group


def _stats(group: _Group) -> GroupStats:
    members = group.members
    s = GroupStats(group.name, num_procs=len(members))
    for name, total in zip(COUNTERS, group.totals):
        setattr(s, name, total)
    for name in _GAUGE_SUMS:
        values = [v for v in (getattr(p, name) for p in members) if v is not None]
        setattr(s, name, sum(values) if values or not members else None)
    ratios = [p.open_fds / p.max_fds for p in members if p.open_fds is not None and p.max_fds]
    s.worst_fd_ratio = max(ratios) if ratios else None
    s.oldest_start_time_seconds = min((p.start_time_seconds for p in members), default=None)
    states = s.states
    for p in members:
        states[_STATE_OF.get(p.state, "Other")] += 1
    return s
