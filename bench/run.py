"""`make bench`: procsnap against its peers and the C floor, in one interleaved run.

For each size N and each host mix (idle: N `sleep` processes spawned for the run; busy: the
same plus 50 processes of 100 threads that burn a little CPU and do small file I/O), every
contender is started, warmed with one scrape, then scraped round-robin for several rounds
(the order rotates each round). Per contender: median / p95 scrape time, CPU per scrape
(utime+stime of the contender's process around each scrape), peak RSS (VmHWM), peak memory
charged to the contender's own memory cgroup (user + kernel, and the kernel part: bench/memcg.py), series
count, and, in a separate phase under `strace -c -f`, syscalls per process per scrape.

Contenders:
  procsnap_grouped       procsnap CLI, default config (grouped by comm), GET /metrics
  procsnap_grouped_all   the same with --procfs.keep-open=all (the fastest setting; more kernel memory)
  procsnap_grouped_off   the same with --procfs.keep-open=off (every file opened and closed each scrape)
  procsnap_per_process   procsnap CLI, one group per process ({{.Comm}}:{{.PID}})
  pe_grouped             process-exporter 0.7.x, grouped by comm ({{.Comm}}, cmdline .+)
  pe_per_process         process-exporter, one group per process
  psutil_exporter        bench/psutil_exporter.py (process_iter(attrs), per process)
  floor_fresh            bench/floor.c: stat+status+io pread, fstatat(fd), prlimit; open/close each time
  floor_kept             bench/floor.c: the same files kept open, pread at offset 0
  snapshot_native        exporter.Snapshotter(backend="native").snapshot(), no HTTP
  snapshot_python        exporter.Snapshotter(backend="python").snapshot(), no HTTP
  apps_plugin            Netdata's apps.plugin 1.37 (`apps.plugin 1`): one collection cycle per
                         round, compared by CPU per cycle (reported apart: no scrape time)

Also: the GIL proof (a pure-Python thread's throughput while snapshots run in another),
and psutil's own benchmark claims (oneshot, process_iter(attrs)) reproduced.

Writes bench/results/latest.json, latest.md and scrape_vs_n.png (or --out DIR). Timing
assertions do not belong in tests: this prints PASS/FAIL against the targets, it never fails
the build on them.

    .venv/bin/python bench/run.py [--quick] [--sizes 500,2000] [--mixes idle,busy] [--busy 50x100]
                                  [--rounds 7] [--no-strace]
                                  [--only procsnap_grouped,pe_grouped] [--procsnap-args "..."]
"""

from __future__ import annotations

import argparse
import http.client
import json
import operator
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from memcg import MemCgroups, mib  # noqa: E402
from spawn import (  # noqa: E402
    BUSY_BURN, BUSY_BYTES, BUSY_PERIOD, ProcessSet, capacity_check, count_tasks, die_with_parent, group_cpu_seconds,
    stat_fields,
)

PE_BIN = shutil.which("prometheus-process-exporter") or "/usr/bin/prometheus-process-exporter"
PROCSNAP_BIN = os.path.join(os.path.dirname(sys.executable), "procsnap")
# Netdata's apps.plugin (Debian netdata-core) runs standalone: `apps.plugin 1` collects every
# second and writes netdata's text protocol to stdout. Both config dirs point at the stock
# one, so it groups by the stock apps_groups.conf whatever /etc/netdata holds.
APPS_PLUGIN = "/usr/lib/netdata/plugins.d/apps.plugin"
APPS_PLUGIN_ENV = {"NETDATA_USER_CONFIG_DIR": "/usr/lib/netdata/conf.d",
                   "NETDATA_STOCK_CONFIG_DIR": "/usr/lib/netdata/conf.d"}
APPS_PLUGIN_CYCLE_START = b"BEGIN netdata.apps_cpu "  # the first chart of each cycle
CLK_TCK = os.sysconf("SC_CLK_TCK")

GROUPED_PE_CONFIG = """process_names:
  - name: "{{.Comm}}"
    cmdline:
    - '.+'
"""
PER_PROCESS_CONFIG = """process_names:
  - name: "{{.Comm}}:{{.PID}}"
    cmdline:
    - '.*'
"""

# Anchors from /work/shared/DESIGN.md, measured at N=5000 on this kind of machine.
ANCHORS_5000 = {
    "pe_grouped": {"median_ms": 1697, "cpu_ms": 1880, "rss_mb": 35, "syscalls": 103},
    "pe_per_process": {"median_ms": 2046, "cpu_ms": 2350, "rss_mb": 119, "syscalls": 103},
    "psutil_exporter": {"median_ms": 1320, "cpu_ms": 1340, "rss_mb": 79, "syscalls": 46},
    "floor_fresh": {"median_ms": 125, "syscalls": 12},
    "floor_kept": {"median_ms": 65, "syscalls": 4},
}
SEED_CLAIMS = {"oneshot": 5.0, "process_iter": 2.5}

ORDER = [
    "procsnap_grouped",
    "procsnap_grouped_all",
    "procsnap_grouped_off",
    "procsnap_per_process",
    "pe_grouped",
    "pe_per_process",
    "psutil_exporter",
    "floor_fresh",
    "floor_kept",
    "snapshot_native",
    "snapshot_python",
    "procsnap_grouped_bpf",
    "snapshot_bpf",
]
# Contenders that collect on their own clock: compared by CPU per collection cycle, apart
# from the scrape table (they have no scrape time).
CYCLE_ORDER = ["apps_plugin"]
ALL_KEYS = ORDER + CYCLE_ORDER
MIXES = ["idle", "busy"]
LABELS = {
    "procsnap_grouped": "procsnap, grouped by comm (HTTP), default --procfs.keep-open=auto",
    "procsnap_grouped_all": "procsnap, grouped by comm (HTTP), --procfs.keep-open=all (fastest)",
    "procsnap_grouped_off": "procsnap, grouped by comm (HTTP), --procfs.keep-open=off (least memory)",
    "procsnap_per_process": "procsnap, one group per process (HTTP)",
    "pe_grouped": "process-exporter, grouped by comm (HTTP)",
    "pe_per_process": "process-exporter, one group per process (HTTP)",
    "psutil_exporter": "psutil exporter, process_iter(attrs), per process (HTTP)",
    "floor_fresh": "C floor: stat+status+io+fd-stat+prlimit, open/pread/close",
    "floor_kept": "C floor: same files kept open, pread only",
    "snapshot_native": "procsnap snapshot() alone, native backend",
    "snapshot_python": "procsnap snapshot() alone, python backend",
    "procsnap_grouped_bpf": "procsnap, grouped by comm (HTTP), --backend bpf (BPF task iterator)",
    "snapshot_bpf": "procsnap snapshot() alone, bpf backend",
    "apps_plugin": "Netdata apps.plugin, one 1 s collection cycle (stock apps_groups.conf)",
}


MAX_RESTARTS = 3  # per contender and size


class Skip(Exception):
    """A contender that cannot run here; the message says why."""


_T0 = time.monotonic()


def log(msg: str) -> None:
    if msg:
        elapsed = int(time.monotonic() - _T0)
        msg = f"[{elapsed // 60:2d}:{elapsed % 60:02d}] {msg}"
    print(msg, flush=True)


# ---------------------------------------------------------------- small helpers


def size_key(n: int, mix: str) -> str:
    """The results' key of one size of one mix: "5000" (idle), "5000 busy"."""
    return str(n) if mix == "idle" else f"{n} {mix}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads, live and dead), in seconds."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_state(pid: int) -> Optional[str]:
    """The state letter from /proc/PID/stat (R, S, T, ...); None once it is gone."""
    try:
        return stat_fields(pid)[0].decode()
    except OSError:
        return None


