"""Families: one scrape's groups as prometheus_client metric families.

The names, labels and help texts are process-exporter's (``namedprocess_namegroup_*``,
label ``groupname``), so dashboards and alerts written for it keep working. A value a
group could not be read for (``None`` in :class:`~exporter.grouper.GroupStats`) gives no
sample at all, never a 0. Families without any sample are left out, as client_golang
does.

Next to them, procsnap's own metrics: ``procsnap_scrape_duration_seconds``,
``procsnap_processes``, ``procsnap_read_errors_total{reason}`` and
``procsnap_build_info{version}``.

This module only describes and renders: it never reads /proc and keeps no state between
scrapes. The group families are written by :mod:`exporter.exposition` from the
:data:`GROUP_FAMILIES` specs; the others through prometheus_client's encoders.
"""

from __future__ import annotations

import os
from operator import attrgetter
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.grouper import STATE_NAMES, THREAD_COUNTERS

PREFIX = "namedprocess_namegroup_"


class ScrapeResult(NamedTuple):
    """What one scrape (one snapshot, one grouper step) produced."""

    groups: Sequence  # [GroupStats] sorted by name
    processes: int  # processes seen in the snapshot
    duration_seconds: float  # snapshot + grouping
    read_errors: dict  # reason -> count, accumulated over all snapshots so far
    # process-exporter's namedprocess_scrape_* counters, since start
    scrape_errors: int = 0  # scrapes that failed (answered with an error)
    procread_errors: int = 0  # processes whose stat could not be read
    partial_errors: int = 0  # processes read without their io or fd count
    extra_labels: tuple = ()  # the names of GroupStats.labels (the config's extra_labels)
    reaped_scaled: int = 0  # scrapes whose reaped-children CPU was scaled back to the machine's
    groups_dropped: int = 0  # processes counted in "other" because of --max-groups


class FamilySpec(NamedTuple):
    """One namedprocess_namegroup_* family: its samples are, for each group, one per part."""

    name: str  # without the prefix, and without _total for a counter
    kind: str  # "gauge" or "counter"
    help: str  # process-exporter's help text
    label: Optional[str]  # the label beside groupname (and the item label), or None
    parts: tuple  # ((label value or None, getter -> value or None), ...): of a GroupStats,
    #               or of one item of the group when per_item is set
    # (label, getter of a GroupStats -> items): one sample set per item of the group, the
    # item's first element the label's value (threads by thread name, wchans)
    per_item: Optional[tuple] = None


def _attr(name: str) -> Callable:
    return attrgetter(name)


def _state(state: str) -> Callable:
    return lambda g: g.states.get(state)


# The families in exposition order; the names, labels and help texts are process-exporter's.
GROUP_FAMILIES = (
    FamilySpec("num_procs", "gauge", "number of processes in this group", None, ((None, _attr("num_procs")),)),
    FamilySpec(
        "cpu_seconds",
        "counter",
        "Cpu user usage in seconds",
        "mode",
        (("user", _attr("cpu_user_seconds")), ("system", _attr("cpu_system_seconds"))),
    ),
    FamilySpec("read_bytes", "counter", "number of bytes read by this group", None, ((None, _attr("read_bytes")),)),
    FamilySpec(
        "write_bytes", "counter", "number of bytes written by this group", None, ((None, _attr("write_bytes")),)
    ),
    FamilySpec("major_page_faults", "counter", "Major page faults", None, ((None, _attr("major_faults")),)),
    FamilySpec("minor_page_faults", "counter", "Minor page faults", None, ((None, _attr("minor_faults")),)),
    FamilySpec(
        "context_switches",
        "counter",
        "Context switches",
        "ctxswitchtype",
        (("voluntary", _attr("ctx_voluntary")), ("nonvoluntary", _attr("ctx_nonvoluntary"))),
    ),
    FamilySpec(
        "memory_bytes",
        "gauge",
        "number of bytes of memory in use",
        "memtype",
        (("resident", _attr("rss_bytes")), ("virtual", _attr("vms_bytes")), ("swapped", _attr("swap_bytes")),
         ("proportionalResident", _attr("pss_bytes")), ("proportionalSwapped", _attr("swap_pss_bytes"))),
    ),
    FamilySpec(
        "open_filedesc", "gauge", "number of open file descriptors for this group", None, ((None, _attr("open_fds")),)
    ),
    FamilySpec(
        "worst_fd_ratio",
        "gauge",
        "the worst (closest to 1) ratio between open fds and max fds among all procs in this group",
        None,
        ((None, _attr("worst_fd_ratio")),),
    ),
    FamilySpec(
        "oldest_start_time_seconds",
        "gauge",
        "start time in seconds since 1970/01/01 of oldest process in group",
        None,
        ((None, _attr("oldest_start_time_seconds")),),
    ),
    FamilySpec("num_threads", "gauge", "Number of threads", None, ((None, _attr("num_threads")),)),
    FamilySpec(
        "states",
        "gauge",
        "Number of processes in states Running, Sleeping, Waiting, Zombie, or Other",
        "state",
        tuple((state, _state(state)) for state in STATE_NAMES),
    ),
    # emitted with or without -threads, as process-exporter does
    FamilySpec("threads_wchan", "gauge", "Number of threads in this group waiting on each wchan", None,
               ((None, lambda w: w[1]),), per_item=("wchan", _attr("wchans"))),
)


