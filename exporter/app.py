"""The exporter: owns the reader, the tracker, the grouper and the exposition, and runs
one scrape (read -> tracker step -> grouper update -> exposition) behind a single-flight
gate.

Single-flight: a scrape that arrives while a reading is running does not start another
one; it waits for the running one and gets the same :class:`ScrapeResult`. So the
grouper advances exactly once per reading, however many scrapers there are, and
concurrent scrapers see identical values.

A scrape is all or nothing: the tracker and the grouper compute their next state aside
and keep it only when both succeeded, so an exception answers that scrape with an error
and leaves the state for the next one as it was.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from itertools import repeat
from operator import contains, itemgetter
from typing import Optional

from exporter import __version__
from exporter.exposition import GroupRenderer, encode_families
from exporter.reader import F
from exporter.families import ScrapeResult, runtime_registry, scrape_error_text, self_families

log = logging.getLogger("procsnap")

# a process read without one of these was read partially (process-exporter's partial errors)
_partial_fields = itemgetter(F["read_bytes"], F["open_fds"])


class _Flight:
    """One snapshot in progress; its waiters share the outcome."""

    __slots__ = ("done", "result", "error")

    def __init__(self):
        self.done = threading.Event()
        self.result: Optional[ScrapeResult] = None
        self.error: Optional[BaseException] = None


class Exporter:
    """reader + tracker + grouper + renderer.

    ``tracker`` is an :class:`exporter.tracker.Tracker` (it holds the reader);
    ``grouper`` has ``update(step) -> [GroupStats]`` and ``reload(config)``.
    """

    def __init__(self, tracker, grouper, version: str = __version__, threads: bool = True, smaps: bool = False):
        self.tracker = tracker
        self.reader = tracker.reader
        self.grouper = grouper
        self._read_errors: dict = {}
        self._failed = 0  # scrapes that raised
        self._procread = 0
        self._partial = 0
        self._gate = threading.Lock()  # guards _inflight
        self._step = threading.Lock()  # one snapshot + grouper step (or a reload) at a time
        self._inflight: Optional[_Flight] = None
        self.last: Optional[ScrapeResult] = None
        self.version = version
        self.runtime = runtime_registry()
        self._threads, self._smaps = threads, smaps
        self._renderers: dict = {}  # extra label names -> GroupRenderer (a reload may change them)
        self._rendered = None  # (result, openmetrics, names, chunks): shared by one flight's scrapers
        self.otlp_exports: Optional[dict] = None  # {result: count} when OTLP push is on (exporter.otlp)
        self.config_reload_ok: Optional[bool] = None  # the last config reload's outcome, when serving (exporter.cli)
        self.scrape_timeouts: Optional[int] = None  # scrapes answered with the last snapshot at their deadline (exporter.server)

    # -- one scrape ------------------------------------------------------------------

    def _run(self) -> ScrapeResult:
        with self._step:
            t0 = time.perf_counter()
            reading = self.reader.read()
            # The step makes tens of thousands of short-lived tuples and no reference
            # cycle: the cyclic GC waits until it is done (about 2 ms a scrape at 5000).
            paused = gc.isenabled()
            gc.disable()
            try:
                step = self.tracker.step(reading, self.grouper.to_recheck(reading.timestamp))
                groups = self.grouper.update(step)  # on an exception nothing is committed
                self.tracker.commit(step)
            finally:
                if paused:
                    gc.enable()
            duration = time.perf_counter() - t0
            errors = self._read_errors
            for reason, count in step.errors.items():
                errors[reason] = errors.get(reason, 0) + count
            self._procread += len(reading.unreadable)  # stat unreadable (not: exited meanwhile)
            self._partial += sum(map(contains, map(_partial_fields, step.records), repeat(None)))
            result = ScrapeResult(groups, len(step.records), duration, dict(errors), self._failed, self._procread,
                                  self._partial, self.grouper.config.extra_labels, self.grouper.reaped_scaled,
                                  self.grouper.groups_folded)
            self.last = result
            return result

    def scrape(self) -> ScrapeResult:
        """Take a snapshot and advance the grouper, or join the one in progress."""
        with self._gate:
            flight = self._inflight
            leader = flight is None
            if leader:
                flight = self._inflight = _Flight()
        if leader:
            try:
                flight.result = self._run()
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                flight.error = e
                self._failed += 1
            finally:
                with self._gate:
                    self._inflight = None
                flight.done.set()
        else:
            flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        return flight.result

    # -- exposition ------------------------------------------------------------------

    def exposition(self, openmetrics: bool = False, names=None, scrape: bool = True) -> list:
        """One scrape as exposition bytes, in chunks (a per-process exposition is several
        MB: it is never copied whole): the group families from the fast renderer, then
        procsnap's own and the runtime families through prometheus_client's encoder.
        ``names`` (a set) keeps only families with those sample names; ``scrape=False``
        renders the last result without a new snapshot."""
        result = self.scrape() if scrape else self.last
        if result is None:
            raise RuntimeError("no snapshot taken yet")
        key = (result, openmetrics, frozenset(names) if names is not None else None)
        rendered = self._rendered
        if rendered is not None and rendered[0] is key[0] and rendered[1:3] == key[1:]:
            groups_chunks = rendered[3]
        else:
            renderer = self._renderers.get(result.extra_labels)
            if renderer is None:
                renderer = GroupRenderer(self._threads, self._smaps, result.extra_labels)
                self._renderers = {result.extra_labels: renderer}
            groups_chunks = renderer.render(result.groups, openmetrics, names)
            self._rendered = key + (groups_chunks,)
        families = self_families(result, self.version, otlp_exports=self.otlp_exports, reload_ok=self.config_reload_ok,
                                 scrape_timeouts=self.scrape_timeouts,
                                 backend=getattr(self.reader, "backend", None)) + list(self.runtime.collect())
        return groups_chunks + [scrape_error_text(result, openmetrics, names),
                                encode_families(families, openmetrics, names)]

    # -- config reload ---------------------------------------------------------------

    def reload(self, config) -> None:
        """Use a new config from the next scrape on. The grouper re-matches every process
        and keeps the totals of group names that survive."""
        with self._step:
            self.grouper.reload(config)

    def close(self) -> None:
        self.reader.close()

