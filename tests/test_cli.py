"""The procsnap command: flags, env twins, --version/--help, config errors, SIGHUP reload,
the fd limit. Runs the installed console script (.venv/bin/procsnap) as a subprocess."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import shutil
from types import SimpleNamespace

import pytest

from exporter import __version__
from exporter.cli import FLAGS, env_name, go_duration_ns, names_config, parse_args
from helpers import clean_env, free_port, http_get, stop_processes

HERE = os.path.dirname(os.path.abspath(__file__))
PROC_BASIC = os.path.join(HERE, "fixtures", "proc-basic")
GOLDEN_CONFIG = os.path.join(HERE, "fixtures", "config", "golden.yaml")
PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")


def run(*args, env=None, timeout=60):
    return subprocess.run(
        [PROCSNAP, *args], capture_output=True, timeout=timeout, env=env if env is not None else clean_env()
    )


def num_procs(stdout: bytes) -> dict:
    """groupname -> num_procs from a text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(stdout.decode()):
        if family.name == "namedprocess_namegroup_num_procs":
            return {s.labels["groupname"]: s.value for s in family.samples}
    return {}


# -- version, help ---------------------------------------------------------------------


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.decode().startswith(f"procsnap version {__version__} ")
    # the Go spelling and the module entry point too
    assert run("-version").stdout == r.stdout
    m = subprocess.run([sys.executable, "-m", "exporter", "--version"], capture_output=True, timeout=60)
    assert m.returncode == 0 and m.stdout == r.stdout


