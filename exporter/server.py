"""HTTP: the metrics path, a landing page, /healthz. A WSGI app on a threading server.

The exposition itself is prometheus_client's: the encoder is chosen from the Accept
header (Prometheus text 0.0.4, or OpenMetrics when asked for), gzip when the client
accepts it, ``?name[]=`` restricts the families. Each request to the metrics path runs
one :meth:`Exporter.scrape` (single-flight: concurrent requests share a snapshot).
"""

from __future__ import annotations

import html
import logging
import socket
import socketserver
import threading
import zlib
from socketserver import ThreadingMixIn
from typing import Optional
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger("procsnap")

DEFAULT_PORT = 9256
# Level 1: a tenth of the CPU of level 9 (prometheus_client's) on an exposition, 1.3x the size;
# metrics text compresses ~9x either way.
GZIP_LEVEL = 1


def make_app(exporter, telemetry_path: str = "/metrics"):
    """The WSGI application for ``exporter`` (an :class:`exporter.app.Exporter`)."""

    landing = (
        "<!DOCTYPE html>\n<html><head><title>procsnap</title></head><body>\n"
        "<h1>procsnap</h1>\n<p>Linux process exporter for Prometheus, version "
        f"{html.escape(exporter.version)}.</p>\n"
        f'<p><a href="{html.escape(telemetry_path, quote=True)}">Metrics</a></p>\n'
        "</body></html>\n"
    ).encode()

    def app(environ, start_response):
        body = _route(environ, start_response)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else body

    def _route(environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        known = path in (telemetry_path, "/", "/healthz")
        if known and method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        if path == telemetry_path:
            return _metrics(exporter, environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"404 page not found\n"]

    return app


def _metrics(exporter, environ, start_response):
    _, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
    openmetrics = content_type.startswith("application/openmetrics-text")
    params = parse_qs(environ.get("QUERY_STRING", ""))
    names = set(params["name[]"]) if "name[]" in params else None
    try:
        chunks = exporter.exposition(openmetrics, names)
    except Exception as e:  # the snapshot failed: say so, Prometheus marks the target down
        log.error("scrape failed: %s", e)
        start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"scrape failed: {e}\n".encode("utf-8", "replace")]
    headers = [("Content-Type", content_type)]
    if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
        chunks = [gz.compress(chunk) for chunk in chunks] + [gz.flush()]
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(sum(map(len, chunks)))))
    start_response("200 OK", headers)
    return chunks


# -- the server ------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind asks socket.getfqdn(), a DNS lookup that can hang.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port
        self.setup_environ()


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        # "[::]:port" and ":port" listen on IPv4 too (dual stack), like Go's ":port".
        try:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:
            pass
        super().server_bind()


def parse_listen_address(address: str) -> tuple[str, int]:
    """"host:port", ":port" (all interfaces), "[v6]:port" -> (host, port); host "" means
    all interfaces. Raises ValueError with a one-line reason."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"listen address {address!r} has no port (want host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"listen address {address!r}: write an IPv6 host in brackets, [::1]:9256")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen address {address!r}: port {port} out of range")
    return host, port


class MetricsServer:
    """A threading HTTP server for the app; ``start()`` serves in a daemon thread."""

    def __init__(self, app, address: str):
        host, port = parse_listen_address(address)
        self.httpd = self._bind(host, port)
        self.httpd.set_app(app)
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def _bind(host: str, port: int):
        if host in ("", "::") and socket.has_ipv6:
            try:
                return _ThreadingWSGIServer6(("::", port), _QuietHandler)
            except OSError:
                if host == "::":
                    raise
        if host == "":
            return _ThreadingWSGIServer(("0.0.0.0", port), _QuietHandler)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        cls = _ThreadingWSGIServer6 if family == socket.AF_INET6 else _ThreadingWSGIServer
        return cls(sockaddr[:2], _QuietHandler)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="procsnap-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()
