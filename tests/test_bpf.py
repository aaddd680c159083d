"""The bpf backend (exporter._bpf: a BPF task iterator) gives what the /proc reader gives,
field by field, on live processes this test starts: idle, multi-threaded, busy, another
user's, a zombie, one that execs; and where it cannot load, procsnap falls back to /proc.

How values that move are judged: each comparison reads bpf, then /proc, then bpf again.
A field that did not move between the two bpf reads must equal /proc's exactly; one that
moved must lie between them (numbers) or equal one of them (state, wchan, comm); the state
and wchan of a running process are instants, compared by type only. CPU times
of a process that ran meanwhile: their sum lies between the two bpf reads within one tick
(each of utime and stime is floored to ticks); the user/system split is the kernel's
cputime_adjust() run with procsnap's own prev state, so the parts are checked against
the sum only. The idle processes are checked not to have moved, so their fields are held
exactly equal (CPU times, rss, wchan, the exec mark, io, fd count included).

Skipped with the reason where BPF cannot load here (not built, no BTF, no CAP_BPF +
CAP_PERFMON); as root on a kernel >= 5.8 with BTF they run. The fallback tests need only
the extension built.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from exporter.reader import FIELDS, F, WANT_ALL, Reader, bpf_unavailable
from helpers import asleep, settle

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ROOT = os.geteuid() == 0


def _bpf_reason():
    reason = bpf_unavailable("/proc")
    if reason is not None:
        return reason
    reader = Reader("/proc", "bpf", None, "off")
    try:
        return None if reader.backend == "bpf" else reader.fallback_reason
    finally:
        reader.close()


BPF_REASON = _bpf_reason()
needs_bpf = pytest.mark.skipif(BPF_REASON is not None, reason=f"BPF cannot load here: {BPF_REASON}")
needs_module = pytest.mark.skipif(
    bpf_unavailable("/proc") is not None and "not built" in (bpf_unavailable("/proc") or ""),
    reason="exporter._bpf is not built (clang and libbpf-dev at build time)")

COUNTERS = ("utime_ticks", "stime_ticks", "minor_faults", "major_faults", "ctx_voluntary", "ctx_nonvoluntary",
            "read_bytes", "write_bytes", "cutime_ticks", "cstime_ticks", "cminor_faults", "cmajor_faults")
TEXT = ("comm", "state", "wchan")


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def _ready(proc):
    assert proc.stdout.readline() == b"ready\n"


MULTI = textwrap.dedent("""
    import threading, time
    stop = threading.Event()
    for _ in range(4):
        threading.Thread(target=stop.wait, daemon=True).start()
    print("ready", flush=True)
    stop.wait()
""")
BUSY = textwrap.dedent("""
    import threading, time
    def spin():
        x = 0
        while True:
            x += 1
    threading.Thread(target=spin, daemon=True).start()
    print("ready", flush=True)
    spin()
