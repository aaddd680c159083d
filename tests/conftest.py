"""Shared pytest fixtures: the fake /proc trees, pinned host facts (with a terminal map,
so fixture tests run as any user), a device directory for the root-only test of the
/dev scan, and the backend parametrization (the native one is skipped only while the
extension is not built)."""

from __future__ import annotations

import importlib.util
import os
import stat

import pytest

from exporter.hostfacts import HostFacts
from exporter.reader import native_available

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
        marks=pytest.mark.skipif(not native_available(), reason="exporter._reader not built (make build)"),
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


needs_native = pytest.mark.skipif(not native_available(), reason="exporter._reader not built")

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


# The terminal map those devices give (tty_nr -> name), for fixture tests as any user.
FIXTURE_TTYS = {os.makedev(major, minor): name for name, (major, minor) in DEVICES.items() if name != "null"}


class TtyMap(dict):
    """A fixed terminal map: an unknown tty_nr has no name (as the /dev scan answers)."""

    def __missing__(self, device):
        return None


def pinned_facts(procfs: str, ttys=None) -> HostFacts:
    """Host facts pinned to the values the expected records are computed with; the
    terminal map is FIXTURE_TTYS unless given (an empty one: no terminals known)."""
    return HostFacts(procfs=procfs, clock_ticks=100, page_size=4096,
                     ttys=TtyMap(FIXTURE_TTYS if ttys is None else ttys))