def test_help_explains_every_flag_and_its_env_twin():
    r = run("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.decode().split())  # argparse wraps lines
    for flag in FLAGS:
        assert f"--{flag.name}" in text
        assert f"[env {flag.env}]" in text
    for phrase in ("--no-children", "--version", "--man", "SIGHUP", "Exit status", "(default: :9256)",
                   "(default: /proc)", "--threads [BOOL]", "--gather-smaps [BOOL]", "--debug [BOOL]",
                   "--recheck-with-time-limit DURATION", "--procnames NAME,...", "--namemapping NAME,REGEX,..."):
        assert phrase in text


def test_env_names():
    assert env_name("web.listen-address") == "PROCSNAP_WEB_LISTEN_ADDRESS"
    assert env_name("once.delay") == "PROCSNAP_ONCE_DELAY"
    assert {f.env for f in FLAGS} == {
        "PROCSNAP_WEB_LISTEN_ADDRESS", "PROCSNAP_WEB_TELEMETRY_PATH", "PROCSNAP_CONFIG_PATH",
        "PROCSNAP_WEB_CONFIG_FILE", "PROCSNAP_WEB_MAX_REQUESTS", "PROCSNAP_WEB_ENABLE_LIFECYCLE",
        "PROCSNAP_PATH_PROCFS", "PROCSNAP_CHILDREN", "PROCSNAP_REMOVE_EMPTY_GROUPS", "PROCSNAP_ONCE",
        "PROCSNAP_ONCE_DELAY", "PROCSNAP_BACKEND", "PROCSNAP_LOG_LEVEL", "PROCSNAP_PROCFS_KEEP_OPEN",
        "PROCSNAP_DEBUG", "PROCSNAP_THREADS", "PROCSNAP_WCHAN", "PROCSNAP_GATHER_SMAPS",
        "PROCSNAP_GATHER_SMAPS_MAX_RSS", "PROCSNAP_OTLP_ENDPOINT", "PROCSNAP_OTLP_PROTOCOL", "PROCSNAP_OTLP_INTERVAL",
        "PROCSNAP_PATH_POD_LOGS", "PROCSNAP_PATH_CONTAINER_LOGS", "PROCSNAP_COUNT_REAPED_CHILDREN",
        "PROCSNAP_REDACT_CMDLINE", "PROCSNAP_MAX_GROUPS", "PROCSNAP_RECHECK",
        "PROCSNAP_RECHECK_WITH_TIME_LIMIT", "PROCSNAP_PROCNAMES", "PROCSNAP_NAMEMAPPING",
    }


# -- flag parsing: defaults, env twins, flags win --------------------------------------

DEFAULTS = {
    "web_listen_address": ":9256",
    "web_telemetry_path": "/metrics",
    "web_config_file": None,
    "web_max_requests": 40,
    "web_enable_lifecycle": False,
    "config_path": None,
    "path_procfs": "/proc",
    "procfs_keep_open": "auto",
    "children": True,
    "remove_empty_groups": False,
    "once": False,
    "once_delay": 0.0,
    "backend": "native",
    "log_level": "info",
    "debug": False,
    "threads": True,
    "wchan": True,
    "gather_smaps": False,  # process-exporter: true (a listed divergence)
    "gather_smaps_max_rss": 1 << 30,
    "otlp_endpoint": None,  # OTLP push off (unless an OTEL_EXPORTER_OTLP_*ENDPOINT variable is set)
    "otlp_protocol": None,
    "otlp_interval": None,
    "path_pod_logs": "/var/log/pods",
    "path_container_logs": "/var/log/containers",
    "count_reaped_children": True,
    "redact_cmdline": True,
    "max_groups": 10000,
    "recheck": False,
    "recheck_with_time_limit": None,
    "procnames": (),
    "namemapping": (),
}

# a flag that sets another one too: --once.delay > 0 -> --once, a time limit -> --recheck,
# --debug -> --log.level debug
IMPLIES = {"once_delay": "once", "recheck_with_time_limit": "recheck", "debug": "log_level"}

# flag name -> (env text, parsed env value, command-line args, parsed flag value)
CASES = {
    "web.listen-address": ("127.0.0.1:1", "127.0.0.1:1", ["--web.listen-address", "[::1]:2"], "[::1]:2"),
    "web.telemetry-path": ("/env", "/env", ["--web.telemetry-path=/flag"], "/flag"),
    "web.config.file": ("/env.yml", "/env.yml", ["-web.config.file", "/flag.yml"], "/flag.yml"),
    "web.max-requests": ("0", 0, ["--web.max-requests", "5"], 5),
    "web.enable-lifecycle": ("true", True, ["--web.enable-lifecycle=false"], False),
    "config.path": ("/env.yaml", "/env.yaml", ["--config.path", "/flag.yaml"], "/flag.yaml"),
    "path.procfs": ("/env/proc", "/env/proc", ["--path.procfs", "/flag/proc"], "/flag/proc"),
    "procfs.keep-open": ("OFF", "off", ["--procfs.keep-open", "250"], "250"),
    "children": ("false", False, ["--children"], True),
    "remove-empty-groups": ("yes", True, ["--remove-empty-groups=false"], False),
    "once": ("1", True, ["--once=off"], False),
    "once.delay": ("2.5", 2.5, ["--once.delay", "0.5"], 0.5),
    "backend": ("python", "python", ["--backend", "native"], "native"),
    "log.level": ("DEBUG", "debug", ["--log.level", "error"], "error"),
    "debug": ("true", True, ["-debug=false"], False),
    "threads": ("false", False, ["-threads"], True),
    "wchan": ("no", False, ["-wchan"], True),
    "gather-smaps": ("1", True, ["-gather-smaps=false"], False),
    "gather-smaps.max-rss": ("512MiB", 512 << 20, ["--gather-smaps.max-rss", "0"], 0),
    "otlp.endpoint": ("http://a:4318", "http://a:4318", ["--otlp.endpoint", "http://b:4317"], "http://b:4317"),
    "otlp.protocol": ("GRPC", "grpc", ["--otlp.protocol=http/protobuf"], "http/protobuf"),
    "otlp.interval": ("10", 10.0, ["--otlp.interval", "0.5"], 0.5),
    "path.pod-logs": ("/env/pods", "/env/pods", ["--path.pod-logs", "/host/pods"], "/host/pods"),
    "path.container-logs": ("/env/c", "/env/c", ["--path.container-logs=/host/c"], "/host/c"),
    "count-reaped-children": ("false", False, ["--count-reaped-children"], True),
    "redact-cmdline": ("no", False, ["--redact-cmdline"], True),
    "max-groups": ("50", 50, ["--max-groups", "0"], 0),
    "recheck": ("yes", True, ["-recheck=false"], False),
    "recheck-with-time-limit": ("5m", 300.0, ["-recheck-with-time-limit", "1h30m"], 5400.0),
    "procnames": ("bash,,sshd", ("bash", "sshd"), ["-procnames", "init"], ("init",)),
    "namemapping": ("python3,([^/]+)\\.py", (("python3", r"([^/]+)\.py"),), ["-namemapping=java,-jar (\\S+)"],
                    (("java", r"-jar (\S+)"),)),
}


def test_defaults():
    args = parse_args([], environ={})
    assert {k: getattr(args, k) for k in DEFAULTS} == DEFAULTS
    assert args.version is False


@pytest.mark.parametrize("flag", [f.name for f in FLAGS])
def test_env_twin_and_flag_wins(flag):
    env_text, env_value, argv, flag_value = CASES[flag]
    dest = flag.replace(".", "_").replace("-", "_")
    environ = {env_name(flag): env_text}
    assert getattr(parse_args([], environ=environ), dest) == env_value
    assert getattr(parse_args(argv, environ=environ), dest) == flag_value
    # the others keep their defaults
    others = {k: v for k, v in DEFAULTS.items() if k not in (dest, IMPLIES.get(dest))}
    args = parse_args([], environ=environ)
    assert {k: getattr(args, k) for k in others} == others


def test_boolean_spellings():
    assert parse_args(["--no-children"], environ={}).children is False
    assert parse_args(["--children=false"], environ={}).children is False
    assert parse_args(["--no-children"], environ={"PROCSNAP_CHILDREN": "true"}).children is False
    assert parse_args(["--remove-empty-groups"], environ={}).remove_empty_groups is True
    assert parse_args(["--once.delay", "1"], environ={}).once is True  # a delay implies --once


def test_process_exporter_spellings():
    args = parse_args(["-procfs", "/x", "-children=false", "-config.path", "c.yaml",
                       "-web.listen-address", ":1", "-web.telemetry-path=/m"], environ={})
    assert (args.path_procfs, args.children, args.config_path, args.web_listen_address, args.web_telemetry_path) == (
        "/x", False, "c.yaml", ":1", "/m")


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        (["--backend", "rust"], {}, "invalid choice"),
        (["--once.delay", "soon"], {}, "not a number of seconds"),
        (["--gather-smaps.max-rss", "1.5GiB"], {}, "not a size: '1.5GiB'"),
        (["--otlp.interval", "0"], {}, "interval out of range"),
        (["--otlp.protocol", "http/json"], {}, "invalid choice: 'http/json'"),
        ([], {"PROCSNAP_GATHER_SMAPS_MAX_RSS": "lots"}, "PROCSNAP_GATHER_SMAPS_MAX_RSS: not a size: 'lots'"),
        (["--web.telemetry-path", "metrics"], {}, "must start with '/'"),
        ([], {"PROCSNAP_CHILDREN": "maybe"}, "PROCSNAP_CHILDREN: not a boolean: 'maybe'"),
        ([], {"PROCSNAP_LOG_LEVEL": "loud"}, "PROCSNAP_LOG_LEVEL: invalid choice"),
        (["--web.listen-address", "9256"], {}, "has no port"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, env, message):
    r = run(*argv, env=clean_env(**env))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("procsnap: ") and message in lines[0], lines
    assert r.stdout == b""


# -- config errors ---------------------------------------------------------------------

BAD_CONFIGS = {
    "bad-regex": ("process_names:\n  - name: x\n    cmdline: ['foo(']\n", "bad cmdline regex 'foo('"),
    "unknown-template-field": ("process_names:\n  - name: '{{.Nope}}'\n    comm: [bash]\n", "unknown template field .Nope"),
    "unknown-key": ("process_names:\n  - name: x\n    comm: [bash]\n    cmdlines: ['x']\n", "unknown key 'cmdlines'"),
    "unknown-top-key": ("process_name:\n  - comm: [bash]\n", "unknown key 'process_name'"),
    "not-yaml": ("process_names: [\n  - {name: x\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exit_2_one_line(tmp_path, case):
    content, message = BAD_CONFIGS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(content)
    r = run("--once", "--path.procfs", PROC_BASIC, "--backend", "python", "--config.path", str(path))
    assert r.returncode == 2
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"procsnap: {path}:") and message in lines[0], lines
    assert r.stdout == b""


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.yaml"
    r = run("--once", "--path.procfs", PROC_BASIC, "--backend", "python", "--config.path", str(path))
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [f"procsnap: {path}: cannot read config: No such file or directory"]


def test_bad_config_through_env_twin(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIGS["bad-regex"][0])
    r = run("--once", "--backend", "python", env=clean_env(PROCSNAP_CONFIG_PATH=str(path), PROCSNAP_PATH_PROCFS=PROC_BASIC))
    assert r.returncode == 2 and r.stderr.decode().startswith(f"procsnap: {path}:")


@pytest.mark.parametrize("backend", ["python", "native"])
def test_unreadable_procfs_exit_1_naming_the_file(tmp_path, backend):
    r = run("--once", "--backend", backend, "--path.procfs", str(tmp_path / "none"))
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        f"procsnap: cannot read {tmp_path / 'none'}/stat: No such file or directory "
        f"(--path.procfs {tmp_path / 'none'})"
    ]


def test_bad_keep_open_is_a_usage_error():
    r = run("--once", "--procfs.keep-open", "some")
    assert r.returncode == 2
    assert r.stderr.decode().splitlines() == [
        "procsnap: argument --procfs.keep-open: invalid keep-open 'some' (auto, off, all, or a number of processes)"
        " (see --help)"
    ]


def test_ctrl_c_during_once_delay_is_one_line():
    # as from a terminal: SIGINT not ignored (a background job of a script inherits it ignored)
    proc = subprocess.Popen([PROCSNAP, "--once.delay", "60", "--path.procfs", PROC_BASIC, "--log.level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [proc.stderr.readline() for _ in range(1)]  # "first snapshot" comes before the delay
        while b"first snapshot" not in lines[-1] and lines[-1] and len(lines) < 20:
            lines.append(proc.stderr.readline())
        assert b"first snapshot" in lines[-1], lines
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert out == b"" and err.decode().splitlines() == ["procsnap: interrupted; nothing printed"]


def test_full_stdout_is_one_line():
    with open("/dev/full", "wb") as full:
        r = subprocess.run([PROCSNAP, "--once", "--path.procfs", PROC_BASIC], stdout=full,
                           stderr=subprocess.PIPE, env=clean_env(), timeout=60)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "procsnap: cannot write the exposition to stdout: No space left on device"
    ]


# -- --once on fixtures and env twins end to end -----------------------------------------


def test_once_env_twins_and_flags_win():
    base = ["--once", "--backend", "python", "--config.path", GOLDEN_CONFIG]
    r = run(*base, env=clean_env(PROCSNAP_PATH_PROCFS=PROC_BASIC))
    assert r.returncode == 0, r.stderr
    assert num_procs(r.stdout)["init-init"] == 3  # children of pid 1 join its group
    r = run(*base, env=clean_env(PROCSNAP_PATH_PROCFS=PROC_BASIC, PROCSNAP_CHILDREN="false"))
    assert num_procs(r.stdout)["init-init"] == 1
    r = run(*base, "--children", env=clean_env(PROCSNAP_PATH_PROCFS=PROC_BASIC, PROCSNAP_CHILDREN="false"))
    assert num_procs(r.stdout)["init-init"] == 3
    r = run(*base, "--path.procfs", PROC_BASIC, env=clean_env(PROCSNAP_PATH_PROCFS="/nonexistent"))
    assert r.returncode == 0 and "paren" in num_procs(r.stdout)
    r = run("--backend", "python", "--config.path", GOLDEN_CONFIG, "--path.procfs", PROC_BASIC,
            env=clean_env(PROCSNAP_ONCE="true"))
    assert r.returncode == 0 and "paren" in num_procs(r.stdout)


def test_once_go_style_command_line():
    r = run("-procfs", PROC_BASIC, "-config.path", GOLDEN_CONFIG, "-children=false", "--once", "--backend", "python")
    assert r.returncode == 0, r.stderr
    assert num_procs(r.stdout)["init-init"] == 1


def test_once_delay_on_live_proc_moves_counters(tmp_path):
    """--once.delay: two snapshots that far apart; our own busy child's cpu shows up."""
    marker = f"procsnap-delay-{os.getpid()}"
    config = tmp_path / "c.yaml"  # (the marker must not be in procsnap's own cmdline)
    config.write_text(f"process_names:\n  - name: busy\n    cmdline: ['{marker}']\n")
    busy = subprocess.Popen([sys.executable, "-c", "import sys\nwhile True: pass", marker])
    try:
        t0 = time.monotonic()
        r = run("--once.delay", "0.5", "--config.path", str(config), "--backend", "python")
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 >= 0.5
        assert num_procs(r.stdout) == {"busy": 1.0}
        cpu = [l for l in r.stdout.decode().splitlines()
               if l.startswith('namedprocess_namegroup_cpu_seconds_total{groupname="busy",mode="user"}')]
        assert len(cpu) == 1 and float(cpu[0].split()[-1]) > 0
    finally:
        busy.kill()
        busy.wait()


def test_native_backend_falls_back_with_warning():
    from exporter.reader import native_available

    r = run("--once", "--backend", "native", "--path.procfs", PROC_BASIC)
    assert r.returncode == 0
    warned = b"native reader (exporter._reader) is not built; using the python backend" in r.stderr
    assert warned == (not native_available())


# -- serving: listen errors, SIGHUP reload, fd limit --------------------------------------


def start_server(*args, log_path, env=None, preexec_fn=None):
    """procsnap serving on a free port, its stderr going to log_path."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [PROCSNAP, "--web.listen-address", f"127.0.0.1:{port}", "--backend", "python", *args],
            stdout=subprocess.DEVNULL, stderr=log, env=env or clean_env(), preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"procsnap exited {proc.returncode}: {open(log_path).read()}")
        try:
            if http_get(port, "/healthz")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("procsnap did not come up within 20 s")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def test_address_in_use_exit_1():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run("--web.listen-address", f"127.0.0.1:{port}", "--backend", "python", "--path.procfs", PROC_BASIC)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines()[-1].startswith(f"procsnap: cannot listen on 127.0.0.1:{port}: ")


def test_sighup_reloads_config_and_keeps_old_on_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("process_names:\n  - name: before\n    comm: [init]\n")
    log = tmp_path / "procsnap.log"
    proc, port = start_server("--path.procfs", PROC_BASIC, "--config.path", str(config), "--no-children", log_path=log)

    def logged(text):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if text in log.read_text():
                return True
            time.sleep(0.05)
        return False

    try:
        assert num_procs(http_get(port)[1]) == {"before": 1.0}

        config.write_text("process_names:\n  - name: broken\n    cmdline: ['(']\n")
        proc.send_signal(signal.SIGHUP)
        assert logged("config reload failed")
        assert proc.poll() is None
        assert num_procs(http_get(port)[1]) == {"before": 1.0}

        config.write_text("process_names:\n  - name: after\n    comm: [init]\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        groups = {}
        while time.monotonic() < deadline:
            groups = num_procs(http_get(port)[1])
            if "after" in groups:
                break
            time.sleep(0.1)
        assert groups == {"after": 1.0}  # the new config cannot name "before": it is gone
    finally:
        assert stop(proc) == 0
    stderr = log.read_text()
    errors = [l for l in stderr.splitlines() if "config reload failed" in l]
    assert len(errors) == 1 and f"{config}:3: process_names[0]" in errors[0] and "bad cmdline regex" in errors[0]
    assert "config reloaded from" in stderr


def test_serves_telemetry_path_and_raises_nofile_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("hard RLIMIT_NOFILE too low to see it raised")

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc, port = start_server("--path.procfs", PROC_BASIC, "--web.telemetry-path", "/m", preexec_fn=lower,
                              log_path=tmp_path / "procsnap.log")
    try:
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(l for l in f if l.startswith("Max open files"))
        soft_now, hard_now = line.split()[3:5]
        assert soft_now == hard_now != "256"
        assert http_get(port, "/m")[0] == 200
        assert http_get(port, "/metrics")[0] == 404
    finally:
        assert stop(proc) == 0
    log = (tmp_path / "procsnap.log").read_text()
    assert f"listening on 127.0.0.1:{port}, metrics at /m (backend python)" in log
    assert log.rstrip().endswith("stopped")


def test_choose_backend_falls_back_when_extension_missing(monkeypatch, caplog):
    from exporter import cli, reader

    monkeypatch.setattr(reader, "native_available", lambda: False)
    with caplog.at_level("WARNING", logger="procsnap"):
        assert cli._choose_backend("native") == "python"
        assert cli._choose_backend("python") == "python"
    assert [r.getMessage() for r in caplog.records] == [
        "the native reader (exporter._reader) is not built; using the python backend"
    ]
    monkeypatch.setattr(reader, "native_available", lambda: True)
    assert cli._choose_backend("native") == "native"


# -- process-exporter's other flags: -debug, -man, -threads, -gather-smaps, -recheck,
# -recheck-with-time-limit, -procnames, -namemapping --------------------------------------

S, MS, US = 10**9, 10**6, 10**3

# Go's own time.ParseDuration test table (time/time_test.go), in nanoseconds
GO_DURATIONS = {
    "0": 0, "5s": 5 * S, "30s": 30 * S, "1478s": 1478 * S, "-5s": -5 * S, "+5s": 5 * S, "-0": 0, "+0": 0,
    "5.0s": 5 * S, "5.6s": 5 * S + 600 * MS, "5.s": 5 * S, ".5s": 500 * MS, "1.0s": S, "1.00s": S,
    "1.004s": S + 4 * MS, "1.0040s": S + 4 * MS, "100.00100s": 100 * S + 1 * MS,
    "10ns": 10, "11us": 11 * US, "12\u00b5s": 12 * US, "12\u03bcs": 12 * US, "13ms": 13 * MS, "14s": 14 * S,
    "15m": 15 * 60 * S, "16h": 16 * 3600 * S, "3h30m": 3 * 3600 * S + 30 * 60 * S,
    "10.5s4m": 4 * 60 * S + 10 * S + 500 * MS, "-2m3.4s": -(2 * 60 * S + 3 * S + 400 * MS),
    "1h2m3s4ms5us6ns": 3600 * S + 2 * 60 * S + 3 * S + 4 * MS + 5 * US + 6,
    "39h9m14.425s": 39 * 3600 * S + 9 * 60 * S + 14 * S + 425 * MS, "52763797000ns": 52763797000,
    "0.3333333333333333333h": 20 * 60 * S, "9007199254740993ns": 9007199254740993,
    "9223372036854775807ns": 2**63 - 1, "9223372036854775.807us": 2**63 - 1,
    "9223372036s854ms775us807ns": 2**63 - 1, "-9223372036854775808ns": -(2**63),
    "0.100000000000000000000h": 6 * 60 * S, "0.830103483285477580700h": 49 * 60 * S + 48 * S + 372539827 * 1,
}
GO_BAD_DURATIONS = ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "1.5", "5 s", "9223372036854775808ns",
                    "9223372036854775.808us", "9223372036854ms775us808ns", "-9223372036854775809ns"]


def test_go_durations():
    assert {text: go_duration_ns(text) for text in GO_DURATIONS} == GO_DURATIONS
    for text in GO_BAD_DURATIONS:
        with pytest.raises(ValueError):
            go_duration_ns(text)


def test_recheck_with_time_limit_implies_recheck():
    args = parse_args(["-recheck-with-time-limit", "1m30s"], environ={})
    assert (args.recheck, args.recheck_with_time_limit) == (True, 90.0)
    args = parse_args(["-recheck-with-time-limit=0"], environ={})  # 0: no limit, as in process-exporter
    assert (args.recheck, args.recheck_with_time_limit) == (False, None)
    args = parse_args(["-recheck", "-recheck-with-time-limit=0s"], environ={})
    assert (args.recheck, args.recheck_with_time_limit) == (True, None)
    args = parse_args([], environ={"PROCSNAP_RECHECK_WITH_TIME_LIMIT": "250ms", "PROCSNAP_RECHECK": "false"})
    assert (args.recheck, args.recheck_with_time_limit) == (True, 0.25)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_wchan_family_and_its_opt_out(tmp_path, backend):
    """threads_wchan counts the processes waiting at each kernel function (not "0": running);
    --wchan=false reads no wchan file and leaves the family out."""
    root = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, root, symlinks=True)
    for pid, wchan in ((1, b"do_select"), (10, b"do_select"), (11, b"0")):  # 2 (kthreadd) is not grouped
        (root / str(pid) / "wchan").write_bytes(wchan)
    lines = [line for line in run("--once", "--backend", backend, "--path.procfs", str(root)).stdout.splitlines()
             if line.startswith(b"namedprocess_namegroup_threads_wchan{")]
    assert sum(float(line.split()[-1]) for line in lines) == 2 and all(b'wchan="do_select"' in x for x in lines)
    r = run("--once", "--backend", backend, "--path.procfs", str(root), "--wchan=false")
    assert r.returncode == 0 and b"threads_wchan" not in r.stdout and num_procs(r.stdout)


def test_no_count_reaped_children_spelling():
    assert parse_args(["--no-count-reaped-children"], environ={}).count_reaped_children is False
    assert parse_args(["-no-redact-cmdline"], environ={}).redact_cmdline is False
    assert parse_args(["-no-count-reaped-children"], environ={"PROCSNAP_COUNT_REAPED_CHILDREN": "1"}
                      ).count_reaped_children is False


def test_threads_smaps_recheck_spellings():
    args = parse_args(["-threads=false", "-gather-smaps", "-recheck"], environ={})
    assert (args.threads, args.gather_smaps, args.recheck) == (False, True, True)
    args = parse_args(["--threads", "no", "--gather-smaps=true"], environ={"PROCSNAP_THREADS": "true"})
    assert (args.threads, args.gather_smaps) == (False, True)
    # a process-exporter command line with all of them starts procsnap
    r = run("--once", "--backend", "python", "-procfs", PROC_BASIC, "-threads=false", "-gather-smaps=false",
            "-recheck", "-recheck-with-time-limit", "5m", "-debug=false")
    assert r.returncode == 0, r.stderr
    assert num_procs(r.stdout)["init"] == 1


def test_debug_sets_the_log_level():
    assert parse_args(["-debug"], environ={}).log_level == "debug"
    assert parse_args(["--debug", "--log.level", "error"], environ={}).log_level == "debug"
    assert parse_args([], environ={"PROCSNAP_DEBUG": "1"}).log_level == "debug"
    assert parse_args(["-debug=false"], environ={"PROCSNAP_DEBUG": "1"}).log_level == "info"
    assert parse_args(["-debug=false", "--log.level=warn"], environ={}).log_level == "warn"
    base = ("--once", "--backend", "python", "--path.procfs", PROC_BASIC)
    r = run(*base, "-debug")
    assert r.returncode == 0 and b" DEBUG first snapshot: " in r.stderr, r.stderr
    r = run(*base, env=clean_env(PROCSNAP_DEBUG="true"))
    assert r.returncode == 0 and b" DEBUG first snapshot: " in r.stderr, r.stderr
    r = run(*base)
    assert r.returncode == 0 and b"DEBUG" not in r.stderr


@pytest.mark.parametrize("spelling", ["--man", "-man"])
def test_man_prints_the_manual_and_exits_0(spelling):
    # nothing is read: a missing procfs or config does not matter
    r = run(spelling, "--path.procfs", "/nonexistent", "--config.path", "/nonexistent.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    text = r.stdout.decode()
    assert text.startswith("procsnap - a Linux process exporter for Prometheus, a drop-in for process-exporter\n")
    for phrase in ("process_names:", "comm: [bash, zsh]", "cmdline: ['-c (?P<cfg>\\S+)']", "{{.Matches.NAME}}",
                   "--procnames bash,sshd", "--namemapping", "--no-children", "--version, --man, --help",
                   "SIGHUP", "Exit status"):
        assert phrase in text, phrase
    for flag in FLAGS:
        assert f"\n  --{flag.name}" in text and f"[env {flag.env}]" in " ".join(text.split()), flag.name
    assert "--gather-smaps[=BOOL]\n" in text and "--recheck-with-time-limit DURATION\n" in text
    # the config example in the manual is a config procsnap loads
    from exporter.config import parse_config

    example = text[text.index("  process_names:"):text.index("\n\n", text.index("  process_names:"))]
    assert len(parse_config(example.encode()).matchers) == 3


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["-config.path", "c.yaml", "-procnames", "bash"], {},
         "--config.path cannot be used with --procnames or --namemapping"),
        (["-namemapping", "python3,(x)"], {"PROCSNAP_CONFIG_PATH": "c.yaml"}, "cannot be used with"),
        (["-namemapping", "python3,(x),java"], {}, "argument --namemapping: odd number of tokens"),
        (["-namemapping", "python3,,java,(x)"], {}, "argument --namemapping: token 1 is empty"),
        (["-namemapping", "python3,(x"], {}, "argument --namemapping: bad regex for 'python3': '(x'"),
        ([], {"PROCSNAP_NAMEMAPPING": "a,b,c"}, "PROCSNAP_NAMEMAPPING: odd number of tokens"),
        (["-recheck-with-time-limit", "30"], {}, "missing unit in duration '30'"),
        (["-recheck-with-time-limit", "5 min"], {}, "unknown unit ' min' in duration '5 min'"),
        (["-recheck-with-time-limit=-5s"], {}, "negative duration '-5s'"),
        ([], {"PROCSNAP_RECHECK_WITH_TIME_LIMIT": "1d"}, "PROCSNAP_RECHECK_WITH_TIME_LIMIT: unknown unit 'd'"),
        (["-threads=maybe"], {}, "argument --threads: not a boolean"),
        ([], {"PROCSNAP_GATHER_SMAPS": "perhaps"}, "PROCSNAP_GATHER_SMAPS: not a boolean"),
        # process-exporter flags procsnap does not have still fail, in one line
        (["-once-to-stdout-delay=1s"], {}, "unrecognized arguments: -once-to-stdout-delay=1s"),
        (["-threadz"], {}, "unrecognized arguments: -threadz"),
    ],
)
def test_new_flag_usage_errors_exit_2_with_one_line(argv, env, message):
    r = run("--once", "--path.procfs", PROC_BASIC, *argv, env=clean_env(**env))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("procsnap: ") and message in lines[0], lines
    assert r.stdout == b""


def test_names_config_matches_as_process_exporter():
    def proc(comm, *argv):
        return SimpleNamespace(comm=comm, cmdline=argv, is_kernel_thread=not argv, pid=1)

    config = names_config(("bash", "python3", "kworker/0:1"),
                          (("python3", r"([^/ ]+)\.py"), ("java", r"(x)?-jar\s+(?P<jar>[^/ ]+)\.jar"), ("cron", "cron")))

    def matched(p):
        matcher, captures = config.match(p)
        return None if matcher is None else (matcher.template.source, captures)

    assert matched(proc("bash", "-bash")) == ("{{.Comm}}", {})
    assert matched(proc("kworker/0:1")) == ("{{.Comm}}", {})  # kernel threads too
    assert matched(proc("zsh", "zsh")) is None
    # a mapped comm is named by its capture, or not at all (even when it is in procnames)
    assert matched(proc("python3", "python3", "/srv/app.py"))[1] == {"namemapping": "app"}
    assert matched(proc("python3", "python3", "-c", "pass")) is None
    # the first non-empty capture, named or not
    assert matched(proc("java", "java", "-jar", "app.jar"))[1] == {"namemapping": "app"}
    assert matched(proc("java", "java", "-jar", "x-jar y.jar"))[1] == {"namemapping": "x"}
    assert matched(proc("cron", "cron", "-f")) is None  # no capture group: never named
    assert names_config((), ()).matchers == []


# groups of the fixture tree tests/fixtures/proc-basic, as process-exporter 0.7.10 reports
# them for the same flags (tree: pid 1 init, 10 "a) b (c" with children 11 "x) Z 1 1" and
# 17 defunct, 2 kthreadd, 12 "Uid: 7 spaces", 13 "new\nline", 14, 15 binary, 16 short
# (unreadable stat), 18 noio, 20-22 "-sh" login shells with comms sh20, sh21, sh22)
NAME_CASES = {
    "procnames+mapping": (
        ["-procnames", "init,short,noio,sh20,kthreadd,defunct", "-namemapping", "sh21,^-(s)h,sh22,(x)?(h)"],
        {"defunct": 1, "init": 7, "kthreadd": 1, "noio": 1, "sh20": 1, "sh21:s": 1, "sh22:h": 1},
    ),
    "procnames+mapping, no children": (
        ["-procnames", "init,short,noio,sh20,kthreadd,defunct", "-namemapping", "sh21,^-(s)h,sh22,(x)?(h)",
         "-children=false"],
        {"defunct": 1, "init": 1, "kthreadd": 1, "noio": 1, "sh20": 1, "sh21:s": 1, "sh22:h": 1},
    ),
    "mapping without a capture": (
        ["-procnames", "sh20,init,a) b (c", "-namemapping", "sh20,-(z)?,init,(splash)"],
        {"a) b (c": 3, "init:splash": 9},
    ),
    "mapping without a capture, no children": (
        ["-procnames", "sh20,init,a) b (c", "-namemapping", "sh20,-(z)?,init,(splash)", "-children=false"],
        {"a) b (c": 1, "init:splash": 1},
    ),
    "mapping only": (
        ["-namemapping", "sh20,(-)(sh),sh21,(?P<x>sh)$,sh22,(sh)(.*)"],
        {"sh20:-": 1, "sh21:sh": 1, "sh22:sh": 1},
    ),
    "odd comms": (
        ["-procnames", "sh20,sh21,x) Z 1 1,Uid: 7 spaces"],
        {"Uid: 7 spaces": 1, "sh20": 1, "sh21": 1, "x) Z 1 1": 1},
    ),
}


@pytest.mark.parametrize("case", list(NAME_CASES))
def test_procnames_and_namemapping_group_the_fixture(case):
    argv, expected = NAME_CASES[case]
    r = run("--once", "--backend", "python", "-procfs", PROC_BASIC, *argv)
    assert r.returncode == 0, r.stderr
    assert num_procs(r.stdout) == expected


def test_procnames_and_namemapping_env_twins():
    argv, expected = NAME_CASES["procnames+mapping"]
    r = run("--once", "--backend", "python", "-procfs", PROC_BASIC,
            env=clean_env(PROCSNAP_PROCNAMES=argv[1], PROCSNAP_NAMEMAPPING=argv[3]))
    assert r.returncode == 0, r.stderr
    assert num_procs(r.stdout) == expected
    # a flag wins over its twin
    r = run("--once", "--backend", "python", "-procfs", PROC_BASIC, "-procnames", "noio",
            env=clean_env(PROCSNAP_PROCNAMES="init", PROCSNAP_NAMEMAPPING=argv[3]))
    assert num_procs(r.stdout) == {"noio": 1, "sh21:s": 1, "sh22:h": 1}


PROCESS_EXPORTER = shutil.which("prometheus-process-exporter") or "/usr/bin/prometheus-process-exporter"
needs_process_exporter = pytest.mark.skipif(not os.access(PROCESS_EXPORTER, os.X_OK),
                                            reason="process-exporter not installed")


@needs_process_exporter
def test_procnames_and_namemapping_as_process_exporter_does(tmp_path):
    """The real process-exporter, on the same fixture tree with the same flags, serving on
    127.0.0.1: the same groups and num_procs."""
    theirs, procs = {}, []
    try:
        for case, (argv, _) in NAME_CASES.items():
            port = free_port()
            with open(tmp_path / "process-exporter.log", "ab") as log:
                procs.append(subprocess.Popen(
                    [PROCESS_EXPORTER, "-procfs", PROC_BASIC, "-web.listen-address", f"127.0.0.1:{port}", *argv],
                    stdout=log, stderr=log))
            theirs[case] = port
        for case, port in theirs.items():
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, body = http_get(port)
                    break
                except OSError:
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        raise AssertionError(f"process-exporter did not serve: {(tmp_path / 'process-exporter.log').read_text()}")
                    time.sleep(0.05)
            assert status == 200
            theirs[case] = num_procs(body)
    finally:
        stop_processes(procs)
    ours = {}
    for case, (argv, _) in NAME_CASES.items():
        r = run("--once", "--backend", "python", "-procfs", PROC_BASIC, *argv)
        assert r.returncode == 0, r.stderr
        ours[case] = num_procs(r.stdout)
    assert ours == theirs
    assert theirs == {case: expected for case, (_, expected) in NAME_CASES.items()}


@needs_process_exporter
def test_process_exporter_also_refuses_config_path_with_procnames(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("process_names:\n  - comm: [init]\n")
    argv = ["-procfs", PROC_BASIC, "-config.path", str(config), "-procnames", "init", "-web.listen-address", "127.0.0.1:1"]
    theirs = subprocess.run([PROCESS_EXPORTER, *argv], capture_output=True, timeout=60)
    assert theirs.returncode != 0 and b"-config.path cannot be used with -namemapping or -procnames" in theirs.stderr
    ours = run(*argv)
    assert ours.returncode == 2 and b"--config.path cannot be used with --procnames" in ours.stderr


def test_sighup_keeps_the_procnames_groups(tmp_path):
    log = tmp_path / "procsnap.log"
    proc, port = start_server("-procfs", PROC_BASIC, "-procnames", "init,noio", "-children=false", log_path=log)
    try:
        assert num_procs(http_get(port)[1]) == {"init": 1, "noio": 1}
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while b"nothing to re-read" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert num_procs(http_get(port)[1]) == {"init": 1, "noio": 1}
    finally:
        assert stop(proc) == 0
    text = log.read_text()
    assert "groups from --procnames init,noio --namemapping (none)" in text
    assert "SIGHUP: the groups come from --procnames/--namemapping; nothing to re-read" in text
