"""Churn soak (bounded, about a minute): thousands of short-lived processes started and
reaped while scrapes run back to back. Zero failed scrapes, nothing logged at error level,
group counters never decrease, and procsnap's memory comes back within a bound after."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from prometheus_client.parser import text_string_to_metric_families

from helpers import clean_env, free_port, http_get, stop_processes

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
CHURN_SECONDS = 40
MAX_PROCESSES = 20_000
# forks and reaps short-lived children, 16 at a time, until the time or the count is up
CHURN = r"""
import os, sys, time
deadline, limit = time.monotonic() + float(sys.argv[1]), int(sys.argv[2])
started, running = 0, set()
while (time.monotonic() < deadline and started < limit) or running:
    while len(running) < 16 and time.monotonic() < deadline and started < limit:
        pid = os.fork()
        if pid == 0:
            os.execv("/bin/true", ["true"])
        running.add(pid)
        started += 1
    pid, _ = os.wait()
    running.discard(pid)
print(started, flush=True)
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def counters(body: bytes) -> dict:
    """The group counters. Not the per-thread-name ones: as process-exporter's, those of a
    thread name absent for a scrape start again from 0."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        if (family.type == "counter" and family.name.startswith("namedprocess_namegroup_")
                and not family.name.startswith("namedprocess_namegroup_thread_")):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> bytes:
    status, body = http_get(port, timeout=30)
    assert status == 200, body[:200]
    return body


def test_churn_soak(tmp_path):
    port = free_port()
    log = tmp_path / "procsnap.log"
    ps = subprocess.Popen([PROCSNAP, "--web.listen-address", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                          stderr=open(log, "wb"), env=clean_env())
    churn = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(port)
                break
            except OSError:
                assert time.monotonic() < deadline and ps.poll() is None, log.read_text()
                time.sleep(0.2)
        for _ in range(3):  # warm: what start-up and the first snapshots allocate
            scrape(port)
        rss_before = rss_kib(ps.pid)

        churn = subprocess.Popen([sys.executable, "-c", CHURN, str(CHURN_SECONDS), str(MAX_PROCESSES)],
                                 stdout=subprocess.PIPE, text=True)
        last, scrapes, decreases = {}, 0, []
        end = time.monotonic() + CHURN_SECONDS + 30  # a bound, never reached unless churn hangs
        while churn.poll() is None and time.monotonic() < end:
            now = counters(scrape(port))
            scrapes += 1
            decreases += [(k, last[k], v) for k, v in now.items() if k in last and v < last[k]]
            last.update(now)
        started = int(churn.stdout.readline() or 0)
        assert churn.wait(30) == 0
        for _ in range(3):  # the churned processes are gone from the snapshots
            scrape(port)
        rss_after = rss_kib(ps.pid)
    finally:
        stop_processes([p for p in (churn, ps) if p is not None])
    assert started >= 1000 and scrapes >= 10, (started, scrapes)
    assert decreases == []
    assert rss_after <= rss_before + 64 * 1024, (rss_before, rss_after)  # KiB: a leak, not noise
    text = log.read_text()
    assert " ERROR " not in text and "Traceback" not in text, text[-2000:]
