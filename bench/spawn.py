"""Spawn N idle processes (`sleep LIFETIME`) for the benchmark, and always clean them up.

    with IdleProcesses(2000) as idle:   # returns once all 2000 have exec'd sleep
        ...
    # every one of them is killed and reaped here, even on an exception or Ctrl-C

How: a tiny fork server (this file run with ``--serve``) starts in its own session, so it
and all its children share one process group. It forks the N children, each of which
exec's ``sleep LIFETIME``; it reports ``ready K`` when all of them show comm "sleep", then
blocks on stdin. Cleanup closes its stdin (the server kills and reaps its children), then
``killpg(SIGKILL)`` the whole group as a backstop. Three more nets, for the cases no
``finally`` runs in: the children have PR_SET_PDEATHSIG=SIGKILL on the server, the server
has it on the harness, and ``sleep`` itself ends after LIFETIME seconds. An ``atexit``
hook stops any set still alive.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
SLEEP = "/bin/sleep" if os.path.exists("/bin/sleep") else "/usr/bin/sleep"

_live: "set[IdleProcesses]" = set()


_prctl = None


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent (thread) exits."""
    global _prctl
    try:
        if _prctl is None:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


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


def _count_tasks() -> int:
    """Threads count against pid_max and threads-max, not only processes."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                total += int(fields[17])  # num_threads (field 20)
            except (OSError, IndexError, ValueError):
                pass
    return total


def capacity_check(n: int, headroom: int = 1000) -> str | None:
    """None if N more processes fit on this machine, else the reason they do not."""
    tasks = _count_tasks()
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


class IdleProcesses:
    """N idle `sleep` processes in one process group, killed on stop()/exit."""

    def __init__(self, n: int, lifetime: int = 3600, timeout: float = 120.0):
        self.n = n
        self.lifetime = lifetime
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.count = 0
        self.spawn_seconds = 0.0

    def start(self) -> "IdleProcesses":
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", str(self.n), str(self.lifetime), str(self.timeout)],
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

    def __enter__(self) -> "IdleProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for idle in list(_live):
        idle.stop()


# ---------------------------------------------------------------- the fork server


def _serve(n: int, lifetime: int, timeout: float) -> int:
    parent = os.getppid()
    set_pdeathsig(signal.SIGKILL)  # also loads prctl once, before the forks
    if os.getppid() != parent:  # the harness died before prctl took effect
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    children: list[int] = []
    deadline = time.monotonic() + timeout
    argv = ["sleep", str(lifetime)]
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
                    os.execv(SLEEP, argv)
                finally:
                    os._exit(127)
            children.append(pid)
        # ready once every child shows comm "sleep" (exec done), bounded in time
        pending = list(children)
        while pending and time.monotonic() < deadline + 10:
            still = []
            for pid in pending:
                try:
                    with open(f"/proc/{pid}/comm", "rb") as f:
                        if f.read().strip() != b"sleep":
                            still.append(pid)
                except OSError:
                    pass
            pending = still
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


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        sys.exit(_serve(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    # manual check: python bench/spawn.py N
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    reason = capacity_check(n)
    if reason:
        sys.exit(f"skip: {reason}")
    with IdleProcesses(n) as idle:
        print(f"spawned {idle.count} in {idle.spawn_seconds:.2f}s; {_count_pids()} pids")
    time.sleep(0.2)
    print(f"after cleanup: {_count_pids()} pids")
