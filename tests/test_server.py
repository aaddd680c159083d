"""server: routes, content negotiation, gzip, and the single-flight scrape gate."""

import gzip
import http.client
import socket
import threading
import time

import pytest

from conftest import PROC_BASIC, pinned_facts
from exporter.app import Exporter
from exporter.config import load_config
from exporter.grouper import Grouper
from exporter.reader import Reader
from exporter.server import MetricsServer, make_app, parse_listen_address
from exporter.tracker import Tracker


def _parts(reader=None, grouper_class=Grouper):
    """(tracker, grouper) over the proc-basic fixture, or over the given reader."""
    facts = pinned_facts(PROC_BASIC)
    tracker = Tracker(reader or Reader(PROC_BASIC, "python", facts.page_size), facts)
    return tracker, grouper_class(load_config(None), facts.clock_ticks, facts.boot_time)


def _exporter(reader=None):
    return Exporter(*_parts(reader))


class Wrapped:
    """A real reader of proc-basic; subclasses change what read() does."""

    backend = "python"

    def __init__(self):
        self.inner = Reader(PROC_BASIC, "python", 4096)

    def read(self):
        return self.inner.read()

    def read_facts(self, requests):
        return self.inner.read_facts(requests)

    def close(self):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(exporter, path="/metrics"):
        server = MetricsServer(make_app(exporter, path), "127.0.0.1:0")
        server.start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.shutdown()


def get(port, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def ours(body: bytes) -> list:
    """The namedprocess_/procsnap_ lines (prometheus_client's own process_/python_ vary)."""
    return [l for l in body.decode().splitlines() if l.startswith(("namedprocess_", "procsnap_"))]


def test_text_format_by_default(serve):
    port = serve(_exporter())
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "content-encoding" not in headers
    assert b'namedprocess_namegroup_num_procs{groupname="init"} 1.0\n' in body
    assert b"# EOF" not in body
    assert b"\n# TYPE process_cpu_seconds_total counter\n" in body  # client's process collector kept


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        # what Prometheus 2.42 sends
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ],
)
def test_openmetrics_when_asked(serve, accept):
    port = serve(_exporter())
    status, headers, body = get(port, "/metrics", {"Accept": accept})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert b"# TYPE namedprocess_namegroup_cpu_seconds counter\n" in body
    # a first scrape: processes already running count from 0
    assert b'namedprocess_namegroup_cpu_seconds_total{groupname="init",mode="user"} 0.0\n' in body


