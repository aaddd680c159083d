"""HTTP: the metrics path, a landing page, /healthz, /-/reload. A WSGI app on a threading
HTTP/1.1 server of our own.

The exposition itself is prometheus_client's: the encoder is chosen from the Accept
header (Prometheus text 0.0.4, or OpenMetrics when asked for), gzip when the client
accepts it, ``?name[]=`` restricts the families. Each request to the metrics path runs
one :meth:`Exporter.scrape` (single-flight: concurrent requests share a snapshot); with
``X-Prometheus-Scrape-Timeout-Seconds`` the snapshot runs aside and the request answers
before that deadline, with the last complete snapshot if the new one is late.

The server accepts plain sockets in one thread and gives each connection a thread of its
own, where the TLS handshake (``--web.config.file``) happens: a client that never sends a
ClientHello holds only its own thread. Every connection has deadlines: the handshake and
the request headers within ``header_timeout``, the next request on a kept-alive connection
within ``idle_timeout``, a response written within ``write_timeout``. At most
``max_connections`` connections are served at once (kept-alive idle ones are closed to make
room; others wait in the listen backlog of 4096, as process-exporter's). When ``accept()``
fails for want of file descriptors the server backs off (5 ms doubling to 1 s, as Go's
does), logs once, and serves again when descriptors are free.
"""

from __future__ import annotations

import errno
import html
import io
import logging
import selectors
import socket
import sys
import threading
import time
import zlib
from email.utils import formatdate
from typing import Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger("procsnap")

DEFAULT_PORT = 9256
# Level 1: a tenth of the CPU of level 9 (prometheus_client's) on an exposition, 1.3x the size;
# metrics text compresses ~9x either way.
GZIP_LEVEL = 1

LISTEN_BACKLOG = 4096  # as process-exporter (Go's net.Listen takes somaxconn)
MAX_CONNECTIONS = 1024  # served at once; more wait in the backlog
HEADER_TIMEOUT = 10.0  # seconds from accept (or the first byte of a kept-alive request) to the end of the headers
IDLE_TIMEOUT = 120.0  # a kept-alive connection waits this long for its next request (> a 1-minute scrape interval)
WRITE_TIMEOUT = 60.0  # to write one response
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 64 * 1024
ACCEPT_BACKOFF = (0.005, 1.0)  # first and longest wait after accept() failed for want of resources
DEFAULT_MAX_REQUESTS = 40  # parallel scrapes, as node_exporter's --web.max-requests
SHUTDOWN_GRACE = 30.0  # seconds SIGTERM waits for the scrapes in flight

_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large", 429: "Too Many Requests",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}


