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
from helpers import clean_env, free_port, http_get, http_ok, stop_processes

HERE = os.path.dirname(os.path.abspath(__file__))
PROC_BASIC = os.path.join(HERE, "fixtures", "proc-basic")
GOLDEN_CONFIG = os.path.join(HERE, "fixtures", "config", "golden.yaml")
GOLDEN = os.path.join(HERE, "fixtures", "golden", "proc-basic.prom")
PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

needs_prometheus = pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="prometheus not installed")
needs_promtool = pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool not installed")


# process-exporter's names break two lint rules; they stay for drop-in dashboards and
# alerts: the only complaints allowed
INHERITED_LINT = {
    'namedprocess_namegroup_thread_count non-histogram and non-summary metrics should not have "_count" suffix',
} | {f'namedprocess_scrape_{kind}errors counter metrics should have "_total" suffix'
     for kind in ("", "partial_", "procread_")}


def promtool_check(exposition: bytes) -> list:
    """promtool check metrics: its complaints but the inherited ones (it must not fail
    otherwise: exit 3 is its lint status)."""
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    output = (r.stdout + r.stderr).decode()
    problems = [line for line in output.strip().splitlines() if line not in INHERITED_LINT]
    assert r.returncode in (0, 3), output
    return problems


_NAME = re.compile(rb"^(?:# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)")


def stable_part(exposition: bytes) -> bytes:
    """The host-independent part of an exposition: procsnap's and the namedprocess
    families, without prometheus_client's process_/python_ metrics, the scrape
    duration and the backend that ran; the version label is made a placeholder."""
    keep = []
    for line in exposition.splitlines(keepends=True):
        m = _NAME.match(line)
        assert m, line
        name = m.group(1)
        if not name.startswith((b"namedprocess_", b"procsnap_")) or name in (b"procsnap_scrape_duration_seconds",
                                                                             b"procsnap_backend_info"):
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


def _set_stat(path, **moves):
    """Add to stat fields (1-based numbers as in proc(5)) of a fixture stat file."""
    with open(path, "rb") as f:
        data = f.read()
    head, _, rest = data.rpartition(b") ")
    fields = rest.split(b" ")
    for number, delta in moves.items():
        i = int(number[1:]) - 3  # fields after the comm start at number 3 (state)
        fields[i] = str(int(fields[i]) + delta).encode()
    with open(path, "wb") as f:
        f.write(head + b") " + b" ".join(fields))


def _add_keyed(path, **moves):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for key, delta in moves.items():
        for i, line in enumerate(lines):
            name, sep, value = line.partition(b":")
            if sep and name == key.encode():
                lines[i] = name + sep + b"\t" + str(int(value) + delta).encode()
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))


def _move_tree(root):
    """The changes between the golden run's two snapshots (what EXPECTED_COUNTERS says)."""
    _set_stat(f"{root}/10/stat", f14=150, f15=25, f10=100, f12=2)  # utime, stime, minflt, majflt
    _add_keyed(f"{root}/10/io", read_bytes=4096, write_bytes=1000)
    _add_keyed(f"{root}/10/status", voluntary_ctxt_switches=10, nonvoluntary_ctxt_switches=1)
    _add_keyed(f"{root}/1/io", write_bytes=2048)
    _set_stat(f"{root}/20/stat", f14=50)
    with open(f"{root}/stat", "rb") as f:  # the machine spent 10 s meanwhile (more than the groups)
        lines = f.read().split(b"\n")
    cpu = lines[0].split()
    lines[0] = b" ".join([cpu[0], str(int(cpu[1]) + 1000).encode(), *cpu[2:]])
    with open(f"{root}/stat", "wb") as f:
        f.write(b"\n".join(lines))
    shutil.rmtree(f"{root}/21")  # a login shell exits: its past stays counted
    shutil.copytree(f"{root}/22", f"{root}/23", symlinks=True)  # a new one starts
    with open(f"{root}/23/stat", "rb") as f:
        stat = f.read().replace(b"22 (", b"23 (", 1)
    with open(f"{root}/23/stat", "wb") as f:
        f.write(stat)
    with open(f"{root}/22/stat", "rb") as f:
        old = f.read().rpartition(b") ")[2].split(b" ")
    # born since the first snapshot: its whole counters count (utime 30, stime 0, faults 5/1)
    _set_stat(f"{root}/23/stat", f14=30 - int(old[11]), f15=-int(old[12]), f10=5 - int(old[7]),
              f12=1 - int(old[9]), f22=1000)
    _add_keyed(f"{root}/23/io", read_bytes=500 - _keyed(f"{root}/22/io", "read_bytes"),
               write_bytes=-_keyed(f"{root}/22/io", "write_bytes"))
    _add_keyed(f"{root}/23/status",
               voluntary_ctxt_switches=3 - _keyed(f"{root}/22/status", "voluntary_ctxt_switches"),
               nonvoluntary_ctxt_switches=1 - _keyed(f"{root}/22/status", "nonvoluntary_ctxt_switches"))


def _keyed(path, key):
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            name, _, value = line.partition(b":")
            if name == key.encode():
                return int(value)
    raise KeyError(key)


