"""Families: one scrape's groups as prometheus_client metric families.

The names, labels and help texts are process-exporter's (``namedprocess_namegroup_*``,
label ``groupname``), so dashboards and alerts written for it keep working. A value a
group could not be read for (``None`` in :class:`~exporter.grouper.GroupStats`) gives no
sample at all, never a 0. Families without any sample are left out, as client_golang
does.

Next to them, procsnap's own metrics: ``procsnap_scrape_duration_seconds``,
``procsnap_processes``, ``procsnap_read_errors_total{reason}`` and
``procsnap_build_info{version}``.

This module only renders: it never reads /proc and keeps no state between scrapes. The
:class:`ProcsnapCollector` asks a *source* (a callable, in practice
``Exporter.scrape`` from :mod:`exporter.app`) for the current :class:`ScrapeResult`.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.grouper import STATE_NAMES

PREFIX = "namedprocess_namegroup_"


class ScrapeResult(NamedTuple):
    """What one scrape (one snapshot, one grouper step) produced."""

    groups: Sequence  # [GroupStats] sorted by name
    processes: int  # processes seen in the snapshot
    duration_seconds: float  # snapshot + grouping
    read_errors: dict  # reason -> count, accumulated over all snapshots so far
    timestamp: float  # epoch seconds when the snapshot started


# (family name without _total, help, GroupStats attribute) for the one-sample-per-group
# families. Help texts are process-exporter's.
_GAUGES_BEFORE = (
    ("num_procs", "number of processes in this group", "num_procs"),
)
_COUNTERS = (
    ("read_bytes", "number of bytes read by this group", "read_bytes"),
    ("write_bytes", "number of bytes written by this group", "write_bytes"),
    ("major_page_faults", "Major page faults", "major_faults"),
    ("minor_page_faults", "Minor page faults", "minor_faults"),
)
_GAUGES_AFTER = (
    ("open_filedesc", "number of open file descriptors for this group", "open_fds"),
    (
        "worst_fd_ratio",
        "the worst (closest to 1) ratio between open fds and max fds among all procs in this group",
        "worst_fd_ratio",
    ),
    (
        "oldest_start_time_seconds",
        "start time in seconds since 1970/01/01 of oldest process in group",
        "oldest_start_time_seconds",
    ),
    ("num_threads", "Number of threads", "num_threads"),
)


def _simple(kind, name: str, help_text: str, attr: str, groups) -> Metric:
    family = kind(PREFIX + name, help_text, labels=["groupname"])
    for g in groups:
        value = getattr(g, attr)
        if value is not None:
            family.add_metric([g.name], float(value))
    return family


def _labelled(kind, name: str, help_text: str, label: str, parts, groups) -> Metric:
    """One family with a second label: parts is ((label value, attribute), ...)."""
    family = kind(PREFIX + name, help_text, labels=["groupname", label])
    for g in groups:
        for value_label, attr in parts:
            value = getattr(g, attr)
            if value is not None:
                family.add_metric([g.name, value_label], float(value))
    return family


def group_families(groups: Sequence, keep_empty: bool = False) -> list:
    """The namedprocess_namegroup_* families for a list of GroupStats (in that order).
    Families without samples are dropped unless ``keep_empty``."""
    families = [_simple(GaugeMetricFamily, *spec, groups) for spec in _GAUGES_BEFORE]
    families.append(
        _labelled(
            CounterMetricFamily,
            "cpu_seconds",
            "Cpu user usage in seconds",
            "mode",
            (("user", "cpu_user_seconds"), ("system", "cpu_system_seconds")),
            groups,
        )
    )
    families.extend(_simple(CounterMetricFamily, *spec, groups) for spec in _COUNTERS)
    families.append(
        _labelled(
            CounterMetricFamily,
            "context_switches",
            "Context switches",
            "ctxswitchtype",
            (("voluntary", "ctx_voluntary"), ("nonvoluntary", "ctx_nonvoluntary")),
            groups,
        )
    )
    families.append(
        _labelled(
            GaugeMetricFamily,
            "memory_bytes",
            "number of bytes of memory in use",
            "memtype",
            (("resident", "rss_bytes"), ("virtual", "vms_bytes"), ("swapped", "swap_bytes")),
            groups,
        )
    )
    families.extend(_simple(GaugeMetricFamily, *spec, groups) for spec in _GAUGES_AFTER)
    states = GaugeMetricFamily(
        PREFIX + "states",
        "Number of processes in states Running, Sleeping, Waiting, Zombie, or Other",
        labels=["groupname", "state"],
    )
    for g in groups:
        for state in STATE_NAMES:
            value = g.states.get(state)
            if value is not None:
                states.add_metric([g.name, state], float(value))
    families.append(states)
    return [f for f in families if f.samples or keep_empty]


def self_families(result: Optional[ScrapeResult], version: str, keep_empty: bool = False) -> list:
    """procsnap's own metrics. ``result`` is None when the snapshot failed."""
    families = []
    if result is not None:
        families.append(
            GaugeMetricFamily(
                "procsnap_scrape_duration_seconds",
                "Seconds the last snapshot and grouping took",
                value=result.duration_seconds,
            )
        )
        families.append(
            GaugeMetricFamily(
                "procsnap_processes", "Number of processes seen in the last snapshot", value=result.processes
            )
        )
        errors = CounterMetricFamily(
            "procsnap_read_errors",
            "Process files that could not be read, by reason (errno name or malformed), since start",
            labels=["reason"],
        )
        for reason in sorted(result.read_errors):
            errors.add_metric([reason], float(result.read_errors[reason]))
        families.append(errors)
    build = GaugeMetricFamily(
        "procsnap_build_info", "A metric with a constant 1 labelled by the procsnap version", labels=["version"]
    )
    build.add_metric([version], 1.0)
    families.append(build)
    return [f for f in families if f.samples or keep_empty]


class ProcsnapCollector:
    """A prometheus_client custom collector: every ``collect()`` (one per exposition)
    asks ``source`` for the current ScrapeResult and yields its families."""

    def __init__(self, source: Callable[[], ScrapeResult], version: str):
        self._source = source
        self._version = version

    def collect(self) -> Iterator[Metric]:
        result = self._source()
        yield from group_families(result.groups)
        yield from self_families(result, self._version)

    def describe(self) -> Iterable[Metric]:
        """The families without samples: lets the registry know our names (for
        ``?name[]=`` filtering and clash checks) without taking a snapshot."""
        empty = ScrapeResult((), 0, 0.0, {}, 0.0)
        return group_families((), keep_empty=True) + self_families(empty, self._version, keep_empty=True)


def build_registry(collector) -> CollectorRegistry:
    """A fresh registry with prometheus_client's own process, platform and gc collectors
    (python_*/process_* metrics about procsnap itself) and ``collector``."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(collector)
    return registry
