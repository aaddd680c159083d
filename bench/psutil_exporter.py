"""The plain psutil exporter a Python user would write today (a benchmark peer).

One custom prometheus_client collector; each scrape walks every process with
``psutil.process_iter(attrs=[...])`` (psutil's fast path: oneshot per process) and emits
one series set per process, named like process-exporter's, labelled
``groupname="{comm}:{pid}"``. Served by ``prometheus_client.start_http_server``.

    python bench/psutil_exporter.py --port 9300 [--address 127.0.0.1]
"""

from __future__ import annotations

import argparse
import signal
import threading

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

ATTRS = [
    "pid",
    "name",
    "cpu_times",
    "memory_info",
    "io_counters",
    "num_ctx_switches",
    "num_fds",
    "num_threads",
    "create_time",
    "status",
]


class PsutilCollector:
    def collect(self):
        p = "namedprocess_namegroup_"
        num_procs = GaugeMetricFamily(p + "num_procs", "number of processes in this group", labels=["groupname"])
        cpu = CounterMetricFamily(p + "cpu_seconds", "Cpu user usage in seconds", labels=["groupname", "mode"])
        read_bytes = CounterMetricFamily(p + "read_bytes", "number of bytes read by this group", labels=["groupname"])
        write_bytes = CounterMetricFamily(p + "write_bytes", "number of bytes written by this group", labels=["groupname"])
        ctx = CounterMetricFamily(
            p + "context_switches", "Context switches", labels=["groupname", "ctxswitchtype"]
        )
        memory = GaugeMetricFamily(p + "memory_bytes", "number of bytes of memory in use", labels=["groupname", "memtype"])
        fds = GaugeMetricFamily(p + "open_filedesc", "number of open file descriptors for this group", labels=["groupname"])
        threads = GaugeMetricFamily(p + "num_threads", "Number of threads", labels=["groupname"])
        oldest = GaugeMetricFamily(
            p + "oldest_start_time_seconds", "start time in seconds since 1970/01/01 of oldest process in group",
            labels=["groupname"],
        )
        states = GaugeMetricFamily(p + "states", "Number of processes in states Running, Sleeping, Waiting, Zombie, or Other",
                                   labels=["groupname", "state"])
        for proc in psutil.process_iter(attrs=ATTRS, ad_value=None):
            info = proc.info
            name = info["name"] or ""
            if not name.isascii():  # comm cut inside a UTF-8 character: psutil hands back surrogates
                name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            group = f"{name}:{info['pid']}"
            num_procs.add_metric([group], 1)
            if info["cpu_times"] is not None:
                cpu.add_metric([group, "user"], info["cpu_times"].user)
                cpu.add_metric([group, "system"], info["cpu_times"].system)
            if info["io_counters"] is not None:
                read_bytes.add_metric([group], info["io_counters"].read_bytes)
                write_bytes.add_metric([group], info["io_counters"].write_bytes)
            if info["num_ctx_switches"] is not None:
                ctx.add_metric([group, "voluntary"], info["num_ctx_switches"].voluntary)
                ctx.add_metric([group, "nonvoluntary"], info["num_ctx_switches"].involuntary)
            if info["memory_info"] is not None:
                memory.add_metric([group, "resident"], info["memory_info"].rss)
                memory.add_metric([group, "virtual"], info["memory_info"].vms)
            if info["num_fds"] is not None:
                fds.add_metric([group], info["num_fds"])
            if info["num_threads"] is not None:
                threads.add_metric([group], info["num_threads"])
            if info["create_time"] is not None:
                oldest.add_metric([group], info["create_time"])
            if info["status"] is not None:
                states.add_metric([group, info["status"]], 1)
        return [num_procs, cpu, read_bytes, write_bytes, ctx, memory, fds, threads, oldest, states]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args()
    registry = CollectorRegistry()
    registry.register(PsutilCollector())
    start_http_server(args.port, addr=args.address, registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
