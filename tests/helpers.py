"""Helpers the tests share: ports, plain HTTP GETs, child processes, and the reference
(slow) rendering of the group families through prometheus_client's own objects."""

import http.client
import os
import signal
import socket
import subprocess
import time


def clean_env(**extra):
    """The environment without PROCSNAP_* variables (they would set flags), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCSNAP_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path="/metrics", timeout=10):
    """(status, body bytes) of GET http://127.0.0.1:port/path."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_ok(port, path) -> bool:
    """GET http://127.0.0.1:port/path answers 200 (False while nothing listens)."""
    try:
        return http_get(port, path, timeout=2)[0] == 200
    except OSError:
        return False


def stop_processes(procs):
    """SIGTERM each (last started first), wait up to 10 s each, then SIGKILL."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.stdout:
            p.stdout.close()


def group_families(groups, keep_empty=False, threads=True, smaps=True, extra_labels=()) -> list:
    """The namedprocess_namegroup_* families of [GroupStats] as prometheus_client objects:
    the reference the fast renderer (exporter.exposition) is held byte-equal to."""
    from exporter.families import empty_family, family_specs

    families = []
    for spec in family_specs(threads, smaps):
        family = empty_family(spec, extra_labels)
        for g in groups:
            for item in (spec.per_item[1](g) if spec.per_item else (None,)):
                for label_value, get in spec.parts:
                    value = get(item if spec.per_item else g)
                    labels = [g.name, *g.labels] + ([item[0]] if spec.per_item else [])
                    if value is not None:
                        family.add_metric(labels + ([] if spec.label is None else [label_value]), float(value))
        if family.samples or keep_empty:
            families.append(family)
    return families


def proc_state(pid):
    """The state letter of /proc/PID/stat (b"S", b"Z", ...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return None


def asleep(pid, timeout=20) -> None:
    """Wait until every thread of pid sleeps (S) and has not run for 50 ms (the same
    schedstat): a thread waiting a moment for the GIL sleeps too, then runs on."""
    def sample() -> list:
        out = []
        for tid in sorted(os.listdir(f"/proc/{pid}/task")):
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                out.append((tid, state, f.read()))
        return out

    deadline = time.monotonic() + timeout
    before = None
    while True:
        now = sample()
        if now == before and all(state == b"S" for _, state, _ in now):
            return
        assert time.monotonic() < deadline, "the threads did not go back to sleep"
        before = now
        time.sleep(0.05)


def settle(pids, state=b"S", timeout=20):
    """Wait (at most timeout seconds in all) until each pid is in this state."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while proc_state(pid) != state:
            assert time.monotonic() < deadline, f"{pid} did not reach state {state!r}"
            time.sleep(0.01)
