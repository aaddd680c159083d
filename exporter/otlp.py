"""OTLP push: the groups of each snapshot as OpenTelemetry metrics.

The same reader, tracker, grouper and config as ``/metrics``: a collection cycle of the
OpenTelemetry SDK takes one snapshot through :meth:`exporter.app.Exporter.scrape` (the
single-flight gate a concurrent Prometheus scrape shares), and every observable
instrument's callback reads that one result. The SDK has no start-of-collection hook
(opentelemetry-python #2454), so :class:`SnapshotReader` takes the snapshot in
``collect()`` before the SDK runs the callbacks.

Names follow the semantic conventions v1.44 where one exists (``process.cpu.time``,
``process.memory.usage``, ...); the others have a ``procsnap.`` prefix. Each point carries
the group as ``procsnap.group.name``. :data:`MAPPING` says which family of ``/metrics``
each comes from (the README's table is held equal to it by a test).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import NamedTuple, Optional

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv._incubating.attributes.cpu_attributes import CPU_MODE
from opentelemetry.semconv._incubating.attributes.disk_attributes import DISK_IO_DIRECTION
from opentelemetry.semconv._incubating.attributes.process_attributes import PROCESS_CONTEXT_SWITCH_TYPE
from opentelemetry.semconv._incubating.attributes.system_attributes import SYSTEM_PAGING_FAULT_TYPE
from opentelemetry.semconv._incubating.metrics.process_metrics import (
    PROCESS_CONTEXT_SWITCHES,
    PROCESS_CPU_TIME,
    PROCESS_DISK_IO,
    PROCESS_MEMORY_USAGE,
    PROCESS_MEMORY_VIRTUAL,
    PROCESS_PAGING_FAULTS,
    PROCESS_THREAD_COUNT,
    PROCESS_UNIX_FILE_DESCRIPTOR_COUNT,
    PROCESS_UPTIME,
)
from opentelemetry.semconv.schemas import Schemas

from exporter import __version__
from exporter.families import family_specs
from exporter.grouper import STATE_NAMES

log = logging.getLogger("procsnap")

SCHEMA_URL = Schemas.V1_44_0.value
GROUP = "procsnap.group.name"  # no convention names a group of processes
THREAD_NAME = "procsnap.thread.name"
WCHAN = "procsnap.wchan"
STATE = "procsnap.process.state"
MEMORY_TYPE = "procsnap.memory.type"
CARDINALITY_LIMIT = 100_000  # series per instrument (the SDK's default, 2000, is a few hundred groups)
DEFAULT_INTERVAL = 30.0  # seconds between exports


class Instrument(NamedTuple):
    kind: str  # "counter" (cumulative monotonic sum), "updowncounter" or "gauge"
    unit: str
    description: str


INSTRUMENTS = {
    "procsnap.group.process.count": Instrument("updowncounter", "{process}", "Processes in the group."),
    PROCESS_CPU_TIME: Instrument("counter", "s", "CPU seconds of the group's processes, by mode."),
    PROCESS_DISK_IO: Instrument("counter", "By", "Bytes the group's processes read from and wrote to storage."),
    PROCESS_PAGING_FAULTS: Instrument("counter", "{fault}", "Page faults of the group's processes, by type."),
    PROCESS_CONTEXT_SWITCHES: Instrument("counter", "{context_switch}",
                                         "Context switches of the group's processes' threads, by type."),
    PROCESS_MEMORY_USAGE: Instrument("updowncounter", "By", "Resident memory of the group's processes."),
    PROCESS_MEMORY_VIRTUAL: Instrument("updowncounter", "By", "Virtual memory of the group's processes."),
    "procsnap.process.memory.swap": Instrument("updowncounter", "By", "Swapped-out memory of the group's processes."),
    "procsnap.process.memory.proportional": Instrument(
        "updowncounter", "By", "Proportional resident and swapped memory of the group's processes (--gather-smaps)."),
    PROCESS_UNIX_FILE_DESCRIPTOR_COUNT: Instrument("updowncounter", "{file_descriptor}",
                                                   "Open file descriptors of the group's processes."),
    "procsnap.group.file_descriptor.worst_ratio": Instrument(
        "gauge", "1", "The highest ratio of open file descriptors to their limit among the group's processes."),
    PROCESS_UPTIME: Instrument("gauge", "s", "Seconds since the group's oldest process started."),
    PROCESS_THREAD_COUNT: Instrument("updowncounter", "{thread}", "Threads of the group's processes."),
    "procsnap.group.state.count": Instrument(
        "updowncounter", "{thread}", "The group's processes (and threads of its multi-threaded ones) by state."),
    "procsnap.group.wchan.count": Instrument(
        "updowncounter", "{thread}", "The group's processes and threads waiting at each kernel function."),
    "procsnap.thread.count": Instrument("updowncounter", "{thread}", "Threads of the group with this thread name."),
    "procsnap.thread.cpu.time": Instrument("counter", "s", "CPU seconds of the group's threads with this name."),
    "procsnap.thread.disk.io": Instrument("counter", "By", "Storage bytes of the group's threads with this name."),
    "procsnap.thread.paging.faults": Instrument("counter", "{fault}", "Page faults of the group's threads with this name."),
    "procsnap.thread.context_switches": Instrument("counter", "{context_switch}",
                                                   "Context switches of the group's threads with this name."),
}

# /metrics family (namedprocess_namegroup_ + name) -> its label value (None: no label) ->
# (instrument, attributes beside the group's)
MAPPING = {
    "num_procs": {None: ("procsnap.group.process.count", {})},
    "cpu_seconds": {m: (PROCESS_CPU_TIME, {CPU_MODE: m}) for m in ("user", "system")},
    "read_bytes": {None: (PROCESS_DISK_IO, {DISK_IO_DIRECTION: "read"})},
    "write_bytes": {None: (PROCESS_DISK_IO, {DISK_IO_DIRECTION: "write"})},
    "major_page_faults": {None: (PROCESS_PAGING_FAULTS, {SYSTEM_PAGING_FAULT_TYPE: "major"})},
    "minor_page_faults": {None: (PROCESS_PAGING_FAULTS, {SYSTEM_PAGING_FAULT_TYPE: "minor"})},
    "context_switches": {"voluntary": (PROCESS_CONTEXT_SWITCHES, {PROCESS_CONTEXT_SWITCH_TYPE: "voluntary"}),
                         "nonvoluntary": (PROCESS_CONTEXT_SWITCHES, {PROCESS_CONTEXT_SWITCH_TYPE: "involuntary"})},
    "memory_bytes": {"resident": (PROCESS_MEMORY_USAGE, {}), "virtual": (PROCESS_MEMORY_VIRTUAL, {}),
                     "swapped": ("procsnap.process.memory.swap", {}),
                     "proportionalResident": ("procsnap.process.memory.proportional", {MEMORY_TYPE: "resident"}),
                     "proportionalSwapped": ("procsnap.process.memory.proportional", {MEMORY_TYPE: "swapped"})},
    "open_filedesc": {None: (PROCESS_UNIX_FILE_DESCRIPTOR_COUNT, {})},
    "worst_fd_ratio": {None: ("procsnap.group.file_descriptor.worst_ratio", {})},
    "oldest_start_time_seconds": {None: (PROCESS_UPTIME, {})},  # the start time, as an uptime
    "num_threads": {None: (PROCESS_THREAD_COUNT, {})},
    "states": {s: ("procsnap.group.state.count", {STATE: s}) for s in STATE_NAMES},
    "threads_wchan": {None: ("procsnap.group.wchan.count", {})},
    "thread_count": {None: ("procsnap.thread.count", {})},
    "thread_cpu_seconds": {m: ("procsnap.thread.cpu.time", {CPU_MODE: m}) for m in ("user", "system")},
    "thread_io_bytes": {"read": ("procsnap.thread.disk.io", {DISK_IO_DIRECTION: "read"}),
                        "write": ("procsnap.thread.disk.io", {DISK_IO_DIRECTION: "write"})},
    "thread_major_page_faults": {None: ("procsnap.thread.paging.faults", {SYSTEM_PAGING_FAULT_TYPE: "major"})},
    "thread_minor_page_faults": {None: ("procsnap.thread.paging.faults", {SYSTEM_PAGING_FAULT_TYPE: "minor"})},
    "thread_context_switches": {
        "voluntary": ("procsnap.thread.context_switches", {PROCESS_CONTEXT_SWITCH_TYPE: "voluntary"}),
        "nonvoluntary": ("procsnap.thread.context_switches", {PROCESS_CONTEXT_SWITCH_TYPE: "involuntary"})},
}
ITEM_ATTRIBUTES = {"threadname": THREAD_NAME, "wchan": WCHAN}  # a per-item family's label -> attribute
# config extra_labels -> the semantic conventions' attributes
POD_ATTRIBUTES = {"namespace": "k8s.namespace.name", "pod": "k8s.pod.name", "container": "k8s.container.name"}


class _Source(NamedTuple):
    """Where one instrument's points of a group come from."""

    get: object  # GroupStats (or an item of it) -> value or None
    attributes: dict
    items: object  # None, or (attribute, GroupStats -> items) for per-item families
    uptime: bool  # the value is a start time: report now - value


