"""Tracker: follows process identities (pid, starttime) from one snapshot to the next.

For each snapshot it tells which identities started, which exec'd (same identity, new
comm) and which exited (with their last record), so later stages do per-process Python
work only for what changed. Pid reuse is a new identity (new starttime) plus an exit.
It keeps only the last snapshot's records, so its memory follows the live process
count, not the churn. The set differences run in C (dict views and sets), not in a
Python loop over every process.
"""

from __future__ import annotations

from operator import itemgetter
from typing import NamedTuple

from exporter.collector import FIELDS

_PID, _START, _COMM = (itemgetter(FIELDS.index(name)) for name in ("pid", "start_ticks", "comm"))


class Changes(NamedTuple):
    identities: list  # (pid, start_ticks) of each process, in snapshot order
    started: list  # identities seen for the first time
    execed: list  # [(identity, previous Process)] of identities whose comm changed
    exited: list  # [(identity, last Process)] of identities that are gone
    first: bool  # this was the tracker's first snapshot


class Tracker:
    def __init__(self):
        self.records: dict = {}  # identity -> its Process in the last snapshot
        self._triples: set = set()  # (pid, start_ticks, comm) of the last snapshot
        self._updates = 0

    def update(self, processes) -> Changes:
        pids = list(map(_PID, processes))
        starts = list(map(_START, processes))
        identities = list(zip(pids, starts))
        records = dict(zip(identities, processes))
        triples = set(zip(pids, starts, map(_COMM, processes)))
        previous = self.records
        started = [k for k in records.keys() - previous.keys()]
        changed = triples - self._triples  # started or exec'd
        execed = [((pid, start), previous[pid, start]) for pid, start, _ in changed if (pid, start) in previous]
        exited = [(k, previous[k]) for k in previous.keys() - records.keys()]
        self.records, self._triples = records, triples
        self._updates += 1
        return Changes(identities, started, execed, exited, self._updates == 1)
