"""One memory cgroup per benchmark contender: peak memory charged (user + kernel).

RSS (VmHWM) misses what the kernel allocates on a process's behalf: struct file and
seq_file buffers of kept-open /proc files, the dentries and inodes it looks up, page
tables, socket buffers. A memory cgroup charges all of it, so each contender runs in its
own child cgroup and the harness reads the cgroup's peak.

    cgs = MemCgroups()                    # finds a usable memory controller, or says why not
    path = cgs.create("n500-pe_grouped")  # None (and cgs.reason) if it cannot
    Popen(cmd, preexec_fn=lambda: cgs.join(path))   # joins before exec: start-up is charged
    cgs.peak(path); cgs.reset_peak(path); ...; cgs.remove(path)
    cgs.cleanup()                         # every cgroup it created, also from atexit

cgroup v2 (memory controller on the unified hierarchy): memory.peak, memory.current and
memory.stat (kernel part: "kernel", else kernel_stack + slab + sock + percpu + pagetables);
the peak is reset per file descriptor (Linux >= 6.12). cgroup v1: memory.max_usage_in_bytes
and memory.kmem.max_usage_in_bytes (reset by writing 0), memory.usage_in_bytes and
memory.kmem.usage_in_bytes. In both, usage includes the kernel part.

The child cgroups go under the harness's own memory cgroup when that works (so whatever
limits the machine puts on the harness also hold for the contenders), else under the
hierarchy's root. They are named procsnap-bench-<harness pid>-<tag>; ones left by a
harness that was SIGKILLed (no finally ran) are removed the next time, once empty.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import signal
import time
from typing import Optional

PREFIX = "procsnap-bench-"
MIB = 1024 * 1024

V2_KERNEL_PARTS = ("kernel_stack", "slab", "sock", "percpu", "pagetables", "sec_pagetables", "vmalloc")


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _read_int(path: str) -> Optional[int]:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _write(path: str, text: str) -> Optional[str]:
    """None on success, else the error."""
    try:
        with open(path, "w") as f:
            f.write(text)
        return None
    except OSError as e:
        return f"{e.strerror or e}"


def _stat(path: str) -> dict:
    out = {}
    for line in (_read(os.path.join(path, "memory.stat")) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def _mounts() -> list:
    """(fstype, mount point, root inside the hierarchy, super options) of cgroup mounts."""
    out = []
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
            continue
        unescape = lambda s: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)  # noqa: E731
        out.append((rfields[0], unescape(fields[4]), unescape(fields[3]), rfields[2].split(",")))
    return out


def _own_paths() -> tuple:
    """(v1 memory cgroup path, v2 cgroup path) of this process, from /proc/self/cgroup."""
    v1 = v2 = None
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v1, v2


def _under(mountpoint: str, mount_root: str, path: Optional[str]) -> Optional[str]:
    """The directory of cgroup `path` under a mount of the hierarchy's `mount_root`."""
    if path is None:
        return None
    root = mount_root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None  # our cgroup is outside what is mounted here
    rel = path[len(root):].lstrip("/")
    d = os.path.join(mountpoint, rel) if rel else mountpoint
    return d if os.path.isdir(d) else None


