"""Hand-made Process records and snapshots for tracker/grouper tests."""

from exporter.collector import Process, Snapshot

_DEFAULTS = dict(
    ppid=1, state="S", is_kernel_thread=False, start_ticks=100, start_time_seconds=1700000001.0,
    cpu_user_seconds=0.0, cpu_system_seconds=0.0, minor_faults=0, major_faults=0, num_threads=1,
    rss_bytes=4096, vms_bytes=8192, swap_bytes=0, ctx_voluntary=0, ctx_nonvoluntary=0,
    read_bytes=0, write_bytes=0, open_fds=3, max_fds=1024, uid=0, username="root", tty=None,
    cmdline=None, exe=None, cgroup="0::/",
)


def proc(pid, comm, **fields):
    values = dict(_DEFAULTS, pid=pid, comm=comm, **fields)
    if values["cmdline"] is None:
        values["cmdline"] = (f"/usr/bin/{comm}",)
    return Process(**values)


def snap(*processes):
    return Snapshot(list(processes), 0.0, 0.0, {}, "test")