def status_kb(pid: int, key: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_busy() -> tuple:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user
    return total - idle, total


def cpu_busy_fraction(before: tuple, after: tuple) -> Optional[float]:
    dt = after[1] - before[1]
    return (after[0] - before[0]) / dt if dt > 0 else None


def count_pids() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def percentile(values: list, q: float) -> Optional[float]:
    if not values:
        return None
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def crash_reason(c: "Contender") -> str:
    """One line on why a contender's process died: a Go panic line, else its last words."""
    text = tail(c.stderr_path, 20000)
    for line in text.splitlines():
        if line.startswith(("panic:", "fatal error:", "Traceback", "Segmentation")):
            return line.strip()[:200]
    status = c.proc.returncode if c.proc is not None else None
    last = text.splitlines()[-1].strip()[:200] if text else ""
    return f"exited with status {status}" + (f": {last}" if last else "")


def one_line(text: str, limit: int = 160) -> str:
    return " ".join(text.split()).replace("|", "/")[:limit]


def tail(path: str, n: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


# ---------------------------------------------------------------- contenders


@dataclass
class Sample:
    wall: float  # seconds
    cpu: float  # seconds
    series: Optional[int] = None
    procs: Optional[int] = None


@dataclass
class Contender:
    key: str
    label: str
    cmd: list
    workdir: str
    note: str = ""
    proc: Optional[subprocess.Popen] = None
    samples: list = field(default_factory=list)
    skipped: Optional[str] = None
    strace: Optional[dict] = None
    rss_kb: Optional[int] = None
    series: Optional[int] = None
    startup_seconds: Optional[float] = None
    crashes: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # scrapes that failed while the process lived
    cgroups: Optional[MemCgroups] = None
    cgroup: Optional[str] = None  # this contender's own memory cgroup (joined before exec)
    mem: dict = field(default_factory=dict)  # bytes charged to it, see bench_size
    mem_reason: Optional[str] = None  # why there are no charged figures

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stderr_path(self) -> str:
        return os.path.join(self.workdir, f"{self.key}.stderr")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _preexec(self) -> None:
        """In the forked child, before exec: die with the harness, join the memory cgroup
        (so start-up allocations are charged to it too)."""
        die_with_parent()
        MemCgroups.join(self.cgroup)

    def _spawn(self, stdin, stdout, env: Optional[dict] = None) -> None:
        """Start the process (stderr to its file), then check it joined its memory cgroup."""
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=stdin, stdout=stdout, stderr=err,
                                         preexec_fn=self._preexec, cwd=ROOT, env=env)
        if self.cgroup and self.cgroups and not self.cgroups.member(self.cgroup, self.pid):
            self.mem_reason = f"process {self.pid} did not join {self.cgroup}"  # no figures then

    def start(self, timeout: float) -> None:
        raise NotImplementedError

    def scrape(self, timeout: float) -> Sample:
        raise NotImplementedError

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.close_pipes(proc)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def close_pipes(self, proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass


class HttpContender(Contender):
    """An exporter process serving GET /metrics on 127.0.0.1:port."""

    port: int = 0

    def start(self, timeout: float) -> None:
        t0 = time.monotonic()
        self._spawn(subprocess.DEVNULL, subprocess.DEVNULL)
        deadline = t0 + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Skip(f"exited with status {self.proc.returncode} at start: {crash_reason(self)}")
            try:
                status, _ = self._get(timeout=max(1.0, deadline - time.monotonic()))
                if status == 200:
                    self.startup_seconds = time.monotonic() - t0
                    return
                last_error = f"HTTP {status}"
            except OSError as e:
                last_error = str(e)
            time.sleep(0.1)
        raise Skip(f"not serving /metrics after {timeout:.0f}s ({last_error})")

    def _get(self, timeout: float) -> tuple:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, body
        finally:
            conn.close()

    def scrape(self, timeout: float) -> Sample:
        c0 = cpu_seconds(self.pid)
        t0 = time.perf_counter()
        status, body = self._get(timeout)
        wall = time.perf_counter() - t0
        c1 = cpu_seconds(self.pid)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        series = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
        return Sample(wall, c1 - c0, series=series)


class PipeContender(Contender):
    """A worker that does one iteration per stdin line and answers one JSON line."""

    request: bytes = b"go\n"
    expect_ready: bool = False

    def start(self, timeout: float) -> None:
        t0 = time.monotonic()
        self._spawn(subprocess.PIPE, subprocess.PIPE)
        if self.expect_ready:
            reply = self._readline(timeout)
            if "error" in reply:
                raise Skip(reply["error"])
        self.startup_seconds = time.monotonic() - t0

    def _readline(self, timeout: float) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.key}: no answer within {timeout:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.key} exited: {tail(self.stderr_path)}")
        return json.loads(line)

    def scrape(self, timeout: float) -> Sample:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(self.request)
        self.proc.stdin.flush()
        reply = self._readline(timeout)
        return Sample(reply["wall_ns"] / 1e9, reply["cpu_ns"] / 1e9, procs=reply.get("procs"))


class CycleContender(Contender):
    """Netdata's apps.plugin, which collects every second by itself. One "scrape" lets it run
    one collection cycle: SIGCONT, read its output to the end of a cycle, SIGSTOP. Its CPU
    between the two is that cycle's cost (a stopped process spends none, so none is missed
    or counted twice). The wall time includes waiting for its tick: only CPU compares."""

    def start(self, timeout: float) -> None:
        t0 = time.monotonic()
        # stdin stays an open pipe: the plugin exits when it reads EOF there
        self._spawn(subprocess.PIPE, subprocess.PIPE, env=dict(os.environ, **APPS_PLUGIN_ENV))
        try:
            self._one_cycle(timeout)
        except (TimeoutError, RuntimeError) as e:
            raise Skip(str(e)) from None
        self._pause()
        self.startup_seconds = time.monotonic() - t0

    def _one_cycle(self, timeout: float) -> None:
        """Read the output up to the end of the next whole cycle: its first chart seen, then
        an END line followed by quiet (the plugin flushes once a cycle, then sleeps)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        seen, started = b"", False
        while True:
            done_if_quiet = started and seen.endswith(b"END\n")
            wait = 0.03 if done_if_quiet else deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                if done_if_quiet:
                    return
                raise TimeoutError(f"{self.key}: no whole collection cycle within {timeout:.0f}s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"exited: {crash_reason(self)}")
            seen = seen[-len(APPS_PLUGIN_CYCLE_START):] + chunk  # a marker may span two reads
            started = started or APPS_PLUGIN_CYCLE_START in seen

    def _pause(self) -> None:
        """SIGSTOP, and wait until it has stopped (its CPU is final then)."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while process_state(self.pid) not in ("T", "t", None) and time.monotonic() < deadline:
            time.sleep(0.001)

    def scrape(self, timeout: float) -> Sample:
        c0 = cpu_seconds(self.pid)
        t0 = time.perf_counter()
        os.kill(self.pid, signal.SIGCONT)
        self._one_cycle(timeout)
        wall = time.perf_counter() - t0
        self._pause()
        return Sample(wall, cpu_seconds(self.pid) - c0)

    def stop(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)  # a stopped process would not act on SIGTERM
        super().stop()


# ---------------------------------------------------------------- strace


def strace_count(contender: Contender, scrapes: int, timeout: float) -> dict:
    """Syscalls of the contender's process (all threads) over `scrapes` scrapes."""
    out = os.path.join(contender.workdir, f"{contender.key}.strace")
    errpath = out + ".stderr"
    with open(errpath, "wb") as err:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", out, "-p", str(contender.pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=die_with_parent,
        )
    try:
        # attached once the tracee's status names a tracer (and strace said so)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if tracer.poll() is not None:
                raise RuntimeError(f"strace exited: {tail(errpath)}")
            if "attached" in tail(errpath, 4000) and (status_kb(contender.pid, "TracerPid") or 0) > 0:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("strace did not attach within 20s")
        time.sleep(0.3)  # let it reach every thread
        procs = []
        for _ in range(scrapes):
            procs.append(count_pids())
            contender.scrape(timeout)
        time.sleep(0.1)
    finally:
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait(timeout=10)
    total, by_name = parse_strace_c(out)
    nprocs = statistics.mean(procs)
    return {
        "scrapes": scrapes,
        "procs": nprocs,
        "total_calls": total,
        "per_proc_per_scrape": total / (scrapes * nprocs) if total is not None else None,
        "top": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:8]),
    }


def parse_strace_c(path: str) -> tuple:
    total = None
    by_name = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, {}
    for line in lines:
        tokens = line.split()
        if len(tokens) < 5 or not re.match(r"^\d+\.\d+$", tokens[0]):
            continue
        try:
            calls = int(tokens[3])
        except ValueError:
            continue
        if tokens[-1] == "total":
            total = calls
        else:
            by_name[tokens[-1]] = calls
    return total, by_name


# ---------------------------------------------------------------- psutil's own claims


