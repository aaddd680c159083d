"""End to end: the real procsnap binary against a golden exposition, promtool's linter,
and a real Prometheus server scraping procsnap on 127.0.0.1.

Rewrite the golden file after an intended change with

    PROCSNAP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_prometheus.py -k golden_exposition

and review the diff.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse

import pytest

from exporter import __version__
from helpers import clean_env, free_port, http_get, stop_processes

HERE = os.path.dirname(os.path.abspath(__file__))
PROC_BASIC = os.path.join(HERE, "fixtures", "proc-basic")
GOLDEN_CONFIG = os.path.join(HERE, "fixtures", "config", "golden.yaml")
GOLDEN = os.path.join(HERE, "fixtures", "golden", "proc-basic.prom")
PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

needs_prometheus = pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="prometheus not installed")
needs_promtool = pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool not installed")


def promtool_check(exposition: bytes):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).decode()


_NAME = re.compile(rb"^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)")


def stable_part(exposition: bytes) -> bytes:
    """The host-independent part of an exposition: procsnap's and the namedprocess
    families, without prometheus_client's process_/python_ metrics and the scrape
    duration; the version label is made a placeholder."""
    keep = []
    for line in exposition.splitlines(keepends=True):
        m = _NAME.match(line)
        assert m, line
        name = m.group(1)
        if not name.startswith((b"namedprocess_", b"procsnap_")) or name == b"procsnap_scrape_duration_seconds":
            continue
        keep.append(line.replace(b'version="%s"' % __version__.encode(), b'version="VERSION"'))
    return b"".join(keep)


def run_once(*extra, backend="python"):
    r = subprocess.run(
        [PROCSNAP, "--once", "--path.procfs", PROC_BASIC, "--config.path", GOLDEN_CONFIG, "--backend", backend, *extra],
        capture_output=True, timeout=60, env=clean_env(),
    )
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


# -- golden exposition ---------------------------------------------------------------------


def test_host_constants_the_fixture_assumes():
    # proc-basic's times are in ticks and its rss in pages: the golden file holds for
    # USER_HZ 100 and 4 KiB pages (every x86-64 and arm64 Linux with 4K pages).
    assert os.sysconf("SC_CLK_TCK") == 100
    assert os.sysconf("SC_PAGE_SIZE") == 4096


def test_golden_exposition(backend):
    """Both snapshot backends give the golden bytes (the native one once it is built;
    the ``backend`` fixture comes from conftest.py). The golden file is written from the
    python backend."""
    assert os.sysconf("SC_CLK_TCK") == 100 and os.sysconf("SC_PAGE_SIZE") == 4096
    got = stable_part(run_once(backend=backend))
    if os.environ.get("PROCSNAP_UPDATE_GOLDEN") == "1" and backend == "python":
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "wb") as f:
            f.write(got)
    with open(GOLDEN, "rb") as f:
        want = f.read()
    assert got.decode().splitlines() == want.decode().splitlines()
    assert got == want


def test_golden_file_covers_every_family_and_the_nasty_names():
    with open(GOLDEN, "rb") as f:
        text = f.read().decode()
    for family in ("num_procs", "cpu_seconds_total", "read_bytes_total", "write_bytes_total",
                   "major_page_faults_total", "minor_page_faults_total", "context_switches_total",
                   "memory_bytes", "open_filedesc", "worst_fd_ratio", "oldest_start_time_seconds",
                   "num_threads", "states"):
        assert f"# TYPE namedprocess_namegroup_{family} " in text
    for name in ('"paren"', '"init-init"', '"login-sh"', '"new\\nline"', '"Uid: 7 spaces"', '"abcdefghijklmn\ufffd"'):
        assert f"{{groupname={name}}}" in text
    for line in ("procsnap_processes 13.0", 'procsnap_read_errors_total{reason="ENOENT"} 1.0',
                 'procsnap_read_errors_total{reason="malformed"} 1.0', 'procsnap_build_info{version="VERSION"} 1.0'):
        assert line in text.splitlines()


def test_once_delay_on_a_static_tree_gives_the_same_numbers():
    """Two snapshots of a tree that does not change: counters do not move, nothing is
    counted twice (the read errors are, once per snapshot)."""
    got = stable_part(run_once("--once.delay", "0.1")).decode().splitlines()
    with open(GOLDEN, "rb") as f:
        want = f.read().decode().splitlines()
    doubled = {'procsnap_read_errors_total{reason="ENOENT"} 2.0', 'procsnap_read_errors_total{reason="malformed"} 2.0'}
    assert set(got) - set(want) == doubled
    assert len(got) == len(want)


@needs_promtool
def test_promtool_accepts_fixture_exposition():
    status, output = promtool_check(run_once())
    assert status == 0 and output.strip() == "", output


@needs_promtool
def test_promtool_accepts_live_exposition():
    r = subprocess.run([PROCSNAP, "--once", "--backend", "python"], capture_output=True, timeout=60, env=clean_env())
    assert r.returncode == 0
    assert b"namedprocess_namegroup_num_procs{" in r.stdout
    status, output = promtool_check(r.stdout)
    assert status == 0 and output.strip() == "", output


# -- a real Prometheus ---------------------------------------------------------------------

PR_SET_NAME = 15
NASTY_COMMS = {
    # bytes given to prctl(PR_SET_NAME) -> the comm the kernel keeps, decoded as procsnap does
    "paren": (b"a) b (c", "a) b (c"),
    "newline": (b"nl\nin comm", "nl\nin comm"),
    # 16 bytes: the kernel keeps 15, cutting the 8th "é" in half
    "cut-utf8": ("é" * 8).encode(),
}
NASTY_COMMS["cut-utf8"] = (NASTY_COMMS["cut-utf8"], "é" * 7 + "\ufffd")

CHILD = r"""
import ctypes, sys, time
name = bytes.fromhex(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:
    sys.exit("prctl failed")
print("ready", flush=True)
time.sleep(600)
"""


def wait_for(predicate, timeout=30.0, interval=0.25, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class Stack:
    """Test processes, procsnap on the live /proc, and Prometheus scraping it."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.marker = f"procsnap-e2e-{os.getpid()}"
        self.sleep_arg = f"3600.{os.getpid()}"

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def start(self):
        # three sleeps with a distinctive cmdline
        for _ in range(3):
            self.spawn(["sleep", self.sleep_arg])
        # processes with comms that would break a naive exposition
        for key, (raw, _) in NASTY_COMMS.items():
            p = self.spawn([sys.executable, "-c", CHILD, raw.hex(), self.marker], stdout=subprocess.PIPE)
            assert p.stdout.readline() == b"ready\n", key
        config = os.path.join(self.tmp, "procsnap.yaml")
        with open(config, "w") as f:
            f.write(
                "process_names:\n"
                "  - name: e2e-sleepers\n"
                f"    cmdline: ['^sleep {re.escape(self.sleep_arg)}$']\n"
                "  - name: '{{.Comm}}'\n"
                f"    cmdline: ['{self.marker}$']\n"
            )
        self.procsnap_port = free_port()
        self.procsnap = self.spawn(
            [PROCSNAP, "--web.listen-address", f"127.0.0.1:{self.procsnap_port}", "--config.path", config],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "procsnap.log"), "wb"), env=clean_env(),
        )
        wait_for(lambda: self._ok(self.procsnap_port, "/healthz"), 20, what="procsnap /healthz")

        self.prom_port = free_port()
        prom_config = os.path.join(self.tmp, "prometheus.yml")
        with open(prom_config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: procsnap\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{self.procsnap_port}']\n"
            )
        self.prometheus = self.spawn(
            [PROMETHEUS, f"--config.file={prom_config}", f"--storage.tsdb.path={os.path.join(self.tmp, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "prometheus.log"), "wb"),
        )
        wait_for(lambda: self._ok(self.prom_port, "/-/ready"), 30, what="prometheus /-/ready")

    @staticmethod
    def _ok(port, path):
        try:
            return http_get(port, path, timeout=2)[0] == 200
        except OSError:
            return False

    def api(self, endpoint, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = http_get(self.prom_port, f"/api/v1/{endpoint}?{query}")
        reply = json.loads(body)
        assert status == 200 and reply["status"] == "success", reply
        return reply["data"]

    def query(self, promql):
        return self.api("query", query=promql)["result"]

    def stop(self):
        stop_processes(self.procs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus not installed")
    s = Stack(str(tmp_path_factory.mktemp("e2e")))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@needs_prometheus
def test_prometheus_scrapes_procsnap(stack):
    up = wait_for(lambda: stack.query('up{job="procsnap"} == 1'), what="up == 1")
    assert len(up) == 1 and up[0]["value"][1] == "1"

    def sleepers():
        result = stack.query('namedprocess_namegroup_num_procs{groupname="e2e-sleepers"}')
        return result if result and result[0]["value"][1] == "3" else None

    result = wait_for(sleepers, what="num_procs of e2e-sleepers == 3")
    assert result[0]["metric"]["job"] == "procsnap"
    threads = stack.query('namedprocess_namegroup_num_threads{groupname="e2e-sleepers"}')
    assert threads[0]["value"][1] == "3"
    # counters and self metrics made it too
    assert stack.query('namedprocess_namegroup_cpu_seconds_total{groupname="e2e-sleepers",mode="user"}')
    assert stack.query("procsnap_processes > 0")
    assert stack.query('procsnap_build_info{version="%s"} == 1' % __version__)
    # and Prometheus never failed a scrape
    assert stack.query('up{job="procsnap"} == 0') == []


@needs_prometheus
def test_nasty_comms_make_valid_series(stack):
    expected = {name for _, name in NASTY_COMMS.values()}

    def series():
        data = stack.api("series", **{"match[]": "namedprocess_namegroup_num_procs"})
        names = {s["groupname"] for s in data}
        return names if expected <= names else None

    names = wait_for(series, what="the nasty comms' series")
    assert names == expected | {"e2e-sleepers"}
    # each is one process, and the label values came back byte for byte
    result = stack.query("namedprocess_namegroup_num_procs")
    got = {r["metric"]["groupname"]: r["value"][1] for r in result}
    assert {name: got[name] for name in expected} == dict.fromkeys(expected, "1")
    # PromQL takes the names back too (a literal U+FFFD in a query is a parse error in
    # Prometheus 2.42, "invalid UTF-8 rune": it has to be written as the escape \\uFFFD)
    by_query = stack.query(r'count by (groupname) (namedprocess_namegroup_num_procs{groupname=~"a\\) b \\(c|nl\nin comm|é+\uFFFD"})')
    assert {r["metric"]["groupname"] for r in by_query} == expected
    assert stack.query('up{job="procsnap"} == 0') == []


@needs_promtool
def test_promtool_accepts_exposition_with_nasty_comms(stack):
    def nasty_exposed():
        status, body = http_get(stack.procsnap_port, "/metrics")
        return body if status == 200 and b"nl\\nin comm" in body else None

    body = wait_for(nasty_exposed, 10, what="nasty comms in the exposition")
    for _, name in NASTY_COMMS.values():
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        assert f'namedprocess_namegroup_num_procs{{groupname="{escaped}"}} 1.0\n'.encode() in body
    status, output = promtool_check(body)
    assert status == 0 and output.strip() == "", output
