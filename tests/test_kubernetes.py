"""Pods: placement from /proc/PID/cgroup for every layout, names from the kubelet's log
layout, and the labels end to end on a fixture /proc whose processes sit in pods."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import parse_config
from exporter.kubernetes import NOT_IN_A_POD, REFRESH_SECONDS, PodDirectory, PodInfo, placement
from helpers import clean_env
from procs import FakeReader, exporter, rec

HERE = os.path.dirname(os.path.abspath(__file__))
K8S = os.path.join(HERE, "fixtures", "k8s")
PROC_BASIC = os.path.join(HERE, "fixtures", "proc-basic")
PROCSNAP = os.path.join(os.path.dirname(sys.executable), "procsnap")
POD1, POD2 = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d", "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
C1, C2, C3 = "a1" * 32, "b2" * 32, "c3" * 32

# fixture cgroup file -> (pod uid, container id), None outside any pod
LAYOUTS = {
    "v2-systemd-containerd": (POD1, C1),
    "v2-systemd-crio": (POD1, C2),
    "v2-systemd-docker-guaranteed": (POD1, C3),
    "v2-cgroupfs-containerd": (POD1, C1),
    "v2-cgroupfs-crio-guaranteed": (POD1, C2),
    "v1-cgroupfs-docker": (POD1, C3),
    "v1-systemd-containerd": (POD1, C1),
    "v2-nested-cgroupns": (POD1, C1),  # relative to another container's cgroup namespace
    "v2-nested-cgroupns-cgroupfs": (POD1, C3),
    "v2-systemd-in-container": (POD1, C1),  # cgroups the container made below its scope
    "v2-pod-slice-only": (POD1, None),
    "v2-crio-conmon": (POD1, None),  # conmon belongs to the pod, in no container
    "v2-host-service": None,
    "v2-host-session": None,
    "v2-cgroupns-root": None,
    "v1-host": None,
    "v2-plain-docker-not-k8s": None,
}


def cgroup_text(layout: str) -> str:
    with open(os.path.join(K8S, "cgroup", layout)) as f:
        return f.read()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_placement_of_every_layout(layout):
    found = placement(cgroup_text(layout))
    assert (None if found is None else tuple(found)) == LAYOUTS[layout]


def test_every_fixture_layout_is_in_the_table():
    assert sorted(os.listdir(os.path.join(K8S, "cgroup"))) == sorted(LAYOUTS)


def test_unparsable_cgroup_text_is_no_pod():
    for text in (None, "", "garbage", "0::", "::::", "0::/kubepods/podnot-a-uid/" + C1, "0::/kubepods/burstable/" + C1):
        assert placement(text) is None, text


def pods(clock=lambda: 0.0) -> PodDirectory:
    return PodDirectory(os.path.join(K8S, "varlog", "pods"), os.path.join(K8S, "varlog", "containers"), clock)


def test_names_from_the_kubelet_log_layout():
    d = pods()
    assert d.info(cgroup_text("v2-systemd-containerd")) == PodInfo("shop", "web-7d9f-abcde", "nginx", C1)
    assert d.info(cgroup_text("v2-systemd-crio")) == PodInfo("shop", "web-7d9f-abcde", "sidecar", C2)
    assert d.info(cgroup_text("v2-pod-slice-only")) == PodInfo("shop", "web-7d9f-abcde", "", "")
    assert d.info(cgroup_text("v2-host-session")) == NOT_IN_A_POD
    coredns = f"0::/kubepods.slice/kubepods-pod{POD2.replace('-', '_')}.slice/cri-containerd-{C3}.scope"
    assert d.info(coredns) == PodInfo("kube-system", "coredns-5d78", "coredns", C3)
    assert d.listings == 1  # listed once, on the first miss; what it found serves the rest


def test_a_miss_lists_again_at_most_every_refresh_interval(tmp_path):
    now = [0.0]
    root = tmp_path / "varlog"
    shutil.copytree(os.path.join(K8S, "varlog"), root, symlinks=True)
    d = PodDirectory(str(root / "pods"), str(root / "containers"), lambda: now[0])
    unknown = "0::/kubepods/besteffort/pod" + "0" * 8 + "-1111-2222-3333-" + "4" * 12 + "/" + "d4" * 32
    for _ in range(50):  # a pod the kubelet has no logs for: not a listing per scrape
        assert d.info(unknown) == PodInfo("", "", "", "d4" * 32)
    assert d.listings == 1
    pod = root / "pods" / ("ops_late-pod_" + "0" * 8 + "-1111-2222-3333-" + "4" * 12)
    (pod / "app").mkdir(parents=True)
    os.symlink(f"../pods/{pod.name}/app/0.log", root / "containers" / f"late-pod_ops_app-{'d4' * 32}.log")
    now[0] = REFRESH_SECONDS + 1
    assert d.info(unknown) == PodInfo("ops", "late-pod", "app", "d4" * 32) and d.listings == 2


def test_no_kubelet_logs_mounted_is_no_names(tmp_path):
    d = PodDirectory(str(tmp_path / "none"), str(tmp_path / "none2"))
    assert d.info(cgroup_text("v2-systemd-containerd")) == PodInfo("", "", "", C1)


# -- grouping and labels ----------------------------------------------------------------


POD_CONFIG = """
extra_labels: [namespace, pod, container]
process_names:
  - name: "{{.Comm}}"
    cmdline: ['.+']
