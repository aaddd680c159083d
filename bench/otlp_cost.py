"""The cost of one OTLP collection next to one scrape, at N idle processes (issue 9).

One procsnap exporter in this process (the default config, the native reader), pushing to
an OTLP/HTTP receiver on 127.0.0.1 that accepts and discards. Alternating, ROUNDS times:
a /metrics scrape (snapshot + exposition) and an OTLP collection (snapshot, the
instruments' callbacks, protobuf encoding and the HTTP POST). Medians and CPU per call.

    python bench/otlp_cost.py [N] [ROUNDS]     -> a markdown table on stdout
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from spawn import ProcessSet  # noqa: E402

from exporter import otlp  # noqa: E402
from exporter.cli import make_exporter, parse_args  # noqa: E402
from exporter.config import load_config  # noqa: E402


class _Discard(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def timed(call) -> tuple:
    wall, cpu = time.perf_counter(), time.thread_time()
    call()
    return time.perf_counter() - wall, time.thread_time() - cpu


def main(n: int = 5000, rounds: int = 15) -> int:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    with ProcessSet.idle(n) as idle:
        args = parse_args([], environ={})
        exporter = make_exporter(args, load_config(None))
        exporter.scrape()
        pusher = otlp.Pusher(exporter, otlp.Settings(endpoint, "http/protobuf", 3600.0))
        pusher.reader.collect()  # warm: the instruments' first series
        scrape, collect = [], []
        for _ in range(rounds):
            scrape.append(timed(lambda: b"".join(exporter.exposition())))
            collect.append(timed(pusher.reader.collect))
        points = sum(1 for _ in pusher.reader.result.groups)
        pusher.shutdown()
        exporter.close()
        count = idle.count
    receiver.shutdown()
    ms = lambda values, i: statistics.median(v[i] for v in values) * 1e3  # noqa: E731
    print(f"N = {n} idle processes ({count} spawned), {points} groups, {rounds} rounds each, median:\n")
    print("| call | wall ms | CPU ms |")
    print("|---|---:|---:|")
    print(f"| /metrics scrape (snapshot + exposition) | {ms(scrape, 0):.1f} | {ms(scrape, 1):.1f} |")
    print(f"| OTLP collection (snapshot + callbacks + encoding + POST) | {ms(collect, 0):.1f} | {ms(collect, 1):.1f} |")
    print(f"| exports counted | {pusher.exports['success']} ok, {pusher.exports['failure']} failed | |")
    return 0 if pusher.exports["failure"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
