"""--web.config.file (exporter-toolkit's format): TLS with client certificates, TLS versions,
ciphers and curves, basic auth with bcrypt, headers, rate limit; a bad file refuses to
start, a changed one is read again. The TLS handshake and slow clients hold only their own
connection. Certificates are made here (a test CA, in tmp dirs); servers bind 127.0.0.1."""

import base64
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings

import bcrypt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import PROC_BASIC, pinned_facts
from exporter import webconfig
from exporter.app import Exporter
from exporter.config import load_config
from exporter.grouper import Grouper
from exporter.reader import Reader
from exporter.server import MetricsServer, make_app
from exporter.tracker import Tracker
from exporter.webconfig import DUMMY_HASH, WebConfigError, WebSecurity, load_web_config
from helpers import clean_env, free_port

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
NUM_PROCS = b'namedprocess_namegroup_num_procs{groupname="init"} 1.0'


# -- a test CA and its certificates --------------------------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer_name, issuer_key, sans=(), ca=False, client=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A CA, a server certificate for 127.0.0.1, client certificates: one the CA signed
    (SAN DNS:prometheus), one with another SAN, one from a CA the server does not trust."""

    def __init__(self, root):
        self.root = root
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("procsnap test CA", ca_key, _name("procsnap test CA"), ca_key, ca=True)
        self.ca = self._write("ca.crt", ca)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _cert("127.0.0.1", server_key, ca.subject, ca_key,
                       sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        self.server = (self._write("server.crt", server), self._write_key("server.key", server_key))
        self.client = self._client("client", ca, ca_key, [x509.DNSName("prometheus")])
        self.client_other_san = self._client("other", ca, ca_key, [x509.DNSName("someone-else"),
                                                                  x509.IPAddress(ipaddress.ip_address("::1"))])
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        rogue = _cert("rogue CA", rogue_key, _name("rogue CA"), rogue_key, ca=True)
        self.rogue_client = self._client("rogue", rogue, rogue_key, [x509.DNSName("prometheus")])

    def _client(self, name, ca, ca_key, sans):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, key, ca.subject, ca_key, sans=sans, client=True)
        return self._write(f"{name}.crt", cert), self._write_key(f"{name}.key", key)

    def _write(self, name, cert):
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def _write_key(self, name, key):
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(path, 0o600)
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(str(tmp_path_factory.mktemp("pki")))


def hash_2y(password: bytes) -> str:
    """A bcrypt hash as htpasswd writes it ($2y$), at the lowest cost (fast tests)."""
    return bcrypt.hashpw(password, bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


# -- in-process servers ----------------------------------------------------------------


def _exporter(reader=None):
    facts = pinned_facts(PROC_BASIC)
    tracker = Tracker(reader or Reader(PROC_BASIC, "python", facts.page_size), facts)
    return Exporter(tracker, Grouper(load_config(None), facts.clock_ticks, facts.boot_time))


@pytest.fixture
def serve(tmp_path):
    """serve(web config text, **MetricsServer options) -> (port, WebSecurity)."""
    servers = []

    def start(config_text=None, exporter=None, app=None, **options):
        security = None
        if config_text is not None:
            path = tmp_path / f"web{len(servers)}.yml"
            path.write_text(config_text)
            security = WebSecurity(str(path))
        server = MetricsServer(app or make_app(exporter or _exporter()), "127.0.0.1:0", security=security, **options)
        server.start()
        servers.append(server)
        return server.port, security

    yield start
    for server in servers:
        server.shutdown(grace=5)


def tls_config(pki, extra=""):
    return f"tls_server_config:\n  cert_file: {pki.server[0]}\n  key_file: {pki.server[1]}\n{extra}"


def mtls_config(pki, extra=""):
    return tls_config(pki, f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n{extra}")


def https_get(port, pki, path="/metrics", cert=None, **kw):
    return requests.get(f"https://127.0.0.1:{port}{path}", verify=pki.ca, cert=cert, timeout=10, **kw)


# -- TLS -------------------------------------------------------------------------------


def test_client_certificate_signed_by_the_ca_scrapes_and_none_fails(serve, pki):
    port, _ = serve(mtls_config(pki))
    r = https_get(port, pki, cert=pki.client)
    assert r.status_code == 200 and NUM_PROCS in r.content
    with pytest.raises(requests.exceptions.RequestException):  # no client certificate
        https_get(port, pki)
    with pytest.raises(requests.exceptions.RequestException):  # signed by a CA the server does not trust
        https_get(port, pki, cert=pki.rogue_client)
    with pytest.raises(requests.exceptions.RequestException):  # plain HTTP to the TLS port
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert https_get(port, pki, cert=pki.client).status_code == 200  # still serving


def test_client_allowed_sans(serve, pki):
    port, _ = serve(mtls_config(pki, "  client_allowed_sans: [one, prometheus, two]\n"))
    assert https_get(port, pki, cert=pki.client).status_code == 200
    with pytest.raises(requests.exceptions.RequestException):
        https_get(port, pki, cert=pki.client_other_san)
    # an IP SAN is matched as Go prints it
    port, _ = serve(mtls_config(pki, "  client_allowed_sans: ['0:0:0:0:0:0:0:1']\n"))
    assert https_get(port, pki, cert=pki.client_other_san).status_code == 200


def test_verify_client_cert_if_given(serve, pki):
    port, _ = serve(tls_config(pki, f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca}\n"))
    assert https_get(port, pki).status_code == 200
    assert https_get(port, pki, cert=pki.client).status_code == 200
    with pytest.raises(requests.exceptions.RequestException):
        https_get(port, pki, cert=pki.rogue_client)


def test_silent_tcp_clients_do_not_delay_an_https_scrape(serve, pki):
    port, _ = serve(tls_config(pki))
    silent = []
    try:
        for _ in range(20):  # connect and never send a ClientHello
            silent.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # the scrape is answered while they wait (timeout: a hang-catcher, not a speed check)
        r = https_get(port, pki)
        assert r.status_code == 200 and NUM_PROCS in r.content
    finally:
        for s in silent:
            s.close()


def test_slow_tls_handshake_is_cut_at_the_header_timeout(serve, pki):
    port, _ = serve(tls_config(pki), header_timeout=1.0)
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64))  # a ClientHello's start
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        closed, sent = False, 0
        for byte in hello:  # a byte every 0.3 s: each wait is short, the whole is not
            try:
                s.sendall(bytes([byte]))
                sent += 1
                s.settimeout(0.3)
                closed = s.recv(4096) == b""
            except socket.timeout:
                continue
            except OSError:
                closed = True
            if closed:
                break
        assert closed and sent < 20, sent  # cut about 1 s in, not when the client was done


def _tls_client(minimum, maximum, ciphers=None, curve=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = minimum, maximum
    ctx.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    if curve:
        ctx.set_ecdh_curve(curve)
    return ctx


def _handshake(port, ctx):
    """The negotiated (version, cipher), or the SSLError."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                return s.version(), s.cipher()[0]
        except (ssl.SSLError, ConnectionError) as e:
            return e


