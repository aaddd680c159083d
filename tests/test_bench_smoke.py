"""Smoke test of the benchmark harness (bench/run.py): it runs end to end on a tiny
process set and reports every contender with numeric figures. No timing assertions:
the numbers belong to `make bench`, not to tests."""

import json
import os
import random
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "bench", "run.py")
# the idle processes run `sleep LIFETIME`: a value of this run, not another benchmark's (or
# another run of this test) on the same machine
LIFETIME = str(random.SystemRandom().randrange(40_000, 90_000))
CLK_TCK = os.sysconf("SC_CLK_TCK")

sys.path.insert(0, os.path.join(ROOT, "bench"))
import run as bench_run  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, RUN, "--quick", "--sizes", "50", "--rounds", "2", "--no-strace", "--out", str(out),
         "--lifetime", LIFETIME, "--own-only"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "latest.json") as f:
        data = json.load(f)
    assert (out / "latest.md").read_text().startswith("## Benchmark")
    return data


def _must_run(key):
    """Contenders that may legitimately be skipped on this machine, and why."""
    if key.startswith("pe_") and not os.path.exists(bench_run.PE_BIN):
        return False
    if key.startswith("floor_") and not (shutil.which("cc") or shutil.which("gcc")):
        return False
    if key.startswith("procsnap_") and not os.path.exists(bench_run.PROCSNAP_BIN):
        return False
    if key == "snapshot_native":
        from exporter.reader import native_available

        return native_available()
    if "bpf" in key:  # loads with CAP_BPF + CAP_PERFMON (root, as CI runs), a kernel with BTF
        from exporter.reader import bpf_unavailable

        return os.geteuid() == 0 and bpf_unavailable() is None
    return True


def test_every_contender_reported_with_numeric_medians(results):
    size = results["sizes"]["50"]
    assert size["spawned"] == 50
    contenders = size["contenders"]
    assert set(contenders) == set(bench_run.ORDER)
    for key, c in contenders.items():
        if c.get("skipped"):
            assert not _must_run(key), f"{key} skipped: {c['skipped']}"
            continue
        for field in ("median_ms", "p95_ms"):
            assert isinstance(c[field], (int, float)) and c[field] > 0, (key, field, c[field])
        # CPU comes in clock ticks (10 ms): a scrape of 50 processes may take none, but
        # what is measured around a scrape cannot exceed what the machine's cores had
        # in that time (plus a tick at each end): more means another process was measured
        window_ms = max(c["scrape_ms"])
        assert 0 <= c["cpu_ms_per_scrape"] <= os.cpu_count() * window_ms + 2 * 1000 / CLK_TCK, (key, c)
        assert c["scrapes"] == 2
        assert isinstance(c["peak_rss_mb"], (int, float)), key
        if key.endswith(("_grouped", "_per_process", "_exporter")):
            assert c["series"] > 0, key


def test_report_names_the_machine_and_evaluates_targets(results):
    m = results["machine"]
    assert m["nproc"] >= 1 and m["kernel"] and m["python"]
    size = results["sizes"]["50"]
    assert size["targets"] and all("pass" in t for t in size["targets"])
    assert "psutil_micro" in size and "gil" in results


def test_idle_processes_are_cleaned_up(results):
    leftovers = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", LIFETIME.encode()]:
            leftovers.append(int(name))
    assert not leftovers, f"{len(leftovers)} idle benchmark processes left behind, e.g. {leftovers[:5]}"