"""


def test_extra_labels_split_groups_by_pod_and_template_fields():
    r = FakeReader()
    r.put(rec(10, "nginx", start=100), cgroup=cgroup_text("v2-systemd-containerd").encode())
    r.put(rec(11, "nginx", start=101), cgroup=cgroup_text("v1-cgroupfs-docker").encode())  # no such container: pod only
    r.put(rec(12, "nginx", start=102), cgroup=b"0::/system.slice/nginx.service\n")
    exp = exporter(parse_config(POD_CONFIG), r)
    exp.grouper.pods = pods()
    groups = {(g.name, g.labels): g.num_procs for g in exp.scrape().groups}
    assert groups == {("nginx", ("shop", "web-7d9f-abcde", "nginx")): 1, ("nginx", ("shop", "web-7d9f-abcde", "")): 1,
                      ("nginx", ("", "", "")): 1}
    text = b"".join(exp.exposition(scrape=False)).decode()
    assert ('namedprocess_namegroup_num_procs{container="nginx",groupname="nginx",namespace="shop",'
            'pod="web-7d9f-abcde"} 1.0') in text
    assert ('namedprocess_namegroup_cpu_seconds_total{container="",groupname="nginx",mode="user",namespace="",'
            'pod=""} 0.0') in text
    named = parse_config('process_names: [{name: "{{.Namespace}}/{{.Pod}}/{{.Container}}/{{.ContainerID}}", '
                         'comm: [nginx]}]')
    exp = exporter(named, r)
    exp.grouper.pods = pods()
    assert {g.name for g in exp.scrape().groups} == {f"shop/web-7d9f-abcde/nginx/{C1}", f"shop/web-7d9f-abcde//{C3}", "///"}


def test_end_to_end_on_a_fixture_proc(tmp_path):
    """procsnap --once on a /proc whose processes sit in pods: their groups carry the
    namespace, pod and container; the processes outside pods get empty ones."""
    proc = tmp_path / "proc"
    shutil.copytree(PROC_BASIC, proc, symlinks=True)
    (proc / "20" / "cgroup").write_text(cgroup_text("v2-systemd-containerd"))
    (proc / "21" / "cgroup").write_text(f"0::/kubepods.slice/kubepods-pod{POD2.replace('-', '_')}.slice/"
                                        f"cri-containerd-{C3}.scope\n")
    config = tmp_path / "c.yaml"
    config.write_text(POD_CONFIG)
    r = subprocess.run([PROCSNAP, "--once", "--path.procfs", str(proc), "--config.path", str(config),
                        "--path.pod-logs", os.path.join(K8S, "varlog", "pods"),
                        "--path.container-logs", os.path.join(K8S, "varlog", "containers")],
                       capture_output=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    labels = {}
    for family in text_string_to_metric_families(r.stdout.decode()):
        if family.name == "namedprocess_namegroup_num_procs":
            for s in family.samples:
                labels[s.labels["groupname"]] = (s.labels["namespace"], s.labels["pod"], s.labels["container"])
    assert labels["sh20"] == ("shop", "web-7d9f-abcde", "nginx")
    assert labels["sh21"] == ("kube-system", "coredns-5d78", "coredns")
    others = {name: v for name, v in labels.items() if name not in ("sh20", "sh21")}
    assert others and set(others.values()) == {("", "", "")}
