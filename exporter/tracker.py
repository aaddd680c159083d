"""Tracker: follows process identities (pid, starttime) from one snapshot to the next.

It turns the cumulative per-process counters of each snapshot into per-process increments
since the previous snapshot, notices starts, exits, pid reuse (same pid, new starttime =
a new identity) and exec (same identity, new comm), and forgets identities that are gone,
so its memory follows the live process count, not the churn.
"""

from __future__ import annotations

from exporter.snapshot import FIELDS

# The cumulative per-process counters, in the order deltas are reported.
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
_COUNTER_INDEXES = tuple(FIELDS.index(name) for name in COUNTERS)
_NO_VALUES = (None,) * len(COUNTERS)

UNASSIGNED = object()  # group not decided yet (new identity, or just exec'd)


class Tracked:
    """What the tracker remembers of one identity between snapshots."""

    __slots__ = ("pid", "start_ticks", "comm", "group", "last")

    def __init__(self, pid: int, start_ticks: int, comm: str):
        self.pid = pid
        self.start_ticks = start_ticks
        self.comm = comm
        self.group = UNASSIGNED  # set by the grouper: a group name, or None (not exported)
        self.last = _NO_VALUES  # counter values at the previous snapshot


def increments(last: tuple, now: tuple) -> tuple:
    """Per-counter increase from last to now. A counter first readable now counts in full
    (nothing of it was counted before); one unreadable now is None; a counter never goes
    down (a kernel reset would otherwise subtract from a group's total)."""
    return tuple(
        None if n is None else n if l is None else (n - l if n > l else 0) for l, n in zip(last, now)
    )


class Tracker:
    def __init__(self):
        self.tracked: dict = {}  # (pid, start_ticks) -> Tracked

    def update(self, processes):
        """Advance to a new snapshot's processes.

        Returns (current, exited): current is [(Tracked, Process, increments)] in snapshot
        order; exited is the Tracked of identities no longer present. An exec'd identity
        comes back with group UNASSIGNED so the grouper matches it again.
        """
        previous = self.tracked
        tracked = {}
        current = []
        for p in processes:
            key = (p.pid, p.start_ticks)
            t = previous.pop(key, None)
            if t is None:
                t = Tracked(p.pid, p.start_ticks, p.comm)
            elif t.comm != p.comm:  # exec: same identity, new program
                t.comm = p.comm
                t.group = UNASSIGNED
            now = tuple(p[i] for i in _COUNTER_INDEXES)
            current.append((t, p, increments(t.last, now)))
            t.last = tuple(l if n is None else n for l, n in zip(t.last, now))
            tracked[key] = t
        self.tracked = tracked
        return current, list(previous.values())