def sources(threads: bool, smaps: bool) -> dict:
    """instrument name -> [_Source], from the families /metrics shows with these flags."""
    out: dict = {name: [] for name in INSTRUMENTS}
    for spec in family_specs(threads, smaps):
        for label_value, get in spec.parts:
            name, attributes = MAPPING[spec.name][label_value]
            items = (ITEM_ATTRIBUTES[spec.per_item[0]], spec.per_item[1]) if spec.per_item else None
            out[name].append(_Source(get, attributes, items, spec.name == "oldest_start_time_seconds"))
    return {name: found for name, found in out.items() if found}


def observe(groups, found: list, now: float, extra_labels: tuple = ()) -> list:
    """The points of one instrument for these groups (a value that could not be read
    gives no point, as on /metrics). ``extra_labels``: the names of the groups' labels."""
    keys = [POD_ATTRIBUTES[label] for label in extra_labels]
    points = []
    for g in groups:
        group = {GROUP: g.name}
        group.update((k, v) for k, v in zip(keys, g.labels) if v)  # not in a pod: no attribute
        for source in found:
            if source.items is None:
                value = source.get(g)
                if value is not None:
                    if source.uptime:
                        value = max(now - value, 0.0)
                    points.append(Observation(value, {**group, **source.attributes}))
                continue
            key, items_of = source.items
            for item in items_of(g):
                value = source.get(item)
                if value is not None:
                    points.append(Observation(value, {**group, key: item[0], **source.attributes}))
    return points