""")


@pytest.fixture
def live():
    """{kind: pid} of processes started here: idle, multi (5 threads, asleep), busy (two
    spinning threads), zombie, and as root other (uid 65534)."""
    procs = {"idle": subprocess.Popen(["sleep", "600"]),
             "multi": subprocess.Popen([sys.executable, "-c", MULTI], stdout=subprocess.PIPE),
             "busy": subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE),
             "zombie": subprocess.Popen(["sleep", "600"])}
    if ROOT:
        procs["other"] = subprocess.Popen(["sleep", "600"], user=65534, group=65534, extra_groups=[])
    try:
        _ready(procs["multi"])
        _ready(procs["busy"])
        procs["zombie"].send_signal(signal.SIGKILL)  # not reaped until the end: a zombie meanwhile
        settle([procs["zombie"].pid], b"Z")
        settle([p.pid for k, p in procs.items() if k in ("idle", "multi", "other")])
        yield {k: p.pid for k, p in procs.items()}
    finally:
        _stop(procs.values())


def _bracket(bpf, proc, pids):
    """bpf, /proc, bpf reads of pids: [(pid, before, proc, after)] as dicts."""
    a = {r[0]: r for r in bpf.read().records if r[0] in pids}
    b = {r[0]: r for r in proc.read().records if r[0] in pids}
    c = {r[0]: r for r in bpf.read().records if r[0] in pids}
    assert set(a) == set(b) == set(c) == set(pids)
    return [(pid, dict(zip(FIELDS, a[pid])), dict(zip(FIELDS, b[pid])), dict(zip(FIELDS, c[pid]))) for pid in pids]


def _check(pid, before, mine, after, running=False):
    """The rule of the module docstring; returns the fields that moved. ``running``: the
    state and wchan of a running process are instants (R at both bpf reads, S on the GIL's
    futex in between): only their types are compared; and its CPU time moves in
    nanoseconds within a tick, so /proc's cputime_adjust() may split it otherwise than ours:
    only the sum is held."""
    moved = []
    for f in FIELDS:
        x, y, z = before[f], mine[f], after[f]
        assert type(x) is type(y) is type(z), (pid, f, x, y, z)
        if running and f in ("state", "wchan"):
            continue
        if x == z:
            if f in ("utime_ticks", "stime_ticks"):  # the split: held below when the sum moved
                if before["utime_ticks"] + before["stime_ticks"] != after["utime_ticks"] + after["stime_ticks"]:
                    continue
                if running:  # it ran within the tick both bpf reads show: the split is /proc's own
                    continue
            assert y == x, (pid, f, "bpf", x, "proc", y)
            continue
        moved.append(f)
        if f in TEXT:
            assert y in (x, z), (pid, f, x, y, z)
        elif f in ("utime_ticks", "stime_ticks"):
            pass
        else:
            assert min(x, z) <= y <= max(x, z), (pid, f, x, y, z)
    cpu = [r["utime_ticks"] + r["stime_ticks"] for r in (before, mine, after)]
    assert cpu[0] - 1 <= cpu[1] <= cpu[2] + 1, (pid, "cpu", cpu)
    return moved


@needs_bpf
def test_fields_agree_with_proc(live):
    bpf = Reader("/proc", "bpf", None, "off")
    proc = Reader("/proc", "native", None, "off")
    assert bpf.backend == "bpf" and bpf.fallback_reason is None
    try:
        busy_cpu = []
        for _ in range(3):
            for pid, before, mine, after in _bracket(bpf, proc, list(live.values())):
                moved = _check(pid, before, mine, after, running=pid == live["busy"])
                if pid == live["busy"]:
                    busy_cpu.append(before["utime_ticks"] + before["stime_ticks"])
                else:  # asleep: nothing moved, so every field was held equal
                    assert moved == [], (pid, moved)
            time.sleep(0.1)
        records = {r[0]: dict(zip(FIELDS, r)) for r in bpf.read().records if r[0] in live.values()}
        busy = records[live["busy"]]
        assert busy["utime_ticks"] + busy["stime_ticks"] > busy_cpu[0]  # it did run meanwhile
        idle, multi, zombie = records[live["idle"]], records[live["multi"]], records[live["zombie"]]
        assert idle["comm"] == "sleep" and idle["state"] == "S" and idle["ppid"] == os.getpid()
        assert idle["mark"] != 0 and idle["open_fds"] >= 3 and idle["wchan"] not in (None, "0")
        assert idle["uid"] == idle["euid"] == os.getuid() and idle["rss_bytes"] > 0
        assert multi["num_threads"] == 5
        assert zombie["state"] == "Z" and zombie["mark"] == 0 and zombie["vms_bytes"] == 0
        assert busy["num_threads"] == 2
        if ROOT:
            other = records[live["other"]]
            assert other["uid"] == other["euid"] == 65534 and other["mark"] != 0
            assert other["read_bytes"] is not None
    finally:
        bpf.close()
        proc.close()


@needs_bpf
def test_threads_counted_in_their_process(live):
    """CPU and faults of a process are its threads' sums (stat's whole-process view): the
    busy process' second thread counts, and the counters never go down."""
    bpf = Reader("/proc", "bpf", None, "off", wchan=False)
    proc = Reader("/proc", "native", None, "off", wchan=False)
    try:
        pid = live["busy"]
        last = None
        for _ in range(5):
            rec = next(dict(zip(FIELDS, r)) for r in bpf.read().records if r[0] == pid)
            proc.read()  # /proc's read moves the kernel's prev_cputime; ours stays monotonic
            now = (rec["utime_ticks"], rec["stime_ticks"], rec["minor_faults"])
            if last is not None:
                assert all(a >= b for a, b in zip(now, last)), (last, now)
            last = now
            time.sleep(0.05)
        assert rec["wchan"] is None  # not asked
        # two spinning threads: their CPU grows about twice as fast as wall time allows one
        threads = {t: _stat_ticks(pid, t) for t in os.listdir(f"/proc/{pid}/task")}
        assert len(threads) == 2
        total = sum(threads.values())
        rec = next(dict(zip(FIELDS, r)) for r in bpf.read().records if r[0] == pid)
        assert rec["utime_ticks"] + rec["stime_ticks"] >= total - 2 * len(threads)
    finally:
        bpf.close()
        proc.close()