# Worked out by hand from _move_tree: group -> counter sample -> value.
EXPECTED_COUNTERS = {
    "paren": {"cpu_user": 1.5, "cpu_system": 0.25, "read": 4096, "write": 1000, "major": 2, "minor": 100,
              "voluntary": 10, "nonvoluntary": 1},
    "init-init": {"write": 2048},
    # 23 is born since the first snapshot: what it reaped (its stat's cutime 11, cstime 13,
    # cminflt 7, cmajflt 9, copied from 22) counts too
    "login-sh": {"cpu_user": 0.5 + 0.3 + 0.11, "cpu_system": 0.13, "read": 500, "major": 1 + 9, "minor": 5 + 7,
                 "voluntary": 3, "nonvoluntary": 1},
}
_SAMPLE_KEY = {
    ("cpu_seconds_total", "user"): "cpu_user", ("cpu_seconds_total", "system"): "cpu_system",
    ("read_bytes_total", None): "read", ("write_bytes_total", None): "write",
    ("major_page_faults_total", None): "major", ("minor_page_faults_total", None): "minor",
    ("context_switches_total", "voluntary"): "voluntary", ("context_switches_total", "nonvoluntary"): "nonvoluntary",
}


def two_snapshot_run(tmp_path, backend) -> bytes:
    """procsnap --once.delay on a copy of proc-basic that moves between its two snapshots."""
    root = str(tmp_path / "proc")
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    proc = subprocess.Popen(
        [PROCSNAP, "--once.delay", "3", "--path.procfs", root, "--config.path", GOLDEN_CONFIG, "--backend", backend,
         "--log.level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
    )
    try:
        lines = [proc.stderr.readline()]
        while b"first snapshot" not in lines[-1] and lines[-1] and len(lines) < 20:
            lines.append(proc.stderr.readline())
        assert b"first snapshot" in lines[-1], lines
        _move_tree(root)  # takes milliseconds; the second snapshot comes 3 s after the first
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err.decode()
    return out


def test_golden_exposition(backend, tmp_path):
    """Both backends give the golden bytes for two snapshots of a moving tree (the
    native one once it is built). The golden file is written from the python backend;
    its counters are held to the hand-worked EXPECTED_COUNTERS below."""
    assert os.sysconf("SC_CLK_TCK") == 100 and os.sysconf("SC_PAGE_SIZE") == 4096
    got = stable_part(two_snapshot_run(tmp_path, backend))
    if os.environ.get("PROCSNAP_UPDATE_GOLDEN") == "1" and backend == "python":
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "wb") as f:
            f.write(got)
    with open(GOLDEN, "rb") as f:
        want = f.read()
    assert got.decode().splitlines() == want.decode().splitlines()
    assert got == want


def test_golden_counters_are_the_hand_worked_ones():
    from prometheus_client.parser import text_string_to_metric_families

    with open(GOLDEN, "rb") as f:
        families = list(text_string_to_metric_families(f.read().decode()))
    seen = {}
    for family in families:
        if family.type != "counter" or not family.name.startswith("namedprocess_namegroup_"):
            continue
        for sample in family.samples:
            short = sample.name.removeprefix("namedprocess_namegroup_")
            label = sample.labels.get("mode") or sample.labels.get("ctxswitchtype")
            seen[(sample.labels["groupname"], _SAMPLE_KEY[(short, label)])] = sample.value
    assert seen, "no counters in the golden file"
    want = {(group, key): 0.0 for group, key in seen}
    for group, counters in EXPECTED_COUNTERS.items():
        for key, value in counters.items():
            want[(group, key)] = float(value)
    assert seen == want


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
    # two snapshots: each counts its read errors
    for line in ("procsnap_processes 13.0", 'procsnap_read_errors_total{reason="ENOENT"} 2.0',
                 'procsnap_read_errors_total{reason="malformed"} 2.0', 'procsnap_build_info{version="VERSION"} 1.0'):
        assert line in text.splitlines()


def test_once_delay_on_a_static_tree_gives_the_same_numbers():
    """Two snapshots of a tree that does not change: counters do not move, nothing is
    counted twice (the read errors are, once per snapshot)."""
    got = stable_part(run_once("--once.delay", "0.1")).decode().splitlines()
    want = stable_part(run_once()).decode().splitlines()
    doubled = {'procsnap_read_errors_total{reason="ENOENT"} 2.0', 'procsnap_read_errors_total{reason="malformed"} 2.0',
               "namedprocess_scrape_procread_errors 2.0", "namedprocess_scrape_partial_errors 2.0"}
    assert set(got) - set(want) == doubled
    assert len(got) == len(want)
    assert all(line.endswith(" 0.0") for line in got if "_total{groupname=" in line)


@needs_promtool
def test_promtool_accepts_fixture_exposition():
    assert promtool_check(run_once()) == []


@needs_promtool
def test_promtool_accepts_live_exposition():
    r = subprocess.run([PROCSNAP, "--once", "--backend", "python"], capture_output=True, timeout=60, env=clean_env())
    assert r.returncode == 0
    assert b"namedprocess_namegroup_num_procs{" in r.stdout
    assert promtool_check(r.stdout) == []


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
        wait_for(lambda: http_ok(self.procsnap_port, "/healthz"), 20, what="procsnap /healthz")

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
        wait_for(lambda: http_ok(self.prom_port, "/-/ready"), 30, what="prometheus /-/ready")

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
    # process-exporter's error counters under the names its dashboards and alerts ask for,
    # though Prometheus scrapes OpenMetrics first
    for name in ("namedprocess_scrape_errors", "namedprocess_scrape_procread_errors",
                 "namedprocess_scrape_partial_errors"):
        assert stack.query(name) and stack.query(name + "_total") == [], name
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
    assert promtool_check(body) == []