def test_gzip_when_accepted(serve):
    port = serve(_exporter())
    status, headers, body = get(port, "/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body)
    text = gzip.decompress(body)
    assert b'namedprocess_namegroup_num_procs{groupname="init"} 1.0\n' in text
    status, headers, body = get(port, "/metrics", {"Accept-Encoding": "identity"})
    assert "content-encoding" not in headers and body.startswith(b"# HELP")


def test_name_filter(serve):
    port = serve(_exporter())
    _, _, body = get(port, "/metrics?name[]=namedprocess_namegroup_num_threads")
    names = {l.split("{")[0] for l in body.decode().splitlines() if not l.startswith("#")}
    assert names == {"namedprocess_namegroup_num_threads"}


def test_landing_healthz_404_405(serve):
    port = serve(_exporter(), path="/custom/path")
    status, headers, body = get(port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<a href="/custom/path">' in body
    assert get(port, "/healthz")[::2] == (200, b"ok\n")
    assert get(port, "/metrics")[0] == 404
    assert get(port, "/nope")[0] == 404
    assert get(port, "/custom/path")[0] == 200
    status, headers, _ = get(port, "/custom/path", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, body = get(port, "/healthz", method="HEAD")
    assert status == 200 and body == b""


def test_failed_snapshot_is_500_and_next_scrape_recovers(serve, tmp_path):
    class Flaky(Wrapped):
        fail = True

        def read(self):
            if self.fail:
                raise OSError(2, "cannot list /gone: No such file or directory")
            return self.inner.read()

    flaky = Flaky()
    port = serve(_exporter(flaky))
    status, _, body = get(port, "/metrics")
    assert status == 500 and b"cannot list /gone" in body
    flaky.fail = False
    status, _, body = get(port, "/metrics")
    assert status == 200 and b"\nnamedprocess_scrape_errors 1.0\n" in body  # process-exporter's counter
    status, _, body = get(port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert b"# TYPE namedprocess_scrape_errors counter\nnamedprocess_scrape_errors_total 1.0\n" in body


def test_an_exception_while_grouping_is_one_500_and_the_next_scrape_works(serve, caplog):
    class FailsOnce(Grouper):
        failed = False

        def update(self, step):
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise KeyError((4242, 1))
            return super().update(step)

    port = serve(Exporter(*_parts(grouper_class=FailsOnce)))
    with caplog.at_level("ERROR", logger="procsnap"):
        status, _, body = get(port, "/metrics")
    assert status == 500 and b"4242" in body
    assert [r.levelname for r in caplog.records if r.name == "procsnap"] == ["ERROR"]
    status, _, body = get(port, "/metrics")
    assert status == 200 and b'namedprocess_namegroup_num_procs{groupname="init"} 1.0' in body


class SlowReader(Wrapped):
    """A real reader whose read blocks until the test releases it."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()

    def read(self):
        self.calls += 1
        self.started.set()
        assert self.release.wait(20), "test never released the read"
        return self.inner.read()


class CountingGrouper(Grouper):
    updates = 0

    def update(self, step):
        CountingGrouper.updates += 1
        return super().update(step)


class CountingExporter(Exporter):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.entered = 0
        self._count_lock = threading.Lock()

    def scrape(self):
        with self._count_lock:
            self.entered += 1
        return super().scrape()


def test_single_flight_concurrent_scrapes_share_one_snapshot(serve):
    n = 8
    slow = SlowReader()
    CountingGrouper.updates = 0
    exporter = CountingExporter(*_parts(slow, CountingGrouper))
    port = serve(exporter)
    results = [None] * n

    def scrape(i):
        results[i] = get(port, "/metrics")

    threads = [threading.Thread(target=scrape, args=(0,))]
    threads[0].start()
    assert slow.started.wait(10)
    threads += [threading.Thread(target=scrape, args=(i,)) for i in range(1, n)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while exporter.entered < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert exporter.entered == n  # every request is inside scrape(), behind the gate
    slow.release.set()
    for t in threads:
        t.join(20)
    assert slow.calls == 1
    assert CountingGrouper.updates == 1
    bodies = [ours(r[2]) for r in results]
    assert all(r[0] == 200 for r in results)
    assert all(b == bodies[0] for b in bodies)  # the same result: even the scrape duration
    assert any(l.startswith("procsnap_scrape_duration_seconds ") for l in bodies[0])

    # a scrape after the flight landed takes a new snapshot
    get(port, "/metrics")
    assert slow.calls == 2 and CountingGrouper.updates == 2


def test_single_flight_error_reaches_every_waiter():
    class Failing(SlowReader):
        def read(self):
            self.calls += 1
            self.started.set()
            assert self.release.wait(20)
            raise OSError(5, "boom")

    failing = Failing()
    exporter = CountingExporter(*_parts(failing))
    errors = []

    def scrape():
        try:
            exporter.scrape()
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    threads[0].start()
    assert failing.started.wait(10)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while exporter.entered < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    failing.release.set()
    for t in threads:
        t.join(20)
    assert failing.calls == 1
    assert len(errors) == 4 and all(e is errors[0] for e in errors)


def test_reload_keeps_single_step_and_regroups(tmp_path):
    exporter = _exporter()
    before = {g.name for g in exporter.scrape().groups}
    assert "init" in before
    config = tmp_path / "c.yaml"
    config.write_text("process_names:\n  - name: everything\n    cmdline: ['.+']\n")
    exporter.reload(load_config(str(config)))
    after = {g.name: g for g in exporter.scrape().groups}
    assert "everything" in after and after["everything"].num_procs > 1


@pytest.mark.parametrize(
    "address, expected",
    [(":9256", ("", 9256)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9", ("::1", 9)), ("localhost:0", ("localhost", 0))],
)
def test_parse_listen_address(address, expected):
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9256", "::1:9256", "host:port", ":70000"])
def test_parse_listen_address_rejects(address):
    with pytest.raises(ValueError):
        parse_listen_address(address)


def test_colon_port_listens_on_ipv4_and_ipv6():
    server = MetricsServer(make_app(_exporter()), ":0")
    server.start()
    try:
        assert get(server.port, "/healthz")[2] == b"ok\n"  # via 127.0.0.1
        if server.httpd.address_family == socket.AF_INET6:
            conn = http.client.HTTPConnection("::1", server.port, timeout=10)
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b"ok\n"
            conn.close()
    finally:
        server.shutdown()