def _stat_ticks(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@needs_bpf
def test_exec_is_seen_by_its_mark():
    """python -> python keeps the comm; the mark (mm addresses) changes, as in stat."""
    code = ("import os, sys; print('ready', flush=True); sys.stdin.readline(); "
            "os.execv(sys.executable, [sys.executable, '-c', 'import time; print(\"ready\", flush=True); time.sleep(600)'])")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    bpf = Reader("/proc", "bpf", None, "off")
    proc = Reader("/proc", "native", None, "off")
    try:
        _ready(child)
        settle([child.pid])
        marks = []
        for step in range(2):
            a = next(dict(zip(FIELDS, r)) for r in bpf.read().records if r[0] == child.pid)
            b = next(dict(zip(FIELDS, r)) for r in proc.read().records if r[0] == child.pid)
            assert a["mark"] == b["mark"] != 0 and a["comm"] == b["comm"]
            marks.append((a["mark"], a["comm"], a["start_ticks"]))
            if step == 0:  # exec
                child.stdin.write(b"go\n")
                child.stdin.flush()
                _ready(child)
                settle([child.pid])
        assert marks[0][1:] == marks[1][1:] and marks[0][0] != marks[1][0]
    finally:
        bpf.close()
        proc.close()
        _stop([child])


@needs_bpf
def test_static_facts_come_from_proc(live):
    bpf = Reader("/proc", "bpf", None, "off")
    proc = Reader("/proc", "native", None, "off")
    try:
        records = {r[0]: r for r in bpf.read().records if r[0] in live.values()}
        requests = [(pid, records[pid][F["start_ticks"]], WANT_ALL) for pid in sorted(records)]
        assert bpf.read_facts(requests) == proc.read_facts(requests)
        assert bpf.kept() == 0
    finally:
        bpf.close()
        proc.close()


@needs_bpf
def test_reads_again_after_close(live):
    bpf = Reader("/proc", "bpf", None, "off")
    first = {r[0] for r in bpf.read().records}
    bpf.close()
    again = {r[0] for r in bpf.read().records}
    bpf.close()
    assert set(live.values()) <= first & again


@needs_bpf
def test_cli_runs_bpf_and_says_so():
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "procsnap"), "--once", "--backend", "auto"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'procsnap_backend_info{backend="bpf"} 1.0' in out.stdout
    lines = [line for line in out.stderr.splitlines() if "backend" in line]
    assert len(lines) == 1 and "backend bpf" in lines[0], out.stderr


