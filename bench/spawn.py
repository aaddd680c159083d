"""Spawn the benchmark's processes, and always clean them up.

    with ProcessSet.idle(2000) as idle:      # returns once all 2000 have exec'd sleep
        ...
    with ProcessSet.busy(50, 100) as busy:   # 50 processes of 100 threads, each thread
        ...                                  # burning a little CPU and doing small file I/O
    # every one of them is killed and reaped here, even on an exception or Ctrl-C

How: a tiny fork server (this file run with ``--serve``) starts in its own session, so it
and all its children share one process group. It forks the N children, each of which
exec's the set's program (``sleep LIFETIME``, or this file with ``--busy``); it reports
``ready K`` when all of them show the expected comm and thread count, then blocks on
stdin. Cleanup closes its stdin (the server kills and reaps its children), then
``killpg(SIGKILL)`` the whole group as a backstop. Three more nets, for the cases no
``finally`` runs in: the children have PR_SET_PDEATHSIG=SIGKILL on the server, the server
has it on the harness, and every child ends by itself after LIFETIME seconds. An
``atexit`` hook stops any set still alive.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
SLEEP = "/bin/sleep" if os.path.exists("/bin/sleep") else "/usr/bin/sleep"

# The busy processes: each thread wakes every BUSY_PERIOD seconds (jittered), burns
# BUSY_BURN seconds of CPU, rewrites and rereads a BUSY_BYTES file of its own. At 50 x 100
# threads that is about a tenth of this 2-CPU machine: counters move, the host stays usable.
BUSY_COMM = "benchbusy"
BUSY_PERIOD = 3.0
BUSY_BURN = 50e-6
BUSY_BYTES = 4096

_live: "set[ProcessSet]" = set()


_prctl = None


def prctl(option: int, arg) -> None:
    global _prctl
    try:
        if _prctl is None:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent (thread) exits."""
    prctl(PR_SET_PDEATHSIG, int(sig))


def die_with_parent() -> None:
    """preexec_fn for subprocesses of the harness: die if the harness dies."""
    set_pdeathsig(signal.SIGKILL)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _count_pids() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def stat_fields(pid: int, comm: bool = False) -> list:
    """/proc/PID/stat split into fields from the state on (index 0 is field 3), with the
    comm in front if asked; OSError once the process is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        head, rest = f.read().rsplit(b")", 1)
    return ([head.split(b"(", 1)[1]] if comm else []) + rest.split()


def _comm_threads(pid: int) -> tuple:
    """(comm, num_threads); (None, 0) once it is gone."""
    try:
        fields = stat_fields(pid, comm=True)
    except OSError:
        return None, 0
    return fields[0].decode(errors="replace"), int(fields[18])  # num_threads is field 20


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of the live processes of a process group (all their threads), in seconds."""
    ticks = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = stat_fields(int(name))
            except OSError:
                continue
            if int(fields[2]) == pgid:  # pgrp, field 5
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def count_tasks() -> int:
    """Threads count against pid_max and threads-max, not only processes."""
    return sum(_comm_threads(int(name))[1] for name in os.listdir("/proc") if name.isdigit())


def capacity_check(n: int, headroom: int = 1000) -> str | None:
    """None if N more processes fit on this machine, else the reason they do not."""
    tasks = count_tasks()
    need = n + tasks + headroom
    limits = {
        "kernel.pid_max": _read_int("/proc/sys/kernel/pid_max"),
        "kernel.threads-max": _read_int("/proc/sys/kernel/threads-max"),
    }
    for path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"):
        value = _read_int(path)
        if value is not None:
            limits["cgroup pids.max"] = value
    if os.geteuid() != 0:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
        if soft != resource.RLIM_INFINITY:
            limits["RLIMIT_NPROC"] = soft
    for name, value in limits.items():
        if value is not None and need > value:
            return f"N={n}: {tasks} tasks running + {n} + {headroom} headroom exceeds {name}={value}"
    mem_kb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    need_kb = n * 1024 + 2 * 1024 * 1024  # ~1 MiB per idle sleep (generous) + 2 GiB for the contenders
    if mem_kb is not None and need_kb > mem_kb:
        return f"N={n}: needs ~{need_kb // 1024} MiB, MemAvailable is {mem_kb // 1024} MiB"
    return None


