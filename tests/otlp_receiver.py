"""Real OTLP receivers for the tests, on 127.0.0.1: OTLP/HTTP (protobuf) and OTLP/gRPC.

Each decodes every ExportMetricsServiceRequest with opentelemetry-proto and keeps it;
``points()`` flattens them to one dict per data point. ``failing`` makes the receiver
answer 503 (HTTP) / UNAVAILABLE (gRPC) while set.
"""

from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


class Receiver:
    """What both receivers keep, and the flattening of it."""

    def __init__(self):
        self.requests = []  # ExportMetricsServiceRequest, in arrival order
        self.failing = False
        self.lock = threading.Lock()

    def keep(self, request) -> None:
        with self.lock:
            self.requests.append(request)

    def exports(self) -> int:
        with self.lock:
            return len(self.requests)

    def points(self, export: int = -1) -> list:
        """The data points of one export (the last by default): dicts with the metric's
        name, unit, kind ("sum", "gauge"), monotonic, temporality, attributes, value, and
        the resource's attributes and schema URL."""
        with self.lock:
            request = self.requests[export]
        out = []
        for rm in request.resource_metrics:
            resource = _attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for p in data.data_points:
                        out.append({
                            "name": m.name, "unit": m.unit, "kind": kind,
                            "monotonic": getattr(data, "is_monotonic", None),
                            "temporality": getattr(data, "aggregation_temporality", None),
                            "attributes": _attributes(p.attributes),
                            "value": p.as_double if p.WhichOneof("value") == "as_double" else p.as_int,
                            "resource": resource, "schema_url": rm.schema_url or sm.schema_url,
                            "scope": sm.scope.name, "start": p.start_time_unix_nano, "time": p.time_unix_nano,
                        })
        return out

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.exports() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


class HttpReceiver(Receiver):
    """OTLP/HTTP on 127.0.0.1 (POST /v1/metrics, protobuf, gzip or not); port 0: any."""

    def __init__(self, port: int = 0):
        super().__init__()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver.failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.keep(request)
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "HttpReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcReceiver(Receiver):
    """OTLP/gRPC on 127.0.0.1 (insecure)."""

    def __init__(self):
        import grpc

        super().__init__()
        receiver = self

        class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                if receiver.failing:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
                receiver.keep(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> "GrpcReceiver":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)
