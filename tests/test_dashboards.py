"""Dashboards and rules (issue 11): the committed files are what dashboards/build.py makes,
they pass a lint, promtool checks and unit-tests the rules, and every query of every panel,
variable and rule runs on a real Prometheus that scrapes procsnap.

The stack (module scope): processes this test starts, in groups named after its pid (three
sleeps; a sleep restarted every 1.5 s; a worker with named threads, I/O and its fds near a
lowered limit; a vfork parent, in state D until its child exits; and a group the config
names but nothing matches), procsnap on the live /proc grouping them (OTLP push on, to a
receiver here), a second procsnap on a fixture /proc whose processes sit in pods
(extra_labels), a target nothing listens on, and Prometheus scraping the three every second
with the rules loaded. Queries are judged on these groups and targets only.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.parse

import pytest
import yaml

from helpers import clean_env, free_port, http_get, http_ok, stop_processes
from otlp_receiver import HttpReceiver

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dashboards import build, defs  # noqa: E402

DASH = os.path.join(ROOT, "dashboards")
RULES = os.path.join(DASH, build.RULES_FILE)
RULE_TESTS = os.path.join(DASH, "rules", "tests")
README = os.path.join(ROOT, "README.md")
PROC_BASIC = os.path.join(HERE, "fixtures", "proc-basic")
K8S = os.path.join(HERE, "fixtures", "k8s")
PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
WAIT = 60.0  # the longest any wait here lasts
P = "namedprocess_namegroup_"


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f) if path.endswith(".json") else yaml.safe_load(f)


DASHBOARDS = {os.path.basename(p): load(p) for p in sorted(glob.glob(os.path.join(DASH, "*.json")))}
RULE_GROUPS = load(RULES)["groups"]
ALERTS = [r for g in RULE_GROUPS for r in g["rules"] if "alert" in r]
RECORDS = [r for g in RULE_GROUPS for r in g["rules"] if "record" in r]


def panels(dashboard):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def targets(dashboard):
    for p in panels(dashboard):
        for t in p.get("targets", []):
            yield p, t


def variables(dashboard):
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# -- generated from one source -------------------------------------------------------------


def test_committed_files_are_what_build_makes():
    want = build.outputs()
    for rel, text in want.items():
        with open(os.path.join(DASH, rel), encoding="utf-8") as f:
            assert f.read() == text, f"dashboards/{rel} differs: run .venv/bin/python -m dashboards.build"
    assert sorted(DASHBOARDS) == sorted(rel for rel in want if rel.endswith(".json"))


def test_build_check_command():
    r = subprocess.run([sys.executable, "-m", "dashboards.build", "--check"], cwd=ROOT, capture_output=True,
                       timeout=120, env=clean_env())
    assert r.returncode == 0, r.stderr.decode()


# -- dashboard lint --------------------------------------------------------------------------


def test_uids_are_unique_and_valid():
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) == 4
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", u) for u in uids)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_frame(name):
    from grafana_foundation_sdk.models.dashboard import Dashboard

    d = DASHBOARDS[name]
    assert d["schemaVersion"] == Dashboard().schema_version >= 41  # the pinned Grafana 11 SDK's current one
    assert d["title"] and d["description"] and "procsnap" in d["tags"]
    assert d["annotations"] == {"list": []} and "id" not in d  # Grafana adds its built-in annotation; new on import
    vs = variables(d)
    first = d["templating"]["list"][0]
    assert first["name"] == defs.DATASOURCE_VAR and first["type"] == "datasource" and first["query"] == "prometheus"
    for required in ("job", "instance", "groupname"):
        v = vs[required]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], required
    for v in vs.values():
        if v["type"] == "query":
            assert v["datasource"] == defs.DATASOURCE, v["name"]
            assert v["query"].startswith("label_values("), v["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_ids_titles_descriptions_units_and_the_datasource_variable(name):
    d = DASHBOARDS[name]
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    shown = [p for p in panels(d) if p["type"] != "row"]
    assert shown
    for p in shown:
        where = f"{name}: panel {p['id']} {p.get('title')!r}"
        assert p.get("title") and p.get("description"), where
        assert p.get("fieldConfig", {}).get("defaults", {}).get("unit"), where
        assert p["datasource"] == defs.DATASOURCE, where
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), where
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), where
    for p in panels(d):
        if p["type"] == "row":
            assert p["title"] and not p["collapsed"] and not p.get("panels")  # open rows: panels follow them


def _datasources(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from _datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasources(value)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_no_hard_coded_datasource(name):
    found = list(_datasources(DASHBOARDS[name]))
    assert found and all(ds == defs.DATASOURCE for ds in found)
    assert "__inputs" not in DASHBOARDS[name]


GRAFANA_GLOBALS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m"}
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]")


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_use_only_the_variables_before_them(name):
    listed = []
    for v in DASHBOARDS[name]["templating"]["list"]:
        if v["type"] == "query":
            used = {next(g for g in m.groups() if g) for m in _VAR.finditer(v["query"])}
            assert used <= set(listed), (v["name"], used - set(listed))
        listed.append(v["name"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_variable_a_query_uses_is_defined(name):
    d = DASHBOARDS[name]
    defined = set(variables(d)) | set(GRAFANA_GLOBALS)
    texts = [t["expr"] for _, t in targets(d)] + [v["query"] for v in variables(d).values() if v["type"] == "query"]
    used = {next(g for g in m.groups() if g) for text in texts for m in _VAR.finditer(text)}
    assert used <= defined, used - defined
    assert {"job", "instance", "groupname", "__rate_interval"} <= used


# -- PromQL helpers ---------------------------------------------------------------------------

_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                 "topk", "quantile"}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
             "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "{}", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])[A-Za-z_:][\w:]*", e):
        word, rest = m.group(0), e[m.end():].lstrip()
        if word in _KEYWORDS or rest.startswith("("):
            continue
        if word in _AGGREGATIONS and re.match(r"(by|without)\b", rest):
            continue
        names.add(word)
    return names


def test_metric_names_of_promql():
    assert metric_names('sum by (a, b) (rate(x_total{a="b", c=~"d{1}"}[5m])) / on (job) group_left () '
                        'max by (job) (y) > 0.5 and z offset 1h or vector(0)') == {"x_total", "y", "z"}
    assert metric_names('count by (version) (procsnap_build_info{job=~"$job"})') == {"procsnap_build_info"}
    assert metric_names('count({__name__=~"a_.+"}) * 1e9 + time() - w') == {"w"}


def regex_value(values) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus regex matcher."""
    if values == "ALL":
        return ".*"
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(text: str, values: dict) -> str:
    def one(m):
        name = next(g for g in m.groups() if g)
        if name in GRAFANA_GLOBALS:
            return GRAFANA_GLOBALS[name]
        return regex_value(values[name])

    out = _VAR.sub(one, text)
    assert "$" not in out, out
    return out


