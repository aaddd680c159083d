"""The Helm chart (helm/procsnap), the image (Dockerfile) and the systemd unit (packaging/).

The chart: `helm lint` and `helm template` of every ci/*-values.yaml scenario, each manifest
held to the Kubernetes 1.31 schemas (kubernetes-validate, strict: unknown fields fail) and the
Prometheus Operator's ServiceMonitor/PodMonitor/PrometheusRule CRD schemas (tests/fixtures/helm/,
made strict the same way); then what matters about the pods: the read-only host mounts and the
flags that use them, least privilege, the config checksum, the monitors' selectors, OTLP-only;
and the dashboards' ConfigMaps and the rules' PrometheusRule, off by default, holding exactly
what dashboards/ holds (the rules' job substituted, their Prometheus templates untouched).

The container's command line is run for real: the image's ENTRYPOINT (from the Dockerfile)
with the args and env of the rendered DaemonSet, each mounted path replaced by a local one
(the fixture /proc tree for /host/proc, the rendered ConfigMap for /etc/procsnap) and the
listen address by 127.0.0.1 and a free port. As root, it is also run with the container's
credentials (uid 0, capabilities as rendered, no_new_privs) on the real /proc, and the unit's
sandbox is checked against what procsnap does (its system calls under strace).

helm comes from `make tools` (.tools/helm/helm); systemd-analyze and strace from the same.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers import clean_env, free_port, http_get, stop_processes

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "procsnap"
HELM = ROOT / ".tools" / "helm" / "helm"
FIXTURES = ROOT / "tests" / "fixtures"
PROC_BASIC = FIXTURES / "proc-basic"
UNIT = ROOT / "packaging" / "procsnap.service"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
K8S_VERSION = "1.31.0"
SCENARIOS = sorted(p.name[: -len("-values.yaml")] for p in (CHART / "ci").glob("*-values.yaml"))
HTTP_SCENARIOS = [s for s in SCENARIOS if s != "otlp-only"]
# the groups of the fixture tree under the chart's default config (one per comm of a process
# with a command line)
FIXTURE_GROUPS = {"init": 1, "sh20": 1, "binary": 1, "noio": 1, "a) b (c": 2}
NAMESPACE = "monitoring"
RELEASE = "ps"
FULLNAME = f"{RELEASE}-procsnap"  # the chart's resources' name for this release
DASHBOARDS_DIR = ROOT / "dashboards"
RULES = DASHBOARDS_DIR / "rules" / "procsnap.rules.yaml"
# what the downward API would give the pod
FIELDS = {"spec.nodeName": "node-a"}
is_root = os.geteuid() == 0


def _need(path_or_name) -> str:
    """A tool the tests run: its absence fails (make tools brings it), never skips."""
    found = shutil.which(str(path_or_name))
    if not found:
        pytest.fail(f"{path_or_name} not found: `make tools` installs it")
    return found


def helm(*args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([_need(HELM), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(map(str, args))}: {done.stderr.strip()}")
    return done


def render(scenario: str | None = None, *sets: str, check=True):
    """The manifests of `helm template` (parsed), or the failed run with check=False."""
    args = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    if scenario:
        args += ["-f", CHART / "ci" / f"{scenario}-values.yaml"]
    for s in sets:
        args += ["--set", s]
    done = helm(*args, check=check)
    if not check:
        return done
    return [d for d in yaml.safe_load_all(done.stdout) if d]


_RENDERED: dict = {}


def rendered(scenario: str) -> list:
    if scenario not in _RENDERED:
        _RENDERED[scenario] = render(scenario)
    return copy.deepcopy(_RENDERED[scenario])


def only(docs, kind) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def process_config(docs) -> dict:
    """The process config's ConfigMap (the dashboards have ConfigMaps of their own)."""
    found = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == FULLNAME]
    assert len(found) == 1, f"{len(found)} process config ConfigMaps rendered"
    return found[0]


def kinds(docs) -> list:
    return sorted(d["kind"] for d in docs)


def pod_spec(docs) -> dict:
    return only(docs, "DaemonSet")["spec"]["template"]["spec"]


def container(docs) -> dict:
    (c,) = pod_spec(docs)["containers"]
    return c


def mounts(docs) -> dict:
    """mountPath -> (volumeMount, volume) of the procsnap container."""
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container(docs)["volumeMounts"]}


