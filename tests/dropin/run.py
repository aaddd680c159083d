"""Running process-exporter and procsnap side by side, scraping them, and diffing what they
serve.

Both bind to 127.0.0.1 on free ports; every wait is bounded; ``Pair`` stops what it started.
Readiness is checked on pages that do not collect (process-exporter's ``/``, procsnap's
``/healthz``), so each exporter sees exactly the scrapes the test makes: process-exporter
updates its counters on every collection, and so does procsnap.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional

from helpers import clean_env, free_port, http_get, stop_processes

PROCESS_EXPORTER = shutil.which("prometheus-process-exporter") or "/usr/bin/prometheus-process-exporter"
# DROPIN_PROCSNAP: another procsnap command to hold to the contract (an older build, say)
PROCSNAP = os.environ.get("DROPIN_PROCSNAP") or os.path.join(os.path.dirname(sys.executable), "procsnap")
START_TIMEOUT = 30.0  # seconds for an exporter to answer its ready page
SCRAPE_TIMEOUT = 60.0  # seconds for one /metrics answer

# process-exporter flags that only turn off what procsnap does not do (yet): when procsnap
# does not accept one, leaving it out gives procsnap the same behaviour. Any other flag is
# given to procsnap as it is (and a procsnap that rejects it fails the scenario).
SAME_AS_PROCSNAP_DEFAULT = ("-threads=false", "-gather-smaps=false")


class ExporterFailed(AssertionError):
    """An exporter exited, or did not answer in time."""


@lru_cache(maxsize=None)
def procsnap_accepts(flag: str) -> bool:
    """Does procsnap start with this process-exporter flag? (one --once run on an empty
    fake tree)"""
    root = tempfile.mkdtemp(prefix="dropin-probe-")
    try:
        from dropin.tree import Tree

        Tree(root).write()
        try:
            done = subprocess.run([PROCSNAP, flag, "--once", "--path.procfs", root], env=clean_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def procsnap_flags(flags, strict: bool) -> list:
    if strict:
        return list(flags)
    return [f for f in flags if f not in SAME_AS_PROCSNAP_DEFAULT or procsnap_accepts(f)]


@dataclass
class Exporter:
    name: str  # "process-exporter" or "procsnap"
    argv: list
    port: int
    ready_path: str
    log: str
    proc: Optional[subprocess.Popen] = None

    def log_tail(self, n=2000) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def failed(self, what) -> ExporterFailed:
        code = self.proc.poll() if self.proc else None
        return ExporterFailed(f"{self.name} {what} (exit status {code}); argv {self.argv}\n"
                              f"--- its log (last lines) ---\n{self.log_tail()}")

    def scrape(self) -> str:
        try:
            status, body = http_get(self.port, "/metrics", timeout=SCRAPE_TIMEOUT)
        except OSError as e:
            raise self.failed(f"did not answer /metrics: {e}") from None
        if status != 200:
            raise self.failed(f"answered /metrics with HTTP {status}")
        return body.decode()


class Pair:
    """process-exporter and procsnap started on the same procfs and config.

    ``pe_flags`` are process-exporter flags given to both (see procsnap_flags; with
    ``strict_flags`` procsnap gets them all as they are); ``smaps`` False adds
    ``-gather-smaps=false`` to them. ``env`` is added to both environments (PROCSNAP_*
    variables are stripped).
    """

    def __init__(self, workdir, procfs="/proc", config: Optional[str] = None, pe_flags=(), smaps=False,
                 strict_flags=False, env=None):
        self.workdir = str(workdir)
        flags = list(pe_flags) + ([] if smaps else ["-gather-smaps=false"])
        common = []
        if config is not None:
            common += ["-config.path", config]
        pe_port, ps_port = free_port(), free_port()
        self.pe = Exporter(
            "process-exporter",
            [PROCESS_EXPORTER, "-procfs", procfs, *common, "-web.listen-address", f"127.0.0.1:{pe_port}", *flags],
            pe_port, "/", os.path.join(self.workdir, "process-exporter.log"))
        self.ps = Exporter(
            "procsnap",
            [PROCSNAP, "--path.procfs", procfs, *(["--config.path", config] if config is not None else []),
             "--web.listen-address", f"127.0.0.1:{ps_port}", *procsnap_flags(flags, strict_flags),
             "--no-count-reaped-children"],  # counts as process-exporter does
            ps_port, "/healthz", os.path.join(self.workdir, "procsnap.log"))
        self.env = dict(env or {})
        self._procs: list = []

    def __enter__(self) -> "Pair":
        try:
            for e in (self.pe, self.ps):
                with open(e.log, "wb") as log:
                    e.proc = subprocess.Popen(e.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              env=clean_env(**self.env))
                self._procs.append(e.proc)
            for e in (self.pe, self.ps):
                self._wait_ready(e)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        stop_processes(self._procs)
        self._procs = []

    @staticmethod
    def _wait_ready(e: Exporter):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if e.proc.poll() is not None:
                raise e.failed("exited at start")
            try:
                status, _ = http_get(e.port, e.ready_path, timeout=5)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise e.failed(f"did not answer {e.ready_path} within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def scrape(self) -> tuple:
        """(process-exporter's text, procsnap's text), one collection each."""
        return self.pe.scrape(), self.ps.scrape()


# -- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One sample: its name (counters with _total) and its labels, sorted."""

    name: str
    labels: tuple

    @property
    def label(self) -> dict:
        return dict(self.labels)

    def line(self, value: Optional[float]) -> str:
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels)
        shown = "(absent)" if value is None else _go_float(value)
        return f"{self.name}{{{labels}}} {shown}" if labels else f"{self.name} {shown}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _go_float(v: float) -> str:
    """A value as the text format shows it (integers without a fraction)."""
    if math.isfinite(v) and v.is_integer() and abs(v) < 2 ** 53:
        return str(int(v))
    return repr(v)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_UNESCAPE = re.compile(r"\\(.)")


