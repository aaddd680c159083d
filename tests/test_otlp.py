"""OTLP push: the same snapshots as /metrics, decoded by real OTLP receivers on 127.0.0.1.

In-process tests drive one collection cycle at a time (the push's values against the
exposition of the same snapshot, walks per cycle, a group that goes); the others run
procsnap for real against the HTTP and gRPC receivers of tests/otlp_receiver.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from prometheus_client.parser import text_string_to_metric_families

from exporter import otlp
from exporter.config import parse_config
from exporter.kubernetes import NOT_IN_A_POD, PodInfo
from helpers import clean_env, free_port, http_get, stop_processes
from otlp_receiver import GrpcReceiver, HttpReceiver
from procs import FakeReader, exporter, rec, thread

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
SETTINGS = otlp.Settings("http://127.0.0.1:9", "http/protobuf", 3600.0)  # never ticks: cycles by hand


class Capture(MetricExporter):
    """Keeps what the SDK would send."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass

    def points(self, batch=-1) -> dict:
        """(name, frozenset(attributes)) -> value of one export."""
        out = {}
        for rm in self.batches[batch].resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        out[(m.name, frozenset(p.attributes.items()))] = p.value
        return out


def exposition_samples(exp) -> dict:
    """(family, labels) -> value of the last snapshot's /metrics exposition."""
    text = b"".join(exp.exposition(scrape=False)).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("namedprocess_namegroup_")}


def pusher_for(exp, threads=True, smaps=False):
    capture = Capture()
    pusher = otlp.Pusher(exp, SETTINGS, threads=threads, smaps=smaps, metric_exporter=capture)
    exp.otlp_exports = pusher.exports
    return pusher, capture


GROUPS = parse_config("""
process_names:
  - name: "{{.Comm}}"
    cmdline: ['.+']
""")


def busy_reader():
    r = FakeReader()
    r.put(rec(10, "web", utime=100, stime=20, minflt=5, majflt=1, ctxv=7, ctxnv=2, read=4096, write=8192,
              threads=3, rss=1 << 20, vms=1 << 24, swap=4096, fds=9, wchan="do_epoll_wait"),
          threads=[thread(10, "web", utime=50, ctxv=3, ctxnv=1, wchan="do_epoll_wait"),
                   thread(11, "worker", "R", utime=30, ctxv=2, ctxnv=1),
                   thread(12, "worker", utime=20, ctxv=2, read=4096, wchan="futex_wait")])
    r.put(rec(20, "db", utime=5, state="D", fds=None))  # fd count unreadable: no point
    return r


# -- one collection cycle, in process ------------------------------------------------------


def test_every_point_is_the_exposition_of_the_same_snapshot():
    """Each /metrics sample of the snapshot a cycle took has its point, with the same value
    (uptime: the snapshot time minus the oldest start), and there is no other point."""
    r = busy_reader()
    exp = exporter(GROUPS, r)
    pusher, capture = pusher_for(exp)
    try:
        for step in range(2):
            r.put(rec(10, "web", utime=100 + 50 * step, stime=20, minflt=5, majflt=1, ctxv=7, ctxnv=2, read=4096,
                      write=8192, threads=3, rss=1 << 20, vms=1 << 24, swap=4096, fds=9, wchan="do_epoll_wait"))
            pusher.reader.collect()
            points, samples = capture.points(), exposition_samples(exp)
            expected = {}
            for (family, labels), value in samples.items():
                labels = dict(labels)
                short = family.removeprefix("namedprocess_namegroup_").removesuffix("_total")
                label_value = next((v for k, v in labels.items() if k not in ("groupname", "threadname", "wchan")), None)
                name, attributes = otlp.MAPPING[short][label_value]
                attributes = {otlp.GROUP: labels["groupname"], **attributes}
                for key, attribute in otlp.ITEM_ATTRIBUTES.items():
                    if key in labels:
                        attributes[attribute] = labels[key]
                if name == otlp.PROCESS_UPTIME:
                    value = pusher.reader.taken_at - value
                expected[(name, frozenset(attributes.items()))] = value
            assert set(points) == set(expected)
            for key, value in expected.items():
                assert points[key] == pytest.approx(value, abs=1e-6), key
        web = {"procsnap.group.name": "web"}
        assert capture.points()[(otlp.PROCESS_CPU_TIME, frozenset({**web, "cpu.mode": "user"}.items()))] == 0.5
        assert (otlp.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT, frozenset({"procsnap.group.name": "db"}.items())) not in points
    finally:
        pusher.shutdown()