def psutil_micro(rounds: int, time_budget: float) -> dict:
    """oneshot() vs not, and process_iter(attrs) vs a manual loop, over all processes."""
    import psutil

    def procs():
        out = []
        for pid in psutil.pids():
            try:
                out.append(psutil.Process(pid))
            except psutil.Error:
                pass
        return out

    stat5 = ("name", "ppid", "status", "cpu_times", "cpu_num")  # all from /proc/PID/stat
    mixed5 = ("name", "cpu_times", "memory_info", "ppid", "status")  # stat + statm

    def calls(plist, names, oneshot):
        for p in plist:
            try:
                if oneshot:
                    with p.oneshot():
                        for n in names:
                            getattr(p, n)()
                else:
                    for n in names:
                        getattr(p, n)()
            except psutil.Error:
                pass

    attrs = list(mixed5)

    def via_process_iter():
        return [p.info for p in psutil.process_iter(attrs=attrs, ad_value=None)]

    def manual_loop():
        out = []
        for pid in psutil.pids():
            try:
                p = psutil.Process(pid)
                out.append({"pid": pid, **{n: getattr(p, n)() for n in attrs}})
            except psutil.Error:
                pass
        return out

    plist = procs()
    variants: dict[str, Callable[[], object]] = {
        "stat5_plain": lambda: calls(plist, stat5, False),
        "stat5_oneshot": lambda: calls(plist, stat5, True),
        "mixed5_plain": lambda: calls(plist, mixed5, False),
        "mixed5_oneshot": lambda: calls(plist, mixed5, True),
        "manual_loop": manual_loop,
        "process_iter_attrs": via_process_iter,
    }
    times: dict[str, list] = {k: [] for k in variants}
    for fn in variants.values():  # warm
        fn()
    deadline = time.monotonic() + time_budget
    for r in range(rounds):
        keys = list(variants)
        keys = keys[r % len(keys):] + keys[: r % len(keys)]
        for k in keys:
            t0 = time.perf_counter()
            variants[k]()
            times[k].append(time.perf_counter() - t0)
        if time.monotonic() > deadline:
            break
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "procs": len(plist),
        "rounds": len(times["stat5_plain"]),
        "median_ms": {k: v * 1000 for k, v in med.items()},
        "oneshot_speedup_stat5": med["stat5_plain"] / med["stat5_oneshot"],
        "oneshot_speedup_mixed5": med["mixed5_plain"] / med["mixed5_oneshot"],
        "process_iter_speedup": med["manual_loop"] / med["process_iter_attrs"],
        "stat5": list(stat5),
        "mixed5": list(mixed5),
        "seed_claims": SEED_CLAIMS,
    }


# ---------------------------------------------------------------- one size


def own_only(config: str, lifetime: int) -> str:
    """The config matching only the benchmark's own idle processes (`sleep LIFETIME`):
    another workload's processes (one with an invalid-UTF-8 comm makes process-exporter
    panic) are then read but never exported."""
    return re.sub(r"- '\.[+*]'", f"- '^sleep {lifetime}$'", config)


def make_contenders(workdir: str, floor_bin: Optional[str], env: dict, wanted: set) -> list:
    cfg_grouped = os.path.join(workdir, "pe-grouped.yml")
    cfg_per_process = os.path.join(workdir, "per-process.yml")
    grouped, per_process = GROUPED_PE_CONFIG, PER_PROCESS_CONFIG
    if env.get("own_only"):
        grouped, per_process = own_only(grouped, env["own_only"]), own_only(per_process, env["own_only"])
    with open(cfg_grouped, "w") as f:
        f.write(grouped)
    with open(cfg_per_process, "w") as f:
        f.write(per_process)

    contenders: list[Contender] = []

    def http(key, cmd_for_port, note=""):
        port = free_port()
        c = HttpContender(key, LABELS[key], cmd_for_port(port), workdir, note=note)
        c.port = port
        contenders.append(c)

    backend = env["procsnap_backend"]
    extra = list(env.get("procsnap_args") or [])  # --procsnap-args, appended as given
    ps_note = f"backend {backend}" + ("" if env["native"] else " (native extension not built: CLI falls back to python)")
    if extra:
        ps_note += f"; extra args: {shlex.join(extra)}"
    # grouped: procsnap's default config (every user-space process by comm), or with
    # --own-only the same config as process-exporter's
    own = ["--config.path", cfg_grouped] if env.get("own_only") else []
    http("procsnap_grouped",
         lambda p: [PROCSNAP_BIN, "--web.listen-address", f"127.0.0.1:{p}", "--backend", backend] + own + extra,
         ps_note)
    for keep in ("all", "off"):  # the two ends of the kept-open trade-off
        http(f"procsnap_grouped_{keep}",
             lambda p, keep=keep: [PROCSNAP_BIN, "--web.listen-address", f"127.0.0.1:{p}", "--backend", backend,
                                   f"--procfs.keep-open={keep}"] + own + extra,
             ps_note)
    http("procsnap_per_process",
         lambda p: [PROCSNAP_BIN, "--web.listen-address", f"127.0.0.1:{p}", "--config.path", cfg_per_process,
                    "--backend", backend] + extra, ps_note)
    http("pe_grouped",
         lambda p: [PE_BIN, "-web.listen-address", f"127.0.0.1:{p}", "-config.path", cfg_grouped],
         "process-exporter defaults (-threads, -gather-smaps, -children)")
    http("pe_per_process",
         lambda p: [PE_BIN, "-web.listen-address", f"127.0.0.1:{p}", "-config.path", cfg_per_process],
         "process-exporter defaults (-threads, -gather-smaps, -children)")
    http("psutil_exporter",
         lambda p: [sys.executable, os.path.join(HERE, "psutil_exporter.py"), "--port", str(p)])
    for mode in ("fresh", "kept"):
        c = PipeContender(f"floor_{mode}", LABELS[f"floor_{mode}"], [floor_bin or "floor", "serve"], workdir)
        c.request = f"{mode}\n".encode()
        contenders.append(c)
    for backend_name in ("native", "python"):
        c = PipeContender(f"snapshot_{backend_name}", LABELS[f"snapshot_{backend_name}"],
                          [sys.executable, os.path.join(HERE, "snapworker.py"), "serve", backend_name], workdir)
        c.expect_ready = True
        contenders.append(c)
    contenders.append(CycleContender("apps_plugin", LABELS["apps_plugin"], [APPS_PLUGIN, "1"], workdir,
                                     note="stock apps_groups.conf; users and groups charts on (its defaults)"))
    contenders += bpf_contenders(http, workdir, own + extra)
    return [c for c in contenders if c.key in wanted]


def bpf_contenders(http, workdir: str, args: list) -> list:
    """The bpf backend (issue 14): procsnap grouped over HTTP and the snapshot API alone,
    both with --backend bpf (`unavailable` skips them where it cannot load)."""
    http("procsnap_grouped_bpf",
         lambda p: [PROCSNAP_BIN, "--web.listen-address", f"127.0.0.1:{p}", "--backend", "bpf"] + args,
         "backend bpf" + (f"; extra args: {shlex.join(args)}" if args else ""))
    c = PipeContender("snapshot_bpf", LABELS["snapshot_bpf"],
                      [sys.executable, os.path.join(HERE, "snapworker.py"), "serve", "bpf"], workdir)
    c.expect_ready = True
    return [c]


def bpf_unavailable() -> Optional[str]:
    """Why the bpf backend does not load here (checked in this process, as the contenders
    run with the same privileges), or None."""
    sys.path.insert(0, ROOT)
    try:
        from exporter.reader import Reader
    except ImportError as e:
        return f"exporter not importable: {e}"
    reader = Reader("/proc", "bpf", None, "off")
    try:
        return None if reader.backend == "bpf" else f"bpf does not load here: {reader.fallback_reason}"
    finally:
        reader.close()


def summarize(c: Contender, nprocs: int) -> dict:
    out = {"label": c.label, "cmd": c.cmd, "note": c.note}
    if not c.samples:
        out["skipped"] = c.skipped or "no scrape succeeded"
        out["crashes"] = c.crashes
        return out
    walls = [s.wall for s in c.samples]
    cpus = [s.cpu for s in c.samples]
    out.update({
        "skipped": None,
        "error": c.skipped,
        "scrapes": len(walls),
        "scrape_ms": [round(w * 1000, 3) for w in walls],
        "median_ms": statistics.median(walls) * 1000,
        "p95_ms": percentile(walls, 0.95) * 1000,
        "cpu_ms_per_scrape": statistics.mean(cpus) * 1000,
        "cpu_over_wall": sum(cpus) / sum(walls) if sum(walls) > 0 else None,
        "peak_rss_mb": c.rss_kb / 1024 if c.rss_kb is not None else None,
        "peak_charged_mib": mib(c.mem.get("peak")),
        "kernel_charged_mib": mib(c.mem.get("kernel_peak")),
        "memcg": memcg_summary(c),
        "series": c.series,
        "procs_seen": c.samples[-1].procs if c.samples[-1].procs is not None else nprocs,
        "startup_seconds": c.startup_seconds,
        "syscalls_per_proc_per_scrape": (c.strace or {}).get("per_proc_per_scrape"),
        "strace": c.strace,
        "crashes": c.crashes,
        "failed_scrapes": c.failures,
    })
    return out


def memcg_summary(c: Contender) -> dict:
    """The charged figures of c's cgroup in MiB, or why there are none."""
    if not c.mem:
        return {"error": c.mem_reason or "not measured"}
    out = {}
    for k, v in c.mem.items():
        if k != "scrapes" and isinstance(v, int):
            out[k + "_mib"] = mib(v)
        else:
            out[k] = v
    if c.mem_reason:
        out["error"] = c.mem_reason
    return out


