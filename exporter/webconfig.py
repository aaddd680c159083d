"""exporter-toolkit's web config file (``--web.config.file``), read unchanged: TLS, basic
auth, extra response headers and a rate limit, as node_exporter and process-exporter read it.

    tls_server_config:
      cert_file: server.crt            # or cert: / key: inline PEM
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt           # or client_ca: inline PEM
      client_allowed_sans: [prometheus.example.net]
      min_version: TLS12               # TLS10 TLS11 TLS12 TLS13
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go's names, TLS <= 1.2
      prefer_server_cipher_suites: true
      curve_preferences: [CurveP256]
    http_server_config:
      http2: true                      # accepted; procsnap speaks HTTP/1.1
      headers: {X-Frame-Options: deny}
    basic_auth_users:
      alice: $2y$10$...                # bcrypt (htpasswd -nBC 10 "" | tr -d ':\\n')
    rate_limit: {interval: 1s, burst: 20}

As exporter-toolkit does: unknown keys are errors, relative file names are relative to the
config file's directory, a client CA without a client auth policy is an error, only
Go's secure cipher suite names are known, an unknown user is checked against a fixed dummy
hash (so the time a check takes does not tell whether a user exists), one bcrypt check runs
at a time and its results are cached (100 entries, keyed by a digest of user, hash and
password), and the file is read again when it (or a file it names) changes.

What Python's ``ssl`` module cannot do is refused with a line naming the field, never
silently weakened: ``client_auth_type`` RequestClientCert and RequireAnyClientCert (a
client certificate accepted unverified), and ``curve_preferences`` other than one of
CurveP256, CurveP384, CurveP521. TLS 1.3 cipher suite names are accepted and, as in Go,
change nothing (TLS 1.3 suites are not configurable).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import os
import random
import re
import ssl
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import yaml

from exporter.config import one_line, yaml_problem

log = logging.getLogger("procsnap")

# exporter-toolkit's dummy hash for unknown users: bcrypt of "fakepassword", cost 10
DUMMY_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
AUTH_CACHE_SIZE = 100  # as exporter-toolkit's cache
BCRYPT_MAX_PASSWORD = 72  # bytes: longer passwords are refused (401), as Go's bcrypt does

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() (the secure ones; exporter-toolkit knows no others) -> OpenSSL's
# names. None: a TLS 1.3 suite, which neither Go nor OpenSSL lets a config choose.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Go's default TLS <= 1.2 suites (ECDHE only, no RSA key exchange), in Go's order of preference
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"
)
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": None}

CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    # accepting a certificate without verifying it: Python's ssl has no way to
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "RequireClientCert": None,
}

# exporter-toolkit's extraHTTPHeaders: the headers a config may set, and their allowed values
HEADERS = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT = re.compile(rb"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_STR_TAG = "tag:yaml.org,2002:str"


class WebConfigError(ValueError):
    """A web config that cannot be used; the message is one line naming the file, line and field."""


@dataclass
class WebConfig:
    """One parsed and checked web config file."""

    path: str
    tls: bool = False
    ssl_context: Optional[ssl.SSLContext] = None
    client_auth: str = "NoClientCert"
    allowed_sans: Optional[frozenset] = None  # None: no SAN check
    users: dict = field(default_factory=dict)  # name -> bcrypt hash (bytes)
    headers: tuple = ()  # ((name, value), ...)
    rate_limit: Optional[tuple] = None  # (interval seconds, burst)
    http2: bool = True
    files: tuple = ()  # the files it names (certificates, keys, CAs): watched for changes
    warnings: list = field(default_factory=list)  # what is set but has no effect, logged at load


# -- parsing ---------------------------------------------------------------------------


class _Fields:
    """The keys of one YAML mapping, checked as yaml.v2's UnmarshalStrict does: unknown
    and repeated keys are errors."""

    def __init__(self, node, where: str, known, fail):
        self.values = {}
        if node is None or _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            fail(node, where, "expected a mapping")
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if known is not None and name not in known:
                fail(key, _join(where, str(name)), f"unknown field (expected one of {', '.join(sorted(known))})")
            if name in self.values:
                fail(key, _join(where, str(name)), "given twice")
            self.values[name] = value

    def get(self, name):
        value = self.values.get(name)
        return None if value is None or _is_null(value) else value


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def parse_web_config(content: bytes, path: str) -> WebConfig:
    """Parse and check a web config (certificates and keys are loaded); WebConfigError
    with one line naming the field if it cannot be used."""

    def fail(node, where, message):
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        raise WebConfigError(one_line(f"{path}{line}: {where + ': ' if where else ''}{message}"))

    try:  # yaml.v2 reads the first document only
        root = next(yaml.compose_all(content, Loader=yaml.SafeLoader), None)
    except yaml.YAMLError as e:
        raise WebConfigError(yaml_problem(e, path)) from None
    base = os.path.dirname(os.path.abspath(path))
    top = _Fields(root, "", ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"), fail)
    config = WebConfig(path)
    _parse_tls(config, _Fields(top.get("tls_server_config"), "tls_server_config", _TLS_KEYS, fail), base, fail)
    _parse_http(config, _Fields(top.get("http_server_config"), "http_server_config", ("http2", "headers"), fail), fail)
    users = _Fields(top.get("basic_auth_users"), "basic_auth_users", None, fail)
    for name, node in users.values.items():
        where = f"basic_auth_users.{name}"
        hashed = _string(node, where, fail).encode()
        m = _BCRYPT.fullmatch(hashed)
        if not m or not 4 <= int(m.group(1)) <= 31:
            fail(node, where, "not a bcrypt hash ($2y$, $2b$ or $2a$, a cost of 04 to 31, then 53 characters: "
                              "what htpasswd -nBC 10 makes)")
        config.users[str(name)] = hashed
    rate = _Fields(top.get("rate_limit"), "rate_limit", ("interval", "burst"), fail)
    interval = _duration(rate.get("interval"), "rate_limit.interval", fail)
    burst = _integer(rate.get("burst"), "rate_limit.burst", fail)
    if interval > 0:  # 0 (or none): no rate limit, as exporter-toolkit
        config.rate_limit = (interval, burst)
    return config


_TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
             "cipher_suites", "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites",
             "client_allowed_sans")


def _parse_tls(config: WebConfig, tls: _Fields, base: str, fail) -> None:
    where = "tls_server_config"
    text = {k: _string(tls.get(k), f"{where}.{k}", fail) for k in
            ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file")}
    if not any(text.values()):  # exporter-toolkit's TLSConfig.IsEnabled: no TLS, the rest unused
        ignored = [k for k in ("cipher_suites", "curve_preferences", "min_version", "max_version",
                               "client_allowed_sans", "prefer_server_cipher_suites") if k in tls.values]
        if ignored:
            config.warnings.append(f"{where}.{ignored[0]} is set but TLS is off: there is no cert_file or cert")
        return
    if not text["cert_file"] and not text["cert"]:
        fail(tls.values.get("cert_file") or tls.values.get("cert"), where, "missing one of cert or cert_file")
    if not text["key_file"] and not text["key"]:
        fail(tls.values.get("key_file") or tls.values.get("key"), where, "missing one of key or key_file")
    files = []
    for k in ("cert_file", "key_file", "client_ca_file"):
        if text[k]:
            text[k] = os.path.join(base, text[k])  # an absolute name stays as it is
            files.append(text[k])
    config.tls, config.files = True, tuple(files)

    auth = text["client_auth_type"]
    if auth not in CLIENT_AUTH:
        fail(tls.get("client_auth_type"), f"{where}.client_auth_type",
             f"invalid ClientAuth: {auth} (NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)")
    if CLIENT_AUTH[auth] is None:
        fail(tls.get("client_auth_type"), f"{where}.client_auth_type",
             f"{auth} accepts a client certificate without verifying it, which procsnap (Python's ssl) cannot do; "
             "use RequireAndVerifyClientCert with client_ca_file")
    has_ca = bool(text["client_ca_file"] or text["client_ca"])
    if has_ca and CLIENT_AUTH[auth] == ssl.CERT_NONE:
        fail(tls.get("client_ca_file") or tls.get("client_ca"), where,
             "client CA's have been configured without a Client Auth Policy")
    config.client_auth = auth or "NoClientCert"

    versions = {}
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        node = tls.get(k)
        name = _string(node, f"{where}.{k}", fail) if node is not None else default
        if name not in TLS_VERSIONS:
            fail(node, f"{where}.{k}", f"unknown TLS version: {name} (TLS10, TLS11, TLS12 or TLS13)")
        versions[k] = TLS_VERSIONS[name]
    if versions["min_version"] > versions["max_version"]:
        fail(tls.get("min_version"), f"{where}.min_version", "above max_version: no TLS version would be left")

    names = _list(tls.get("cipher_suites"), f"{where}.cipher_suites", fail)
    ciphers = []
    for i, item in enumerate(names):
        name = _string(item, f"{where}.cipher_suites[{i}]", fail)
        if name not in CIPHER_SUITES:
            fail(item, f"{where}.cipher_suites[{i}]", f"unknown cipher: {name} (Go's names, as tls.CipherSuites() "
                                                        "lists them: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ...)")
        if CIPHER_SUITES[name]:
            ciphers.append(CIPHER_SUITES[name])
    if names and not ciphers:  # only TLS 1.3 names: as in Go, no suite is left for TLS <= 1.2
        if versions["max_version"] < ssl.TLSVersion.TLSv1_3:
            fail(tls.get("cipher_suites"), f"{where}.cipher_suites", "only TLS 1.3 suites, but max_version is below TLS13")
        versions["min_version"] = ssl.TLSVersion.TLSv1_3
    curves = []
    for i, item in enumerate(_list(tls.get("curve_preferences"), f"{where}.curve_preferences", fail)):
        name = _string(item, f"{where}.curve_preferences[{i}]", fail)
        if name not in CURVES:
            fail(item, f"{where}.curve_preferences[{i}]", f"unknown curve: {name} ({', '.join(CURVES)})")
        curves.append(name)
    if curves and (len(curves) > 1 or CURVES[curves[0]] is None):
        fail(tls.get("curve_preferences"), f"{where}.curve_preferences",
             "procsnap (Python's ssl) can only pin one curve, CurveP256, CurveP384 or CurveP521; "
             "leave it out for OpenSSL's defaults (X25519, P-256, P-384, P-521)")
    prefer = tls.get("prefer_server_cipher_suites")
    prefer = True if "prefer_server_cipher_suites" not in tls.values else _boolean(
        prefer, f"{where}.prefer_server_cipher_suites", fail)
    sans = tls.values.get("client_allowed_sans")
    if sans is not None and not _is_null(sans):
        config.allowed_sans = frozenset(
            _san(_string(item, f"{where}.client_allowed_sans[{i}]", fail))
            for i, item in enumerate(_list(sans, f"{where}.client_allowed_sans", fail)))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # Python deprecates TLS 1.0/1.1; a config that names them gets them
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = versions["min_version"], versions["max_version"]
    # OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 signatures) above security level 0: a config that
    # asks for them gets them, as it would from Go
    legacy = versions["min_version"] < ssl.TLSVersion.TLSv1_2
    cipher_string = (":".join(ciphers) if ciphers else DEFAULT_CIPHERS) + (":@SECLEVEL=0" if legacy else "")
    try:
        ctx.set_ciphers(cipher_string)
    except ssl.SSLError as e:
        fail(tls.get("cipher_suites"), f"{where}.cipher_suites", f"OpenSSL refuses {cipher_string}: {e}")
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if curves:
        ctx.set_ecdh_curve(CURVES[curves[0]])
    ctx.set_alpn_protocols(["http/1.1"])  # no HTTP/2: clients that offer h2 settle on HTTP/1.1

    for k in ("cert_file", "key_file", "client_ca_file"):
        if text[k]:
            try:
                with open(text[k], "rb"):
                    pass
            except OSError as e:
                fail(tls.get(k), f"{where}.{k}", f"cannot read {text[k]}: {e.strerror or e}")
    try:
        with _pem_file(text["cert"], "cert") as inline_cert, _pem_file(text["key"], "key") as inline_key:
            ctx.load_cert_chain(text["cert_file"] or inline_cert, text["key_file"] or inline_key)
    except (OSError, ssl.SSLError) as e:
        fail(tls.get("cert_file") or tls.get("cert"), where,
             f"cannot load the certificate and key ({text['cert_file'] or 'cert'}, {text['key_file'] or 'key'}): {e}")
    ctx.verify_mode = CLIENT_AUTH[auth]
    if ctx.verify_mode != ssl.CERT_NONE:
        try:
            if text["client_ca_file"]:
                ctx.load_verify_locations(cafile=text["client_ca_file"])
            elif text["client_ca"]:
                ctx.load_verify_locations(cadata=text["client_ca"])
            else:  # Go verifies against the system's roots then
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ValueError) as e:
            k = "client_ca_file" if text["client_ca_file"] else "client_ca"
            detail = e.strerror if isinstance(e, OSError) and e.strerror else e
            fail(tls.get(k), f"{where}.{k}", f"cannot load the client CAs: {detail}")
    config.ssl_context = ctx


def _parse_http(config: WebConfig, http: _Fields, fail) -> None:
    if "http2" in http.values:
        config.http2 = _boolean(http.get("http2"), "http_server_config.http2", fail)
    headers = _Fields(http.get("headers"), "http_server_config.headers", None, fail)
    out = []
    for name, node in headers.values.items():
        where = f"http_server_config.headers.{name}"
        if name not in HEADERS:
            fail(node, where, f'HTTP header "{name}" can not be configured (only {", ".join(HEADERS)})')
        value = _string(node, where, fail)
        allowed = HEADERS[name]
        if allowed and value not in allowed:
            fail(node, where, f"invalid value for {name}. Expected one of: {', '.join(allowed)}, but got: {value!r}")
        if value:  # unset if blank
            out.append((name, value))
    config.headers = tuple(out)


def _string(node, where, fail) -> str:
    """A string field as yaml.v2 fills it: any scalar is its text, a null is ""."""
    if node is None or _is_null(node):
        return ""
    if not isinstance(node, yaml.ScalarNode):
        fail(node, where, "expected a string")
    return node.value


def _list(node, where, fail) -> list:
    if node is None or _is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        fail(node, where, "expected a list")
    return node.value


def _boolean(node, where, fail) -> bool:
    if node is None or _is_null(node):
        return False
    if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL_TAG:
        fail(node, where, f"expected true or false, not {getattr(node, 'value', '?')!r}")
    return yaml.safe_load(node.value)


def _integer(node, where, fail) -> int:
    if node is None or _is_null(node):
        return 0
    if not isinstance(node, yaml.ScalarNode) or node.tag != _INT_TAG:
        fail(node, where, f"expected a whole number, not {getattr(node, 'value', '?')!r}")
    value = yaml.safe_load(node.value)
    if not -(2**63) <= value < 2**63:
        fail(node, where, "out of range")
    return value


def _duration(node, where, fail) -> float:
    """time.Duration as yaml.v2 reads it: a Go duration string ("1s", "500ms") or a whole
    number of nanoseconds. Seconds."""
    if node is None or _is_null(node):
        return 0.0
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
        return _integer(node, where, fail) / 1e9
    from exporter.cli import go_duration_ns

    try:
        return go_duration_ns(_string(node, where, fail)) / 1e9
    except ValueError as e:
        fail(node, where, str(e))


def _san(value: str) -> str:
    """A SAN as Go prints it: IP addresses in their canonical text."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