def test_tls11_refused_when_min_version_is_tls12(serve, pki):
    tls11 = _tls_client(ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1)
    legacy, _ = serve(tls_config(pki, "  min_version: TLS11\n"))
    if not isinstance(_handshake(legacy, tls11), tuple):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all (nothing to refuse)")
    port, _ = serve(tls_config(pki, "  min_version: TLS12\n"))
    outcome = _handshake(port, tls11)
    assert isinstance(outcome, ssl.SSLError) and "PROTOCOL_VERSION" in outcome.reason.upper(), outcome
    assert _handshake(port, _tls_client(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))[0] == "TLSv1.2"
    assert _handshake(port, _tls_client(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3))[0] == "TLSv1.3"
    # max_version: TLS12 refuses a TLS 1.3-only client
    port, _ = serve(tls_config(pki, "  max_version: TLS12\n"))
    assert isinstance(_handshake(port, _tls_client(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)), ssl.SSLError)


def test_cipher_suites_and_curve_preferences(serve, pki):
    port, _ = serve(tls_config(pki, "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"))
    tls12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    assert _handshake(port, _tls_client(*tls12)) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384")
    assert isinstance(_handshake(port, _tls_client(*tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")), ssl.SSLError)
    port, _ = serve(tls_config(pki, "  curve_preferences: [CurveP384]\n"))
    any_version = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert isinstance(_handshake(port, _tls_client(*any_version, curve="secp384r1")), tuple)
    assert isinstance(_handshake(port, _tls_client(*any_version, curve="prime256v1")), ssl.SSLError)


def test_inline_certificate_and_key(serve, pki):
    def indent(path):
        with open(path) as f:
            return "".join("    " + line for line in f)

    text = (f"tls_server_config:\n  cert: |\n{indent(pki.server[0])}  key: |\n{indent(pki.server[1])}"
            f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n{indent(pki.ca)}")
    port, _ = serve(text)
    assert https_get(port, pki, cert=pki.client).status_code == 200
    with pytest.raises(requests.exceptions.RequestException):
        https_get(port, pki)


# -- basic auth, headers, rate limit -----------------------------------------------------


def test_basic_auth_right_wrong_unknown_and_long_passwords(serve, pki):
    long_password = "p" * 100
    port, _ = serve(tls_config(pki, f"basic_auth_users:\n  alice: {hash_2y(b'secret')}\n"
                                    f"  bob: {hash_2y(long_password[:72].encode())}\n"))

    def get(auth=None):
        return https_get(port, pki, auth=auth)

    r = get(("alice", "secret"))
    assert r.status_code == 200 and NUM_PROCS in r.content
    for auth in (None, ("alice", "wrong"), ("mallory", "secret"), ("alice", long_password), ("bob", long_password)):
        r = get(auth)
        assert r.status_code == 401, auth
        assert r.headers["WWW-Authenticate"] == "Basic" and r.text == "Unauthorized\n"
    # malformed headers are a 401 too
    for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer x"):
        assert https_get(port, pki, headers={"Authorization": header}).status_code == 401
    assert get(("bob", long_password[:72])).status_code == 200  # 72 bytes is the longest password
    assert get(("alice", "secret")).status_code == 200


def test_unknown_users_checked_against_the_dummy_hash_and_results_cached(tmp_path, monkeypatch):
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: calls.append(hashed) or real(password, hashed))
    alice = hash_2y(b"secret")
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {alice}\n")
    security = WebSecurity(str(path))
    config = security.current()

    def header(user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert not security.authorized(config, header("mallory", "secret"))
    assert calls == [DUMMY_HASH]  # the same bcrypt work as for a real user
    assert security.authorized(config, header("alice", "secret"))
    assert not security.authorized(config, header("alice", "nope"))
    assert calls[1:] == [alice.encode()] * 2
    for _ in range(3):  # cached, right or wrong
        assert security.authorized(config, header("alice", "secret"))
        assert not security.authorized(config, header("alice", "nope"))
        assert not security.authorized(config, header("mallory", "secret"))
    assert len(calls) == 3
    assert not security.authorized(config, header("alice", "x" * 73)) and len(calls) == 3  # refused unhashed
    # the cache holds 100 entries at most, and digests, not passwords
    for i in range(150):
        security._cache.set(str(i).encode(), False)
    assert len(security._cache.entries) <= 100
    assert all(len(key) in (32,) or key.isdigit() for key in security._cache.entries)


def test_configured_headers_are_sent(serve):
    port, _ = serve("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
                    "    Strict-Transport-Security: max-age=31536000\n    Content-Security-Policy: ''\n")
    r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["X-Frame-Options"] == "deny" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "Content-Security-Policy" not in r.headers  # blank: unset
    assert requests.get(f"http://127.0.0.1:{port}/nope", timeout=10).headers["X-Frame-Options"] == "deny"


def test_rate_limit(serve):
    port, _ = serve("rate_limit:\n  interval: 1h\n  burst: 2\n")
    codes = [requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    port, _ = serve("rate_limit:\n  interval: 1s\n  burst: 0\n")  # exporter-toolkit: a burst of 0 lets nothing by
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 429
    port, _ = serve("rate_limit:\n  interval: 0\n  burst: 0\n")  # interval 0: no limit
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


# -- slow and idle clients -------------------------------------------------------------


def test_slowloris_does_not_hold_the_server(serve):
    port, _ = serve(header_timeout=3.0)
    closed = threading.Event()
    sent = []

    def slowloris():
        request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 40
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for byte in request:  # a header byte a second: never done within the timeout
                try:
                    s.sendall(bytes([byte]))
                    sent.append(byte)
                    s.settimeout(1.0)
                    if s.recv(4096) == b"":
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
            closed.set()

    t = threading.Thread(target=slowloris, daemon=True)
    t.start()
    try:
        time.sleep(1.5)
        for _ in range(3):  # others are served meanwhile
            r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert r.status_code == 200 and NUM_PROCS in r.content
        assert closed.wait(20), "the server never cut the slow client off"
        assert len(sent) < 20  # cut after about 3 s, not when the client was done
    finally:
        t.join(30)


def test_idle_connections_are_closed_and_release_their_threads(serve):
    port, _ = serve(header_timeout=1.0, idle_timeout=1.0)
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        # one kept-alive connection too: idle after its first request
        kept = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in kept.recv(4096)
        idle.append(kept)
        deadline = time.monotonic() + 20
        for s in idle:
            s.settimeout(max(deadline - time.monotonic(), 0.1))
            assert s.recv(4096) == b""  # closed by the server
        deadline = time.monotonic() + 10
        while threading.active_count() > before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before + 2
    finally:
        for s in idle:
            s.close()


# -- the file: a bad one refuses to start, a changed one is read again ------------------------


BAD_CONFIGS = {
    "unknown top key": ("tls_server_config: {}\nbasic_auth: {}\n", "basic_auth: unknown field"),
    "unknown tls key": ("tls_server_config:\n  cert_filse: x\n", "tls_server_config.cert_filse: unknown field"),
    "key twice": ("basic_auth_users:\n  a: x\n  a: y\n", "basic_auth_users.a: given twice"),
    "missing key": ("tls_server_config:\n  cert_file: {cert}\n", "tls_server_config: missing one of key or key_file"),
    "missing cert file": ("tls_server_config:\n  cert_file: nope.crt\n  key_file: {key}\n",
                          "tls_server_config.cert_file: cannot read"),
    "bad version": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS14\n",
                    "tls_server_config.min_version: unknown TLS version: TLS14"),
    "bad cipher": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
                   "tls_server_config.cipher_suites[0]: unknown cipher: TLS_RSA_WITH_RC4_128_SHA"),
    "bad curve": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  curve_preferences: [CurveP999]\n",
                  "tls_server_config.curve_preferences[0]: unknown curve"),
    "curves not honoured": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                            "  curve_preferences: [X25519, CurveP256]\n",
                            "tls_server_config.curve_preferences: procsnap (Python's ssl) can only pin one curve"),
    "unverified client certs": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                                "  client_auth_type: RequireAnyClientCert\n",
                                "tls_server_config.client_auth_type: RequireAnyClientCert accepts a client certificate"),
    "bad client auth": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: Maybe\n",
                        "tls_server_config.client_auth_type: invalid ClientAuth: Maybe"),
    "ca without policy": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {ca}\n",
                          "client CA's have been configured without a Client Auth Policy"),
    "not bcrypt": ("basic_auth_users:\n  john: doe\n", "basic_auth_users.john: not a bcrypt hash"),
    "header": ("http_server_config:\n  headers:\n    X-Powered-By: me\n",
               'http_server_config.headers.X-Powered-By: HTTP header "X-Powered-By" can not be configured'),
    "header value": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                     "http_server_config.headers.X-Frame-Options: invalid value for X-Frame-Options"),
    "bad interval": ("rate_limit:\n  interval: 1 sec\n  burst: 1\n", "rate_limit.interval: unknown unit"),
    "bad burst": ("rate_limit:\n  interval: 1s\n  burst: many\n", "rate_limit.burst: expected a whole number"),
    "not yaml": ("tls_server_config: [\n", "not valid YAML"),
    "key mismatch": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {client_key}\n",
                     "tls_server_config: cannot load the certificate and key"),
}