def mem_after_warmup(c: Contender) -> None:
    """Charged so far (start-up + the warm-up scrape); then start a new peak for the rounds."""
    cg, path = c.cgroups, c.cgroup
    if cg is None or path is None or c.mem_reason or not c.alive():
        return
    c.mem["version"] = cg.version
    c.mem["cgroup"] = path
    c.mem["warmup_peak"] = cg.peak(path)
    c.mem["warmup_kernel_peak"] = cg.kernel_peak(path)
    c.mem["warmup_usage"] = cg.usage(path)
    c.mem["warmup_kernel"] = cg.kernel(path)
    if not cg.reset_peak(path):
        c.mem["reset"] = "peak not resettable here (cgroup v2 needs Linux >= 6.12): no separate peak over the rounds"
    mem_sample(c)


def mem_sample(c: Contender) -> None:
    """cgroup v2 keeps no kernel peak: sample the kernel part after each scrape instead."""
    cg, path = c.cgroups, c.cgroup
    if cg is None or path is None or cg.version != "v2" or "warmup_peak" not in c.mem:
        return
    k = cg.kernel(path)
    if k is not None:
        c.mem["kernel_sampled_max"] = max(k, c.mem.get("kernel_sampled_max") or 0)


def _max(*values) -> Optional[int]:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def mem_after_rounds(c: Contender) -> None:
    """Peak charged over start-up, warm-up and the rounds; its kernel part; usage at the end."""
    cg, path = c.cgroups, c.cgroup
    if cg is None or path is None or "warmup_peak" not in c.mem:
        return
    if c.mem_reason:  # a restart did not join the cgroup: the figures would miss it
        c.mem.clear()
        return
    mem_sample(c)
    m = c.mem
    m["scrapes"] = 1 + len(c.samples)  # the warm-up and the recorded ones
    rounds_peak = cg.peak_since_reset(path) if "reset" not in m else None
    m["rounds_peak"] = rounds_peak
    if cg.version == "v1":  # the reset lowered the counter: the peak is the larger of the two halves
        m["peak"] = _max(m["warmup_peak"], cg.peak(path))
        m["kernel_peak"] = _max(m["warmup_kernel_peak"], cg.kernel_peak(path))
        m["kernel_source"] = "memory.kmem.max_usage_in_bytes (peak of the kernel part alone)"
    else:  # memory.peak read afresh ignores the per-fd reset
        m["peak"] = cg.peak(path)
        m["kernel_peak"] = m.get("kernel_sampled_max")
        m["kernel_source"] = "memory.stat kernel, largest value sampled after each scrape"
    m["end_usage"] = cg.usage(path)
    m["end_kernel"] = cg.kernel(path)
    m["end_anon"], m["end_file"] = cg.anon_file(path)
    if c.crashes:
        m["note"] = "the process was restarted: figures span all its lives (their kernel charges stay)"


def unavailable(key: str, env: dict, floor_bin: Optional[str]) -> Optional[str]:
    """Why the contender `key` cannot run on this machine, or None."""
    if key.endswith("_bpf") and (reason := bpf_unavailable()):
        return reason
    if key.startswith("procsnap_") and not env["procsnap_cli"]:
        return env["procsnap_cli_reason"]
    if key.startswith("floor_") and not floor_bin:
        return env["floor_reason"]
    if key.startswith("pe_") and not os.path.exists(PE_BIN):
        return f"{PE_BIN} not installed (make tools installs it)"
    if key == "apps_plugin" and not os.access(APPS_PLUGIN, os.X_OK):
        return f"{APPS_PLUGIN} not installed (make bench installs Debian's netdata-core)"
    return None


def bench_size(n: int, mix: str, busy_pgid: Optional[int], args, env: dict, workdir: str, floor_bin: Optional[str],
               deadline: float) -> dict:
    """One size of one mix: start the contenders, warm up, interleaved rounds, strace."""
    wanted = set(args.contenders)
    contenders = make_contenders(workdir, floor_bin, env, wanted)
    cgroups: Optional[MemCgroups] = env.get("memcg")
    for c in contenders:
        c.cgroups = cgroups
        if cgroups is None or not cgroups.available:
            c.mem_reason = cgroups.reason if cgroups else "not measured"
            continue
        c.cgroup = cgroups.create(f"n{n}-{mix}-{c.key}")
        if c.cgroup is None:
            c.mem_reason = cgroups.reason

    def start_with_retries(c: Contender) -> None:
        """Start c; a peer may die at start on a transient process (e.g. process-exporter
        panics on a comm that is not valid UTF-8), so try 3 times, 3 s apart."""
        for attempt in range(3):
            try:
                c.start(timeout=args.start_timeout)
                c.skipped = None
                if attempt:
                    c.note = (c.note + "; " if c.note else "") + f"started on attempt {attempt + 1}"
                return
            except Skip as e:
                c.skipped = str(e)
                c.stop()
                log(f"  {c.key} failed to start (attempt {attempt + 1}/3): {one_line(c.skipped, 300)}")
                if c.key.startswith("procsnap_") and "exited with status 2" in c.skipped:
                    return  # a usage/config error will not go away
                if attempt < 2:
                    time.sleep(3)
    result: dict = {"n": n, "mix": mix}
    try:
        for c in contenders:
            c.skipped = unavailable(c.key, env, floor_bin)
            if c.skipped:
                log(f"  skip {c.key}: {c.skipped}")
                continue
            start_with_retries(c)
            if c.skipped:
                log(f"  skip {c.key}: {c.skipped}")
        live = [c for c in contenders if c.alive()]
        nprocs = count_pids()
        result["pids"] = nprocs
        result["tasks"] = count_tasks()
        log(f"  {nprocs} pids; contenders: {', '.join(c.key for c in live)}")

        def revive(c: Contender) -> bool:
            """Restart a contender whose process died (a peer crashing on some process on
            the machine); at most MAX_RESTARTS times per size. True if it runs again."""
            if c.alive():
                return True
            if c.proc is None or len(c.crashes) >= MAX_RESTARTS:
                return False
            reason = crash_reason(c)
            c.crashes.append(reason)
            log(f"  {c.key} died ({reason}); restarting")
            c.stop()
            start_with_retries(c)
            if c.skipped:
                c.skipped = f"died ({reason}) and did not restart: {c.skipped}"
                log(f"  {c.key}: {one_line(c.skipped, 300)}")
                return False
            try:
                c.scrape(timeout=args.scrape_timeout)  # warm-up again
                return True
            except Exception as e:  # noqa: BLE001
                c.skipped = f"died ({reason}); after a restart: {type(e).__name__}: {e}"
                log(f"  {c.key}: {c.skipped}")
                return False

        def one(c: Contender, record: bool) -> None:
            if c.skipped or not revive(c):
                return
            try:
                s = c.scrape(timeout=args.scrape_timeout)
            except Exception as e:  # noqa: BLE001 - one contender's failure must not stop the run
                time.sleep(0.2)
                if not c.alive():
                    revive(c)  # this round's sample is lost; the next rounds go on (or c.skipped says why not)
                    return
                failure = f"{type(e).__name__}: {e}"
                c.failures.append(failure)
                log(f"  {c.key}: scrape failed ({failure}): {one_line(tail(c.stderr_path, 300), 300)}")
                if len(c.failures) >= 3:
                    c.skipped = f"scrape failed {len(c.failures)} times: {failure}"
                return
            if s.series is not None:
                c.series = s.series
            if record:
                c.samples.append(s)
            mem_sample(c)

        for c in live:  # warm-up scrape, not recorded
            one(c, record=False)
        # dentries/inodes go to the first process that looks them up: this order matters
        result["warmup_order"] = [c.key for c in live]
        for c in live:
            mem_after_warmup(c)
        busy0 = cpu_busy()
        workload0 = group_cpu_seconds(busy_pgid) if busy_pgid else None
        rounds_t0 = time.monotonic()
        result["loadavg_before"] = os.getloadavg()
        for r in range(args.rounds):
            if time.monotonic() > deadline:
                log(f"  time budget reached after {r} rounds")
                result["note"] = f"stopped after {r} rounds: time budget"
                for c in live:
                    if not c.samples:  # say so, not "no scrape succeeded"; no strace phase either
                        c.skipped = c.skipped or f"the time budget ({args.budget_minutes:g} min) ran out before its rounds"
                break
            order = live[r % len(live):] + live[: r % len(live)] if live else []
            for c in order:
                one(c, record=True)
            walls = "  ".join(f"{c.key}={c.samples[-1].wall * 1000:.1f}" for c in live if c.samples and len(c.samples) == r + 1)
            log(f"  round {r + 1}/{args.rounds}: {walls}")
        result["loadavg_after"] = os.getloadavg()
        busy1 = cpu_busy()
        result["rounds_wall_seconds"] = time.monotonic() - rounds_t0
        result["machine_busy_fraction"] = cpu_busy_fraction(busy0, busy1)
        result["machine_cpu_seconds"] = (busy1[0] - busy0[0]) / CLK_TCK
        # the rest is the harness itself plus whatever else runs on the machine (noise)
        result["contender_cpu_seconds"] = sum(sum(s.cpu for s in c.samples) for c in live)
        if workload0 is not None:
            result["busy_cpu_seconds"] = group_cpu_seconds(busy_pgid) - workload0
        for c in live:
            if c.alive():
                c.rss_kb = status_kb(c.pid, "VmHWM")
                if c.crashes:
                    c.note = (c.note + "; " if c.note else "") + "peak RSS of the last restart"
            mem_after_rounds(c)  # before strace: its phase is not part of the figure
        if not args.no_strace:
            if not shutil.which("strace"):
                log("  strace not installed: no syscall counts (make tools installs it)")
            else:
                for c in live:
                    if c.skipped or not revive(c):
                        continue
                    try:
                        scrapes = args.strace_scrapes or (2 if n <= 2000 and not args.quick else 1)
                        c.strace = strace_count(c, scrapes, args.scrape_timeout * 5)
                        log(f"  strace {c.key}: {c.strace['per_proc_per_scrape']:.1f} syscalls/proc/scrape")
                    except Exception as e:  # noqa: BLE001
                        c.strace = {"error": f"{type(e).__name__}: {e}"}
                        log(f"  strace {c.key}: {c.strace['error']}")
        result["contenders"] = {c.key: summarize(c, nprocs) for c in contenders if c.key in ORDER}
        result["cycle_contenders"] = {c.key: summarize(c, nprocs) for c in contenders if c.key in CYCLE_ORDER}
    finally:
        for c in contenders:
            c.stop()
            if cgroups is not None and c.cgroup:
                why = cgroups.remove(c.cgroup)
                if why:
                    log(f"  {c.key}: {why}")
    return result