def test_one_walk_per_cycle_and_a_concurrent_scrape_shares_it():
    r = busy_reader()
    walks = []
    inside = threading.Event()
    release = threading.Event()
    read = r.read

    def counted_read():
        walks.append(1)
        if not release.is_set():
            inside.set()
            assert release.wait(30)
        return read()

    exp = exporter(GROUPS, r)
    pusher, capture = pusher_for(exp)
    try:
        r.read = counted_read
        release.set()
        for _ in range(3):
            pusher.reader.collect()
        assert len(walks) == 3 and len(capture.batches) == 3  # one walk per cycle, whatever the instruments
        release.clear()
        cycle = threading.Thread(target=pusher.reader.collect)
        cycle.start()
        assert inside.wait(30)  # the cycle's walk is under way: a Prometheus scrape now joins it
        scraped = []
        scrape = threading.Thread(target=lambda: scraped.append(exp.scrape()))
        scrape.start()
        time.sleep(0.2)
        release.set()
        cycle.join(30)
        scrape.join(30)
        assert len(walks) == 4 and scraped[0] is pusher.reader.result
    finally:
        release.set()
        pusher.shutdown()


def test_a_group_that_goes_stops_being_pushed():
    r = FakeReader()
    r.put(rec(10, "web"))
    r.put(rec(20, "batch"))
    exp = exporter(GROUPS, r, remove_empty_groups=True)
    pusher, capture = pusher_for(exp)
    try:
        pusher.reader.collect()
        assert {dict(a)[otlp.GROUP] for _, a in capture.points()} == {"web", "batch"}
        r.remove(20)
        pusher.reader.collect()
        assert {dict(a)[otlp.GROUP] for _, a in capture.points()} == {"web"}
    finally:
        pusher.shutdown()


def test_pod_labels_are_kubernetes_attributes():
    """extra_labels become k8s.namespace.name, k8s.pod.name, k8s.container.name; a group
    outside pods has none of them."""
    r = FakeReader()
    r.put(rec(10, "web", start=100))
    r.put(rec(11, "web", start=101))
    exp = exporter(parse_config("extra_labels: [namespace, pod, container]\nprocess_names: [{name: '{{.Comm}}', "
                                "cmdline: ['.+']}]"), r)

    class Pods:
        def info(self, cgroup):
            return PodInfo("shop", "web-1", "nginx", "a" * 64) if cgroup == "0::/in-pod" else NOT_IN_A_POD

    r.facts[(10, 100)] = r.facts[(10, 100)][:2] + (b"0::/in-pod\n",) + r.facts[(10, 100)][3:]
    exp.grouper.pods = Pods()
    pusher, capture = pusher_for(exp)
    try:
        pusher.reader.collect()
        found = {frozenset(dict(a).items()) for name, a in capture.points() if name == "procsnap.group.process.count"}
        assert found == {frozenset({otlp.GROUP: "web", "k8s.namespace.name": "shop", "k8s.pod.name": "web-1",
                                    "k8s.container.name": "nginx"}.items()), frozenset({otlp.GROUP: "web"}.items())}
    finally:
        pusher.shutdown()


def test_families_follow_the_threads_and_smaps_flags():
    r = busy_reader()
    exp = exporter(GROUPS, r)
    pusher, capture = pusher_for(exp, threads=False, smaps=False)
    try:
        pusher.reader.collect()
        names = {name for name, _ in capture.points()}
        assert "procsnap.group.wchan.count" in names and not any(n.startswith("procsnap.thread.") for n in names)
        assert "procsnap.process.memory.proportional" not in names
    finally:
        pusher.shutdown()