# -- rules: shape, promtool -------------------------------------------------------------------


def test_alerts_have_severity_summary_description_and_runbook():
    names = [a["alert"] for a in ALERTS]
    assert len(names) == len(set(names))
    assert {"ProcsnapGroupNotRunning", "ProcsnapGroupFdsNearLimit", "ProcsnapGroupRestarting",
            "ProcsnapGroupMemoryGrowing", "ProcsnapGroupUninterruptibleSleep", "ProcsnapScrapeSlow",
            "ProcsnapDown", "ProcsnapScrapeErrors", "ProcsnapReadErrorsRising"} <= set(names)
    for a in ALERTS:
        assert a["labels"]["severity"] in ("critical", "warning"), a["alert"]
        notes = a["annotations"]
        assert notes["summary"] and notes["description"], a["alert"]
        assert notes["runbook_url"] == f"{defs.RUNBOOK_BASE}#{a['alert'].lower()}"


def test_every_rule_selects_the_job():
    for rule in RECORDS + ALERTS:
        selectors = re.findall(r"\{[^}]*\}", rule["expr"])
        assert selectors and all(defs.RULE_JOB in s for s in selectors), rule


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_anchors_in_readme():
    """Each alert's runbook anchor is a heading of README.md's section on the dashboards and
    alerts (a level-4 heading naming the alert). Until that section is in the README, only
    the anchor's form is held."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    for a in ALERTS:
        assert _github_anchor(a["alert"]) == a["alert"].lower()
    if "## Dashboards and alerts" not in text:
        return
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    assert {a["alert"].lower() for a in ALERTS} <= anchors


def test_promtool_check_rules():
    r = subprocess.run([PROMTOOL, "check", "rules", RULES], capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    assert f"SUCCESS: {len(ALERTS) + len(RECORDS)} rules found" in out and "WARNING" not in out.upper(), out


def _unit_tests():
    return {os.path.basename(p)[:-5]: load(p) for p in sorted(glob.glob(os.path.join(RULE_TESTS, "*.yaml")))}


def test_every_alert_has_a_unit_test_that_fires_and_stays_silent():
    tests = _unit_tests()
    assert set(tests) == {a["alert"] for a in ALERTS} | {"recording"}
    for name, spec in tests.items():
        assert spec["rule_files"] == ["../" + os.path.basename(RULES)], name
        if name == "recording":
            continue
        cases = [c for t in spec["tests"] for c in t.get("alert_rule_test", [])]
        assert {c["alertname"] for c in cases} == {name}
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases), name


def test_promtool_test_rules():
    files = sorted(glob.glob(os.path.join(RULE_TESTS, "*.yaml")))
    r = subprocess.run([PROMTOOL, "test", "rules", *files], capture_output=True, timeout=120)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    assert out.count("SUCCESS") == len(files), out


# -- the stack: processes, two procsnaps, Prometheus ------------------------------------------

WORKER = r"""
import ctypes, os, resource, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)

