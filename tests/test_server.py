"""server: routes, content negotiation, gzip, the single-flight scrape gate; keep-alive and
bad requests, the listen backlog, --web.max-requests, X-Prometheus-Scrape-Timeout-Seconds,
/-/reload and the reload gauge, shutdown with a scrape in flight, and running out of file
descriptors. Servers bind 127.0.0.1; every wait is bounded."""

import gzip
import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import PROC_BASIC, pinned_facts
from exporter.app import Exporter
from exporter.config import load_config
from exporter.grouper import Grouper
from exporter.reader import Reader
from exporter.server import MetricsServer, make_app, parse_listen_address, scrape_timeout
from helpers import clean_env, free_port
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

    def start(exporter, path="/metrics", **app_options):
        server = MetricsServer(make_app(exporter, path, **app_options), "127.0.0.1:0")
        server.start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.shutdown(grace=5)


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
    # under the same name as in the text format (Prometheus stores what process-exporter gave it)
    assert b"# TYPE namedprocess_scrape_errors unknown\nnamedprocess_scrape_errors 1.0\n" in body


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
        if server.address_family == socket.AF_INET6:
            conn = http.client.HTTPConnection("::1", server.port, timeout=10)
            conn.request("GET", "/healthz")
            assert conn.getresponse().read() == b"ok\n"
            conn.close()
    finally:
        server.shutdown()


# -- connections: keep-alive, bad requests, the backlog, limits ----------------------------


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    port = serve(_exporter())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        socks = set()
        for path in ("/healthz", "/metrics", "/", "/healthz"):
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
            assert resp.getheader("Connection") is None  # kept open
            socks.add(id(conn.sock))
        assert len(socks) == 1  # one connection for all four
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        resp = conn.getresponse()
        assert resp.read() == b"ok\n" and resp.getheader("Connection") == "close"
    finally:
        conn.close()