def _unescape(v: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_text(text: str):
    """(samples {Key: value}, meta {family: (type, help)}) of a Prometheus text exposition,
    names exactly as written: prometheus_client's parser would add _total to a counter
    sample named without it (process-exporter's namedprocess_scrape_errors), and hide a
    name that differs from process-exporter's."""
    samples, types, helps = {}, {}, {}
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip() if len(parts) > 3 else ""
            elif len(parts) >= 3 and parts[1] == "HELP":
                helps[parts[2]] = _unescape(parts[3]) if len(parts) > 3 else ""
            continue
        m = _SAMPLE.match(line)
        assert m, f"line {n} is not a sample: {line!r}"
        name, labels_text, value = m.groups()
        labels, pos = [], 0
        labels_text = labels_text or ""
        while pos < len(labels_text.rstrip()):
            lm = _LABEL.match(labels_text, pos)
            assert lm, f"line {n}: bad labels: {line!r}"
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
        key = Key(name, tuple(sorted(labels)))
        assert key not in samples, f"sample twice: {line!r}"
        samples[key] = float(value)
    meta = {name: (types.get(name), helps.get(name)) for name in set(types) | set(helps)}
    return samples, meta


@dataclass
class Exposition:
    samples: dict  # Key -> value
    meta: dict  # family name -> (type, help)

    @classmethod
    def parse(cls, text: str, scope: str = r"^namedprocess_") -> "Exposition":
        pattern = re.compile(scope)
        samples, meta = parse_text(text)
        return cls({k: v for k, v in samples.items() if pattern.search(k.name)},
                   {k: v for k, v in meta.items() if pattern.search(k)})

    def group_value(self, name: str, group: str) -> Optional[float]:
        return self.samples.get(Key(name, (("groupname", group),)))

    def groups(self) -> set:
        return {k.label["groupname"] for k in self.samples if "groupname" in k.label}


# -- comparing -------------------------------------------------------------------------

ONLY_PE, ONLY_PS, VALUE = "only in process-exporter", "only in procsnap", "value differs"


@dataclass(frozen=True)
class Difference:
    kind: str
    key: Key
    pe: Optional[float]
    ps: Optional[float]

    def __str__(self):
        return (f"{self.kind}:\n    process-exporter: {self.key.line(self.pe)}\n"
                f"    procsnap:         {self.key.line(self.ps)}")


@dataclass
class Context:
    """What an allowed difference's condition may look at."""

    pe: Exposition
    ps: Exposition
    config: str  # the config file's text ("" without one)
    facts: dict = field(default_factory=dict)  # scenario facts, e.g. {"execed_groups": {...}}


@dataclass(frozen=True)
class Allowed:
    """One allowed difference. ``key`` is the phrase README.md's "Migrating from
    process-exporter" section must contain; ``samples`` a regex on the sample name,
    ``labels`` regexes on label values; ``kind`` ONLY_PE, ONLY_PS or VALUE; ``when`` a
    further condition on (Context, Difference)."""

    key: str
    samples: str
    kind: object  # one kind, or a tuple of kinds
    what: str
    reason: str
    labels: tuple = ()  # ((label, regex), ...)
    when: Optional[Callable] = None

    def covers(self, d: Difference, ctx: Context) -> bool:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if d.kind not in kinds or not re.search(self.samples, d.key.name):
            return False
        labels = d.key.label
        for name, pattern in self.labels:
            if name not in labels or not re.fullmatch(pattern, labels[name]):
                return False
        return self.when is None or bool(self.when(ctx, d))


def differences(pe: Exposition, ps: Exposition, select: Callable[[str], bool]) -> list:
    out = []
    for key in sorted(set(pe.samples) | set(ps.samples), key=lambda k: (k.name, k.labels)):
        if not select(key.name):
            continue
        a, b = pe.samples.get(key), ps.samples.get(key)
        if b is None:
            out.append(Difference(ONLY_PE, key, a, None))
        elif a is None:
            out.append(Difference(ONLY_PS, key, None, b))
        elif not (a == b or (math.isnan(a) and math.isnan(b))):
            out.append(Difference(VALUE, key, a, b))
    return out


def metadata_differences(pe: Exposition, ps: Exposition, select: Callable[[str], bool]) -> list:
    """Every family (# TYPE / # HELP) either serves: the same type and help text. A family
    only one serves is a difference only if it has samples there (client_golang and
    procsnap both leave out families without samples)."""
    out = []
    for name in sorted(set(pe.meta) | set(ps.meta)):
        if not select(name) or pe.meta.get(name) == ps.meta.get(name):
            continue
        if name not in pe.meta or name not in ps.meta:
            # its samples show up as samples only one serves; report it here only if a
            # family's # TYPE sits under another name than its samples
            one = pe if name in pe.meta else ps
            if any(k.name == name for k in one.samples):
                continue
        out.append(f"{name}: process-exporter {pe.meta.get(name)}, procsnap {ps.meta.get(name)}")
    return out


def unexplained(diffs, allowed, ctx: Context) -> tuple:
    """(differences no entry covers, {entry key: count of differences it covered})."""
    left, used = [], {}
    for d in diffs:
        entry = next((a for a in allowed if a.covers(d, ctx)), None)
        if entry is None:
            left.append(d)
        else:
            used[entry.key] = used.get(entry.key, 0) + 1
    return left, used