class MemCgroups:
    def __init__(self, tag: Optional[str] = None):
        self.version: Optional[str] = None  # "v1" / "v2"
        self.parent: Optional[str] = None
        self.reason: Optional[str] = None  # why there is no measurement, if there is none
        self.tag = tag or str(os.getpid())
        self.created: list = []
        self._reset_fds: dict = {}
        try:
            self._detect()
        except Exception as e:  # noqa: BLE001 - never crash the benchmark over a missing column
            self.version = self.parent = None
            self.reason = f"cgroup detection failed: {type(e).__name__}: {e}"
        if self.parent:
            self._sweep_stale()
        atexit.register(self.cleanup)

    # ------------------------------------------------------------ detection

    @property
    def available(self) -> bool:
        return self.parent is not None

    def _detect(self) -> None:
        mounts = _mounts()
        own_v1, own_v2 = _own_paths()
        problems = []
        for fstype, mountpoint, root, _opts in mounts:  # v2 first: a controller lives in one hierarchy only
            if fstype != "cgroup2":
                continue
            controllers = (_read(os.path.join(mountpoint, "cgroup.controllers")) or "").split()
            if "memory" not in controllers:
                problems.append(f"cgroup2 at {mountpoint} has no memory controller")
                continue
            for cand in (_under(mountpoint, root, own_v2), mountpoint):
                why = self._try_parent(cand, "v2")
                if why is None:
                    return
                problems.append(why)
        for fstype, mountpoint, root, opts in mounts:
            if fstype != "cgroup" or "memory" not in opts:
                continue
            for cand in (_under(mountpoint, root, own_v1), mountpoint):
                why = self._try_parent(cand, "v1")
                if why is None:
                    return
                problems.append(why)
        if not any((m[0] == "cgroup" and "memory" in m[3]) or m[0] == "cgroup2" for m in mounts):
            problems.append("no cgroup memory controller mounted")
        self.reason = "; ".join(dict.fromkeys(problems)) or "no usable cgroup memory controller"

    def _try_parent(self, cand: Optional[str], version: str) -> Optional[str]:
        """None if child cgroups with a memory peak can be made under cand, else why not."""
        if cand is None:
            return "own cgroup not visible under the mount"
        if not os.access(cand, os.W_OK):
            return f"no write access to {cand} (not root?)"
        if version == "v2":
            ctl = os.path.join(cand, "cgroup.subtree_control")
            if "memory" not in (_read(ctl) or "").split():
                err = _write(ctl, "+memory")
                if err:
                    return f"cannot enable memory in {ctl}: {err}"
        probe = os.path.join(cand, f"{PREFIX}{self.tag}-probe")
        try:
            os.mkdir(probe)
        except FileExistsError:
            pass
        except OSError as e:
            return f"cannot create a cgroup under {cand}: {e.strerror or e}"
        try:
            need = "memory.peak" if version == "v2" else "memory.max_usage_in_bytes"
            if not os.path.exists(os.path.join(probe, need)):
                return f"{need} missing under {cand} (kernel too old?)"
        finally:
            try:
                os.rmdir(probe)
            except OSError:
                pass
        self.version, self.parent = version, cand
        return None

    def _sweep_stale(self) -> None:
        """Empty cgroups of ours whose harness is gone (it was SIGKILLed)."""
        try:
            names = os.listdir(self.parent)
        except OSError:
            return
        for name in names:
            m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
            if not m or int(m.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(m.group(1)), 0)
                continue  # that harness still runs
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            path = os.path.join(self.parent, name)
            if not self.pids(path):
                try:
                    os.rmdir(path)
                except OSError:
                    pass

    def describe(self) -> str:
        if not self.available:
            return f"not measured: {self.reason}"
        return f"cgroup {self.version}, children of {self.parent}"

    # ------------------------------------------------------------ per contender

    def create(self, name: str) -> Optional[str]:
        if not self.available:
            return None
        path = os.path.join(self.parent, f"{PREFIX}{self.tag}-{name}")
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError as e:
            self.reason = f"cannot create {path}: {e.strerror or e}"
            return None
        self.created.append(path)
        return path

    @staticmethod
    def join(path: Optional[str]) -> None:
        """For preexec_fn: move the calling (just forked) process into path. Silent on
        failure: the harness checks membership after the start (member())."""
        if not path:
            return
        try:
            fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def pids(self, path: str) -> list:
        text = _read(os.path.join(path, "cgroup.procs")) or ""
        return [int(x) for x in text.split() if x.isdigit()]

    def member(self, path: Optional[str], pid: int) -> bool:
        return bool(path) and pid in self.pids(path)

    def usage(self, path: str) -> Optional[int]:
        return _read_int(os.path.join(path, "memory.current" if self.version == "v2" else "memory.usage_in_bytes"))

    def peak(self, path: str) -> Optional[int]:
        """Peak since creation, or since the last reset_peak() in v1."""
        return _read_int(os.path.join(path, "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"))

    def kernel(self, path: str) -> Optional[int]:
        if self.version == "v1":
            return _read_int(os.path.join(path, "memory.kmem.usage_in_bytes"))
        st = _stat(path)
        if "kernel" in st:
            return st["kernel"]
        parts = [st[k] for k in V2_KERNEL_PARTS if k in st]
        return sum(parts) if parts else None

    def kernel_peak(self, path: str) -> Optional[int]:
        """v1 only (memory.kmem.max_usage_in_bytes); v2 keeps no kernel peak."""
        if self.version != "v1":
            return None
        return _read_int(os.path.join(path, "memory.kmem.max_usage_in_bytes"))

    def anon_file(self, path: str) -> tuple:
        st = _stat(path)
        if self.version == "v1":
            return st.get("rss"), st.get("cache")
        return st.get("anon"), st.get("file")

    def reset_peak(self, path: str) -> bool:
        """Start a new peak (from the current usage). v1: write 0 to the max_usage files.
        v2 (Linux >= 6.12): the reset holds for reads through the fd that wrote it."""
        if self.version == "v1":
            ok = _write(os.path.join(path, "memory.max_usage_in_bytes"), "0") is None
            kmem = os.path.join(path, "memory.kmem.max_usage_in_bytes")
            if os.path.exists(kmem):
                _write(kmem, "0")
            return ok
        self._close_fd(path)
        try:
            fd = os.open(os.path.join(path, "memory.peak"), os.O_RDWR)
        except OSError:
            return False
        try:
            os.write(fd, b"reset\n")
        except OSError:
            os.close(fd)
            return False
        self._reset_fds[path] = fd
        return True

    def peak_since_reset(self, path: str) -> Optional[int]:
        if self.version == "v1":
            return self.peak(path)
        fd = self._reset_fds.get(path)
        if fd is None:
            return None
        try:
            return int(os.pread(fd, 64, 0).split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _close_fd(self, path: str) -> None:
        fd = self._reset_fds.pop(path, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def remove(self, path: Optional[str], timeout: float = 10.0) -> Optional[str]:
        """rmdir path once its processes are gone (those left are ours: SIGKILL them).
        None on success, else why not."""
        if not path:
            return None
        self._close_fd(path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    return f"cannot remove {path}: {e.strerror or e}"
                for pid in self.pids(path):
                    try:
                        os.kill(pid, signal.SIGKILL)  # a contender's own child that outlived it
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        if path in self.created:
            self.created.remove(path)
        return None

    def cleanup(self) -> list:
        """Remove every cgroup created here; the errors, if any."""
        errors = []
        for path in list(self.created):
            why = self.remove(path)
            if why:
                errors.append(why)
                self.created.remove(path)  # do not try forever (e.g. atexit after a failure)
        return errors


def mib(v: Optional[int]) -> Optional[float]:
    return v / MIB if v is not None else None


if __name__ == "__main__":  # manual check: python bench/memcg.py
    cgs = MemCgroups()
    print(cgs.describe())
    if cgs.available:
        import subprocess

        p = cgs.create("selftest")
        proc = subprocess.Popen(["python3", "-c", "x = bytearray(20 << 20); import time; time.sleep(0.5)"],
                                preexec_fn=lambda: cgs.join(p))
        time.sleep(0.3)
        print("member:", cgs.member(p, proc.pid), "usage MiB:", mib(cgs.usage(p)), "kernel MiB:", mib(cgs.kernel(p)))
        proc.wait()
        print("peak MiB:", mib(cgs.peak(p)), "kernel peak MiB:", mib(cgs.kernel_peak(p)))
        print("cleanup errors:", cgs.cleanup())
