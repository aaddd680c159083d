"""Shared pytest fixtures: the fake /proc trees, a device directory, pinned host facts and
the backend parametrization (the native one is skipped only while the extension is not
built)."""

from __future__ import annotations

import importlib.util
import os
import stat

import pytest

from exporter.hostfacts import HostFacts
from exporter.collector import native_available

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
PROC_BASIC = os.path.join(FIXTURES, "proc-basic")


def _load_tree_maker():
    spec = importlib.util.spec_from_file_location("make_proc_trees", os.path.join(FIXTURES, "make_proc_trees.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_proc_trees = _load_tree_maker()

BACKENDS = [
    "python",
    pytest.param(
        "native",
        marks=pytest.mark.skipif(not native_available(), reason="exporter._collector not built (setup.py build_ext --inplace)"),
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


needs_native = pytest.mark.skipif(not native_available(), reason="exporter._collector not built")

# Character devices of the test device directory: name relative to /dev -> (major, minor).
DEVICES = {
    "pts/3": (136, 3),
    "pts/300": (136, 300),
    "tty1": (4, 1),
    "null": (1, 3),  # not a terminal name: ignored by the scan
}


def make_devroot(path, devices=DEVICES):
    """A /dev look-alike with real character device nodes (needs CAP_MKNOD; device nodes
    are made at test time, never committed)."""
    os.makedirs(os.path.join(path, "pts"), exist_ok=True)
    for name, (major, minor) in devices.items():
        os.mknod(os.path.join(path, name), 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    # a regular file with a terminal's name is not a terminal
    open(os.path.join(path, "tty9"), "wb").close()
    return str(path)


@pytest.fixture
def devroot(tmp_path):
    try:
        return make_devroot(tmp_path / "dev")
    except PermissionError:
        pytest.skip("cannot make character devices here (needs root / CAP_MKNOD)")


@pytest.fixture
def empty_devroot(tmp_path):
    path = tmp_path / "dev-empty"
    path.mkdir()
    return str(path)


def pinned_facts(procfs: str, devroot: str) -> HostFacts:
    """Host facts pinned to the values the expected records are computed with."""
    return HostFacts(procfs=procfs, devroot=devroot, clock_ticks=100, page_size=4096)