@contextmanager
def _pem_file(text: str, name: str):
    """An inline PEM as a file name ssl can load, in memory (memfd) where Linux allows,
    else in a private temporary file; gone on exit. None for no text."""
    if not text:
        yield None
        return
    data = text.encode()
    try:
        fd = os.memfd_create(f"procsnap-{name}", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = None
    if fd is not None and os.path.exists(f"/proc/self/fd/{fd}"):
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    if fd is not None:
        os.close(fd)
    with tempfile.TemporaryDirectory(prefix="procsnap-") as tmp:
        path = os.path.join(tmp, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        yield path


def load_web_config(path: str) -> WebConfig:
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise WebConfigError(f"{path}: cannot read web config: {e.strerror or e}") from None
    return parse_web_config(content, path)


# -- at run time -----------------------------------------------------------------------


class _TokenBucket:
    """golang.org/x/time/rate's Limiter.Allow: one token every ``interval`` seconds, at
    most ``burst`` kept (full at start); a burst of 0 allows nothing."""

    def __init__(self, interval: float, burst: int):
        self.interval, self.burst = interval, burst
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def allow(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) / self.interval)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class _AuthCache:
    """exporter-toolkit's bcrypt result cache: at most 100 entries, a tenth of them (and
    at least one) dropped at random when full. Keys are digests: no password is kept."""

    def __init__(self, size: int = AUTH_CACHE_SIZE):
        self.size = size
        self.entries: dict = {}
        self.lock = threading.Lock()

    def get(self, key) -> Optional[bool]:
        with self.lock:
            return self.entries.get(key)

    def set(self, key, value: bool) -> None:
        with self.lock:
            if len(self.entries) >= self.size:
                for victim in random.sample(list(self.entries), max(len(self.entries) // 10, 1)):
                    del self.entries[victim]
            self.entries[key] = value


def _signature(paths) -> tuple:
    """What changes when a file is rewritten, replaced or re-linked (as Kubernetes swaps
    a mounted secret's ..data link)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError as e:
            out.append(e.errno)
    return tuple(out)


class WebSecurity:
    """The web config in force: read at start (WebConfigError if it cannot be used), read
    again when the file or a file it names changes (checked at each new connection and
    request) and on :meth:`reload`. A changed file that cannot be used leaves the old
    config in force: one error line is logged per change, and ``on_reload(False)`` is
    called (``on_reload(True)`` after a good one)."""

    def __init__(self, path: str, on_reload: Optional[Callable[[bool], None]] = None):
        self.path = path
        self.on_reload = on_reload
        self._lock = threading.Lock()
        self._bcrypt = threading.Lock()  # one bcrypt check at a time: it is CPU-bound (~70 ms at cost 10)
        self._cache = _AuthCache()
        self._failed_signature = None
        self._signature = _signature((path,))
        self.config = load_web_config(path)
        self._signature = _signature((path,) + self.config.files)
        self._limiter = self._bucket(self.config, None)

    # -- the config ------------------------------------------------------------------

    def current(self) -> WebConfig:
        """The config in force, read again first if a file changed."""
        signature = _signature((self.path,) + self.config.files)
        if signature != self._signature:
            with self._lock:
                if signature != self._signature and signature != self._failed_signature:
                    self._load(signature, "changed")
        return self.config

    def reload(self) -> Optional[str]:
        """Read the file again (SIGHUP, /-/reload): None if it is in force, else the reason
        (one line) it is not, the old config staying."""
        with self._lock:
            return self._load(_signature((self.path,) + self.config.files), "reload", quiet=False)

    def _load(self, signature, why: str, quiet: bool = True) -> Optional[str]:
        try:
            config = load_web_config(self.path)
            if config.tls != self.config.tls:
                raise WebConfigError(f"{self.path}: tls_server_config: TLS cannot be turned "
                                     f"{'on' if config.tls else 'off'} without a restart")
        except WebConfigError as e:
            self._failed_signature = signature
            log.error("web config reload failed, keeping the old one: %s", e)
            if self.on_reload:
                self.on_reload(False)
            return str(e)
        self._limiter = self._bucket(config, self.config)
        self.config = config
        self._signature = _signature((self.path,) + config.files)
        self._failed_signature = None
        log.info("web config %s from %s", "re-read" if why == "changed" else "reloaded", self.path)
        if self.on_reload:
            self.on_reload(True)
        return None

    def _bucket(self, config: WebConfig, old: Optional[WebConfig]):
        if config.rate_limit is None:
            return None
        if old is not None and old.rate_limit == config.rate_limit and self._limiter is not None:
            return self._limiter  # unchanged: keep its tokens
        return _TokenBucket(*config.rate_limit)

    # -- per request -----------------------------------------------------------------

    def allow(self) -> bool:
        """The rate limit (if any) lets one more request through."""
        limiter = self._limiter
        return limiter is None or limiter.allow()

    def authorized(self, config: WebConfig, authorization: Optional[str]) -> bool:
        """Basic auth as exporter-toolkit checks it (True when the config has no users)."""
        if not config.users:
            return True
        credentials = _basic_auth(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = config.users.get(user)
        known = hashed is not None
        if not known:  # the same work for a user that does not exist
            hashed = DUMMY_HASH
        key = hashlib.sha256(b"\0".join((user.encode("utf-8", "surrogateescape"), hashed, password))).digest()
        ok = self._cache.get(key)
        if ok is None:
            ok = self._check(password, hashed)
            self._cache.set(key, ok)
        return ok and known

    def _check(self, password: bytes, hashed: bytes) -> bool:
        import bcrypt

        if len(password) > BCRYPT_MAX_PASSWORD:
            return False  # Go's bcrypt refuses it too (ErrPasswordTooLong): a 401
        with self._bcrypt:
            try:
                return bcrypt.checkpw(password, hashed)
            except ValueError:
                return False

    @staticmethod
    def peer_allowed(config: WebConfig, sock) -> bool:
        """client_allowed_sans: the verified client certificate names one of them."""
        if config.allowed_sans is None:
            return True
        cert = sock.getpeercert() or {}
        for kind, value in cert.get("subjectAltName", ()):
            if kind == "IP Address":
                value = _san(value.strip())
            if value in config.allowed_sans:
                return True
        return False


def _basic_auth(header: Optional[str]):
    """(user, password bytes) of an Authorization: Basic header, as Go's Request.BasicAuth
    reads it; None if it is not one."""
    if not header or len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password