# Asleep in one of two kernel functions, as the test says: reading stdin (a pipe), or on a
# line in time.sleep until SIGUSR1 sends it back to stdin.
TWO_WAITS = textwrap.dedent("""
    import signal, sys, time
    class Wake(Exception):
        pass
    def wake(*_):
        raise Wake
    signal.signal(signal.SIGUSR1, wake)
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            print("ready", flush=True)
            time.sleep(600)
        except Wake:
            print("ready", flush=True)
""")


def _proc_wchan(pid):
    with open(f"/proc/{pid}/wchan") as f:
        return f.read()


@needs_bpf
@pytest.mark.parametrize("reject", [0, 2], ids=["task-storage", "without"])
def test_a_stack_is_walked_again_only_after_its_task_ran(reject):
    """A sleeping process that has not run since its stack was walked keeps the wchan of
    that walk (its record the same object while nothing moved); one that ran and sleeps
    elsewhere is walked again. reject=2 loads the program without task storage (kernels
    < 5.11): every stack walked, the same wchans."""
    from exporter import _bpf

    child = subprocess.Popen([sys.executable, "-c", TWO_WAITS], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    bpf = _bpf.Reader("/proc", os.sysconf("SC_PAGE_SIZE"), reject=reject)
    memo = reject == 0
    assert ("task storage" not in bpf.describe()) == memo, bpf.describe()

    def mine():
        rec = next(r for r in bpf.read()[0] if r[0] == child.pid)
        assert bpf.stacks()[2] == 0  # the program skips exactly the walks the loader kept
        return rec

    try:
        _ready(child)
        asleep(child.pid)
        first = mine()
        again = mine()
        walked, kept, _ = bpf.stacks()
        assert kept >= 1 if memo else (kept == 0 and walked >= 1), (walked, kept)
        third = mine()
        wchans = []
        for rec in (first, again, third):
            assert rec[F["wchan"]] == _proc_wchan(child.pid) not in (None, "0")
        assert third is again  # nothing moved: the same record object
        wchans.append(third[F["wchan"]])
        child.stdin.write(b"nap\n")  # now in time.sleep
        child.stdin.flush()
        _ready(child)
        asleep(child.pid)
        mine()
        rec = mine()
        assert rec[F["wchan"]] == _proc_wchan(child.pid), (rec[F["wchan"]], _proc_wchan(child.pid))
        wchans.append(rec[F["wchan"]])
        child.send_signal(signal.SIGUSR1)  # back to reading stdin
        _ready(child)
        asleep(child.pid)
        rec = mine()
        assert rec[F["wchan"]] == _proc_wchan(child.pid) == wchans[0]
        assert wchans[0] != wchans[1], wchans
    finally:
        bpf.close()
        _stop([child])


@needs_bpf
def test_fd_limits_come_with_the_records():
    """Each record's soft RLIMIT_NOFILE, read by the program, is what /proc/PID/limits
    says; a changed limit shows at the next read."""
    from exporter.procfs import parse_limits_nofile

    children = [subprocess.Popen(["sleep", "600"]) for _ in range(2)]
    bpf = Reader("/proc", "bpf", None, "off")
    try:
        settle([c.pid for c in children])
        resource.prlimit(children[0].pid, resource.RLIMIT_NOFILE, (777, 4096))
        reading = bpf.read()
        limits = dict(zip((r[0] for r in reading.records), reading.nofile))
        assert limits[children[0].pid] == 777
        for c in children:
            with open(f"/proc/{c.pid}/limits", "rb") as f:
                assert limits[c.pid] == parse_limits_nofile(f.read())
        resource.prlimit(children[0].pid, resource.RLIMIT_NOFILE, (778, 4096))
        reading = bpf.read()
        assert dict(zip((r[0] for r in reading.records), reading.nofile))[children[0].pid] == 778
    finally:
        bpf.close()
        _stop(children)


# -- where it cannot load: /proc --------------------------------------------------------------


@needs_module
def test_falls_back_when_the_verifier_refuses():
    reader = Reader("/proc", "auto", None, "off", bpf_reject=True)
    try:
        assert reader.backend == "native" and reader.requested == "auto"
        assert reader.fallback_reason and "BPF" in reader.fallback_reason
        if BPF_REASON is None:  # loadable here: it was the verifier that said no
            assert "invalid mem access" in reader.fallback_reason
        assert any(r[0] == os.getpid() for r in reader.read().records)
    finally:
        reader.close()


@needs_module
def test_cli_falls_back_with_one_line_and_the_metric():
    env = dict(os.environ, PROCSNAP_BPF_REJECT="1")
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "procsnap"), "--once", "--backend", "bpf"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert 'procsnap_backend_info{backend="native"} 1.0' in out.stdout
    lines = [line for line in out.stderr.splitlines() if "bpf not loaded" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], out.stderr