def _thread(field: str) -> Callable:
    at = THREAD_COUNTERS.index(field)
    return lambda t: t[2][at]


# process-exporter's per-thread-name families (on unless --threads=false): the threads of
# the group's multi-threaded processes, grouped by thread name (its comm).
_PER_THREAD = ("threadname", _attr("threads"))
THREAD_FAMILIES = (
    FamilySpec("thread_count", "gauge", "Number of threads in this group with same threadname", None,
               ((None, lambda t: t[1]),), per_item=_PER_THREAD),
    FamilySpec("thread_cpu_seconds", "counter", "Cpu user/system usage in seconds", "mode",
               (("user", _thread("cpu_user_seconds")), ("system", _thread("cpu_system_seconds"))), per_item=_PER_THREAD),
    FamilySpec("thread_io_bytes", "counter", "number of bytes read/written by these threads", "iomode",
               (("read", _thread("read_bytes")), ("write", _thread("write_bytes"))), per_item=_PER_THREAD),
    FamilySpec("thread_major_page_faults", "counter", "Major page faults for these threads", None,
               ((None, _thread("major_faults")),), per_item=_PER_THREAD),
    FamilySpec("thread_minor_page_faults", "counter", "Minor page faults for these threads", None,
               ((None, _thread("minor_faults")),), per_item=_PER_THREAD),
    FamilySpec("thread_context_switches", "counter", "Context switches for these threads", "ctxswitchtype",
               (("voluntary", _thread("ctx_voluntary")), ("nonvoluntary", _thread("ctx_nonvoluntary"))),
               per_item=_PER_THREAD),
)


SMAPS_MEMTYPES = ("proportionalResident", "proportionalSwapped")  # memory_bytes parts of --gather-smaps


def family_specs(threads: bool = True, smaps: bool = True) -> tuple:
    """The group families a scrape shows: the per-thread-name ones with ``threads``, the
    proportional memtypes with ``smaps`` (process-exporter's -threads and -gather-smaps;
    without it an empty group would show them as 0)."""
    specs = GROUP_FAMILIES + (THREAD_FAMILIES if threads else ())
    if smaps:
        return specs
    return tuple(spec._replace(parts=tuple(p for p in spec.parts if p[0] not in SMAPS_MEMTYPES)) for spec in specs)


def empty_family(spec: FamilySpec, extra_labels: tuple = ()) -> Metric:
    kind = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    labels = (["groupname", *extra_labels] + ([spec.per_item[0]] if spec.per_item else [])
              + ([spec.label] if spec.label else []))
    return kind(PREFIX + spec.name, spec.help, labels=labels)


def self_families(result: Optional[ScrapeResult], version: str, keep_empty: bool = False,
                  otlp_exports: Optional[dict] = None, reload_ok: Optional[bool] = None,
                  scrape_timeouts: Optional[int] = None, backend: Optional[str] = None) -> list:
    """procsnap's own metrics. ``result`` is None when the snapshot failed;
    ``otlp_exports`` ({result: count}) when OTLP push is on; ``reload_ok`` (the last config
    reload's outcome) and ``scrape_timeouts`` when serving; ``backend``: the reader backend
    that runs (bpf, native, python)."""
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
        families.append(CounterMetricFamily(
            "procsnap_reaped_cpu_scaled",
            "Scrapes where the CPU credited for reaped children was scaled back to what /proc/stat says the "
            "machine spent",
            value=float(result.reaped_scaled)))
        families.append(CounterMetricFamily(
            "procsnap_groups_dropped",
            'Processes whose group was not made because --max-groups groups exist; they count in group "other"',
            value=float(result.groups_dropped)))
    if otlp_exports is not None:
        exports = CounterMetricFamily("procsnap_otlp_exports", "OTLP exports by result (success, failure), since start",
                                      labels=["result"])
        for outcome in sorted(otlp_exports):
            exports.add_metric([outcome], float(otlp_exports[outcome]))
        families.append(exports)
    if reload_ok is not None:
        families.append(GaugeMetricFamily("procsnap_config_last_reload_successful",
                                          "Whether the last configuration reload attempt was successful",
                                          value=float(reload_ok)))
    if scrape_timeouts is not None:
        families.append(CounterMetricFamily(
            "procsnap_scrape_timeouts", "Scrapes answered with the last complete snapshot because a new one did not "
            "finish within X-Prometheus-Scrape-Timeout-Seconds, since start", value=float(scrape_timeouts)))
    if backend is not None:
        info = GaugeMetricFamily("procsnap_backend_info", "A metric with a constant 1 labelled by the reader backend "
                                 "that runs (bpf, native or python; native where bpf was asked for and could not load)",
                                 labels=["backend"])
        info.add_metric([backend], 1.0)
        families.append(info)
    build = GaugeMetricFamily(
        "procsnap_build_info", "A metric with a constant 1 labelled by the procsnap version", labels=["version"]
    )
    build.add_metric([version], 1.0)
    families.append(build)
    return [f for f in families if f.samples or keep_empty]


