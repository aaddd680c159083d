"""Compatibility with process-exporter: the same config file, read by both, gives the same
group names and the same num_procs/num_threads for processes this test starts. Both
exporters run for real on the live /proc, on 127.0.0.1."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from helpers import free_port, http_get, stop_processes

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
PROCESS_EXPORTER = shutil.which("prometheus-process-exporter") or "/usr/bin/prometheus-process-exporter"

pytestmark = pytest.mark.skipif(not os.access(PROCESS_EXPORTER, os.X_OK), reason="process-exporter not installed")

THREADED = r"""
import sys, threading, time
for _ in range(int(sys.argv[1]) - 1):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


def fetch(port):
    try:
        status, body = http_get(port)
    except OSError:
        return None
    return body.decode() if status == 200 else None


def metadata(body):
    """{family name: (type, help, label names, other label values)} of the
    namedprocess_namegroup_ families; other label values are (label, value) pairs of
    labels other than groupname (mode="user", memtype="resident" ...)."""
    return {
        f.name: (
            f.type,
            f.documentation,
            frozenset(k for s in f.samples for k in s.labels),
            frozenset((k, v) for s in f.samples for k, v in s.labels.items() if k != "groupname"),
        )
        for f in text_string_to_metric_families(body)
        if f.name.startswith("namedprocess_namegroup_")
    }


def scrape(port):
    """{metric family name: {groupname: value}} for the families we compare, or None."""
    body = fetch(port)
    if body is None:
        return None
    out = {"namedprocess_namegroup_num_procs": {}, "namedprocess_namegroup_num_threads": {}}
    for family in text_string_to_metric_families(body):
        if family.name in out:
            out[family.name] = {s.labels["groupname"]: s.value for s in family.samples}
    return out


@pytest.fixture
def workload(tmp_path):
    tag = f"{os.getpid()}"
    procs = []

    def spawn(argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p

    # group 1: two sleeps, a static name
    for _ in range(2):
        spawn(["sleep", f"3601.{tag}"])
    # group 2: a {{.Comm}} + capture template: three sleeps
    for _ in range(3):
        spawn(["sleep", f"3602.{tag}"])
    # group 3: two multi-threaded processes (4 and 3 threads) -> num_threads 7
    for n in (4, 3):
        p = spawn([sys.executable, "-c", THREADED, str(n), f"compat-threads-{tag}"], stdout=subprocess.PIPE)
        assert p.stdout.readline() == b"ready\n"
    config = tmp_path / "config.yaml"
    config.write_text(
        "process_names:\n"
        "  - name: compat-static\n"
        f"    cmdline: ['^sleep 3601\\.{tag}$']\n"
        '  - name: "{{.Comm}}-{{.Matches.which}}"\n'
        f"    cmdline: ['^sleep (?P<which>3602)\\.{tag}$']\n"
        "  - name: compat-threads\n"
        f"    cmdline: ['compat-threads-{tag}$']\n"
    )
    expected = {
        "namedprocess_namegroup_num_procs": {"compat-static": 2.0, "sleep-3602": 3.0, "compat-threads": 2.0},
        "namedprocess_namegroup_num_threads": {"compat-static": 2.0, "sleep-3602": 3.0, "compat-threads": 7.0},
    }
    try:
        yield str(config), expected, spawn
    finally:
        stop_processes(procs)


def test_same_groups_and_counts_as_process_exporter(workload, tmp_path):
    config, expected, spawn = workload
    pe_port, ps_port = free_port(), free_port()
    spawn([PROCESS_EXPORTER, "-config.path", config, "-web.listen-address", f"127.0.0.1:{pe_port}"],
          stdout=subprocess.DEVNULL, stderr=open(tmp_path / "process-exporter.log", "wb"))
    spawn([PROCSNAP, "--config.path", config, "--web.listen-address", f"127.0.0.1:{ps_port}"],
          stdout=subprocess.DEVNULL, stderr=open(tmp_path / "procsnap.log", "wb"),
          env={k: v for k, v in os.environ.items() if not k.startswith("PROCSNAP_")})

    deadline = time.monotonic() + 30
    theirs = ours = None
    while time.monotonic() < deadline:
        theirs, ours = scrape(pe_port), scrape(ps_port)
        if theirs is not None and theirs == ours == expected:
            break
        time.sleep(0.5)
    assert theirs == expected, f"process-exporter: {theirs}"
    assert ours == theirs
    # every family procsnap reports, process-exporter reports with the same type, help
    # text and label names (it has more: -gather-smaps memtypes); the six per-thread-name
    # families come from the multi-threaded compat-threads group, threads_wchan from the
    # sleeping processes
    ours_meta, theirs_meta = metadata(fetch(ps_port)), metadata(fetch(pe_port))
    assert len(ours_meta) == 13 + 6 + 1
    assert {name: theirs_meta.get(name, ())[:3] for name in ours_meta} == {n: m[:3] for n, m in ours_meta.items()}
    for name, (_, _, _, values) in ours_meta.items():
        if name != "namedprocess_namegroup_threads_wchan":  # its wchans move as the threads run
            assert values <= theirs_meta[name][3], name
    assert ("memtype", "swapped") in ours_meta["namedprocess_namegroup_memory_bytes"][3]


def test_same_command_line_works_for_both(workload, tmp_path):
    """process-exporter's single-dash flags start procsnap unchanged."""
    config, expected, spawn = workload
    port = free_port()
    argv = ["-config.path", config, "-web.listen-address", f"127.0.0.1:{port}", "-procfs", "/proc", "-children=true"]
    spawn([PROCSNAP, *argv], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "procsnap.log", "wb"),
          env={k: v for k, v in os.environ.items() if not k.startswith("PROCSNAP_")})
    deadline = time.monotonic() + 20
    got = None
    while time.monotonic() < deadline:
        got = scrape(port)
        if got == expected:
            break
        time.sleep(0.25)
    assert got == expected