def raw(port, data: bytes, timeout=20) -> bytes:
    """Send data, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/2.0\r\n\r\n", b"505"),
    (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\nX: y\r\n folded\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", b"431"),
    (b"POST /-/reload HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", b"413"),
    (b"GET /healthz HTTP/1.0\r\n\r\n", b"200"),  # HTTP/1.0: answered, then closed
    (b"\r\nGET http://127.0.0.1/healthz HTTP/1.1\r\nConnection: close\r\n\r\n", b"200"),  # absolute-form
])
def test_bad_and_odd_requests(serve, request_bytes, status):
    port = serve(_exporter())
    answer = raw(port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert get(port, "/healthz")[0] == 200


def test_50_concurrent_scrapes_share_one_snapshot_and_none_waits_on_the_backlog():
    n = 50
    slow = SlowReader()
    CountingGrouper.updates = 0
    exporter = CountingExporter(*_parts(slow, CountingGrouper))
    server = MetricsServer(make_app(exporter), "127.0.0.1:0")
    clients = []
    try:
        # not accepting yet: the kernel completes every connection into the listen backlog
        # (with process-exporter's 4096; a backlog of 5 left most of them retrying their SYN)
        for _ in range(n):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        server.start()
        for s in clients:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert slow.started.wait(20)
        deadline = time.monotonic() + 20
        while exporter.entered < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exporter.entered == n  # all 50 inside one flight
        slow.release.set()
        answers = []
        for s in clients:
            s.settimeout(20)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
    finally:
        slow.release.set()
        for s in clients:
            s.close()
        server.shutdown(grace=5)
    assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers)
    assert slow.calls == 1 and CountingGrouper.updates == 1
    bodies = {tuple(ours(a.split(b"\r\n\r\n", 1)[1])) for a in answers}
    assert len(bodies) == 1


def test_beyond_max_requests_503(serve):
    slow = SlowReader()
    exporter = CountingExporter(*_parts(slow))
    port = serve(exporter, max_requests=3)
    results = [None] * 3
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, get(port, "/metrics"))) for i in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while exporter.entered < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert exporter.entered == 3
        status, _, body = get(port, "/metrics")
        assert status == 503 and body == b"Limit of concurrent requests reached (3), try again later.\n"
        assert get(port, "/healthz")[0] == 200  # the limit is on scrapes only
    finally:
        slow.release.set()
        for t in threads:
            t.join(20)
    assert [r[0] for r in results] == [200, 200, 200]
    assert get(port, "/metrics")[0] == 200


class BlocksOnSecondRead(SlowReader):
    def read(self):
        if self.calls == 0:
            self.calls += 1
            return self.inner.read()
        return super().read()


def test_scrape_timeout_header_answers_in_time_with_the_last_snapshot(serve):
    slow = BlocksOnSecondRead()
    exporter = _exporter(slow)
    exporter.scrape()  # a complete snapshot to fall back on
    port = serve(exporter)
    try:
        status, _, body = get(port, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        # answered while the snapshot is still blocked (it is released only below)
        assert status == 200 and b'namedprocess_namegroup_num_procs{groupname="init"} 1.0' in body
        assert b"\nprocsnap_scrape_timeouts_total 1.0\n" in body
        assert slow.started.is_set() and not slow.release.is_set()
        assert exporter.last is not None
    finally:
        slow.release.set()
    # the late snapshot lands; the next scrape with a deadline gets a fresh one
    status, _, body = get(port, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "10"})
    assert status == 200 and b"\nprocsnap_scrape_timeouts_total 1.0\n" in body
    assert slow.calls >= 2


def test_scrape_timeout_without_any_snapshot_is_503(serve):
    slow = SlowReader()
    port = serve(_exporter(slow))
    try:
        status, _, body = get(port, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "0.5"})
        assert status == 503 and b"no snapshot" in body
    finally:
        slow.release.set()


@pytest.mark.parametrize("value, expected", [("10", 10.0), ("0.5", 0.5), ("", None), ("x", None), ("0", None),
                                             ("-1", None), ("nan", None), (None, None)])
def test_scrape_timeout_values(value, expected):
    assert scrape_timeout(value) == expected


# -- /-/reload ---------------------------------------------------------------------------


def test_lifecycle_routes(serve):
    port = serve(_exporter())  # no reload callable: --web.enable-lifecycle is off
    assert get(port, "/-/reload", method="POST")[::2] == (403, b"Lifecycle API is not enabled.")
    assert get(port, "/-/reload", method="PUT")[0] == 403
    status, headers, body = get(port, "/-/reload")
    assert (status, body) == (405, b"Only POST or PUT requests allowed") and headers["allow"] == "POST, PUT"
    outcomes = [None, "c.yaml:3: bad"]
    port = serve(_exporter(), reload=lambda: outcomes.pop(0))
    assert get(port, "/-/reload", method="POST")[::2] == (200, b"")
    assert get(port, "/-/reload", method="POST")[::2] == (500, b"failed to reload config: c.yaml:3: bad\n")


# -- stopping --------------------------------------------------------------------------------


def test_shutdown_answers_the_scrape_in_flight_and_closes_idle_connections():
    slow = SlowReader()
    server = MetricsServer(make_app(_exporter(slow)), "127.0.0.1:0")
    server.start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    result = []
    client = threading.Thread(target=lambda: result.append(get(server.port, "/metrics")))
    client.start()
    assert slow.started.wait(20)
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    try:
        idle.settimeout(20)
        assert idle.recv(1) == b""  # waiting for a request: closed at once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # no new connections
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                break
        else:
            raise AssertionError("still accepting")
        assert stopper.is_alive()  # waits for the scrape in flight
    finally:
        slow.release.set()
        stopper.join(30)
        client.join(30)
        idle.close()
    assert not stopper.is_alive()
    assert result and result[0][0] == 200 and b"namedprocess_namegroup_num_procs" in result[0][2]


def test_sigterm_finishes_the_scrape_in_flight_and_returns_0():
    """cli._serve in this process: SIGTERM while a scrape is blocked; the scrape is answered,
    then _serve returns 0."""
    from exporter import cli

    slow = SlowReader()
    exporter = _exporter(slow)
    port = free_port()
    args = cli.parse_args(["--web.listen-address", f"127.0.0.1:{port}", "--backend", "python"], environ={})
    result, events = [], []

    def scrape_then_stop():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        slow.started.clear()
        t = threading.Thread(target=lambda: result.append(get(port, "/metrics")))
        t.start()
        assert slow.started.wait(20)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # _serve is now waiting for the scrape
        events.append("released")
        slow.release.set()
        t.join(30)

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    helper = threading.Thread(target=scrape_then_stop)
    helper.start()
    try:
        assert cli._serve(exporter, args, None) == 0
        events.append("returned")
    finally:
        slow.release.set()
        helper.join(30)
        for s, h in handlers.items():
            signal.signal(s, h)
    assert events == ["released", "returned"]  # _serve returned only after the scrape was answered
    assert result and result[0][0] == 200 and b"namedprocess_namegroup_num_procs" in result[0][2]


# -- the command: /-/reload, SIGHUP, the reload gauge, running out of descriptors ----------------

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")


def start_procsnap(tmp_path, *args, preexec_fn=None):
    """procsnap on a free 127.0.0.1 port over proc-basic; (process, port, log path)."""
    port = free_port()
    log_path = tmp_path / "procsnap.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([PROCSNAP, "--backend", "python", "--procfs.keep-open", "off", "--path.procfs",
                                 PROC_BASIC, "--web.listen-address", f"127.0.0.1:{port}", *args],
                                stdout=subprocess.DEVNULL, stderr=log, env=clean_env(), preexec_fn=preexec_fn)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"procsnap exited {proc.returncode}: {log_path.read_text()}")
        try:
            if get(port, "/healthz")[0] == 200:
                return proc, port, log_path
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError("procsnap did not come up within 30 s")


def stop_procsnap(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def groups_and_gauge(port):
    _, _, body = get(port, "/metrics")
    groups = {}
    gauge = None
    for line in body.decode().splitlines():
        if line.startswith("namedprocess_namegroup_num_procs{"):
            groups[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        if line.startswith("procsnap_config_last_reload_successful "):
            gauge = float(line.rsplit(" ", 1)[1])
    return groups, gauge


GOOD = "process_names:\n  - name: {name}\n    comm: [init]\n"
BAD = "process_names:\n  - name: broken\n    cmdline: ['(']\n"


def test_lifecycle_reload_good_and_bad(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(GOOD.format(name="before"))
    proc, port, log = start_procsnap(tmp_path, "--config.path", str(config), "--no-children",
                                     "--web.enable-lifecycle")
    try:
        assert groups_and_gauge(port) == ({"before": 1.0}, 1.0)
        config.write_text(GOOD.format(name="after"))
        assert get(port, "/-/reload", method="POST")[::2] == (200, b"")
        assert groups_and_gauge(port) == ({"after": 1.0}, 1.0)

        config.write_text(BAD)
        status, _, body = get(port, "/-/reload", method="POST")
        assert status == 500 and body.startswith(b"failed to reload config: ") and b"bad cmdline regex" in body
        assert groups_and_gauge(port) == ({"after": 1.0}, 0.0)  # the old config stays
        assert get(port, "/-/reload")[0] == 405

        config.write_text(GOOD.format(name="again"))
        proc.send_signal(signal.SIGHUP)  # the same reload
        deadline = time.monotonic() + 20
        while groups_and_gauge(port) != ({"again": 1.0}, 1.0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert groups_and_gauge(port) == ({"again": 1.0}, 1.0)

        config.write_text(BAD)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while groups_and_gauge(port)[1] != 0.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert groups_and_gauge(port) == ({"again": 1.0}, 0.0)
    finally:
        assert stop_procsnap(proc) == 0
    errors = [l for l in log.read_text().splitlines() if "config reload failed" in l]
    assert len(errors) == 2 and all("bad cmdline regex" in l for l in errors)


def test_lifecycle_endpoint_is_off_by_default(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(GOOD.format(name="before"))
    proc, port, _ = start_procsnap(tmp_path, "--config.path", str(config), "--no-children")
    try:
        config.write_text(GOOD.format(name="after"))
        assert get(port, "/-/reload", method="POST")[::2] == (403, b"Lifecycle API is not enabled.")
        assert get(port, "/-/reload")[0] == 405
        assert groups_and_gauge(port) == ({"before": 1.0}, 1.0)  # nothing re-read
    finally:
        assert stop_procsnap(proc) == 0


def _cpu_seconds(pid) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_backs_off_and_serves_again(tmp_path):
    """Under RLIMIT_NOFILE 64 (procsnap raises its soft limit to the hard one, so the hard
    one is lowered), clients hold every descriptor: accept() fails with EMFILE. procsnap
    must not spin (its CPU time over 3 s stays far below a busy loop's) and must serve
    again once they close."""

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc, port, log = start_procsnap(tmp_path, preexec_fn=limit)
    clients = []
    try:
        def emfile_logged():
            return "cannot accept connections" in log.read_text()

        deadline = time.monotonic() + 30
        while not emfile_logged() and len(clients) < 200 and time.monotonic() < deadline:
            for _ in range(10):  # the kernel completes them into the backlog; procsnap accepts until EMFILE
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.1)
        while not emfile_logged() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emfile_logged(), log.read_text()
        assert "Too many open files" in log.read_text()

        # backing off, it uses next to nothing; a busy loop here took 0.5-1 s of CPU a second
        before, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(3.0)
        used, elapsed = _cpu_seconds(proc.pid) - before, time.monotonic() - t0
        assert used < 0.1 * elapsed, f"{used:.2f} s of CPU in {elapsed:.2f} s: spinning"
        assert proc.poll() is None
    finally:
        for s in clients:
            s.close()
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                status = get(port, "/metrics")[0]
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status == 200
    finally:
        assert stop_procsnap(proc) == 0
    text = log.read_text()
    assert text.count("cannot accept connections") <= 5  # once per episode, not per attempt
    assert "accepting connections again" in text