def test_readme_maps_every_family_to_its_otlp_name():
    """The README's table names, for each /metrics family, the OTLP metrics MAPPING gives it
    and the attributes beside procsnap.group.name."""
    with open(README, encoding="utf-8") as f:
        section = f.read().split("## OpenTelemetry", 1)[1].split("\n## ", 1)[0]
    cell = r"((?:[^|\\]|\\.)*)"  # a table cell: \| is a pipe inside it
    rows = re.findall(rf"^\| `namedprocess_namegroup_(\w+)` \| {cell} \| {cell} \|$", section, re.M)
    table = {family: (set(re.findall(r"`([\w.]+)`", names)), set(re.findall(r"`([\w.]+)(?:=|`)", attributes)))
             for family, names, attributes in rows}
    expected = {family: ({name for name, _ in parts.values()},
                         {key for _, attributes in parts.values() for key in attributes}
                         | ({"procsnap.thread.name"} if family.startswith("thread_") else set())
                         | ({"procsnap.wchan"} if family == "threads_wchan" else set()))
                for family, parts in otlp.MAPPING.items()}
    assert table == expected


# -- procsnap for real, against real receivers ---------------------------------------------


SLEEPER = "import sys, time; time.sleep(600)"
BURNER = "import sys, time\nwhile True:\n    sum(range(100000)); time.sleep(0.01)"


def start_group(tag: str, n: int, code=SLEEPER) -> list:
    return [subprocess.Popen([sys.executable, "-c", code, tag]) for _ in range(n)]


def config_for(tmp_path, tag: str) -> str:
    path = tmp_path / "procsnap.yaml"
    path.write_text(f'process_names:\n  - name: "otlp-{tag}"\n    cmdline: [\'{tag}\']\n')
    return str(path)


def run_procsnap(tmp_path, *args, env=None):
    log = open(tmp_path / "procsnap.log", "wb")
    return subprocess.Popen([PROCSNAP, *args], stdout=subprocess.DEVNULL, stderr=log,
                            env=clean_env(**(env or {})))


def group_points(points, group: str) -> dict:
    return {(p["name"], frozenset((k, v) for k, v in p["attributes"].items() if k != otlp.GROUP)): p
            for p in points if p["attributes"].get(otlp.GROUP) == group}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_push_to_a_real_receiver(tmp_path, protocol):
    receiver = (GrpcReceiver() if protocol == "grpc" else HttpReceiver()).start()
    tag = f"otlp-{uuid.uuid4().hex[:12]}"
    procs = start_group(tag, 3)
    port = free_port()
    ps = run_procsnap(tmp_path, "--config.path", config_for(tmp_path, tag), "--web.listen-address",
                      f"127.0.0.1:{port}", "--otlp.endpoint", receiver.endpoint, "--otlp.protocol", protocol,
                      "--otlp.interval", "0.5")
    try:
        assert receiver.wait_for(3, 60), (tmp_path / "procsnap.log").read_text()
        group = f"otlp-{tag}"
        first, last = group_points(receiver.points(0), group), group_points(receiver.points(-1), group)
        count = last[("procsnap.group.process.count", frozenset())]
        assert count["value"] == 3 and count["kind"] == "sum" and not count["monotonic"]
        cpu = last[(otlp.PROCESS_CPU_TIME, frozenset({("cpu.mode", "user")}))]
        assert cpu["unit"] == "s" and cpu["monotonic"] and cpu["temporality"] == 2  # CUMULATIVE
        threads = last[(otlp.PROCESS_THREAD_COUNT, frozenset())]
        assert threads["value"] == 3 and threads["unit"] == "{thread}"
        assert last[(otlp.PROCESS_UPTIME, frozenset())]["kind"] == "gauge"
        for key, p in first.items():  # cumulative sums over two exports: same start, never down
            if p["monotonic"]:
                assert last[key]["start"] == p["start"] and last[key]["value"] >= p["value"], key
        assert {"cpu.mode", "disk.io.direction", "system.paging.fault.type", "process.context_switch.type"} <= {
            k for p in last.values() for k in p["attributes"]}
        p = next(iter(last.values()))
        assert p["resource"]["service.name"] == "procsnap" and p["resource"]["host.name"]
        assert p["schema_url"] == otlp.SCHEMA_URL and p["scope"] == "procsnap"
        status, body = http_get(port)  # /metrics alongside, with the export counter
        assert status == 200 and re.search(rb'procsnap_otlp_exports_total\{result="success"\} [1-9]', body)
    finally:
        stop_processes([ps, *procs])
        receiver.stop()