# ---------------------------------------------------------------- targets


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


COMPARE = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


def evaluate(size: dict) -> tuple:
    cs = all_contenders(size)

    def get(key, field_name):
        return (cs.get(key) or {}).get(field_name)

    med = lambda k: get(k, "median_ms")  # noqa: E731
    cpu = lambda k: get(k, "cpu_ms_per_scrape")  # noqa: E731
    ratios = {
        "procsnap_grouped / floor_fresh": ratio(med("procsnap_grouped"), med("floor_fresh")),
        "procsnap_grouped_all / floor_kept": ratio(med("procsnap_grouped_all"), med("floor_kept")),
        "pe_grouped / procsnap_grouped": ratio(med("pe_grouped"), med("procsnap_grouped")),
        "pe_grouped / procsnap_grouped_all": ratio(med("pe_grouped"), med("procsnap_grouped_all")),
        "pe_grouped / procsnap_grouped_off": ratio(med("pe_grouped"), med("procsnap_grouped_off")),
        "psutil_exporter / procsnap_grouped": ratio(med("psutil_exporter"), med("procsnap_grouped")),
        "procsnap_per_process / floor_fresh": ratio(med("procsnap_per_process"), med("floor_fresh")),
        "pe_per_process / procsnap_per_process": ratio(med("pe_per_process"), med("procsnap_per_process")),
        "psutil_exporter / procsnap_per_process": ratio(med("psutil_exporter"), med("procsnap_per_process")),
        "snapshot_native / floor_fresh": ratio(med("snapshot_native"), med("floor_fresh")),
        "snapshot_python / snapshot_native": ratio(med("snapshot_python"), med("snapshot_native")),
        "floor_fresh / floor_kept": ratio(med("floor_fresh"), med("floor_kept")),
        "pe_grouped / procsnap_grouped_bpf": ratio(med("pe_grouped"), med("procsnap_grouped_bpf")),
        "procsnap_grouped_bpf / floor_kept": ratio(med("procsnap_grouped_bpf"), med("floor_kept")),
        "CPU: apps_plugin per cycle / procsnap_grouped per scrape": ratio(cpu("apps_plugin"), cpu("procsnap_grouped")),
        "CPU: pe_grouped / procsnap_grouped, per scrape": ratio(cpu("pe_grouped"), cpu("procsnap_grouped")),
    }

    targets = []

    def target(name, value, limit, op, unit=""):
        ok = None if value is None or limit is None else COMPARE[op](value, limit)
        targets.append({"name": name, "value": value, "target": f"{op} {limit:g}{unit}" if limit is not None else f"{op} ?",
                        "pass": ok})

    # the defaults (--procfs.keep-open=auto): fast AND no more memory than process-exporter
    target("grouped >= 10x faster than process-exporter grouped", ratios["pe_grouped / procsnap_grouped"], 10, ">=", "x")
    target("procsnap_grouped peak charged <= pe_grouped peak charged",
           get("procsnap_grouped", "peak_charged_mib"), get("pe_grouped", "peak_charged_mib"), "<=", " MiB")
    target("per-process >= 4x faster than process-exporter per-process",
           ratios["pe_per_process / procsnap_per_process"], 4, ">=", "x")
    target("per-process >= 3x faster than psutil exporter", ratios["psutil_exporter / procsnap_per_process"], 3, ">=", "x")
    for key in ("procsnap_grouped", "procsnap_per_process"):
        target(f"{key}: syscalls/process/scrape <= the floor's opening each file",
               get(key, "syscalls_per_proc_per_scrape"), get("floor_fresh", "syscalls_per_proc_per_scrape"), "<=")
    # the fastest /proc setting (--procfs.keep-open=all) against the C floor with the same
    # files kept, and below that floor (issue 14): the bpf backend
    target("grouped, keep-open=all, within 1.1x of C floor kept", ratios["procsnap_grouped_all / floor_kept"], 1.1,
           "<=", "x")
    target("bpf: grouped scrape <= 40 ms", med("procsnap_grouped_bpf"), 40, "<=", " ms")
    target("bpf: grouped >= 40x faster than process-exporter grouped", ratios["pe_grouped / procsnap_grouped_bpf"],
           40, ">=", "x")
    target("bpf: snapshot() <= 20 ms", med("snapshot_bpf"), 20, "<=", " ms")
    target("procsnap_grouped_all: syscalls/process/scrape <= 5", get("procsnap_grouped_all", "syscalls_per_proc_per_scrape"),
           5, "<=")
    target("procsnap_grouped: CPU per scrape < apps.plugin's CPU per collection cycle", cpu("procsnap_grouped"),
           cpu("apps_plugin"), "<", " ms")
    target("procsnap_grouped: peak RSS <= 45 MB", get("procsnap_grouped", "peak_rss_mb"), 45, "<=", " MB")
    target("procsnap_per_process: peak RSS <= process-exporter per-process",
           get("procsnap_per_process", "peak_rss_mb"), get("pe_per_process", "peak_rss_mb"), "<=", " MB")
    for key in ("procsnap_grouped", "procsnap_per_process"):
        target(f"{key}: CPU per scrape <= 1.1x wall", get(key, "cpu_over_wall"), 1.1, "<=", "x")
    return ratios, targets


# ---------------------------------------------------------------- report


def fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def verdict(ok) -> str:
    return "–" if ok is None else ("PASS" if ok else "FAIL")


def memcg_line(results: dict) -> str:
    mc = results.get("memcg")
    if not mc:
        return ""
    if mc.get("error"):
        return f"Peak charged: {mc['error']}."
    return f"Cgroup {mc['version']}, one child of {mc['parent']} per contender and size."