def _bad_config_text(pki, text):
    for name, value in (("cert", pki.server[0]), ("key", pki.server[1]), ("ca", pki.ca), ("client_key", pki.client[1])):
        text = text.replace("{%s}" % name, value)
    return text


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_web_config_names_the_field(tmp_path, pki, case):
    text, message = BAD_CONFIGS[case]
    path = tmp_path / "web.yml"
    path.write_text(_bad_config_text(pki, text))
    with pytest.raises(WebConfigError) as e:
        load_web_config(str(path))
    line = str(e.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line, line


@pytest.mark.parametrize("text", [
    "",  # empty: plain HTTP, no auth
    "tls_server_config:\n  min_version: TLS13\n",  # no certificate: TLS stays off (as exporter-toolkit)
    "http_server_config:\n  http2: false\n",
    "rate_limit:\n  interval: 1000000000\n  burst: 3\n",  # yaml.v2 reads a number as nanoseconds
])
def test_good_configs_without_tls(tmp_path, text):
    path = tmp_path / "web.yml"
    path.write_text(text)
    config = load_web_config(str(path))
    assert not config.tls and config.ssl_context is None
    if "1000000000" in text:
        assert config.rate_limit == (1.0, 3)


def test_relative_file_names_are_relative_to_the_config(tmp_path, pki):
    import shutil

    for name in ("server.crt", "server.key", "ca.crt"):
        shutil.copy(os.path.join(pki.root, name), tmp_path / name)
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                    "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n")
    config = load_web_config(str(path))
    assert config.tls and config.files == tuple(str(tmp_path / n) for n in ("server.crt", "server.key", "ca.crt"))