def test_not_on_another_procfs():
    """A fixture tree (or another pid namespace's procfs) is not what the iterator walks."""
    reader = Reader(os.path.join(HERE, "fixtures", "proc-basic"), "bpf", 4096, "off")
    try:
        assert reader.backend in ("native", "python") and reader.fallback_reason
    finally:
        reader.close()


@needs_module
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_without_capabilities_falls_back_and_says_why():
    """The same process without any capability (setpriv empties the bounding set): the
    bpf() call is refused, and the reason names what it needs."""
    code = ("from exporter.reader import Reader; r = Reader('/proc', 'auto'); "
            "print(r.backend); print(r.fallback_reason); print(len(r.read().records) > 0)")
    out = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    backend, reason, read = out.stdout.splitlines()
    assert backend == "native" and "CAP_BPF" in reason and read == "True", out.stdout


# -- the Helm value (helm/procsnap: bpf) ---------------------------------------------------------


def test_chart_bpf_value_adds_exactly_bpf_and_perfmon():
    """bpf: true adds exactly BPF and PERFMON, shares the node's pid namespace (the iterator
    walks procsnap's own) and runs --backend=bpf; off by default; refused without uid 0."""
    from test_helm import _capabilities, container, pod_spec, render

    docs = render(None, "bpf=true")
    assert _capabilities(docs) == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    assert pod_spec(docs)["hostPID"] is True and "--backend=bpf" in container(docs)["args"]
    sc = container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    default = render(None)
    assert pod_spec(default)["hostPID"] is False and "add" not in _capabilities(default)
    assert not any(a.startswith("--backend") for a in container(default)["args"])
    both = render(None, "bpf=true", "fullVisibility=true")
    assert _capabilities(both)["add"] == ["SYS_PTRACE", "DAC_READ_SEARCH", "BPF", "PERFMON"]
    done = render(None, "bpf=true", "securityContext.runAsUser=65534", check=False)
    assert done.returncode != 0 and "bpf needs runAsUser 0" in done.stderr


@needs_bpf
@pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None, reason="switching credentials needs root and setpriv")
def test_chart_bpf_container_credentials_load_it(tmp_path):
    """The container's command line under exactly its credentials (uid 0, bounding set BPF +
    PERFMON, no_new_privs) on this machine's /proc: the iterator loads; without the value
    (no capability) it falls back to /proc and says so."""
    from test_helm import _as_container, local_command, render

    for sets, backend in ((("bpf=true",), "bpf"), ((), "native")):
        docs = render(None, *sets)
        (tmp_path / backend).mkdir()
        argv, env = local_command(docs, tmp_path / backend, "/proc")
        argv = [a for a in argv if not a.startswith("--web.listen-address=")] + ["--once", "--backend=bpf"]
        done = subprocess.run(_as_container(docs, argv), env=env, capture_output=True, text=True, timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr
        assert f'procsnap_backend_info{{backend="{backend}"}} 1.0' in done.stdout, done.stderr
