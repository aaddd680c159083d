"""Short-lived children count: a parent that forks and reaps hundreds of CPU-burning
children between two scrapes, live. Its group's CPU grows by what they used (procsnap's
default), and by about nothing with --no-count-reaped-children (process-exporter's way)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import clean_env, free_port, http_get, stop_processes

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
CHILDREN = 500
PARENT = r"""
import os, resource, sys, time

def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def cpu(usage):
    return usage.ru_utime + usage.ru_stime

print("ready", flush=True)
for line in sys.stdin:
    children, me = cpu(resource.getrusage(resource.RUSAGE_CHILDREN)), cpu(resource.getrusage(resource.RUSAGE_SELF))
    for _ in range(int(sys.argv[2])):
        pid = os.fork()
        if pid == 0:
            burn(0.02)
            os._exit(0)
        os.waitpid(pid, 0)
    print(cpu(resource.getrusage(resource.RUSAGE_CHILDREN)) - children,
          cpu(resource.getrusage(resource.RUSAGE_SELF)) - me, flush=True)
"""


def group_cpu(port: int, group: str):
    status, body = http_get(port)
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "namedprocess_namegroup_cpu_seconds":
            found = [s.value for s in family.samples if s.labels["groupname"] == group]
            if found:
                return sum(found)
    return None


def children_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[13]) + int(fields[14])  # cutime + cstime


def test_reaped_children_are_counted_in_the_reapers_group(tmp_path):
    tag = f"reaper-{uuid.uuid4().hex[:12]}"
    config = tmp_path / "c.yaml"
    config.write_text(f"process_names:\n  - name: reaper\n    cmdline: ['{tag}']\n")
    on, off = free_port(), free_port()
    procs = [subprocess.Popen([PROCSNAP, "--config.path", str(config), "--web.listen-address", f"127.0.0.1:{port}",
                               *flags], stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{port}.log", "wb"),
                              env=clean_env())
             for port, flags in ((on, ()), (off, ("--no-count-reaped-children",)))]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, tag, str(CHILDREN)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    procs.append(parent)
    try:
        assert parent.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 60
        before = {}
        while len(before) < 2:
            assert time.monotonic() < deadline, "procsnap did not show the parent's group"
            for port in (on, off):
                try:
                    value = group_cpu(port, "reaper")
                except OSError:
                    value = None
                if value is not None:
                    before[port] = value
            time.sleep(0.2)
        ticks = children_ticks(parent.pid)
        parent.stdin.write("go\n")
        parent.stdin.flush()
        children, own = map(float, parent.stdout.readline().split())
        grown_ticks = (children_ticks(parent.pid) - ticks) / os.sysconf("SC_CLK_TCK")
        assert children >= CHILDREN * 0.02 * 0.9 and abs(grown_ticks - children) <= 0.05 * children + 0.05
        grown = {port: group_cpu(port, "reaper") - before[port] for port in (on, off)}
        # the reaped children's CPU (and the parent's own) within 10 %
        assert abs(grown[on] - (children + own)) <= 0.1 * (children + own), (grown, children, own)
        # as process-exporter counts: the parent's own CPU only
        assert grown[off] <= own + 0.1 * children, (grown, children, own)
        status, body = http_get(on)
        assert re.search(rb"procsnap_reaped_cpu_scaled_total 0\.0", body)
    finally:
        parent.stdin.close()
        stop_processes(procs)
