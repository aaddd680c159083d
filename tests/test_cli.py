"""The procsnap command: flags, env twins, --version/--help, config errors, SIGHUP reload,
the fd limit. Runs the installed console script (.venv/bin/procsnap) as a subprocess."""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from exporter import __version__
from exporter.cli import FLAGS, env_name, parse_args
from helpers import clean_env, free_port, http_get

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
    for phrase in ("--no-children", "--version", "SIGHUP", "Exit status", "(default: :9256)", "(default: /proc)"):
        assert phrase in text


def test_env_names():
    assert env_name("web.listen-address") == "PROCSNAP_WEB_LISTEN_ADDRESS"
    assert env_name("once.delay") == "PROCSNAP_ONCE_DELAY"
    assert {f.env for f in FLAGS} == {
        "PROCSNAP_WEB_LISTEN_ADDRESS", "PROCSNAP_WEB_TELEMETRY_PATH", "PROCSNAP_CONFIG_PATH",
        "PROCSNAP_PATH_PROCFS", "PROCSNAP_CHILDREN", "PROCSNAP_REMOVE_EMPTY_GROUPS", "PROCSNAP_ONCE",
        "PROCSNAP_ONCE_DELAY", "PROCSNAP_BACKEND", "PROCSNAP_LOG_LEVEL", "PROCSNAP_PROCFS_KEEP_OPEN",
    }


# -- flag parsing: defaults, env twins, flags win --------------------------------------

DEFAULTS = {
    "web_listen_address": ":9256",
    "web_telemetry_path": "/metrics",
    "config_path": None,
    "path_procfs": "/proc",
    "procfs_keep_open": "auto",
    "children": True,
    "remove_empty_groups": False,
    "once": False,
    "once_delay": 0.0,
    "backend": "native",
    "log_level": "info",
}

# flag name -> (env text, parsed env value, command-line args, parsed flag value)
CASES = {
    "web.listen-address": ("127.0.0.1:1", "127.0.0.1:1", ["--web.listen-address", "[::1]:2"], "[::1]:2"),
    "web.telemetry-path": ("/env", "/env", ["--web.telemetry-path=/flag"], "/flag"),
    "config.path": ("/env.yaml", "/env.yaml", ["--config.path", "/flag.yaml"], "/flag.yaml"),
    "path.procfs": ("/env/proc", "/env/proc", ["--path.procfs", "/flag/proc"], "/flag/proc"),
    "procfs.keep-open": ("OFF", "off", ["--procfs.keep-open", "250"], "250"),
    "children": ("false", False, ["--children"], True),
    "remove-empty-groups": ("yes", True, ["--remove-empty-groups=false"], False),
    "once": ("1", True, ["--once=off"], False),
    "once.delay": ("2.5", 2.5, ["--once.delay", "0.5"], 0.5),
    "backend": ("python", "python", ["--backend", "native"], "native"),
    "log.level": ("DEBUG", "debug", ["--log.level", "error"], "error"),
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
    others = {k: v for k, v in DEFAULTS.items() if k != dest and not (dest == "once_delay" and k == "once")}
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
    proc = subprocess.Popen([PROCSNAP, "--once.delay", "60", "--path.procfs", PROC_BASIC, "--log.level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
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
