"""Secrets in command lines never reach an output: processes this test starts carry each
secret form in their argv; a config names groups from the command line ({{.Matches}},
{{.ExeFull}}); neither /metrics (text and OpenMetrics), nor OTLP, nor the log shows one.
With --no-redact-cmdline they do (the test can fail)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from helpers import clean_env, free_port, http_get, stop_processes
from otlp_receiver import HttpReceiver

PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
SLEEP = "import time; time.sleep(600)"


def secret_argvs(tag: str) -> dict:
    """secret -> the argv (after python -c SLEEP) that carries it"""
    s = {i: f"S{i}x{uuid.uuid4().hex[:8]}" for i in range(10)}
    return {
        s[0]: [tag, f"--password={s[0]}"],
        s[1]: [tag, "--db-password", s[1]],
        s[2]: [tag, "-p", s[2]],
        s[3]: [tag, f"token={s[3]}"],
        s[4]: [tag, f"secret={s[4]}"],
        s[5]: [tag, f"postgres://app:{s[5]}@db:5432/x"],
        s[6]: [tag, f"AWS_SECRET_ACCESS_KEY={s[6]}"],
        s[7]: [tag, f"APP_SECRET={s[7]}"],
        s[8]: [tag, f"GITHUB_TOKEN={s[8]}"],
        s[9]: [tag, f"https://x.example/cb?api_key={s[9]}&v=1"],
    }


def run(tmp_path, redact: bool):
    tag = f"secrets-{uuid.uuid4().hex[:10]}"
    argvs = secret_argvs(tag)
    procs = [subprocess.Popen([sys.executable, "-c", SLEEP, *argv]) for argv in argvs.values()]
    config = tmp_path / "c.yaml"
    config.write_text(f"""process_names:
  - name: "m:{{{{.Matches}}}}"
    cmdline: ['{tag} (?P<rest>.*)']
""")
    receiver = HttpReceiver().start()
    port = free_port()
    log = tmp_path / "procsnap.log"
    ps = subprocess.Popen([PROCSNAP, "--config.path", str(config), "--web.listen-address", f"127.0.0.1:{port}",
                           "--otlp.endpoint", receiver.endpoint, "--otlp.interval", "0.3", "--log.level", "debug",
                           *([] if redact else ["--no-redact-cmdline"])],
                          stdout=subprocess.DEVNULL, stderr=open(log, "wb"), env=clean_env())
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, log.read_text()
            try:
                status, text = http_get(port)
            except OSError:
                status, text = 0, b""
            if status == 200 and text.count(b'groupname="m:') >= 2 * len(argvs):
                break
            time.sleep(0.2)
        import requests

        openmetrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10,
                                   headers={"Accept": "application/openmetrics-text; version=1.0.0"}).content
        assert receiver.wait_for(2, 60)
        otlp = repr([p["attributes"] for i in range(receiver.exports()) for p in receiver.points(i)]).encode()
    finally:
        stop_processes([ps, *procs])
        receiver.stop()
    outputs = {"text": text, "openmetrics": openmetrics, "otlp": otlp, "log": log.read_bytes()}
    return argvs, outputs


def test_no_secret_reaches_any_output(tmp_path):
    argvs, outputs = run(tmp_path, redact=True)
    leaks = {(secret, where) for secret in argvs for where, data in outputs.items() if secret.encode() in data}
    assert leaks == set()
    assert outputs["text"].count(b"<redacted>") >= len(argvs) and b"<redacted>" in outputs["otlp"]


def test_the_opt_out_shows_them(tmp_path):
    argvs, outputs = run(tmp_path, redact=False)
    assert all(secret.encode() in outputs["text"] for secret in argvs)