class ProcessSet:
    """N processes running one program, in one process group, killed on stop()/exit.
    Ready once each shows `comm` and `threads` threads."""

    def __init__(self, n: int, path: str, argv: list, comm: str, threads: int = 1, timeout: float = 120.0):
        self.n = n
        self.path = path
        self.argv = argv
        self.comm = comm
        self.threads = threads
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.count = 0
        self.spawn_seconds = 0.0

    @classmethod
    def idle(cls, n: int, lifetime: int = 3600) -> "ProcessSet":
        return cls(n, SLEEP, ["sleep", str(lifetime)], "sleep")

    @classmethod
    def busy(cls, n: int, threads: int, lifetime: int = 3600) -> "ProcessSet":
        return cls(n, sys.executable, [sys.executable, os.path.abspath(__file__), "--busy", str(threads), str(lifetime)],
                   BUSY_COMM, threads)

    def start(self) -> "ProcessSet":
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", str(self.n), str(self.timeout), self.comm,
             str(self.threads), self.path] + self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.pgid = self.proc.pid  # session leader == group leader
        _live.add(self)
        try:
            deadline = t0 + self.timeout + 30
            line = b""
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"spawning {self.n} processes took more than {self.timeout + 30:.0f}s")
                ready, _, _ = select.select([self.proc.stdout], [], [], left)
                if ready:
                    chunk = os.read(self.proc.stdout.fileno(), 256)
                    if not chunk:
                        raise RuntimeError(f"fork server exited (status {self.proc.wait()}) before it was ready")
                    line += chunk
            words = line.split()
            if len(words) != 2 or words[0] != b"ready":
                raise RuntimeError(f"fork server said {line!r}")
            self.count = int(words[1])
        except BaseException:
            self.stop()
            raise
        self.spawn_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            try:
                proc.stdin.close()  # the server kills and reaps its children
            except OSError:
                pass
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if self.pgid is not None:
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if proc.stdout:
                proc.stdout.close()
            _live.discard(self)

    def __enter__(self) -> "ProcessSet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for idle in list(_live):
        idle.stop()


# ---------------------------------------------------------------- the fork server


def _serve(n: int, timeout: float, comm: str, threads: int, path: str, argv: list) -> int:
    parent = os.getppid()
    set_pdeathsig(signal.SIGKILL)  # also loads prctl once, before the forks
    if os.getppid() != parent:  # the harness died before prctl took effect
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    children: list[int] = []
    deadline = time.monotonic() + timeout
    me = os.getpid()
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            try:
                pid = os.fork()
            except OSError as e:  # EAGAIN: out of pids / tasks
                print(f"spawn: fork failed after {len(children)}: {e}", file=sys.stderr)
                break
            if pid == 0:
                try:
                    set_pdeathsig(signal.SIGKILL)
                    if os.getppid() != me:
                        os._exit(1)
                    os.execv(path, argv)
                finally:
                    os._exit(127)
            children.append(pid)
        # ready once every child shows its comm and threads (exec done), bounded in time
        pending = list(children)
        while pending and time.monotonic() < deadline + 10:
            pending = [pid for pid in pending if _comm_threads(pid) not in ((comm, threads), (None, 0))]
            if pending:
                time.sleep(0.05)
        os.write(1, f"ready {len(children) - len(pending)}\n".encode())
        # block until the harness closes our stdin (or dies: then PDEATHSIG ends us)
        while os.read(0, 4096):
            pass
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    return 0


# ---------------------------------------------------------------- a busy process


def _busy_thread(deadline: float, rng: random.Random) -> None:
    """Until `deadline`: burn BUSY_BURN of CPU, rewrite and reread a small file, sleep."""
    block = os.urandom(BUSY_BYTES)
    with tempfile.TemporaryFile() as f:  # unnamed: nothing is left behind, even on SIGKILL
        time.sleep(rng.uniform(0, BUSY_PERIOD))  # the threads do not wake in step
        while time.monotonic() < deadline:
            until = time.thread_time() + BUSY_BURN
            while time.thread_time() < until:
                pass
            os.pwrite(f.fileno(), block, 0)
            os.pread(f.fileno(), BUSY_BYTES, 0)
            time.sleep(max(0.0, min(rng.uniform(0.5, 1.5) * BUSY_PERIOD, deadline - time.monotonic())))


def _busy(threads: int, lifetime: int) -> int:
    """A process of `threads` threads (this one included) doing _busy_thread for `lifetime` s."""
    prctl(PR_SET_NAME, BUSY_COMM.encode())  # before the threads start: they inherit it
    deadline = time.monotonic() + lifetime
    for i in range(threads - 1):
        threading.Thread(target=_busy_thread, args=(deadline, random.Random(i)), daemon=True).start()
    _busy_thread(deadline, random.Random(threads))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 8 and sys.argv[1] == "--serve":
        sys.exit(_serve(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7:]))
    if len(sys.argv) == 4 and sys.argv[1] == "--busy":
        sys.exit(_busy(int(sys.argv[2]), int(sys.argv[3])))
    # manual check: python bench/spawn.py N [BUSY_PROCS BUSY_THREADS]
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    busy_n, busy_threads = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (0, 0)
    reason = capacity_check(n + busy_n * busy_threads)
    if reason:
        sys.exit(f"skip: {reason}")
    with ProcessSet.idle(n) as idle, ProcessSet.busy(busy_n, busy_threads) as busy:
        print(f"spawned {idle.count} idle in {idle.spawn_seconds:.2f}s, {busy.count} busy in "
              f"{busy.spawn_seconds:.2f}s; {_count_pids()} pids, {count_tasks()} tasks")
        if busy_n:
            cpu0 = group_cpu_seconds(busy.pgid)
            time.sleep(10)
            print(f"busy processes: {(group_cpu_seconds(busy.pgid) - cpu0) / 10:.2f} CPUs over 10 s")
    time.sleep(0.2)
    print(f"after cleanup: {_count_pids()} pids")