def name(n):
    libc.prctl(15, ctypes.c_char_p(n.encode()), 0, 0, 0)

hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
soft = 64 if hard == resource.RLIM_INFINITY else min(64, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
keep = []
while len(os.listdir("/proc/self/fd")) < int(soft * 0.85):  # worst_fd_ratio about 0.86
    keep.append(open(os.devnull))

def io():
    name("dash-io")
    with open(os.path.join(sys.argv[2], "worker.dat"), "wb+") as f:
        while True:
            f.seek(0)
            f.write(os.urandom(65536))
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            f.read()
            time.sleep(0.5)

def cpu():
    name("dash-cpu")
    while True:
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        time.sleep(0.1)

for run in (io, cpu):
    threading.Thread(target=run, daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
"""

# The parent waits in vfork() (state D, TASK_KILLABLE) until its child exits; the child
# sleeps in pause() until the test kills the session (an hour at most).
VFORKER = ("#include <unistd.h>\n"
           "int main(void) { if (vfork() == 0) { alarm(3600); pause(); _exit(0); } return 0; }\n")

POD_CONFIG = """extra_labels: [namespace, pod, container]
process_names:
  - name: shell
    cmdline: ['^-sh$']
  - name: "{{.Comm}}"
    cmdline: ['.+']
"""
POD1, POD2 = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d", "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
C1, C2, C3 = "a1" * 32, "b2" * 32, "c3" * 32
POD_CGROUPS = {  # fixture pid -> its /proc/PID/cgroup; pid 22 (a "-sh" too) stays outside pods
    "20": f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD1.replace('-', '_')}.slice/"
          f"cri-containerd-{C1}.scope\n",
    "21": f"0::/kubepods.slice/kubepods-pod{POD2.replace('-', '_')}.slice/cri-containerd-{C3}.scope\n",
    "10": f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD1.replace('-', '_')}.slice/"
          f"crio-{C2}.scope\n",
}


def wait_for(predicate, timeout=WAIT, interval=0.5, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class Stack:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.sessions = []  # process groups of their own: killed whole at the end
        self.receiver = None
        pid = os.getpid()
        self.tag = tag = f"dash{pid}"
        self.groups = {kind: f"{tag}-{kind}" for kind in ("absent", "sleepers", "restarter", "worker", "dstate")}
        self.sleep_arg = f"3600.{pid}"
        self.restart_args = ("1.5", f"0.{pid}")

    def log(self, name):
        return open(os.path.join(self.tmp, name), "wb")

    def spawn(self, argv, session=False, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=session, **kw)
        (self.sessions if session else self.procs).append(p)
        return p

    def start(self):
        for tool in (PROMETHEUS, PROMTOOL):
            assert os.access(tool, os.X_OK), f"{tool} missing: `make test` installs it (make tools)"
        self.start_processes()
        self.receiver = HttpReceiver().start()
        self.live_port = self.start_procsnap("live", self.live_config(), "--otlp.endpoint", self.receiver.endpoint,
                                             "--otlp.interval", "2")
        self.pods_port = self.start_procsnap("pods", POD_CONFIG, "--path.procfs", self.pod_tree(),
                                             "--path.pod-logs", os.path.join(K8S, "varlog", "pods"),
                                             "--path.container-logs", os.path.join(K8S, "varlog", "containers"))
        self.dead_port = free_port()  # a target nothing listens on
        self.live, self.pods, self.dead = (f"127.0.0.1:{p}" for p in (self.live_port, self.pods_port, self.dead_port))
        self.start_prometheus()
        self.warm_up()

    def start_processes(self):
        for _ in range(3):
            self.spawn(["sleep", self.sleep_arg])
        restarts = f"i=0; while [ $i -lt 400 ]; do sleep {' '.join(self.restart_args)}; i=$((i+1)); done"
        self.spawn(["sh", "-c", restarts], session=True)  # 10 minutes at most
        worker = self.spawn([sys.executable, "-c", WORKER, self.groups["worker"], self.tmp], stdout=subprocess.PIPE)
        assert worker.stdout.readline() == b"ready\n"
        source = os.path.join(self.tmp, "vforker.c")
        with open(source, "w") as f:
            f.write(VFORKER)
        cc = (sysconfig.get_config_var("CC") or "cc").split()
        binary = os.path.join(self.tmp, "vforker")
        r = subprocess.run([*cc, "-o", binary, source], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        self.spawn([binary, self.groups["dstate"]], session=True)

    def live_config(self):
        g, tag = self.groups, re.escape(self.tag)
        return (
            "process_names:\n"
            f"  - name: {g['absent']}\n    cmdline: ['^{tag}-never$']\n"
            f"  - name: {g['sleepers']}\n    cmdline: ['^sleep {re.escape(self.sleep_arg)}$']\n"
            f"  - name: {g['restarter']}\n    cmdline: ['^sleep {re.escape(' '.join(self.restart_args))}$']\n"
            f"  - name: {g['worker']}\n    cmdline: ['{tag}-worker']\n"
            f"  - name: {g['dstate']}\n    cmdline: ['{tag}-dstate$']\n"
        )

    def pod_tree(self):
        root = os.path.join(self.tmp, "proc")
        shutil.copytree(PROC_BASIC, root, symlinks=True)
        for pid, text in POD_CGROUPS.items():
            with open(os.path.join(root, pid, "cgroup"), "w") as f:
                f.write(text)
        return root

    def start_procsnap(self, name, config, *flags):
        path = os.path.join(self.tmp, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(config)
        port = free_port()
        self.spawn([PROCSNAP, "--web.listen-address", f"127.0.0.1:{port}", "--config.path", path, *flags],
                   stderr=self.log(f"procsnap-{name}.log"), env=clean_env())
        wait_for(lambda: http_ok(port, "/healthz"), 30, what=f"procsnap ({name}) /healthz")
        return port

    def start_prometheus(self):
        self.prom_port = free_port()
        config = os.path.join(self.tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                f"rule_files: [{json.dumps(RULES)}]\n"
                f"scrape_configs:\n  - job_name: {defs.JOB}\n    static_configs:\n"
                f"      - targets: ['{self.live}', '{self.pods}', '{self.dead}']\n"
            )
        self.spawn([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(self.tmp, 'data')}",
                    f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
                   stderr=self.log("prometheus.log"))
        wait_for(lambda: http_ok(self.prom_port, "/-/ready"), 30, what="prometheus /-/ready")

    def warm_up(self):
        """Until rate() has data (10 scrapes of each procsnap), the restarter has restarted
        three times and the vfork parent is seen waiting."""
        g, both = self.groups, f"{self.live}|{self.pods}"
        checks = {
            "10 scrapes of each procsnap": f'count(count_over_time(up{{instance=~"{both}"}}[1m]) >= 10) == 2',
            "3 restarts": f'changes({P}oldest_start_time_seconds{{groupname="{g["restarter"]}"}}[1m]) >= 3',
            "a process in state D": f'{P}states{{groupname="{g["dstate"]}", state="Waiting"}} > 0',
            "OTLP exports": f'procsnap_otlp_exports_total{{instance="{self.live}", result="success"}} > 0',
        }
        for what, expr in checks.items():
            wait_for(lambda: self.query(expr), what=what)

    def api(self, endpoint, **params):
        """(data, error): a failed query is an error string, not an exception."""
        status, body = http_get(self.prom_port, f"/api/v1/{endpoint}?{urllib.parse.urlencode(params, doseq=True)}",
                                timeout=30)
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            return None, f"HTTP {status}: {reply.get('errorType')}: {reply.get('error')}"
        return reply["data"], None

    def query(self, expr):
        data, error = self.api("query", query=expr)
        assert error is None, f"{error}\n{expr}"
        return data["result"]

    @staticmethod
    def metrics(port, accept=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
            resp = conn.getresponse()
            assert resp.status == 200
            return resp.read().decode()
        finally:
            conn.close()

    def stop(self):
        for p in self.sessions:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group this test made for it (vfork child, sleeps)
            except ProcessLookupError:
                pass
        stop_processes(self.procs + self.sessions)
        if self.receiver is not None:
            self.receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("dashboards")))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def own_values(s: Stack) -> dict:
    """The variables set to this test's targets and groups (the fixture pods' group: shell)."""
    return {"job": [defs.JOB], "instance": [s.live, s.pods, s.dead], "groupname": [*s.groups.values(), "shell"],
            "namespace": "ALL", "pod": "ALL", "container": "ALL"}


def all_values() -> dict:
    return dict.fromkeys(("job", "instance", "groupname", "namespace", "pod", "container"), "ALL")


def run_target(s: Stack, target: dict, values: dict):
    """The target as Grafana runs it: (result, error)."""
    expr = substitute(target["expr"], values)
    if target.get("instant"):
        data, error = s.api("query", query=expr)
    else:
        end = time.time()
        data, error = s.api("query_range", query=expr, start=end - 40, end=end, step=2)
    if error:
        return None, error
    result = data["result"]
    if data["resultType"] == "matrix":
        result = [r for r in result if r["values"]]
    return result, None


def check_dashboard(s: Stack, name: str, values: dict):
    problems = []
    for panel, target in targets(DASHBOARDS[name]):
        where = f"panel {panel['id']} {panel['title']!r} {target['refId']}"
        outcome = {}

        def has_data():
            outcome["result"], outcome["error"] = run_target(s, target, values)
            return outcome["error"] is not None or outcome["result"]

        try:
            wait_for(has_data, timeout=30, interval=1, what="data")
        except AssertionError:
            problems.append(f"{where}: no data\n    {substitute(target['expr'], values)}")
            continue
        if outcome["error"]:
            problems.append(f"{where}: {outcome['error']}\n    {substitute(target['expr'], values)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_query_has_data_for_our_processes(stack, name):
    check_dashboard(stack, name, own_values(stack))


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_query_runs_with_all_selected(stack, name):
    check_dashboard(stack, name, all_values())


def expected_variable_values(s: Stack, name: str) -> dict:
    return {"job": {defs.JOB}, "instance": {s.live}, "groupname": {s.groups["worker"]} if name != "procsnap-pods.json"
            else {"shell"}, "namespace": {"shop", "kube-system"}, "pod": {"web-7d9f-abcde", "coredns-5d78"},
            "container": {"nginx", "sidecar", "coredns"}}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_list_our_values(stack, name):
    want = expected_variable_values(stack, name)
    if name == "procsnap-pods.json":
        want["instance"] = {stack.pods}
    for var in variables(DASHBOARDS[name]).values():
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
        assert m and m.group(2) == var["name"], var["query"]
        selector = substitute(m.group(1), own_values(stack))
        end = time.time()

        def values():
            data, error = stack.api(f"label/{var['name']}/values", **{"match[]": selector, "start": end - 60,
                                                                      "end": end})
            assert error is None, error
            return set(data) >= want[var["name"]] and data

        wait_for(values, timeout=30, what=f"{name}: ${var['name']} listing {want[var['name']]}")


OPENMETRICS = "application/openmetrics-text;version=1.0.0"


def test_every_metric_a_query_names_is_exposed(stack):
    """Against the exposition of the two procsnaps this test runs (OTLP on, extra_labels on),
    in the text format and in OpenMetrics (what Prometheus asks for first), Prometheus' own
    series of a scrape, and the recorded series. A __name__ regex must match one of them."""
    exposed = set()
    for port in (stack.live_port, stack.pods_port):
        for accept in (None, OPENMETRICS):
            for line in stack.metrics(port, accept).splitlines():
                if line and not line.startswith("#"):
                    exposed.add(re.match(r"[a-zA-Z_:][\w:]*", line).group(0))
    assert {"procsnap_otlp_exports_total", "namedprocess_namegroup_thread_cpu_seconds_total",
            "namedprocess_namegroup_threads_wchan", "procsnap_read_errors_total"} <= exposed
    known = exposed | {"up", "scrape_duration_seconds", "scrape_samples_scraped"} | {r["record"] for r in RECORDS}
    texts = {}
    for name, d in DASHBOARDS.items():
        for panel, t in targets(d):
            texts[f"{name}: {panel['title']} {t['refId']}"] = substitute(t["expr"], all_values())
        for v in variables(d).values():
            if v["type"] == "query":
                selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", v["query"]).group(1)
                texts[f"{name}: ${v['name']}"] = substitute(selector, all_values())
    for rule in RECORDS + ALERTS:
        texts[rule.get("record") or rule.get("alert")] = rule["expr"]
    named, unknown = set(), []
    for where, expr in texts.items():
        for metric in metric_names(expr):
            named.add(metric)
            if metric not in known:
                unknown.append((where, metric))
        for pattern in re.findall(r'__name__=~"((?:[^"\\]|\\.)*)"', expr):
            if not any(re.fullmatch(pattern, m) for m in exposed):
                unknown.append((where, pattern))
    assert unknown == []
    assert len(named) >= 30


# -- the rules on the live Prometheus ------------------------------------------------------------


def test_rules_load_and_evaluate_cleanly(stack):
    want = {r.get("record") or r.get("alert") for r in RECORDS + ALERTS}

    def evaluated():
        data, error = stack.api("rules")
        assert error is None, error
        rules = [r for g in data["groups"] for r in g["rules"]]
        if {r["name"] for r in rules} != want or any(r["health"] == "unknown" for r in rules):
            return None
        return rules

    rules = wait_for(evaluated, timeout=30, what="every rule evaluated")
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_recorded_series_have_our_groups(stack):
    for rule in RECORDS:
        name = rule["record"]
        selector = (f'groupname=~"{regex_value(list(stack.groups.values()))}"' if name.startswith("groupname")
                    else f'instance="{stack.pods}"')
        wait_for(lambda: stack.query(f"{name}{{{selector}}}"), timeout=30, what=f"{name}{{{selector}}}")


def engineered(s: Stack) -> dict:
    """Alert -> the labels of the series this test makes it fire for."""
    return {
        "ProcsnapGroupNotRunning": {"groupname": s.groups["absent"]},
        "ProcsnapGroupFdsNearLimit": {"groupname": s.groups["worker"]},
        "ProcsnapGroupRestarting": {"groupname": s.groups["restarter"]},
        "ProcsnapGroupUninterruptibleSleep": {"groupname": s.groups["dstate"]},
        "ProcsnapDown": {"instance": s.dead},
        "ProcsnapReadErrorsRising": {"instance": s.pods},  # the fixture /proc's unreadable files
    }


QUIET = {  # alerts the live stack cannot make fire (their promtool unit tests do)
    "ProcsnapGroupMemoryGrowing": "needs an hour of growth",
    "ProcsnapScrapeSlow": "needs 2 s snapshots",
    "ProcsnapScrapeErrors": "needs /proc to fail",
    "ProcsnapOTLPExportsFailing": "the receiver here answers",
}


def test_every_alert_expression_runs_and_fires_for_what_this_test_made(stack):
    made = engineered(stack)
    assert set(made) | set(QUIET) == {a["alert"] for a in ALERTS} and not set(made) & set(QUIET)
    for alert in ALERTS:
        stack.query(alert["expr"])  # parses and runs
        labels = made.get(alert["alert"])
        if labels is None:
            continue

        def mine(expr=alert["expr"], labels=labels):
            return [r for r in stack.query(expr) if labels.items() <= r["metric"].items()]

        wait_for(mine, timeout=30, what=f"{alert['alert']} for {labels}")
        selector = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        active = wait_for(lambda: stack.query(f'ALERTS{{alertname="{alert["alert"]}", {selector}}}'), timeout=30,
                          what=f"ALERTS of {alert['alert']} for {labels}")
        assert {a["metric"]["alertstate"] for a in active} <= {"pending", "firing"}
        assert active[0]["metric"]["severity"] == alert["labels"]["severity"]


def test_recording_rule_expressions_run_with_data(stack):
    for rule in RECORDS:
        wait_for(lambda: stack.query(rule["expr"]), timeout=30, what=rule["expr"])
