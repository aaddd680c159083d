"""Benchmark worker: procsnap's snapshot API alone, in its own process.

Run in a subprocess (so its CPU, peak RSS and syscalls are its own, not the harness's):

    snapworker.py serve BACKEND [PROCFS]
        one ``Snapshotter(PROCFS, BACKEND).snapshot()`` per stdin line, one JSON line out:
        {"wall_ns", "cpu_ns", "procs"}. Prints {"ready": true} (or {"error": ...}) first.

    snapworker.py gil BACKEND SECONDS WINDOWS [PROCFS]
        the GIL proof: throughput of a pure-Python count loop alone, then while another
        thread calls the reader's read() back to back; alternated WINDOWS times; one JSON
        object out. Also the reads' own throughput alone vs shared (the other side of the GIL).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _snapshotter(backend: str, procfs: str):
    from exporter.snapshots import Snapshotter

    return Snapshotter(procfs, backend)


def serve(backend: str, procfs: str) -> int:
    try:
        snapshotter = _snapshotter(backend, procfs)
    except Exception as e:  # noqa: BLE001 - reported to the harness, which skips the contender
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        c0 = time.process_time_ns()
        t0 = time.perf_counter_ns()
        snap = snapshotter.snapshot()
        t1 = time.perf_counter_ns()
        c1 = time.process_time_ns()
        print(json.dumps({"wall_ns": t1 - t0, "cpu_ns": c1 - c0, "procs": len(snap.processes)}), flush=True)
    snapshotter.close()
    return 0


def _schedstat() -> tuple:
    """(ns on CPU, ns runnable but waiting for a CPU) of the calling thread."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            on_cpu, waiting, _slices = (int(x) for x in f.read().split())
        return on_cpu, waiting
    except (OSError, ValueError):
        return 0, 0


def _count_for(seconds: float) -> dict:
    """Pure-Python work: iterations of a count loop per second, over `seconds`.

    Also how the thread spent the window (schedstat): on a CPU, runnable but waiting for
    a CPU (other load on the machine), or blocked -- which for this loop means waiting for
    the GIL."""
    n = 0
    end = time.perf_counter() + seconds
    s0 = _schedstat()
    t0 = time.perf_counter()
    while True:
        for _ in range(1000):
            n += 1
        if time.perf_counter() >= end:
            break
    wall = time.perf_counter() - t0
    s1 = _schedstat()
    on_cpu = (s1[0] - s0[0]) / 1e9
    runqueue = (s1[1] - s0[1]) / 1e9
    return {
        "rate": n / wall,
        "on_cpu": on_cpu / wall,
        "cpu_wait": runqueue / wall,
        "blocked": max(0.0, wall - on_cpu - runqueue) / wall,
    }


def gil(backend: str, seconds: float, windows: int, procfs: str) -> int:
    # The reader's read() is the call that claims to release the GIL (the tracker's
    # Python work after it holds the GIL, as any Python does).
    try:
        from exporter.reader import Reader

        reader = Reader(procfs, backend)
        procs = len(reader.read().records)  # warm: files opened
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 0
    solo, shared, snaps_per_window, snaps_alone = [], [], [], []

    def snapshots_for(window: float) -> float:
        n = 0
        end = time.perf_counter() + window
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            reader.read()
            n += 1
        return n / (time.perf_counter() - t0) * window

    for _ in range(max(1, windows)):
        snaps_alone.append(snapshots_for(seconds))
        alone = []
        counter = threading.Thread(target=lambda: alone.append(_count_for(seconds)))
        counter.start()
        counter.join()
        solo.append(alone[0])
        stop = threading.Event()
        count = [0]

        def snapper():
            while not stop.is_set():
                reader.read()
                count[0] += 1

        # The counter runs in a worker thread, the snapshots in another, as the brief asks.
        result = []
        counter = threading.Thread(target=lambda: result.append(_count_for(seconds)))
        snap_thread = threading.Thread(target=snapper)
        snap_thread.start()
        counter.start()
        counter.join()
        stop.set()
        snap_thread.join(timeout=600)
        shared.append(result[0])
        snaps_per_window.append(count[0])
    reader.close()
    ratios = [s["rate"] / a["rate"] for s, a in zip(shared, solo)]
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print(json.dumps({
        "backend": backend,
        "procs": procs,
        "window_seconds": seconds,
        "solo_rate": med(solo, "rate"),
        "shared_rate": med(shared, "rate"),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        # how the count thread spent its windows (fractions of wall): blocked = GIL wait,
        # cpu_wait = runnable but no CPU free (other load on the machine)
        "solo": {k: med(solo, k) for k in ("on_cpu", "cpu_wait", "blocked")},
        "shared": {k: med(shared, k) for k in ("on_cpu", "cpu_wait", "blocked")},
        # the throughput ratio with CPU starvation by other load factored out: the share of
        # the window the thread was not blocked on the GIL, relative to alone
        "ratio_gil_only": (1 - med(shared, "blocked")) / max(1e-9, 1 - med(solo, "blocked")),
        "snapshots_per_window": snaps_per_window,
        # the other side: snapshots per window alone vs while the count thread runs. A
        # backend that holds the GIL starves one side or the other.
        "snapshots_per_window_alone": snaps_alone,
        "snapshot_ratio": statistics.median(snaps_per_window) / max(1e-9, statistics.median(snaps_alone)),
    }), flush=True)
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "serve":
        sys.exit(serve(args[1], args[2] if len(args) > 2 else "/proc"))
    if len(args) >= 4 and args[0] == "gil":
        sys.exit(gil(args[1], float(args[2]), int(args[3]), args[4] if len(args) > 4 else "/proc"))
    sys.exit(__doc__)