def memcg_section(size: dict, measured: bool) -> list:
    """The charged memory in detail, and what it depends on (who touched /proc first)."""
    cs = all_contenders(size)
    rows = []
    for key in ALL_KEYS:
        c = cs.get(key) or {}
        mc = c.get("memcg") or {}
        if c.get("skipped") or "peak_mib" not in mc:
            if measured and not c.get("skipped") and mc.get("error"):
                rows.append(f"| {key} | {one_line(mc['error'], 100)} | | | | | |")
            continue
        rows.append(f"| {key} | {mc.get('scrapes', '?')} | {fmt(mc.get('warmup_peak_mib'))} | "
                    f"{fmt(mc.get('rounds_peak_mib'))} | {fmt(mc.get('peak_mib'))} | "
                    f"{fmt(mc.get('end_usage_mib'))} / {fmt(mc.get('end_kernel_mib'))} | "
                    f"{fmt(mc.get('end_anon_mib'))} / {fmt(mc.get('end_file_mib'))} |")
    if not rows:
        return []
    any_mc = next((cs[k]["memcg"] for k in ALL_KEYS if "peak_mib" in ((cs.get(k) or {}).get("memcg") or {})), {})
    out = [
        "| memory charged to the cgroup | scrapes | peak MiB, start + warm-up scrape | peak MiB over the rounds | "
        "peak MiB, all | at end MiB: total / kernel | at end MiB: anon / page cache |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ] + rows + [""]
    order = size.get("warmup_order") or []
    out.append(
        "Kernel part of the peak: " + (any_mc.get("kernel_source") or "?") + ". "
        "Dentries and inodes are charged to the process that first looks them up, page cache to the one that "
        "first reads a file; nothing is dropped between contenders (a shared machine), so a contender may find "
        "/proc/PID dentries already cached by one before it and be charged less. Warm-up order (first toucher "
        f"first): {', '.join(order) if order else '?'}. Counters batch charges per CPU (~0.25 MiB each).")
    for key in ORDER:
        mc = (cs.get(key) or {}).get("memcg") or {}
        for k in ("reset", "note"):
            if mc.get(k):
                out.append(f"- {key}: {mc[k]}")
    out.append("")
    return out


def all_contenders(size: dict) -> dict:
    """The scrape and the cycle contenders of one size, by key."""
    return {**size.get("contenders", {}), **size.get("cycle_contenders", {})}


def mix_title(size: dict) -> str:
    title = f"N = {size['n']} idle processes"
    if size.get("mix", "idle") == "idle":
        return f"{title} ({size.get('pids', '?')} pids)"
    busy = size.get("busy") or {}
    return (f"{title} + {busy.get('procs', '?')} busy processes of {busy.get('threads', '?')} threads "
            f"({size.get('pids', '?')} pids, {size.get('tasks', '?')} tasks)")


def cycle_section(size: dict) -> list:
    """apps.plugin's CPU per collection cycle next to the exporters' CPU per scrape."""
    cycles = size.get("cycle_contenders") or {}
    if not cycles:
        return []
    cs = all_contenders(size)
    out = ["| CPU per collection cycle vs per scrape | cycles / scrapes | CPU ms per cycle / scrape | peak RSS MB | "
           "peak charged MiB | of which kernel MiB | syscalls/proc per cycle / scrape |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for key in CYCLE_ORDER + ["procsnap_grouped", "pe_grouped"]:
        c = cs.get(key)
        if c is None:
            continue
        if c.get("skipped"):
            out.append(f"| {key} | skipped: {one_line(c['skipped'], 300)} |" + " |" * 5)
            continue
        out.append(f"| {key} | {c['scrapes']} | {fmt(c['cpu_ms_per_scrape'])} | {fmt(c['peak_rss_mb'])} | "
                   f"{fmt(c.get('peak_charged_mib'))} | {fmt(c.get('kernel_charged_mib'))} | "
                   f"{fmt(c['syscalls_per_proc_per_scrape'])} |")
    return out + [""]


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "## Benchmark: procsnap vs process-exporter, Netdata's apps.plugin, a psutil exporter and the C floor",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gib']:.0f} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, psutil {m['psutil']}, process-exporter {m['process_exporter']}. "
        f"procsnap {m['procsnap_commit']}. Run {results['started']} "
        f"({results['duration_seconds']:.0f} s; {results['args']['rounds']} interleaved rounds after a warm-up; "
        f"`bench/run.py {shlex.join(results['argv'])}`).",
        "",
        "Scrape time is the wall time of GET /metrics (HTTP contenders) or of one iteration (floor, snapshot). "
        "CPU is utime+stime of the contender's process per scrape; RSS is its VmHWM; "
        "syscalls come from a separate `strace -c -f` phase. "
        "Peak charged is the peak memory charged to the contender's own memory cgroup (joined before exec), "
        "user + kernel, over its start-up, the warm-up scrape and the timed rounds; the kernel part "
        "(kept-open /proc files' seq_file buffers and struct files, dentries, inodes, page tables) is what RSS "
        f"does not show. {memcg_line(results)}",
        "",
        "Two host mixes: *idle*, N idle `sleep` processes; *busy*, the same plus processes of many threads, "
        f"each thread waking every ~{BUSY_PERIOD:g} s (jittered) to burn {BUSY_BURN * 1e6:g} µs of CPU and "
        f"rewrite and reread a {BUSY_BYTES // 1024} KiB file of its own (bench/spawn.py). "
        "Netdata's apps.plugin collects on its own 1 s clock, so it is compared by CPU per collection cycle: "
        "each of its rounds lets it run one cycle (SIGCONT, its output read to the cycle's end, SIGSTOP) and "
        "counts the utime+stime it spent, next to the exporters' CPU per scrape.",
        "",
    ]
    if results.get("plot"):
        lines += [f"![scrape time and CPU against N]({results['plot']})", ""]
    elif results.get("plot_error"):
        lines += [f"No plot: {results['plot_error']}.", ""]
    for note in results.get("notes", []):
        lines.append(f"- {note}")
    if results.get("notes"):
        lines.append("")
    for size in results["sizes"].values():
        lines.append(f"### {mix_title(size)}")
        lines.append("")
        if size.get("machine_cpu_seconds") is not None:
            workload = size.get("busy_cpu_seconds")
            lines.append(f"During the timed rounds ({size['rounds_wall_seconds']:.0f} s) the machine used "
                         f"{size['machine_cpu_seconds']:.0f} CPU-s (busy {100 * (size['machine_busy_fraction'] or 0):.0f}% "
                         f"of {m['nproc']} CPUs), of which the contenders {size['contender_cpu_seconds']:.0f} CPU-s"
                         + ("" if workload is None else f" and the busy processes {workload:.0f} CPU-s")
                         + "; the rest is the harness and other load. Load average before/after: "
                         f"{size['loadavg_before'][0]:.1f} / {size['loadavg_after'][0]:.1f}.")
            lines.append("")
        anchors = ANCHORS_5000 if size.get("mix", "idle") == "idle" and size["n"] == 5000 else {}
        head = ("| contender | median ms | p95 ms | CPU ms/scrape | CPU/wall | peak RSS MB | peak charged MiB | "
                "of which kernel MiB | series | syscalls/proc/scrape |")
        if anchors:
            head += " anchor median ms |"
        lines.append(head)
        lines.append("|---|" + "---:|" * (10 if anchors else 9))
        for key in ORDER:
            c = size.get("contenders", {}).get(key)
            if c is None:
                continue
            if c.get("skipped"):
                row = f"| {key} | skipped: {one_line(c['skipped'])} |" + " |" * 8
                if anchors:
                    row += " |"
                lines.append(row)
                continue
            row = (f"| {key} | {fmt(c['median_ms'])} | {fmt(c['p95_ms'])} | {fmt(c['cpu_ms_per_scrape'])} | "
                   f"{fmt(c['cpu_over_wall'], 2)} | {fmt(c['peak_rss_mb'])} | {fmt(c.get('peak_charged_mib'))} | "
                   f"{fmt(c.get('kernel_charged_mib'))} | {fmt(c['series'])} | "
                   f"{fmt(c['syscalls_per_proc_per_scrape'])} |")
            if anchors:
                row += f" {fmt(anchors.get(key, {}).get('median_ms'))} |"
            lines.append(row)
        lines.append("")
        lines.extend(cycle_section(size))
        everyone = all_contenders(size)
        for key in ALL_KEYS:
            c = everyone.get(key) or {}
            if c.get("crashes"):
                lines.append(f"- {key} died {len(c['crashes'])} time(s) and was restarted: "
                             f"{'; '.join(sorted(set(one_line(r, 120) for r in c['crashes'])))}")
            if c.get("failed_scrapes"):
                lines.append(f"- {key}: {len(c['failed_scrapes'])} scrape(s) failed: "
                             f"{'; '.join(sorted(set(one_line(r, 120) for r in c['failed_scrapes'])))}")
            if c.get("error"):
                lines.append(f"- {key}: {one_line(c['error'])} (figures are from the scrapes before)")
        if any((everyone.get(k) or {}).get(f) for k in ALL_KEYS for f in ("crashes", "error", "failed_scrapes")):
            lines.append("")
        lines.extend(memcg_section(size, bool(results.get("memcg")) and not results["memcg"].get("error")))
        lines.append("| ratio | value |")
        lines.append("|---|---:|")
        for name, value in size.get("ratios", {}).items():
            lines.append(f"| {name} | {fmt(value, 2)} |")
        lines.append("")
        lines.append("| target | value | goal | result |")
        lines.append("|---|---:|---|---|")
        for t in size.get("targets", []):
            value = fmt(t["value"], 2)
            if t["pass"] is False and t["value"] is not None and value in t["target"]:
                value = fmt(t["value"], 4)  # 11.998 shows as 12.00 next to ">= 12x": say why it fails
            lines.append(f"| {t['name']} | {value} | {t['target']} | {verdict(t['pass'])} |")
        lines.append("")
        nofile = (m.get("rlimit_nofile") or [None, None])[1]
        if nofile and size["n"] * 3 > nofile:
            lines.append(f"At this N, 3 kept files per process exceed RLIMIT_NOFILE (hard {nofile}): floor_kept and "
                         "procsnap keep what fits and open/close the rest, hence more syscalls per process. "
                         "The targets are set against the N=5000 anchors.")
            lines.append("")
        micro = size.get("psutil_micro")
        if micro and "error" not in micro:
            lines.append(f"psutil's own claims over {micro['procs']} processes ({micro['rounds']} rounds): "
                         f"oneshot() {micro['oneshot_speedup_stat5']:.2f}x on five stat fields "
                         f"({', '.join(micro['stat5'])}), {micro['oneshot_speedup_mixed5']:.2f}x on a mixed set "
                         f"({', '.join(micro['mixed5'])}) — seed claims {SEED_CLAIMS['oneshot']:g}x; "
                         f"process_iter(attrs) vs a manual loop {micro['process_iter_speedup']:.2f}x — "
                         f"seed claims {SEED_CLAIMS['process_iter']:g}x.")
            lines.append("")
    for key, reason in results.get("skipped_sizes", {}).items():
        lines.append(f"N = {key}: skipped — {reason}")
        lines.append("")
    gil = results.get("gil")
    if gil:
        lines.append("### GIL proof")
        lines.append("")
        lines.append("| backend | processes | pure-Python thread throughput during back-to-back reads (Reader.read()), vs alone | "
                     "the same, counting only GIL waits | count thread: on CPU / waiting for a CPU / blocked (GIL) | "
                     "reads per window: shared / alone | goal | result |")
        lines.append("|---|---:|---:|---:|---|---:|---|---|")
        for backend, g in gil.items():
            if "error" in g:
                lines.append(f"| {backend} | – | skipped: {g['error'][:120]} | – | – | – |")
                continue
            goal = ">= 0.7" if backend == "native" else "(contrast)"
            ok = g["ratio"] >= 0.7 if backend == "native" else None
            sh = g.get("shared", {})
            split = " / ".join(f"{100 * sh.get(k, 0):.0f}%" for k in ("on_cpu", "cpu_wait", "blocked"))
            lines.append(f"| {backend} | {g['procs']} | {g['ratio']:.2f} | {fmt(g.get('ratio_gil_only'), 2)} | {split} | "
                         f"{statistics.median(g['snapshots_per_window']):.0f} / "
                         f"{fmt(statistics.median(g['snapshots_per_window_alone']) if g.get('snapshots_per_window_alone') else None)} "
                         f"| {goal} | {verdict(ok)} |")
        lines.append("")
        lines.append(f"{gil[next(iter(gil))].get('window_seconds', '?')} s windows, solo and shared alternated; "
                     "the goal applies to the plain throughput ratio. Time the count thread spent runnable but "
                     "without a CPU is load from elsewhere on the machine, not the GIL. The last column is the "
                     "other side: how many reads the reading thread completed per window while the count "
                     "thread ran, vs alone (each return into Python waits for the GIL's switch interval).")
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plot and files


PLOT_NAME = "scrape_vs_n.png"
MARKERS = "osD^v<>ph*XP"


def write_plot(results: dict, path: str) -> Optional[str]:
    """Median scrape time (top) and CPU per scrape, apps.plugin's per cycle (bottom),
    against N, one column per mix, log-log. Returns why no plot was written, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display here
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    sizes = list(results["sizes"].values())
    mixes = [mix for mix in MIXES if any(s.get("mix", "idle") == mix for s in sizes)]
    if not mixes:
        return "no size was measured"
    rows = (("median_ms", "median scrape time, ms", ORDER),
            ("cpu_ms_per_scrape", "CPU ms per scrape (apps.plugin: per 1 s cycle)", ALL_KEYS))
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    fig, axes = plt.subplots(2, len(mixes), figsize=(6.5 * len(mixes), 10), squeeze=False, sharex=True, sharey="row")
    for col, mix in enumerate(mixes):
        of_mix = sorted((s for s in sizes if s.get("mix", "idle") == mix), key=lambda s: s["n"])
        for row, (field_name, ylabel, keys) in enumerate(rows):
            ax = axes[row][col]
            for key in keys:
                points = [(s["n"], all_contenders(s).get(key, {}).get(field_name)) for s in of_mix]
                points = [(n, v) for n, v in points if v]
                if points:
                    i = ALL_KEYS.index(key)  # the same colour and marker in every panel
                    ax.plot(*zip(*points), marker=MARKERS[i % len(MARKERS)], color=plt.get_cmap("tab20")(i), label=key)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks([s["n"] for s in of_mix])  # the sizes measured, labelled 2000, not 2x10^3
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.set_ylabel(ylabel)
        busy = next((s["busy"] for s in of_mix if s.get("busy")), {})
        axes[0][col].set_title("idle: N sleep processes" if mix == "idle" else
                               f"busy: N idle + {busy.get('procs', '?')} processes x {busy.get('threads', '?')} threads")
        axes[-1][col].set_xlabel("N idle processes")
    legend = {}
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    labels = [k for k in ALL_KEYS if k in legend]
    fig.legend([legend[k] for k in labels], labels, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def write_file(path: str, text: str) -> None:
    """Write via a temporary file: an interrupted run leaves the old file whole."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_report(results: dict, out: str) -> str:
    """The plot and latest.md in `out`, from the results; returns the Markdown."""
    os.makedirs(out, exist_ok=True)
    results.pop("plot", None)
    results.pop("plot_error", None)
    why = write_plot(results, os.path.join(out, PLOT_NAME))
    if why:
        results["plot_error"] = why
    else:
        results["plot"] = PLOT_NAME
    md = markdown(results)
    write_file(os.path.join(out, "latest.md"), md)
    return md


# ---------------------------------------------------------------- machine / environment


def machine_info() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        import psutil

        psutil_version = psutil.__version__
    except ImportError:
        psutil_version = "not installed"
    pe_version = "not installed"
    if os.path.exists(PE_BIN):
        try:
            out = subprocess.run([PE_BIN, "-version"], capture_output=True, text=True, timeout=10)
            m = re.search(r"revision:\s*([^\s)]+)", out.stdout + out.stderr)
            pe_version = m.group(1) if m else (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            pe_version = "?"
    commit = "?"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "exporter"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if dirty:
            commit += " (+ uncommitted changes in exporter/)"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mem_gib": mem_kb / 1024 / 1024,
        "psutil": psutil_version,
        "process_exporter": pe_version,
        "procsnap_commit": commit,
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "pid_max": int(open("/proc/sys/kernel/pid_max").read()),
    }


def build_floor(builddir: str) -> tuple:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (cc) found"
    out = os.path.join(builddir, "floor")
    proc = subprocess.run([cc, "-O2", "-Wall", "-o", out, os.path.join(HERE, "floor.c")],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return None, f"cc failed: {proc.stderr.strip()[:300]}"
    return out, None


def probe_procsnap() -> tuple:
    """(usable, reason, native_available)."""
    native = subprocess.run(
        [sys.executable, "-c", "import exporter, sys; sys.stdout.write(str(exporter.native_available()))"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    ).stdout.strip() == "True"
    if not os.path.exists(PROCSNAP_BIN):
        return False, f"procsnap CLI not installed at {PROCSNAP_BIN} (make build)", native
    try:
        p = subprocess.run([PROCSNAP_BIN, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"procsnap CLI does not run: {e}", native
    if p.returncode != 0 or "--web.listen-address" not in p.stdout:
        return False, f"procsnap CLI not ready (--help exit {p.returncode}: {(p.stderr or p.stdout).strip()[-200:]})", native
    return True, "", native


# ---------------------------------------------------------------- main


def parse_args(argv) -> argparse.Namespace:
    # `--procsnap-args "--flag=x"`: a value that starts with "--" would read as an option
    argv = list(argv)
    for i, a in enumerate(argv[:-1]):
        if a == "--procsnap-args":
            argv[i:i + 2] = [f"--procsnap-args={argv[i + 1]}"]
            break
    ap = argparse.ArgumentParser(description="procsnap benchmark (make bench ARGS=...)")
    ap.add_argument("--sizes", default=None, help="comma-separated N of idle processes (default 500,2000,5000,10000)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved timed rounds per size (default 7; --quick 3)")
    ap.add_argument("--quick", action="store_true",
                    help="N=500 only, 3 rounds, busy mix 5x10, short GIL/psutil phases (a check of the harness)")
    ap.add_argument("--mixes", default="idle,busy",
                    help="host mixes, run at each size: idle (N idle processes), busy (the same plus the busy "
                         "processes of --busy); default both")
    ap.add_argument("--busy", default=None, metavar="PROCSxTHREADS",
                    help="the busy mix's extra processes: PROCS processes of THREADS threads, each thread "
                         "burning a little CPU and doing small file I/O (default 50x100; --quick 5x10)")
    ap.add_argument("--no-strace", action="store_true", help="skip the strace phase (no syscall counts)")
    ap.add_argument("--strace-scrapes", type=int, default=None,
                    help="scrapes under strace per contender (default 2 up to N=2000, else 1: ptrace makes a "
                         "process-exporter scrape ~20x slower here, and the per-process count does not depend on N)")
    ap.add_argument("--no-gil", action="store_true", help="skip the GIL proof")
    ap.add_argument("--no-psutil-micro", action="store_true", help="skip reproducing psutil's oneshot/process_iter claims")
    ap.add_argument("--contenders", "--only", dest="contenders", default=",".join(ALL_KEYS),
                    help="run only these (comma-separated) of: " + ",".join(ALL_KEYS))
    ap.add_argument("--procsnap-args", default="", metavar="ARGS",
                    help='extra CLI flags appended to the procsnap contenders\' command lines, split like a shell '
                         'would (e.g. --procsnap-args "--procfs.keep-open=off")')
    ap.add_argument("--own-only", action="store_true",
                    help="exporters' configs match only the benchmark's own idle processes (the smoke test's "
                         "setting: other workloads on the host are read, never exported)")
    ap.add_argument("--no-cgroups", action="store_true",
                    help="do not run the contenders in their own memory cgroups (no peak charged memory)")
    ap.add_argument("--gil-size", type=int, default=None,
                    help="N for the GIL proof and the psutil claims (default 5000 if run, else the largest)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="directory for latest.json / latest.md")
    ap.add_argument("--budget-minutes", type=float, default=28.0, help="stop starting new work after this long")
    ap.add_argument("--scrape-timeout", type=float, default=120.0, help="seconds per scrape before giving up")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds for an exporter to serve /metrics")
    ap.add_argument("--lifetime", type=int, default=3600, help="seconds the idle sleeps live at most (a backstop)")
    ap.add_argument("--render", metavar="JSON", default=None,
                    help="only re-render latest.md and latest.json (in --out) from an existing results JSON, "
                         "the targets evaluated again; no measurement")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = "500" if args.quick else "500,2000,5000,10000"
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes: not a list of integers: {args.sizes!r}")
    if any(n < 0 or n > 100000 for n in args.sizes):
        ap.error("--sizes: each N must be within 0..100000")
    args.mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    if not args.mixes or set(args.mixes) - set(MIXES):
        ap.error(f"--mixes: a comma-separated list of {', '.join(MIXES)}")
    if args.busy is None:
        args.busy = "5x10" if args.quick else "50x100"
    m = re.fullmatch(r"(\d+)x(\d+)", args.busy)
    if not m or not 1 <= int(m.group(1)) <= 1000 or not 1 <= int(m.group(2)) <= 1000:
        ap.error(f"--busy: PROCSxTHREADS, each 1..1000, not {args.busy!r}")
    args.busy = (int(m.group(1)), int(m.group(2)))
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    args.rounds = max(1, min(args.rounds, 100))
    if args.strace_scrapes is not None:
        args.strace_scrapes = max(1, min(args.strace_scrapes, 20))
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(args.contenders) - set(ALL_KEYS)
    if unknown:
        ap.error(f"--contenders/--only: unknown {', '.join(sorted(unknown))}")
    try:
        args.procsnap_argv = shlex.split(args.procsnap_args)
    except ValueError as e:
        ap.error(f"--procsnap-args: {e}")
    return args


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:  # the ratios and targets evaluated again: this code's targets
        with open(args.render) as f:
            results = json.load(f)
        for size in results["sizes"].values():
            if "contenders" in size:
                size["ratios"], size["targets"] = evaluate(size)
        print(write_report(results, args.out))
        write_file(os.path.join(args.out, "latest.json"), json.dumps(results, indent=1, default=str))
        return 0
    started_mono = time.monotonic()
    deadline = started_mono + args.budget_minutes * 60
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (&)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    _raise_nofile()  # inherited by the contenders (the floor and procsnap keep files open)

    results: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "args": {k: v for k, v in vars(args).items()},
        "machine": machine_info(),
        "anchors_n5000": ANCHORS_5000,
        "sizes": {},
        "skipped_sizes": {},
        "notes": [],
    }
    m = results["machine"]
    log(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}")

    workdir = tempfile.mkdtemp(prefix="procsnap-bench-")
    cgroups = None
    try:
        if args.no_cgroups:
            results["memcg"] = {"error": "not measured: --no-cgroups"}
        else:
            cgroups = MemCgroups()
            results["memcg"] = {"version": cgroups.version, "parent": cgroups.parent,
                                "error": None if cgroups.available else f"not measured: {cgroups.reason}"}
        log(f"memory cgroups: {cgroups.describe() if cgroups else 'off (--no-cgroups)'}")
        if args.procsnap_argv:
            results["notes"].append(f"procsnap contenders run with extra args: `{shlex.join(args.procsnap_argv)}`")
        floor_bin, floor_reason = build_floor(workdir)
        if floor_reason:
            log(f"C floor unavailable: {floor_reason}")
        cli_ok, cli_reason, native = probe_procsnap()
        if not cli_ok:
            log(f"procsnap contenders skipped: {cli_reason}")
            results["notes"].append(f"procsnap contenders skipped: {cli_reason}")
        if not native:
            msg = "the native reader (exporter._reader) is not built: procsnap runs its python backend"
            log(msg)
            results["notes"].append(msg)
        env = {
            "procsnap_cli": cli_ok,
            "procsnap_cli_reason": cli_reason,
            "native": native,
            "procsnap_backend": "native" if native else "python",
            "floor_reason": floor_reason,
            "procsnap_args": args.procsnap_argv,
            "own_only": args.lifetime if args.own_only else None,
            "memcg": cgroups,
        }
        largest = None
        for n, mix in ((n, mix) for n in args.sizes for mix in args.mixes):
            key = size_key(n, mix)
            busy_procs, busy_threads = args.busy if mix == "busy" else (0, 0)
            if time.monotonic() > deadline:
                reason = f"time budget of {args.budget_minutes:g} min used up"
            else:
                reason = capacity_check(n + busy_procs * busy_threads)
            if reason:
                results["skipped_sizes"][key] = reason
                log(f"N={key}: skipped ({reason})")
                continue
            log(f"N={key}: spawning processes ...")
            busy_set = ProcessSet.busy(busy_procs, busy_threads, args.lifetime) if busy_procs else nullcontext()
            with ProcessSet.idle(n, args.lifetime) as idle, busy_set as busy:
                log(f"  spawned {idle.count} idle in {idle.spawn_seconds:.1f}s"
                    + (f", {busy.count} busy in {busy.spawn_seconds:.1f}s" if busy else ""))
                size = bench_size(n, mix, busy.pgid if busy else None, args, env, workdir, floor_bin, deadline)
                size["spawned"] = idle.count
                size["spawn_seconds"] = idle.spawn_seconds
                if busy:
                    size["busy"] = {"procs": busy.count, "threads": busy_threads, "spawn_seconds": busy.spawn_seconds}
                gil_target = args.gil_size or (5000 if 5000 in args.sizes else max(args.sizes))
                if mix == "idle" and n == gil_target:
                    if not args.no_psutil_micro and time.monotonic() < deadline:
                        log("  psutil oneshot / process_iter claims ...")
                        try:
                            size["psutil_micro"] = psutil_micro(3 if args.quick else 5, 30 if args.quick else 120)
                        except Exception as e:  # noqa: BLE001
                            size["psutil_micro"] = {"error": f"{type(e).__name__}: {e}"}
                    if not args.no_gil and time.monotonic() < deadline:
                        largest = n
                        results["gil"] = gil_proof(args)
            size["ratios"], size["targets"] = evaluate(size)
            results["sizes"][key] = size
        if not args.no_gil and largest is None and "gil" not in results:
            results["notes"].append("GIL proof not run: its size was skipped")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if cgroups is not None:
            for why in cgroups.cleanup():
                log(f"memory cgroups: {why}")

    results["duration_seconds"] = time.monotonic() - started_mono
    md = write_report(results, args.out)
    json_path = os.path.join(args.out, "latest.json")
    write_file(json_path, json.dumps(results, indent=1, default=str))
    print("\n" + md, flush=True)
    log(f"wrote {json_path}, latest.md and {results.get('plot') or 'no plot'} in {args.out}")
    return 0


def gil_proof(args) -> dict:
    out = {}
    seconds = 0.5 if args.quick else 2.0
    windows = 2 if args.quick else 5
    for backend in ("native", "python"):
        log(f"  GIL proof, {backend} backend ({windows} x {seconds:g}s windows) ...")
        try:
            proc = subprocess.run(
                [sys.executable, os.path.join(HERE, "snapworker.py"), "gil", backend, str(seconds), str(windows)],
                capture_output=True, text=True, cwd=ROOT, timeout=windows * seconds * 4 + 300,
                preexec_fn=die_with_parent,
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            out[backend] = json.loads(lines[-1]) if lines else {"error": f"no result: {proc.stderr.strip()[-300:]}"}
        except (subprocess.SubprocessError, ValueError, OSError) as e:
            out[backend] = {"error": f"{type(e).__name__}: {e}"}
        g = out[backend]
        log(f"    {g.get('ratio', g.get('error'))}")
    return out


if __name__ == "__main__":
    sys.exit(main())
