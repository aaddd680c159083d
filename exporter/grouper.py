"""Grouper: maps tracked processes to named groups and accumulates their metrics.

INTERFACE STUB (being implemented): other modules may rely on GroupStats and
Grouper.update()'s signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# process-exporter's state buckets, from the one-letter stat state.
STATE_NAMES = ("Running", "Sleeping", "Waiting", "Zombie", "Other")


@dataclass
class GroupStats:
    """What one group reports in one scrape. Counters are totals since the group was
    first seen and never decrease; a gauge or counter that no member could be read for
    is None (the metric is then absent, not 0)."""

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
    oldest_start_time_seconds: Optional[float] = None  # None while the group is empty
    num_threads: Optional[int] = None
    states: dict = field(default_factory=lambda: dict.fromkeys(STATE_NAMES, 0))


class Grouper:
    def __init__(self, config, children: bool = True, remove_empty_groups: bool = False):
        raise NotImplementedError

    def update(self, snapshot) -> list:
        """Advance by one snapshot; return [GroupStats] sorted by name."""
        raise NotImplementedError