class SnapshotReader(PeriodicExportingMetricReader):
    """Takes one snapshot per collection cycle, before the SDK runs the callbacks; the
    callbacks read it from :attr:`result`."""

    def __init__(self, snapshot, exporter: MetricExporter, interval_seconds: float):
        self._snapshot = snapshot  # () -> ScrapeResult
        self.result = None
        self.taken_at = 0.0
        self._collecting = threading.Lock()  # a force_flush and the ticker: one cycle at a time
        super().__init__(exporter, export_interval_millis=interval_seconds * 1000)

    def collect(self, timeout_millis: float = 10_000) -> None:
        with self._collecting:
            try:
                self.result = self._snapshot()
            except Exception as e:  # noqa: BLE001 - the scrape counters count it; no points this cycle
                log.warning("OTLP collection: snapshot failed: %s", e)
                self.result = None
            self.taken_at = time.time()
            super().collect(timeout_millis=timeout_millis)


class _Counted(MetricExporter):
    """The OTLP exporter, with each export's outcome counted and one log line per change
    between working and failing (the OTLP exporters log every failed attempt)."""

    def __init__(self, inner: MetricExporter, where: str, counts: dict, last_problem):
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.where = where
        self.counts = counts
        self.last_problem = last_problem  # () -> the last message the OTLP exporter logged
        self.failing: Optional[bool] = None

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as e:  # noqa: BLE001 - a failed export, counted and logged once
            log.debug("OTLP export raised", exc_info=True)
            result, problem = MetricExportResult.FAILURE, str(e)
        else:
            problem = self.last_problem()
        ok = result is MetricExportResult.SUCCESS
        self.counts["success" if ok else "failure"] += 1
        if ok and self.failing is not False:
            log.info("OTLP export to %s works", self.where)
        elif not ok and self.failing is not True:
            log.warning("OTLP export to %s failing (retried each interval): %s", self.where, problem or "no reason given")
        self.failing = not ok
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class _LastMessage(logging.Handler):
    """Keeps the last message of the OTLP exporters' loggers instead of printing it."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.message = ""

    def emit(self, record):
        self.message = record.getMessage()

    def take(self) -> str:
        message, self.message = self.message, ""
        return message


class Settings(NamedTuple):
    endpoint: Optional[str]  # base URL (as OTEL_EXPORTER_OTLP_ENDPOINT); None: from the environment
    protocol: str  # "http/protobuf" or "grpc"
    interval: float  # seconds


ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def settings(endpoint: Optional[str], protocol: Optional[str], interval: Optional[float],
             environ=os.environ) -> Settings:
    """The push settings from the flags, else the standard OTEL_* variables. Raises
    ValueError naming a bad variable."""
    if protocol is None:
        protocol = (environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                    or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(f"OTLP protocol {protocol!r}: procsnap speaks http/protobuf or grpc")
    if interval is None:
        text = environ.get("OTEL_METRIC_EXPORT_INTERVAL")
        if text:
            try:
                interval = float(text) / 1000
            except ValueError:
                raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL: not a number of milliseconds: {text!r}") from None
            if interval <= 0:
                raise ValueError(f"OTEL_METRIC_EXPORT_INTERVAL: must be > 0: {text!r}")
        else:
            interval = DEFAULT_INTERVAL
    return Settings(endpoint or None, protocol, interval)


def _otlp_exporter(s: Settings) -> MetricExporter:
    """The SDK's OTLP exporter; headers, timeout, compression and certificates come from
    the standard OTEL_EXPORTER_OTLP_* variables, which it reads itself."""
    cumulative = {kind: AggregationTemporality.CUMULATIVE for kind in _instrument_classes()}
    if s.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(endpoint=s.endpoint, preferred_temporality=cumulative)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    endpoint = None if s.endpoint is None else s.endpoint.rstrip("/") + "/v1/metrics"
    return Http(endpoint=endpoint, preferred_temporality=cumulative)


def _instrument_classes() -> tuple:
    from opentelemetry.sdk.metrics import (
        Counter, Histogram, ObservableCounter, ObservableGauge, ObservableUpDownCounter, UpDownCounter,
    )

    return Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge


def describe(s: Settings, environ=os.environ) -> str:
    """Where the push goes, for log lines."""
    return s.endpoint or next((environ[v] for v in ENDPOINT_VARIABLES if environ.get(v)), "?")


class Pusher:
    """Pushes the groups of each snapshot of ``exporter`` over OTLP every interval.
    ``exports`` counts the outcomes ({"success": n, "failure": n}) for /metrics."""

    def __init__(self, exporter, s: Settings, threads: bool = True, smaps: bool = False,
                 metric_exporter: Optional[MetricExporter] = None):
        """``metric_exporter`` replaces the OTLP one (tests)."""
        self.settings = s
        self.exports = {"success": 0, "failure": 0}
        self._last = _LastMessage()
        quiet = logging.getLogger("opentelemetry.exporter")
        quiet.addHandler(self._last)
        quiet.propagate = False  # each failed attempt is logged by them: once per change here
        inner = metric_exporter or _otlp_exporter(s)
        self.reader = SnapshotReader(exporter.scrape, _Counted(inner, describe(s), self.exports, self._last.take),
                                     s.interval)
        resource = Resource.create({"service.name": "procsnap", "service.version": __version__,
                                    "host.name": socket.gethostname()}, schema_url=SCHEMA_URL)
        self.provider = MeterProvider(
            metric_readers=[self.reader], resource=resource,
            views=[View(instrument_name="*", aggregation_cardinality_limit=CARDINALITY_LIMIT)])
        meter = self.provider.get_meter("procsnap", __version__, schema_url=SCHEMA_URL)
        for name, found in sources(threads, smaps).items():
            kind, unit, description = INSTRUMENTS[name]
            create = {"counter": meter.create_observable_counter,
                      "updowncounter": meter.create_observable_up_down_counter,
                      "gauge": meter.create_observable_gauge}[kind]
            create(name, callbacks=[self._callback(found)], unit=unit, description=description)

    def _callback(self, found: list):
        reader = self.reader

        def callback(options: CallbackOptions):
            result = reader.result
            return [] if result is None else observe(result.groups, found, reader.taken_at, result.extra_labels)

        return callback

    def shutdown(self, timeout_seconds: float = 10.0) -> None:
        """A last collection and export (bounded by the timeout), then stop."""
        self.provider.shutdown(timeout_millis=timeout_seconds * 1000)