def test_receiver_down_then_up(tmp_path):
    """Nothing listens at first: /metrics answers, failures are counted and logged once;
    then exports arrive, with counters that did not start again from 0."""
    port, otlp_port = free_port(), free_port()
    tag = f"otlp-{uuid.uuid4().hex[:12]}"
    procs = start_group(tag, 1, BURNER)
    ps = run_procsnap(tmp_path, "--config.path", config_for(tmp_path, tag), "--web.listen-address",
                      f"127.0.0.1:{port}", "--otlp.endpoint", f"http://127.0.0.1:{otlp_port}", "--otlp.interval", "0.3",
                      env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    receiver = None
    try:
        deadline = time.monotonic() + 60
        failures = 0
        while failures < 2:
            assert time.monotonic() < deadline, (tmp_path / "procsnap.log").read_text()
            try:
                status, body = http_get(port)
            except OSError:
                time.sleep(0.2)
                continue
            assert status == 200
            m = re.search(rb'procsnap_otlp_exports_total\{result="failure"\} (\d+)', body)
            failures = int(float(m.group(1))) if m else 0
            time.sleep(0.2)
        cpu_before = next(s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples
                          if s.name == "namedprocess_namegroup_cpu_seconds_total" and s.labels["mode"] == "user")
        receiver = HttpReceiver(port=otlp_port).start()
        assert receiver.wait_for(2, 60), (tmp_path / "procsnap.log").read_text()
        cpu = group_points(receiver.points(-1), f"otlp-{tag}")[(otlp.PROCESS_CPU_TIME, frozenset({("cpu.mode", "user")}))]
        assert cpu["value"] >= cpu_before > 0
        log = (tmp_path / "procsnap.log").read_text()
        assert log.count("failing") == 1 and log.count("OTLP export to") == 2, log
    finally:
        stop_processes([ps, *procs])
        if receiver:
            receiver.stop()


def test_push_only_and_the_last_export_at_sigterm(tmp_path):
    """--web.listen-address '' serves no HTTP; SIGTERM pushes one last export (the
    interval is an hour: only the shutdown can have sent it)."""
    receiver = HttpReceiver().start()
    ps = run_procsnap(tmp_path, "--web.listen-address", "", "--otlp.interval", "3600",
                      env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    try:
        deadline = time.monotonic() + 30
        while b"pushing OTLP" not in (tmp_path / "procsnap.log").read_bytes():
            assert time.monotonic() < deadline and ps.poll() is None, (tmp_path / "procsnap.log").read_text()
            time.sleep(0.1)
        assert receiver.exports() == 0
        ps.send_signal(signal.SIGTERM)
        assert ps.wait(30) == 0
        assert receiver.exports() == 1 and receiver.points()
    finally:
        stop_processes([ps])
        receiver.stop()


def test_nothing_to_serve_is_a_usage_error():
    r = subprocess.run([PROCSNAP, "--web.listen-address", ""], capture_output=True, env=clean_env(), timeout=60)
    assert r.returncode == 2 and b"nothing would see the metrics" in r.stderr
    r = subprocess.run([PROCSNAP, "--otlp.protocol", "grpc"], capture_output=True, timeout=60,
                       env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_METRIC_EXPORT_INTERVAL="x"))
    assert r.returncode == 2 and b"OTEL_METRIC_EXPORT_INTERVAL" in r.stderr