class SelfProcessCollector(ProcessCollector):
    """The process_* metrics of prometheus_client's ProcessCollector (same names, help
    and values), but process_open_fds is the size of /proc/self/fd (Linux >= 6.2), not a
    listing of it: procsnap keeps thousands of /proc files open, and listing them cost
    13 ms a scrape at 5000 processes."""

    def collect(self) -> Iterable[Metric]:
        if not self._btime:
            return []
        me = os.path.join(self._proc, str(self._pid()).strip())
        result = []
        try:
            with open(os.path.join(me, "stat"), "rb") as f:
                parts = f.read().split(b")")[-1].split()
            result += [
                GaugeMetricFamily(self._prefix + "virtual_memory_bytes", "Virtual memory size in bytes.",
                                  value=float(parts[20])),
                GaugeMetricFamily(self._prefix + "resident_memory_bytes", "Resident memory size in bytes.",
                                  value=float(parts[21]) * self._pagesize),
                GaugeMetricFamily(self._prefix + "start_time_seconds",
                                  "Start time of the process since unix epoch in seconds.",
                                  value=float(parts[19]) / self._ticks + self._btime),
                CounterMetricFamily(self._prefix + "cpu_seconds_total",
                                    "Total user and system CPU time spent in seconds.",
                                    value=(float(parts[11]) + float(parts[12])) / self._ticks),
            ]
        except OSError:
            pass
        try:
            with open(os.path.join(me, "limits"), "rb") as f:
                max_fds = next(float(line.split()[3]) for line in f if line.startswith(b"Max open file"))
            fd_dir = os.path.join(me, "fd")
            open_fds = os.stat(fd_dir).st_size or len(os.listdir(fd_dir))
            result += [
                GaugeMetricFamily(self._prefix + "open_fds", "Number of open file descriptors.", open_fds),
                GaugeMetricFamily(self._prefix + "max_fds", "Maximum number of open file descriptors.",
                                  value=max_fds),
            ]
        except (OSError, StopIteration):
            pass
        return result


def runtime_registry() -> CollectorRegistry:
    """A fresh registry with prometheus_client's own process (fd count by size, see
    SelfProcessCollector), platform and gc collectors: process_*/python_* metrics about
    procsnap itself."""
    registry = CollectorRegistry(auto_describe=True)
    SelfProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry



# process-exporter's own error counters. client_golang writes a counter under its name as
# given (no _total in the text format; OpenMetrics adds it to the sample), so they are
# written here as text rather than through prometheus_client, which would rename them.
SCRAPE_ERROR_FAMILIES = (
    ("namedprocess_scrape_errors", "general scrape errors: no proc metrics collected during a cycle",
     "scrape_errors"),
    ("namedprocess_scrape_procread_errors", "incremented each time a proc's metrics collection fails",
     "procread_errors"),
    ("namedprocess_scrape_partial_errors",
     "incremented each time a tracked proc's metrics collection fails partially, e.g. unreadable I/O stats",
     "partial_errors"),
)


def scrape_error_text(result: ScrapeResult, openmetrics: bool, names: Optional[set] = None) -> bytes:
    """process-exporter serves only the text format, so Prometheus stores these under their
    plain names. OpenMetrics would rename a counter's sample to name_total, which dashboards
    and alerts written for process-exporter do not ask for: there they are of type unknown,
    which keeps the name."""
    kind = "unknown" if openmetrics else "counter"
    lines = []
    for name, help_text, field in SCRAPE_ERROR_FAMILIES:
        if names is not None and name not in names:
            continue
        lines.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {float(getattr(result, field))}\n")
    return "".join(lines).encode()
