"""Pods: which Kubernetes pod and container a process runs in, without API credentials.

The pod UID and the container ID come from the process' cgroup path (``/proc/PID/cgroup``,
read once per process identity). The names come from the kubelet's log layout, mounted
read-only into procsnap's pod:

* ``/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/``: pod UID -> namespace, pod;
* ``/var/log/containers/<pod>_<namespace>_<container>-<container id>.log``: container ID ->
  container name.

Both directories are listed again on a miss (a pod UID or container ID not seen yet), at
most once every :data:`REFRESH_SECONDS`, never on every scrape.

Cgroup paths are parsed from their end: they are relative to the reader's cgroup namespace
(``/../../kubepods-…`` from inside another container's). Layouts known (cgroup v1 and v2):

* systemd driver: ``…/kubepods-<qos>-pod<uid with _>.slice/<runtime>-<id>.scope`` with the
  runtime ``cri-containerd``, ``crio`` or ``docker``;
* cgroupfs driver: ``…/kubepods/<qos>/pod<uid>/<id>`` (``…/kubepods/pod<uid>/<id>`` for the
  Guaranteed QoS class; CRI-O names it ``crio-<id>``).

The deepest pod segment wins; a container may make cgroups of its own below its scope.
"""

from __future__ import annotations

import os
import re
import time
from typing import NamedTuple, Optional

REFRESH_SECONDS = 30.0
LABELS = ("namespace", "pod", "container")  # config extra_labels may name these

_ID = r"[0-9a-f]{64}"
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
# a pod's cgroup: systemd driver (kubepods-<qos>-pod<uid with _>.slice), cgroupfs (pod<uid>)
_POD = re.compile(rf"kubepods(?:-[a-z]+)?-pod({_UID})\.slice|pod({_UID})")
# a container's, right below it: systemd driver <runtime>-<id>.scope, cgroupfs <id> (or crio-<id>)
_CONTAINER = re.compile(rf"(?:(?:cri-containerd|crio|docker)-)?({_ID})(?:\.scope)?")
_LOG_NAME = re.compile(rf"(.+)_(.+)_(.+)-({_ID})\.log")


class Placement(NamedTuple):
    """Where a process runs: the pod's UID (dashes) and the container's ID (64 hex)."""

    pod_uid: str
    container_id: Optional[str]  # None: the pod's own cgroup (e.g. the pause process' parent)


class PodInfo(NamedTuple):
    namespace: str  # "" when the kubelet's log layout does not name it (yet)
    pod: str
    container: str
    container_id: str


NOT_IN_A_POD = PodInfo("", "", "", "")


def placement(cgroup_text: Optional[str]) -> Optional[Placement]:
    """The pod and container of a process from its /proc/PID/cgroup text, or None when it
    runs in no pod. The first line that names a pod wins (v1 lists every hierarchy)."""
    if not cgroup_text:
        return None
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        found = _parse_path(path.split("/"))
        if found is not None:
            return found
    return None


def _parse_path(parts: list) -> Optional[Placement]:
    """From the end: the deepest pod segment, and the container segment right below it if
    there is one (a container may make cgroups of its own below its own)."""
    parts = [p for p in parts if p and p != ".."]
    for i in range(len(parts) - 1, -1, -1):
        pod = _POD.fullmatch(parts[i])
        if pod is None:
            continue
        uid = (pod.group(1) or pod.group(2)).replace("_", "-")
        container = _CONTAINER.fullmatch(parts[i + 1]) if i + 1 < len(parts) else None
        return Placement(uid, container.group(1) if container else None)
    return None


class PodDirectory:
    """Names of pods and containers from the kubelet's log layout, listed again on a miss
    (at most every REFRESH_SECONDS). ``clock``: for tests."""

    def __init__(self, pod_logs: str = "/var/log/pods", container_logs: str = "/var/log/containers",
                 clock=time.monotonic):
        self.pod_logs = pod_logs
        self.container_logs = container_logs
        self.clock = clock
        self.pods: dict = {}  # pod uid -> (namespace, pod)
        self.containers: dict = {}  # container id -> (namespace, pod, container)
        self.listed_at: Optional[float] = None
        self.listings = 0  # how many times the directories were listed

    def info(self, cgroup_text: Optional[str]) -> PodInfo:
        """The pod labels of a process from its cgroup text (NOT_IN_A_POD outside pods)."""
        where = placement(cgroup_text)
        if where is None:
            return NOT_IN_A_POD
        known = where.pod_uid in self.pods and (where.container_id is None or where.container_id in self.containers)
        if not known:
            self.refresh()
        namespace, pod = self.pods.get(where.pod_uid, ("", ""))
        container = ""
        link = self.containers.get(where.container_id) if where.container_id else None
        if link is not None:
            if not namespace:  # the pod's directory is not there: its container's link names it
                namespace, pod = link[0], link[1]
            if (link[0], link[1]) == (namespace, pod):  # a link of another pod names nothing here
                container = link[2]
        return PodInfo(namespace, pod, container, where.container_id or "")

    def refresh(self) -> None:
        now = self.clock()
        if self.listed_at is not None and now - self.listed_at < REFRESH_SECONDS:
            return
        self.listed_at = now
        self.listings += 1
        pods = {}
        for name in _listdir(self.pod_logs):
            parts = name.split("_")
            if len(parts) == 3 and re.fullmatch(_UID, parts[2]):
                pods[parts[2]] = (parts[0], parts[1])
        containers = {}
        for name in _listdir(self.container_logs):
            m = _LOG_NAME.fullmatch(name)  # <pod>_<namespace>_<container>-<id>.log
            if m:
                containers[m.group(4)] = (m.group(2), m.group(1), m.group(3))
        self.pods, self.containers = pods, containers


def _listdir(path: str) -> list:
    try:
        return os.listdir(path)
    except OSError:  # not mounted (not on Kubernetes): no names
        return []
