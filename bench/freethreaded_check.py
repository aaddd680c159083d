"""Run by freethreaded.sh on a free-threaded CPython: the reader imports without
turning the GIL back on, and threads sharing one Snapshotter (and each with its own) get
consistent snapshots; its records hash as tuples there too. Exits non-zero on any failure."""

import os
import subprocess
import sys
import threading

import exporter._reader  # noqa: F401 - importing is the first check
from exporter.snapshots import Snapshotter

assert not sys._is_gil_enabled(), "importing exporter._reader re-enabled the GIL"

children = [subprocess.Popen(["sleep", "60"]) for _ in range(50)]
try:
    shared = Snapshotter("/proc", "native")
    failures = []
    counts = []

    def work(own: bool):
        snapshotter = Snapshotter("/proc", "native") if own else shared
        try:
            for _ in range(30):
                snap = snapshotter.snapshot()
                pids = {p.pid for p in snap.processes}
                missing = [c.pid for c in children if c.pid not in pids]
                if missing or os.getpid() not in pids:
                    failures.append(f"snapshot lacks live pids {missing[:3]}")
                counts.append(len(snap.processes))
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))
        finally:
            if own:
                snapshotter.close()

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    shared.close()
finally:
    for c in children:
        c.kill()
        c.wait()
assert not failures, failures[:5]
assert len(counts) == 4 * 30, len(counts)
# records are built with PyTuple_New: they hash as tuples (3.14 caches a tuple's hash)
from exporter.reader import Reader  # noqa: E402

records = Reader("/proc", "native").read().records
assert records and all(type(r) is tuple and hash(r) == hash(tuple(list(r))) for r in records)
assert not sys._is_gil_enabled(), "the GIL was re-enabled while running"
print(f"freethreaded: OK: {len(counts)} snapshots from 4 threads (2 sharing one Snapshotter), "
      f"{min(counts)}-{max(counts)} processes each, GIL still disabled")