def make_app(exporter, telemetry_path: str = "/metrics", max_requests: int = 0,
             reload: Optional[Callable[[], Optional[str]]] = None):
    """The WSGI application for ``exporter`` (an :class:`exporter.app.Exporter`).

    ``max_requests``: parallel requests to the metrics path (more get a 503); 0 for no
    limit. ``reload``: what ``POST /-/reload`` calls (``--web.enable-lifecycle``), returning
    None or why the reload failed; None answers 403, as Prometheus does."""

    landing = (
        "<!DOCTYPE html>\n<html><head><title>procsnap</title></head><body>\n"
        "<h1>procsnap</h1>\n<p>Linux process exporter for Prometheus, version "
        f"{html.escape(exporter.version)}.</p>\n"
        f'<p><a href="{html.escape(telemetry_path, quote=True)}">Metrics</a></p>\n'
        "</body></html>\n"
    ).encode()
    inflight = threading.BoundedSemaphore(max_requests) if max_requests > 0 else None
    background = _Background(exporter)
    if getattr(exporter, "scrape_timeouts", 0) is None:
        exporter.scrape_timeouts = 0  # served over HTTP: procsnap_scrape_timeouts_total is reported

    def app(environ, start_response):
        body = _route(environ, start_response)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else body

    def _route(environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/-/reload":
            return _lifecycle(method, start_response, reload)
        known = path in (telemetry_path, "/", "/healthz")
        if known and method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        if path == telemetry_path:
            if inflight is not None and not inflight.acquire(blocking=False):
                start_response("503 Service Unavailable", [_TEXT])
                return [f"Limit of concurrent requests reached ({max_requests}), try again later.\n".encode()]
            try:
                return _metrics(exporter, environ, start_response, background)
            finally:
                if inflight is not None:
                    inflight.release()
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        if path == "/healthz":
            start_response("200 OK", [_TEXT])
            return [b"ok\n"]
        start_response("404 Not Found", [_TEXT])
        return [b"404 page not found\n"]

    app.drain = background.join  # MetricsServer.shutdown waits for a snapshot running aside
    return app


def _lifecycle(method, start_response, reload):
    """/-/reload as Prometheus answers it."""
    if method not in ("POST", "PUT"):
        start_response("405 Method Not Allowed", [("Allow", "POST, PUT"), _TEXT])
        return [b"Only POST or PUT requests allowed"]
    if reload is None:
        start_response("403 Forbidden", [_TEXT])
        return [b"Lifecycle API is not enabled."]
    error = reload()
    if error:
        start_response("500 Internal Server Error", [_TEXT])
        return [f"failed to reload config: {error}\n".encode("utf-8", "replace")]
    start_response("200 OK", [_TEXT])
    return []


def scrape_timeout(value: Optional[str]) -> Optional[float]:
    """Seconds from an X-Prometheus-Scrape-Timeout-Seconds value; None if absent or not a
    positive number."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds < 1e6 else None


def _metrics(exporter, environ, start_response, background):
    _, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
    openmetrics = content_type.startswith("application/openmetrics-text")
    params = parse_qs(environ.get("QUERY_STRING", ""))
    names = set(params["name[]"]) if "name[]" in params else None
    timeout = scrape_timeout(environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"))
    try:
        if timeout is None:
            chunks = exporter.exposition(openmetrics, names)
        else:
            # answer before the scraper gives up: leave it time to receive the answer
            if not background.wait(timeout - min(0.5, timeout / 4)):
                if exporter.last is None:
                    start_response("503 Service Unavailable", [_TEXT])
                    return [b"no snapshot finished within the scrape timeout yet\n"]
                background.count_timeout(timeout)
            chunks = exporter.exposition(openmetrics, names, scrape=False)
    except Exception as e:  # the snapshot failed: say so, Prometheus marks the target down
        log.error("scrape failed: %s", e)
        start_response("500 Internal Server Error", [_TEXT])
        return [f"scrape failed: {e}\n".encode("utf-8", "replace")]
    headers = [("Content-Type", content_type)]
    if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING")):
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
        chunks = [gz.compress(chunk) for chunk in chunks] + [gz.flush()]
        headers.append(("Content-Encoding", "gzip"))
    headers.append(("Content-Length", str(sum(map(len, chunks)))))
    start_response("200 OK", headers)
    return chunks


class _Flight:
    __slots__ = ("done", "error")

    def __init__(self):
        self.done = threading.Event()
        self.error: Optional[BaseException] = None


class _Background:
    """Snapshots for requests with a deadline: ``exporter.scrape()`` runs in a thread of its
    own (one at a time; requests arriving meanwhile wait for the same one), so a request
    can stop waiting at its deadline while the snapshot goes on and lands for the next."""

    def __init__(self, exporter):
        self.exporter = exporter
        self._lock = threading.Lock()
        self._flight: Optional[_Flight] = None
        self._thread: Optional[threading.Thread] = None
        self._late = False  # the last deadline request was answered with an old snapshot

    def wait(self, timeout: float) -> bool:
        """True once a snapshot started no earlier than the one in flight is done (its
        error raised), False if ``timeout`` seconds passed first."""
        with self._lock:
            flight = self._flight
            if flight is None or flight.done.is_set():
                flight = self._flight = _Flight()
                thread = threading.Thread(target=self._run, args=(flight,), name="procsnap-scrape", daemon=True)
                try:
                    thread.start()
                    self._thread = thread
                except RuntimeError:  # no thread to be had: take the snapshot here
                    self._run(flight)
        if not flight.done.wait(max(timeout, 0.0)):
            return False
        if flight.error is not None:
            raise flight.error
        if self._late:
            self._late = False
            log.info("snapshots finish within the scrape timeout again")
        return True

    def _run(self, flight: _Flight) -> None:
        try:
            self.exporter.scrape()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting requests
            flight.error = e
        finally:
            flight.done.set()

    def count_timeout(self, timeout: float) -> None:
        with self._lock:
            self.exporter.scrape_timeouts = (self.exporter.scrape_timeouts or 0) + 1
            first, self._late = not self._late, True
        (log.warning if first else log.debug)(
            "the snapshot did not finish within the scrape timeout (%gs): answered with the last complete one "
            "(counted in procsnap_scrape_timeouts_total)", timeout)

    def join(self, timeout: Optional[float] = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


# -- the server ------------------------------------------------------------------------


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


def _listen(family, sockaddr, backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            try:  # "[::]:port" and ":port" listen on IPv4 too (dual stack), like Go's ":port"
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except OSError:
                pass
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Request:
    __slots__ = ("method", "target", "version", "headers", "body", "keep_alive")

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Connection:
    """One client connection: its socket (an SSLSocket after the handshake), what it has
    sent beyond the request being served, and whether it is serving a request now."""

    __slots__ = ("sock", "addr", "buf", "busy", "served", "lock", "closed", "tls")

    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.buf = bytearray()
        self.busy = False
        self.served = 0  # requests answered
        self.lock = threading.Lock()
        self.closed = False
        self.tls = False

    def abort(self) -> None:
        """Wake a thread blocked reading this connection (from another thread): the
        connection reads as closed. The socket itself is closed by its own thread."""
        with self.lock:
            if not self.closed:
                try:
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # under TLS too: no close_notify
                except OSError:
                    pass

    def close(self) -> None:
        with self.lock:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 0.001))
        return self.sock.recv(65536)

    def read_head(self, first_byte_timeout: Optional[float], header_timeout: float, deadline: Optional[float]):
        """The bytes of the next request's head (up to its blank line), or None if the
        client closed (or stayed idle past ``first_byte_timeout``) before sending one.
        The whole head must arrive by ``deadline`` (or ``header_timeout`` after its first
        byte); socket.timeout past it."""
        buf = self.buf
        while True:
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # empty lines before a request: ignored
                del buf[:2 if buf[:2] == b"\r\n" else 1]
            end = _head_end(buf)
            if end > MAX_HEADER_BYTES or (end < 0 and len(buf) > MAX_HEADER_BYTES):
                raise _BadRequest(431, "request headers too large")
            if end >= 0:
                head = bytes(buf[:end])
                del buf[:end]
                return head
            if not buf and deadline is None:  # between requests: wait for the next one
                try:
                    data = self.recv(first_byte_timeout or header_timeout)
                except socket.timeout:
                    return None
                deadline = time.monotonic() + header_timeout
            else:
                if deadline is None:
                    deadline = time.monotonic() + header_timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout("request headers not received in time")
                data = self.recv(remaining)
            if not data:
                if buf:
                    raise ConnectionError("connection closed inside the request headers")
                return None
            buf += data

    def read_body(self, length: int, deadline: float) -> bytes:
        buf = self.buf
        while len(buf) < length:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("request body not received in time")
            data = self.recv(remaining)
            if not data:
                raise ConnectionError("connection closed inside the request body")
            buf += data
        body = bytes(buf[:length])
        del buf[:length]
        return body


def _head_end(buf) -> int:
    """The index just past the blank line ending a request head in buf, or -1."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _parse_head(head: bytes) -> _Request:
    lines = head.decode("latin-1").split("\n")
    request_line = lines[0].rstrip("\r")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN:
        raise _BadRequest(400, f"malformed request line {request_line[:100]!r}")
    req = _Request()
    req.method, req.target, req.version = parts
    if req.version not in ("HTTP/1.1", "HTTP/1.0"):
        if req.version.startswith("HTTP/"):
            raise _BadRequest(505, f"unsupported HTTP version {req.version[:20]!r}")
        raise _BadRequest(400, f"malformed request line {request_line[:100]!r}")
    headers = []
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            raise _BadRequest(400, "obsolete header line folding")
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise _BadRequest(400, f"malformed header line {line[:100]!r}")
        headers.append((name.lower(), value.strip(" \t")))
        if len(headers) > MAX_HEADERS:
            raise _BadRequest(431, "too many request headers")
    req.headers = headers
    connection = {t.strip().lower() for v in (v for k, v in headers if k == "connection") for t in v.split(",")}
    req.keep_alive = req.version == "HTTP/1.1" and "close" not in connection
    req.body = b""
    return req


class MetricsServer:
    """A threading HTTP/1.1 server for a WSGI app; ``start()`` serves in a daemon thread.

    ``security``: a :class:`exporter.webconfig.WebSecurity` (TLS, basic auth, headers, rate
    limit), or None for plain HTTP."""

    def __init__(self, app, address: str, security=None, max_connections: int = MAX_CONNECTIONS,
                 header_timeout: float = HEADER_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 write_timeout: float = WRITE_TIMEOUT, backlog: int = LISTEN_BACKLOG):
        host, port = parse_listen_address(address)
        self.app = app
        self.security = security
        self.max_connections = max_connections
        self.header_timeout, self.idle_timeout, self.write_timeout = header_timeout, idle_timeout, write_timeout
        self.socket = self._bind(host, port, backlog)
        self.server_address = self.socket.getsockname()
        self.address_family = self.socket.family
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._stopped = threading.Event()  # interrupts the accept back-off
        self._cond = threading.Condition()
        self._conns: set = set()
        self._thread: Optional[threading.Thread] = None
        self._accept_failing = False

    @staticmethod
    def _bind(host: str, port: int, backlog: int) -> socket.socket:
        if host in ("", "::") and socket.has_ipv6:
            try:
                return _listen(socket.AF_INET6, ("::", port), backlog)
            except OSError:
                if host == "::":
                    raise
        if host == "":
            return _listen(socket.AF_INET, ("0.0.0.0", port), backlog)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        return _listen(family, sockaddr[:2], backlog)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="procsnap-http", daemon=True)
        self._thread.start()

    # -- accepting -------------------------------------------------------------------

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        delay = 0.0
        try:
            while not self._stopping:
                with self._cond:
                    while len(self._conns) >= self.max_connections and not self._stopping:
                        self._close_idle()  # kept-alive connections give way to new ones
                        self._cond.wait(0.5)
                if self._stopping:
                    break
                selector.select()
                if self._stopping:
                    break
                try:
                    sock, addr = self.socket.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR):
                        continue  # that client's problem
                    delay = min(max(delay * 2, ACCEPT_BACKOFF[0]), ACCEPT_BACKOFF[1])
                    self._accept_failed(e)
                    self._stopped.wait(delay)
                    continue
                if not self._start_connection(sock, addr):
                    delay = min(max(delay * 2, ACCEPT_BACKOFF[0]), ACCEPT_BACKOFF[1])
                    self._stopped.wait(delay)
                    continue
                delay = 0.0
                if self._accept_failing:
                    self._accept_failing = False
                    log.info("accepting connections again")
        finally:
            selector.close()

    def _accept_failed(self, e: OSError) -> None:
        if self._accept_failing:
            return
        self._accept_failing = True
        if e.errno in (errno.EMFILE, errno.ENFILE):
            log.error("cannot accept connections: %s (RLIMIT_NOFILE %s); retrying, serving again once descriptors "
                      "are free", e.strerror, _nofile())
        else:
            log.error("cannot accept connections: %s; retrying", e.strerror or e)

    def _start_connection(self, sock, addr) -> bool:
        conn = _Connection(sock, addr)
        with self._cond:
            self._conns.add(conn)
        try:
            threading.Thread(target=self._handle, args=(conn,), name="procsnap-conn", daemon=True).start()
            return True
        except RuntimeError as e:  # can't start new thread
            with self._cond:
                self._conns.discard(conn)
            conn.close()
            self._accept_failed(OSError(errno.EAGAIN, f"cannot start a thread for a connection ({e})"))
            return False

    def _close_idle(self) -> None:
        for conn in list(self._conns):
            if conn.served and not conn.busy:
                conn.abort()

    # -- one connection --------------------------------------------------------------

    def _handle(self, conn: _Connection) -> None:
        try:
            self._converse(conn)
        except _BadRequest as e:
            log.debug("%s: bad request: %s", _peer(conn.addr), e)
            self._send_error(conn, e.status, f"{e}\n")
        except (OSError, ValueError) as e:  # timeouts, resets, TLS failures
            log.debug("%s: connection closed: %s", _peer(conn.addr), e)
        except Exception:  # noqa: BLE001 - a bug: never let it take the server down
            log.exception("error serving %s", _peer(conn.addr))
        finally:
            conn.close()
            with self._cond:
                self._conns.discard(conn)
                self._cond.notify_all()

    def _converse(self, conn: _Connection) -> None:
        deadline = time.monotonic() + self.header_timeout
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        security = self.security
        if security is not None:
            config = security.current()
            if config.tls:
                conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                tls_sock = config.ssl_context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
                with conn.lock:
                    conn.sock, conn.tls = tls_sock, True
                if self._stopping:
                    return
                tls_sock.do_handshake()  # within the socket's timeout, as a whole
                if not security.peer_allowed(config, tls_sock):
                    log.debug("%s: client certificate names none of client_allowed_sans", _peer(conn.addr))
                    return
        first = True
        while not self._stopping:
            head = conn.read_head(None if first else self.idle_timeout, self.header_timeout,
                                  deadline if first else None)
            if head is None:
                return
            conn.busy = True
            try:
                request = _parse_head(head)
                body_deadline = time.monotonic() + self.header_timeout
                if not self._read_body(conn, request, body_deadline):
                    request.keep_alive = False
                keep_alive = self._respond(conn, request)
                conn.served += 1
                if not keep_alive or self._stopping:
                    return
            finally:
                conn.busy = False
            first = False

    def _read_body(self, conn, request: _Request, deadline: float) -> bool:
        """Read (and keep) a small body; False if the connection cannot be reused after it."""
        if request.header("transfer-encoding") is not None:
            return False  # not read: none of our paths takes a body
        length_text = request.header("content-length")
        if length_text is None:
            return True
        if not length_text.isdigit():
            raise _BadRequest(400, f"bad Content-Length {length_text[:40]!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        request.body = conn.read_body(length, deadline)
        return True

    def _respond(self, conn: _Connection, request: _Request) -> bool:
        """Answer one request; whether the connection may serve another."""
        extra = []
        security = self.security
        if security is not None:
            config = security.current()
            extra = list(config.headers)
            if not security.allow():
                return self._send(conn, request, 429, [_TEXT] + extra, [b"Too Many Requests\n"])
            if not security.authorized(config, request.header("authorization")):
                return self._send(conn, request, 401, [("WWW-Authenticate", "Basic"), _TEXT] + extra,
                                  [b"Unauthorized\n"])
        environ = self._environ(conn, request)
        response = {}

        def start_response(status, headers, exc_info=None):
            response["status"], response["headers"] = status, headers
            return lambda data: None  # the legacy write(): our app never calls it

        try:
            body = self.app(environ, start_response)
            body = body if isinstance(body, list) else list(body)
        except Exception:  # noqa: BLE001 - a bug in a handler: a 500, the server goes on
            log.exception("error answering %s %s", request.method, environ.get("PATH_INFO"))
            return self._send(conn, request, 500, [_TEXT] + extra, [b"internal server error\n"])
        status = response.get("status", "500 Internal Server Error")
        code = int(status.split(" ", 1)[0])
        log.debug("%s %s %s %d", _peer(conn.addr), request.method, request.target[:200], code)
        return self._send(conn, request, status, list(response.get("headers", ())) + extra, body)

    def _environ(self, conn: _Connection, request: _Request) -> dict:
        target = request.target
        if not target.startswith("/"):
            if target.startswith(("http://", "https://")):  # absolute-form
                parts = urlsplit(target)
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            else:
                raise _BadRequest(400, f"bad request target {target[:100]!r}")
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(self.server_address[0]),
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": request.version,
            "REMOTE_ADDR": str(conn.addr[0]) if conn.addr else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if conn.tls else "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in request.headers:
            if "_" in name:  # would pass for another header's name (HTTP_X_Y): dropped
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _send(self, conn: _Connection, request: Optional[_Request], status, headers, body) -> bool:
        if isinstance(status, int):
            status = f"{status} {_REASONS.get(status, '')}".rstrip()
        keep_alive = request is not None and request.keep_alive and not self._stopping
        names = {name.lower() for name, _ in headers}
        lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers]
        if "date" not in names:
            lines.append(f"Date: {formatdate(usegmt=True)}")
        if "content-length" not in names and not (request is not None and request.method == "HEAD"):
            lines.append(f"Content-Length: {sum(map(len, body))}")
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        conn.sock.settimeout(self.write_timeout)
        pending, size = [head], len(head)
        for chunk in body:
            pending.append(chunk)
            size += len(chunk)
            if size >= 256 * 1024:
                conn.sock.sendall(b"".join(pending))
                pending, size = [], 0
        if pending:
            conn.sock.sendall(b"".join(pending))
        return keep_alive

    def _send_error(self, conn: _Connection, status: int, message: str) -> None:
        try:
            self._send(conn, None, status, [_TEXT], [message.encode("utf-8", "replace")])
        except (OSError, ValueError):
            pass

    # -- stopping --------------------------------------------------------------------

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, close connections that wait for a request, let the requests in
        flight (and a snapshot running for them) finish within ``grace`` seconds."""
        self._stopping = True
        self._stopped.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)
        self.socket.close()
        end = time.monotonic() + grace
        with self._cond:
            for conn in list(self._conns):
                if not conn.busy:
                    conn.abort()
            while self._conns and time.monotonic() < end:
                self._cond.wait(min(0.5, max(end - time.monotonic(), 0.0)))
                for conn in list(self._conns):
                    if not conn.busy:
                        conn.abort()
        drain = getattr(self.app, "drain", None)
        if drain is not None:
            drain(max(end - time.monotonic(), 0.0))
        self._wake_r.close()
        self._wake_w.close()


def _peer(addr) -> str:
    if not addr:
        return "?"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _nofile() -> str:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"{soft}/{hard}"