def flag(args, name):
    """The value of --name=VALUE in args (None when absent)."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given {len(values)} times"
    return values[0] if values else None


# -- the chart: lint, schemas ---------------------------------------------------------------------


def test_scenarios_are_the_ones_the_chart_promises():
    assert set(SCENARIOS) == {"default", "otlp-only", "full-visibility", "servicemonitor", "pod-labels", "dashboards"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint(scenario):
    done = helm("lint", "--strict", CHART, "-f", CHART / "ci" / f"{scenario}-values.yaml")
    assert "0 chart(s) failed" in done.stdout, done.stdout


def _strict(schema):
    """A CRD's structural schema with unknown fields refused, as `kubectl apply
    --validate=strict` (server-side field validation) refuses them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get(
                "x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


CRD_SCHEMAS = {kind: _strict(json.loads((FIXTURES / "helm" / f"{kind.lower()}-v1.schema.json").read_text()))
               for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def validate(doc):
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        # no schema for CRDs in kubernetes-validate: the operator's own, strict, plus metadata
        errors = sorted(jsonschema.Draft7Validator(CRD_SCHEMAS[doc["kind"]]).iter_errors(doc), key=str)
        assert not errors, f"{doc['kind']}: {errors[0].message} at {list(errors[0].absolute_path)}"
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63 and DNS_LABEL.match(meta["name"]) and DNS_LABEL.match(meta["namespace"])
        assert all(isinstance(v, str) for v in meta.get("labels", {}).values())
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:  # its message is the whole schema: the first line
        pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {str(e).splitlines()[0]}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_are_valid_kubernetes(scenario):
    docs = rendered(scenario)
    assert "DaemonSet" in kinds(docs)
    for doc in docs:
        validate(doc)


def test_strict_validation_refuses_an_unknown_field():
    """The validation above would catch a typo (not just parse)."""
    ds = only(rendered("default"), "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    sm = only(rendered("servicemonitor"), "ServiceMonitor")
    sm["spec"]["endpoints"][0]["scrapeInterval"] = "30s"  # the field is `interval`
    assert list(jsonschema.Draft7Validator(CRD_SCHEMAS["ServiceMonitor"]).iter_errors(sm))
    rule = only(rendered("dashboards"), "PrometheusRule")
    rule["spec"]["groups"][1]["rules"][0]["keepFiringFor"] = "5m"  # the field is `keep_firing_for`
    assert list(jsonschema.Draft7Validator(CRD_SCHEMAS["PrometheusRule"]).iter_errors(rule))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_resource_is_in_the_release_namespace_and_labelled(scenario):
    for doc in rendered(scenario):
        meta = doc["metadata"]
        assert meta["namespace"] == NAMESPACE, doc["kind"]
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert meta["labels"]["app.kubernetes.io/name"] == "procsnap"


# -- the pods: mounts, flags, security -----------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_host_proc_mounted_read_only_and_read_through_the_flag(scenario):
    docs = rendered(scenario)
    mount, volume = mounts(docs)["/host/proc"]
    assert mount["readOnly"] is True
    assert volume["hostPath"] == {"path": "/proc", "type": "Directory"}
    assert flag(container(docs)["args"], "path.procfs") == "/host/proc"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_host_path_is_mounted_read_only(scenario):
    docs = rendered(scenario)
    for path, (mount, volume) in mounts(docs).items():
        if "hostPath" in volume or "configMap" in volume:
            assert mount.get("readOnly") is True, path
    host = {v["hostPath"]["path"] for _, v in mounts(docs).values() if "hostPath" in v}
    assert host == {"/proc", "/var/log/pods", "/var/log/containers"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_kubelet_log_dirs_mounted_read_only_at_the_same_paths(scenario):
    """/var/log/containers holds symlinks into /var/log/pods: both, at the node's paths."""
    table = mounts(rendered(scenario))
    for path in ("/var/log/pods", "/var/log/containers"):
        mount, volume = table[path]
        assert mount["readOnly"] is True and volume["hostPath"]["path"] == path


def test_kubelet_log_dirs_can_be_left_out():
    table = mounts(render("default", "podLogs.enabled=false"))
    assert "/var/log/pods" not in table and "/var/log/containers" not in table and "/host/proc" in table


def _capabilities(docs) -> dict:
    return container(docs)["securityContext"].get("capabilities", {})


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_least_privilege(scenario):
    docs = rendered(scenario)
    spec, sc = pod_spec(docs), container(docs)["securityContext"]
    assert sc.get("privileged") in (None, False) and spec["securityContext"].get("privileged") is None
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("seccompProfile") in (None, {"type": "RuntimeDefault"})
    assert _capabilities(docs)["drop"] == ["ALL"]
    added = set(_capabilities(docs).get("add", []))
    assert added == ({"SYS_PTRACE", "DAC_READ_SEARCH"} if scenario == "full-visibility" else set())
    assert spec["hostPID"] is False and spec["hostNetwork"] is False and not spec.get("hostIPC")
    assert spec["automountServiceAccountToken"] is False
    # uid 0 without capabilities, as values.yaml explains (full visibility needs uid 0)
    assert spec["securityContext"]["runAsUser"] == 0 and "runAsUser" not in sc


def test_full_visibility_adds_exactly_the_two_capabilities():
    docs = render(None, "fullVisibility=true")
    assert _capabilities(docs) == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    assert container(docs)["securityContext"].get("appArmorProfile") is None  # only where asked


def test_full_visibility_refuses_a_non_root_user():
    """Added capabilities reach uid 0 only (Kubernetes sets no ambient ones): refused, not
    rendered into a pod that would silently see nothing more."""
    done = render(None, "fullVisibility=true", "securityContext.runAsUser=65534", check=False)
    assert done.returncode != 0 and "fullVisibility needs runAsUser 0" in done.stderr
    docs = render(None, "securityContext.runAsUser=65534", "securityContext.runAsNonRoot=true")
    assert pod_spec(docs)["securityContext"]["runAsUser"] == 65534


# -- the config -------------------------------------------------------------------------------------


def _checksum(docs) -> str:
    return only(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_rolls_the_pods_when_the_config_changes():
    first, again = render("default"), render("default")
    changed = render("default", "config.process_names[0].cmdline[0]=^/usr/")
    assert _checksum(first) == _checksum(again)
    assert _checksum(changed) != _checksum(first)
    assert process_config(changed)["data"]["config.yaml"] != process_config(first)["data"]["config.yaml"]
    # of the config only: other values leave it (and so the pods) alone
    assert _checksum(render("default", "resources.limits.memory=512Mi", "extraArgs[0]=--threads=false")) == \
        _checksum(first)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_map_is_the_values_config_unrendered(scenario):
    """Name templates are procsnap's: Helm must write {{.Comm}} out as it is."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values.update(yaml.safe_load((CHART / "ci" / f"{scenario}-values.yaml").read_text()) or {})
    docs = rendered(scenario)
    config_map = process_config(docs)
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == values["config"]
    assert "{{.Comm}}" in config_map["data"]["config.yaml"]
    mount, volume = mounts(docs)["/etc/procsnap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"] and mount["readOnly"] is True
    assert flag(container(docs)["args"], "config.path") == "/etc/procsnap/config.yaml"


def test_pod_labels_scenario_asks_for_the_pod_labels():
    config = yaml.safe_load(process_config(rendered("pod-labels"))["data"]["config.yaml"])
    assert config["extra_labels"] == ["namespace", "pod", "container"]


def test_no_config_means_procsnaps_own_default():
    docs = render(None, "config=null")
    assert "ConfigMap" not in kinds(docs) and flag(container(docs)["args"], "config.path") is None
    assert "/etc/procsnap" not in mounts(docs)
    assert "checksum/config" not in (only(docs, "DaemonSet")["spec"]["template"]["metadata"].get("annotations") or {})


# -- Service, monitors, OTLP ------------------------------------------------------------------------


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("scenario", HTTP_SCENARIOS)
def test_service_selects_the_pods_by_their_named_port(scenario):
    docs = rendered(scenario)
    service = only(docs, "Service")
    pod_labels = only(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert _selects(service["spec"]["selector"], pod_labels)
    assert _selects(only(docs, "DaemonSet")["spec"]["selector"]["matchLabels"], pod_labels)
    (port,) = service["spec"]["ports"]
    (container_port,) = container(docs)["ports"]
    assert port["name"] == "metrics" and port["port"] == 9256
    assert port["targetPort"] == container_port["name"] == "metrics" and container_port["containerPort"] == 9256
    assert flag(container(docs)["args"], "web.listen-address") == ":9256"


@pytest.mark.parametrize("scenario", HTTP_SCENARIOS)
def test_probes_get_healthz_on_the_metrics_port(scenario):
    c = container(rendered(scenario))
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_servicemonitor_selects_the_services_labels_and_port_name():
    docs = rendered("servicemonitor")
    service, monitor = only(docs, "Service"), only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == flag(container(docs)["args"], "web.telemetry-path") == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "procsnap"


def test_podmonitor_selects_the_pods_and_their_port():
    docs = rendered("servicemonitor")
    monitor = only(docs, "PodMonitor")
    pod_labels = only(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert _selects(monitor["spec"]["selector"]["matchLabels"], pod_labels)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == container(docs)["ports"][0]["name"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_monitors_are_off_by_default():
    assert "ServiceMonitor" not in kinds(rendered("default")) and "PodMonitor" not in kinds(rendered("default"))


def test_servicemonitor_without_a_service_is_refused():
    done = render("servicemonitor", "service.enabled=false", check=False)
    assert done.returncode != 0 and "needs service.enabled" in done.stderr


def test_otlp_only_serves_no_http():
    docs = rendered("otlp-only")  # which asks for both monitors as well
    assert kinds(docs) == ["ConfigMap", "DaemonSet", "ServiceAccount"]
    c = container(docs)
    assert "--web.listen-address=" in c["args"] and flag(c["args"], "web.listen-address") == ""
    assert flag(c["args"], "otlp.endpoint") == "http://otel-collector.monitoring:4317"
    assert flag(c["args"], "otlp.protocol") == "grpc" and flag(c["args"], "otlp.interval") == "60"
    assert "ports" not in c and "livenessProbe" not in c and "readinessProbe" not in c
    env = {e["name"]: e for e in c["env"]}
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"] == {
        "secretKeyRef": {"name": "otlp-credentials", "key": "headers"}}
    assert "k8s.node.name=$(K8S_NODE_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert env["K8S_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_otlp_beside_metrics_keeps_the_service():
    docs = render("default", "otlp.enabled=true", "otlp.endpoint=http://collector:4318")
    assert "Service" in kinds(docs)
    args = container(docs)["args"]
    assert flag(args, "web.listen-address") == ":9256" and flag(args, "otlp.endpoint") == "http://collector:4318"
    assert flag(args, "otlp.protocol") == "http/protobuf" and flag(args, "otlp.interval") == "30"


def test_otlp_without_an_endpoint_is_refused():
    done = render(None, "otlp.enabled=true", check=False)
    assert done.returncode != 0 and "needs otlp.endpoint" in done.stderr
    done = render(None, "otlp.only=true", check=False)
    assert done.returncode != 0 and "needs otlp.enabled" in done.stderr


# -- dashboards and rules -----------------------------------------------------------------------------

# the dashboards dashboards/build.py makes, and the chart's copies of them and of the rules
DASHBOARD_FILES = sorted(p.name for p in DASHBOARDS_DIR.glob("procsnap-*.json"))
JOB = 'job="procsnap"'  # the job the rules file selects (dashboards/defs.py's RULE_JOB)


def dashboard_maps(docs) -> list:
    return [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] != FULLNAME]


def rules_file_groups(job: str | None = None) -> list:
    """The rules file's groups, its job selector turned into `job` (a PromQL string: \\ and "
    escaped) as the chart does."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    if job is not None:
        quoted = '"' + job.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for group in groups:
            for rule in group["rules"]:
                rule["expr"] = rule["expr"].replace(JOB, f"job={quoted}")
    return groups


def test_chart_holds_copies_of_the_dashboards_and_rules():
    """Helm reads only files inside the chart: dashboards/build.py writes copies there (its
    --check, which tests/test_dashboards.py runs, fails on a stale or left-over copy); they are
    the originals byte for byte."""
    assert len(DASHBOARD_FILES) == 4
    assert sorted(p.name for p in (CHART / "dashboards").iterdir()) == DASHBOARD_FILES
    for name in DASHBOARD_FILES:
        assert (CHART / "dashboards" / name).read_bytes() == (DASHBOARDS_DIR / name).read_bytes(), name
    assert sorted(p.name for p in (CHART / "rules").iterdir()) == [RULES.name]
    assert (CHART / "rules" / RULES.name).read_bytes() == RULES.read_bytes()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from dashboards import build, defs

    copies = build.chart_copies(build.outputs())
    assert {(DASHBOARDS_DIR / rel).resolve() for rel in copies} == \
        {*(CHART / "dashboards" / n for n in DASHBOARD_FILES), CHART / "rules" / RULES.name}
    assert defs.RULE_JOB == JOB  # what the chart's PrometheusRule replaces
    helmignore = (CHART / ".helmignore").read_text().splitlines()
    assert not {"dashboards/", "rules/", "*.json", "*.yaml"} & set(helmignore)  # packaged with the chart


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_dashboards_and_rules_are_off_by_default(scenario):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["grafanaDashboards"]["enabled"] is False and values["prometheusRule"]["enabled"] is False
    docs = rendered(scenario)
    if scenario == "dashboards":
        assert len(dashboard_maps(docs)) == 4 and "PrometheusRule" in kinds(docs)
    else:
        assert not dashboard_maps(docs) and "PrometheusRule" not in kinds(docs)


def test_each_dashboard_config_map_holds_one_dashboard():
    maps = dashboard_maps(rendered("dashboards"))
    names = {m["metadata"]["name"]: m for m in maps}
    assert sorted(names) == sorted(f"{FULLNAME}-dashboard-{n[len('procsnap-'):-len('.json')]}"
                                   for n in DASHBOARD_FILES)
    seen = []
    for name, config_map in names.items():
        assert len(name) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name)
        assert config_map["metadata"]["namespace"] == NAMESPACE
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "procsnap"}
        assert "binaryData" not in config_map
        ((file, text),) = config_map["data"].items()
        assert text == (DASHBOARDS_DIR / file).read_text(encoding="utf-8"), file
        assert json.loads(text)["uid"] and len(text.encode()) < 1024 * 1024  # a ConfigMap's limit
        seen.append(file)
    assert sorted(seen) == DASHBOARD_FILES


def test_dashboard_config_maps_namespace_labels_and_annotations():
    docs = render(None, "grafanaDashboards.enabled=true", "grafanaDashboards.namespace=grafana",
                  "grafanaDashboards.labels.grafana_dashboard=1", "grafanaDashboards.labels.team=obs")
    maps = dashboard_maps(docs)
    assert len(maps) == 4 and "PrometheusRule" not in kinds(docs)
    for config_map in maps:
        meta = config_map["metadata"]
        assert meta["namespace"] == "grafana" and "annotations" not in meta
        # --set gives the number 1: a label value is a string all the same
        assert meta["labels"]["grafana_dashboard"] == "1" and meta["labels"]["team"] == "obs"
        assert meta["labels"]["app.kubernetes.io/instance"] == RELEASE
        validate(config_map)


def test_prometheusrule_holds_the_rules():
    docs = rendered("dashboards")
    rule = only(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == FULLNAME and rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == {"groups": rules_file_groups()}
    # the job they select is the one the ServiceMonitor gives (the value of its jobLabel)
    service, monitor = only(docs, "Service"), only(docs, "ServiceMonitor")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "procsnap"
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert all(JOB in e for e in exprs), [e for e in exprs if JOB not in e]


def test_prometheusrule_elsewhere():
    docs = render(None, "prometheusRule.enabled=true", "prometheusRule.namespace=rules")
    rule = only(docs, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "rules" and not dashboard_maps(docs)
    validate(rule)


def test_rule_job_follows_the_monitors_job():
    """The monitors name the job after app.kubernetes.io/name (the chart's name, or
    nameOverride): so do the rules unless told another job."""
    docs = render("dashboards", "nameOverride=procs", "prometheus.podMonitor.enabled=true")
    service, monitor, pod_monitor = only(docs, "Service"), only(docs, "ServiceMonitor"), only(docs, "PodMonitor")
    pod_labels = only(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "procs"
    assert pod_labels[pod_monitor["spec"]["jobLabel"]] == "procs"
    assert only(docs, "PrometheusRule")["spec"]["groups"] == rules_file_groups("procs")


@pytest.mark.parametrize("job", ["node-procs", 'odd "quoted" job'])
def test_rule_job_can_be_set(job, tmp_path):
    docs = render("dashboards", f"prometheusRule.job={job}")
    groups = only(docs, "PrometheusRule")["spec"]["groups"]
    assert groups == rules_file_groups(job) != rules_file_groups()
    assert not any(JOB in r["expr"] for g in groups for r in g["rules"])
    # still rules Prometheus loads (the job quoted as a PromQL string)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run([_need(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_templates_are_prometheus_not_helms():
    """The annotations' {{ $labels.groupname }}, {{ $value | humanize1024 }} reach Prometheus as
    they are in the rules file: Helm never renders them (no tpl), and its YAML round trip keeps
    every string byte for byte."""
    rule = only(rendered("dashboards"), "PrometheusRule")
    want = {r["alert"]: r for g in rules_file_groups() for r in g["rules"] if "alert" in r}
    got = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert got.keys() == want.keys() and len(got) >= 10
    templated = 0
    for name, alert in want.items():
        for key, text in alert["annotations"].items():
            assert got[name]["annotations"][key].encode() == text.encode(), (name, key)
            templated += "{{ $labels.groupname }}" in text
    assert got["ProcsnapGroupNotRunning"]["annotations"]["summary"] == \
        "Process group {{ $labels.groupname }} has no processes"
    assert templated >= 5


def test_prometheusrule_without_its_rules_file_is_refused(tmp_path):
    chart = tmp_path / "procsnap"
    shutil.copytree(CHART, chart)
    (chart / "rules" / RULES.name).write_text("# nothing\n")
    done = helm("template", RELEASE, chart, "--set", "prometheusRule.enabled=true", check=False)
    assert done.returncode != 0 and "rules/procsnap.rules.yaml: no rule groups" in done.stderr


# -- scheduling, resources, image ---------------------------------------------------------------


def test_runs_on_every_linux_node_one_at_a_time():
    docs = rendered("default")
    ds, spec = only(docs, "DaemonSet"), pod_spec(docs)
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert "priorityClassName" not in spec
    assert pod_spec(rendered("servicemonitor"))["priorityClassName"] == "system-node-critical"


def test_resources_sized_from_the_benchmark():
    assert container(rendered("default"))["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}


def test_extra_args_come_after_the_charts():
    args = container(rendered("servicemonitor"))["args"]
    assert args[0] == "--path.procfs=/host/proc" and args[-1] == "--threads=false"


def _pyproject(key: str) -> str:
    """A `key = "value"` of pyproject.toml's [project] (tomllib is Python >= 3.11)."""
    return re.search(rf'^{key} = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def _version() -> str:
    return _pyproject("version")


def test_image_defaults_to_the_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == _version()
    assert container(rendered("default"))["image"] == f"ghcr.io/procsnap/procsnap:{_version()}"
    digest = "sha256:" + "a" * 64
    assert container(render(None, f"image.digest={digest}", "image.tag=dev"))["image"] == \
        f"ghcr.io/procsnap/procsnap:dev@{digest}"


# -- documentation of the values ------------------------------------------------------------------

# the chart's own maps: each of their keys has a comment (the others are Kubernetes objects or
# procsnap's config, described as a whole above them)
CHART_MAPS = ("image", "hostProc", "podLogs", "web", "otlp", "service", "prometheus", "grafanaDashboards",
              "prometheusRule", "serviceAccount")


def test_every_value_is_commented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list = []  # (indent, key)
    in_list = None  # indent of the "- " of the list item we are in (its keys are the item's)
    for i, line in enumerate(lines):
        item = re.match(r"( *)- ", line)
        if item:
            in_list = len(item.group(1)) if in_list is None else min(in_list, len(item.group(1)))
            continue
        m = re.match(r"( *)([A-Za-z][\w.-]*):( |$)", line)
        if not m:
            continue
        indent = len(m.group(1))
        if in_list is not None:
            if indent > in_list:
                continue
            in_list = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [m.group(2)]
        stack.append((indent, m.group(2)))
        if indent == 0 or path[0] in CHART_MAPS:
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            assert above.lstrip().startswith("#") or " # " in line, \
                f"values.yaml:{i + 1}: {'.'.join(path)} has no comment"


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "config":
            yield from _leaves(value, path + ".")
        else:
            yield path


def test_chart_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    table = readme[readme.index("\n## Values\n"):]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in _leaves(values)
               if not any(p == k or p.startswith(k + ".") for k in listed)]
    assert not missing, f"chart README.md values table lacks {missing}"
    unknown = [k for k in listed if not any(p == k or p.startswith(k + ".") for p in _leaves(values))]
    assert not unknown, f"chart README.md lists values that do not exist: {unknown}"


# -- the image ------------------------------------------------------------------------------------------


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def entrypoint() -> list:
    (line,) = re.findall(r"^ENTRYPOINT (.+)$", _dockerfile(), re.M)
    return json.loads(line)


def test_dockerfile_builds_what_the_chart_runs():
    text = _dockerfile()
    assert entrypoint() == ["procsnap"]
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts") if e.name == "procsnap"}
    assert scripts == {"procsnap": "exporter.cli:main"}
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]  # one base: the venv's interpreter links hold
    final = text[text.rindex("\nFROM "):]
    assert "gcc" not in final and "COPY --from=build /opt/procsnap /opt/procsnap" in final
    assert re.search(r"^USER 65534", final, re.M)
    # the context holds every COPY source (.dockerignore lists what is let in)
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in sources.split():
            source = source.rstrip("/")
            assert (ROOT / source).exists() and source in allowed, source
    # and the package builds from those alone (setup.py and pyproject name no other file)
    assert _pyproject("readme") in allowed


# -- the container's command line, run ----------------------------------------------------------

PROCSNAP = str(Path(sys.executable).with_name(entrypoint()[0]))


def _expand(text: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion in env values and args ($$ is a literal $)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def container_env(c: dict, secrets: dict) -> dict:
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = _expand(e["value"], env)
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = FIELDS[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def local_command(docs, tmp_path, procfs, port=None, secrets=None):
    """argv and env of the container's process, with each mount's path replaced by a local
    one: the host /proc by `procfs`, the ConfigMap's directory by its data written out; the
    listen address by 127.0.0.1:port (the pod has its own network, this machine does not)."""
    c = container(docs)
    local = {}
    for path, (_, volume) in mounts(docs).items():
        if "configMap" in volume:
            config_dir = tmp_path / "configmap"
            config_dir.mkdir()
            for name, text in process_config(docs)["data"].items():
                (config_dir / name).write_text(text)
            local[path] = str(config_dir)
        elif volume["hostPath"]["path"] == "/proc":
            local[path] = str(procfs)
    env = container_env(c, secrets or {})
    argv = list(entrypoint())
    argv[0] = PROCSNAP
    for arg in c["args"]:
        arg = _expand(arg, env)
        name, eq, value = arg.partition("=")
        for path, there in sorted(local.items(), key=lambda kv: -len(kv[0])):
            if eq and (value == path or value.startswith(path + "/")):
                arg = f"{name}={there}{value[len(path):]}"
                break
        if name == "--web.listen-address" and value and port is not None:
            arg = f"--web.listen-address=127.0.0.1:{port}"
        argv.append(arg)
    return argv, clean_env(**env)


def start(argv, env, log):
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")


def wait_http(proc, port, log_path, path="/healthz", timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"procsnap exited {proc.returncode}: {Path(log_path).read_text()}")
        try:
            return http_get(port, path, timeout=5)
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"procsnap not serving after {timeout}s: {Path(log_path).read_text()}")


def num_procs(exposition: str) -> dict:
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^namedprocess_namegroup_num_procs\{groupname="((?:[^"\\]|\\.)*)"[^}]*\} (\S+)$', exposition, re.M)}


@pytest.mark.parametrize("scenario", ["default", "servicemonitor", "full-visibility"])
def test_container_command_serves_the_fixture_groups(scenario, tmp_path):
    docs = rendered(scenario)
    port = free_port()
    argv, env = local_command(docs, tmp_path, PROC_BASIC, port)
    assert f"--path.procfs={PROC_BASIC}" in argv
    log_path = tmp_path / "procsnap.log"
    with open(log_path, "wb") as log:
        proc = start(argv, env, log)
    try:
        c = container(docs)
        for probe in (c["livenessProbe"], c["readinessProbe"]):  # what the kubelet asks
            status, body = wait_http(proc, port, log_path, probe["httpGet"]["path"])
            assert (status, body.strip()) == (200, b"ok")
        status, body = http_get(port, flag(c["args"], "web.telemetry-path"))
        assert status == 200
        text = body.decode()
        groups = num_procs(text)
        for group, count in FIXTURE_GROUPS.items():
            assert groups.get(group) == count, (group, sorted(groups))
        assert "procsnap_build_info" in text
    finally:
        stop_processes([proc])
    assert proc.returncode == 0, log_path.read_text()


def test_container_command_pushes_otlp_only(tmp_path):
    """otlp-only's command line, pointed at a receiver here: the fixture's groups arrive with
    the node's name in the resource, and no port is opened."""
    import psutil
    from otlp_receiver import HttpReceiver

    receiver = HttpReceiver().start()
    try:
        docs = render("otlp-only", f"otlp.endpoint={receiver.endpoint}", "otlp.protocol=http/protobuf",
                      "otlp.interval=0.5")
        argv, env = local_command(docs, tmp_path, PROC_BASIC,
                                  secrets={("otlp-credentials", "headers"): "x-api-key=test"})
        assert "--web.listen-address=" in argv and env["OTEL_EXPORTER_OTLP_HEADERS"] == "x-api-key=test"
        log_path = tmp_path / "procsnap.log"
        with open(log_path, "wb") as log:
            proc = start(argv, env, log)
        try:
            assert receiver.wait_for(1, 60), log_path.read_text()
            assert not [c for c in psutil.Process(proc.pid).net_connections("inet") if c.status == "LISTEN"]
        finally:
            stop_processes([proc])
        assert proc.returncode == 0, log_path.read_text()
        points = receiver.points(-1)
        counts = {p["attributes"]["procsnap.group.name"]: p["value"] for p in points
                  if p["name"] == "procsnap.group.process.count"}
        for group, count in FIXTURE_GROUPS.items():
            assert counts.get(group) == count, (group, sorted(counts))
        resource = points[0]["resource"]
        assert resource["k8s.node.name"] == "node-a" and resource["k8s.cluster.name"] == "ci"
        # procsnap's own pod is not in the resource: k8s.pod.name on a point is the group's
        assert "k8s.pod.name" not in resource and "k8s.namespace.name" not in resource
    finally:
        receiver.stop()


POD_UID = "0d7c1a52-5b8e-4f0c-9d47-6a2b1c3e4f50"
CONTAINER_ID = "4f" * 32


def test_container_command_labels_groups_by_pod(tmp_path):
    """pod-labels: a fixture process in a pod's cgroup, the kubelet's log layout beside it (as
    the mounts give it), and the groups come out with namespace, pod and container labels."""
    procfs = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, procfs, symlinks=True)
    (procfs / "20" / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID.replace('-', '_')}.slice/"
        f"cri-containerd-{CONTAINER_ID}.scope\n")
    pods, containers = tmp_path / "var-log-pods", tmp_path / "var-log-containers"
    (pods / f"shop_web-7d9f_{POD_UID}" / "nginx").mkdir(parents=True)
    containers.mkdir()
    (containers / f"web-7d9f_shop_nginx-{CONTAINER_ID}.log").symlink_to(
        pods / f"shop_web-7d9f_{POD_UID}" / "nginx" / "0.log")
    docs = rendered("pod-labels")
    table = mounts(docs)
    assert table["/var/log/pods"][0]["readOnly"] and table["/var/log/containers"][0]["readOnly"]
    argv, env = local_command(docs, tmp_path, procfs)
    # the pod reads them at procsnap's default paths, the mount points; here they are elsewhere
    argv += [f"--path.pod-logs={pods}", f"--path.container-logs={containers}", "--once"]
    argv = [a for a in argv if not a.startswith("--web.listen-address=")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines()
                if line.startswith("namedprocess_namegroup_num_procs{") and 'groupname="sh20"' in line)
    for label in ('namespace="shop"', 'pod="web-7d9f"', 'container="nginx"'):
        assert label in line, line


# -- the container's credentials on the real /proc (root) -----------------------------------------

SETPRIV = shutil.which("setpriv")


def _sleeper(uid: int):
    """A process of another user, under a comm of its own, for the visibility checks."""
    where = tempfile.mkdtemp(prefix="psnap-helm-", dir="/tmp")
    os.chmod(where, 0o755)
    comm = f"psh{os.getpid() % 100000}x{uid % 100}"[:15]
    binary = os.path.join(where, comm)
    shutil.copy(shutil.which("sleep"), binary)
    os.chmod(binary, 0o755)
    proc = subprocess.Popen([_need("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", binary, "300"])
    return proc, comm, where


def _as_container(docs, argv):
    """argv under the container's credentials: its uid, exactly its capabilities (the bounding
    set; uid 0 gets it as permitted and effective at exec) and no_new_privs."""
    sc = {**pod_spec(docs)["securityContext"], **container(docs)["securityContext"]}
    caps = ",".join(f"+{c.lower()}" for c in sc.get("capabilities", {}).get("add", []))
    uid = sc["runAsUser"]
    return [_need("setpriv"), f"--reuid={uid}", f"--regid={sc['runAsGroup']}", "--clear-groups",
            "--inh-caps=-all", f"--bounding-set=-all{',' + caps if caps else ''}", "--no-new-privs", *argv]


@pytest.mark.skipif(not is_root, reason="switching credentials needs root (CI runs as root)")
@pytest.mark.parametrize("scenario", ["default", "full-visibility"])
def test_container_credentials_on_the_real_proc(scenario, tmp_path):
    """Without the capabilities another user's io is absent (never 0) and counted as EACCES;
    with fullVisibility's two it is read."""
    sleeper, comm, where = _sleeper(65533)
    try:
        docs = rendered(scenario)
        argv, env = local_command(docs, tmp_path, "/proc")
        argv = [a for a in argv if not a.startswith("--web.listen-address=")] + ["--once"]
        done = subprocess.run(_as_container(docs, argv), env=env, capture_output=True, text=True,
                              timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr
        text = done.stdout
        assert num_procs(text).get(comm) == 1, comm
        has_io = re.search(rf'^namedprocess_namegroup_read_bytes_total\{{groupname="{comm}"\}} ', text, re.M)
        eacces = re.search(r'^procsnap_read_errors_total\{reason="EACCES"\} (\S+)$', text, re.M)
        if scenario == "full-visibility":
            assert has_io, f"{comm}'s io not read with SYS_PTRACE + DAC_READ_SEARCH"
        else:
            assert not has_io and eacces and float(eacces.group(1)) >= 1
    finally:
        sleeper.kill()
        sleeper.wait()
        shutil.rmtree(where)


# -- the systemd unit ---------------------------------------------------------------------------------


def unit() -> dict:
    """The unit's settings: (section, key) -> [values, in order] (systemd's list semantics)."""
    settings, section = {}, None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), line
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep and section and re.fullmatch(r"[A-Za-z]+", key), line
        settings.setdefault((section, key), []).append(value)
    return settings


def test_unit_parses_and_has_what_debian_ships():
    u = unit()
    assert u[("Service", "EnvironmentFile")] == ["-/etc/default/procsnap"]
    (exec_start,) = u[("Service", "ExecStart")]
    assert exec_start.split()[1:] == ["$ARGS"] and exec_start.split()[0].endswith("/procsnap")
    assert u[("Install", "WantedBy")] == ["multi-user.target"]
    assert u[("Service", "Restart")] == ["on-failure"]
    default = (ROOT / "packaging" / "procsnap.default").read_text()
    assert re.search(r'^ARGS=""$', default, re.M)


def test_unit_sandbox_lets_it_read_every_process():
    u = unit()
    for key, value in {"ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes",
                       "NoNewPrivileges": "yes", "ProtectKernelTunables": "yes",
                       "ProtectControlGroups": "yes", "ProtectKernelModules": "yes"}.items():
        assert u[("Service", key)] == [value], key
    # what would hide processes or take the capabilities' reach away
    for key in ("ProtectProc", "ProcSubset", "PrivateUsers", "PrivatePIDs", "User"):
        assert ("Service", key) not in u, key
    assert u[("Service", "DynamicUser")] == ["yes"]  # never root
    caps = {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}
    assert set(u[("Service", "CapabilityBoundingSet")][0].split()) == caps
    assert set(u[("Service", "AmbientCapabilities")][0].split()) == caps


def _unit_here(tmp_path) -> Path:
    """The unit with ExecStart at this checkout's procsnap (verify wants it to exist)."""
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={PROCSNAP}", UNIT.read_text(), flags=re.M)
    path = tmp_path / "procsnap.service"
    path.write_text(text)
    return path


def test_unit_verifies(tmp_path):
    done = subprocess.run([_need("systemd-analyze"), "verify", str(_unit_here(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_unit_exposure_is_low(tmp_path):
    done = subprocess.run([_need("systemd-analyze"), "security", "--offline=true", str(_unit_here(tmp_path))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    level = float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout).group(1))
    assert level < 4.0, done.stdout[-2000:]  # systemd's "OK" or better


def _syscall_groups() -> dict:
    out = subprocess.run([_need("systemd-analyze"), "syscall-filter"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = groups.setdefault(line.strip(), [])
        else:
            current.append(line.strip())
    return groups


def _expand_calls(names, groups, seen=None) -> set:
    seen = set() if seen is None else seen
    out = set()
    for name in names:
        if name.startswith("@"):
            if name not in seen:
                seen.add(name)
                out |= _expand_calls(groups[name], groups, seen)
        else:
            out.add(name)
    return out


@pytest.mark.skipif(not is_root, reason="strace of a child as root, as CI runs")
def test_unit_syscall_filter_allows_what_procsnap_calls(tmp_path):
    """Every system call procsnap makes while serving a scrape (strace -f) passes the unit's
    SystemCallFilter, so the filter cannot kill it on some code path of /metrics."""
    groups = _syscall_groups()
    allowed = set()
    for line in unit()[("Service", "SystemCallFilter")]:
        if line.startswith("~"):
            allowed -= _expand_calls(line[1:].split(), groups)
        else:
            allowed |= _expand_calls(line.split(), groups)
    import psutil

    port = free_port()
    trace = tmp_path / "strace.out"
    log_path = tmp_path / "procsnap.log"
    with open(log_path, "wb") as log:
        proc = start([_need("strace"), "-f", "-qq", "-o", str(trace), PROCSNAP,
                      f"--web.listen-address=127.0.0.1:{port}"], clean_env(), log)
    try:
        assert wait_http(proc, port, log_path, timeout=60)[0] == 200
        for path in ("/metrics", "/", "/healthz"):
            assert http_get(port, path)[0] == 200
    finally:
        # SIGTERM to procsnap itself (strace would detach and leave it running); strace ends with it
        for child in psutil.Process(proc.pid).children():
            child.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(proc.pid).children():
                child.kill()
            proc.kill()
            proc.wait()
    called = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace.read_text(), re.M))
    assert {"openat", "read", "accept4"} <= called or {"openat", "read", "accept"} <= called
    assert not called - allowed, f"blocked by the unit's SystemCallFilter: {sorted(called - allowed)}"