def run_procsnap(*args, timeout=60):
    return subprocess.run([PROCSNAP, "--backend", "python", "--path.procfs", PROC_BASIC, *args],
                          capture_output=True, timeout=timeout, env=clean_env())


@pytest.mark.parametrize("case", ["not bcrypt", "bad version"])
def test_a_bad_file_refuses_to_start_with_one_line(tmp_path, pki, case):
    text, message = BAD_CONFIGS[case]
    path = tmp_path / "web.yml"
    path.write_text(_bad_config_text(pki, text))
    r = run_procsnap("--web.listen-address", f"127.0.0.1:{free_port()}", "-web.config.file", str(path))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"procsnap: {path}:") and message in lines[0], lines
    r = run_procsnap("--web.listen-address", f"127.0.0.1:{free_port()}", "--web.config.file", str(tmp_path / "none"))
    assert r.returncode == 2 and b"cannot read web config" in r.stderr


def test_changed_file_is_read_again_and_a_bad_change_keeps_the_old(serve, tmp_path, caplog):
    port, security = serve(f"basic_auth_users:\n  alice: {hash_2y(b'one')}\n")
    url = f"http://127.0.0.1:{port}/healthz"
    reloads = []
    security.on_reload = reloads.append
    assert requests.get(url, auth=("alice", "one"), timeout=10).status_code == 200

    path = security.path
    with open(path, "w") as f:
        f.write(f"basic_auth_users:\n  alice: {hash_2y(b'two')}\n  bob: {hash_2y(b'three')}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a change even within the clock's granularity
    assert requests.get(url, auth=("alice", "two"), timeout=10).status_code == 200
    assert requests.get(url, auth=("alice", "one"), timeout=10).status_code == 401
    assert reloads == [True]

    with caplog.at_level("ERROR", logger="procsnap"):
        with open(path, "w") as f:
            f.write("basic_auth_users:\n  alice: plaintext\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
        for _ in range(3):  # the old config stays; the error is logged once
            assert requests.get(url, auth=("bob", "three"), timeout=10).status_code == 200
    errors = [r.getMessage() for r in caplog.records if "web config reload failed" in r.getMessage()]
    assert len(errors) == 1 and "basic_auth_users.alice: not a bcrypt hash" in errors[0]
    assert reloads == [True, False]
    assert security.reload() is not None and reloads[-1] is False  # SIGHUP, /-/reload: the same answer

    with open(path, "w") as f:
        f.write("")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    assert requests.get(url, timeout=10).status_code == 200  # no users: no auth
    assert reloads[-1] is True


def test_tls_cannot_be_turned_off_by_a_reload(serve, pki):
    port, security = serve(tls_config(pki))
    with open(security.path, "w") as f:
        f.write("")
    error = security.reload()
    assert error and "TLS cannot be turned off without a restart" in error
    assert https_get(port, pki, path="/healthz").status_code == 200


# -- the command -----------------------------------------------------------------------------


def _start(tmp_path, *args):
    port = free_port()
    log = open(tmp_path / "procsnap.log", "wb")
    proc = subprocess.Popen([PROCSNAP, "--backend", "python", "--path.procfs", PROC_BASIC,
                             "--web.listen-address", f"127.0.0.1:{port}", *args],
                            stdout=subprocess.DEVNULL, stderr=log, env=clean_env())
    log.close()
    return proc, port


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def test_procsnap_serves_https_with_client_certificates_and_basic_auth(tmp_path, pki):
    web = tmp_path / "web.yml"
    web.write_text(mtls_config(pki, f"basic_auth_users:\n  prometheus: {hash_2y(b'scrape')}\n"))
    proc, port = _start(tmp_path, "--web.config.file", str(web))
    try:
        deadline = time.monotonic() + 30
        r = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = https_get(port, pki, cert=pki.client, auth=("prometheus", "scrape"))
                break
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        assert r is not None and r.status_code == 200 and NUM_PROCS in r.content
        assert b"procsnap_config_last_reload_successful 1.0" in r.content
        assert https_get(port, pki, cert=pki.client, auth=("prometheus", "nope")).status_code == 401
        with pytest.raises(requests.exceptions.RequestException):
            https_get(port, pki, auth=("prometheus", "scrape"))
    finally:
        assert _stop(proc) == 0
    log = (tmp_path / "procsnap.log").read_text()
    assert "TLS on (client certificates: RequireAndVerifyClientCert), basic auth for 1 users" in log
