"""families: GroupStats -> process-exporter's metric families, exact exposition bytes."""

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.exposition import Families
from exporter.families import ScrapeResult, runtime_registry, self_families
from exporter.grouper import GroupStats
from helpers import group_families


def _registry(result):
    return Families(group_families(result.groups) + self_families(result, "9.9.9"))


def _full_group():
    return GroupStats(
        name="web",
        num_procs=2,
        cpu_user_seconds=1.5,
        cpu_system_seconds=0.25,
        read_bytes=4096,
        write_bytes=8192,
        major_faults=3,
        minor_faults=70,
        ctx_voluntary=11,
        ctx_nonvoluntary=2,
        rss_bytes=1048576,
        vms_bytes=2097152,
        swap_bytes=0,
        open_fds=9,
        worst_fd_ratio=0.5,
        oldest_start_time_seconds=1700000001.25,
        num_threads=5,
        states={"Running": 1, "Sleeping": 1, "Waiting": 0, "Zombie": 0, "Other": 0},
    )


EXPECTED_FULL = b"""\
# HELP namedprocess_namegroup_num_procs number of processes in this group
# TYPE namedprocess_namegroup_num_procs gauge
namedprocess_namegroup_num_procs{groupname="web"} 2.0
# HELP namedprocess_namegroup_cpu_seconds_total Cpu user usage in seconds
# TYPE namedprocess_namegroup_cpu_seconds_total counter
namedprocess_namegroup_cpu_seconds_total{groupname="web",mode="user"} 1.5
namedprocess_namegroup_cpu_seconds_total{groupname="web",mode="system"} 0.25
# HELP namedprocess_namegroup_read_bytes_total number of bytes read by this group
# TYPE namedprocess_namegroup_read_bytes_total counter
namedprocess_namegroup_read_bytes_total{groupname="web"} 4096.0
# HELP namedprocess_namegroup_write_bytes_total number of bytes written by this group
# TYPE namedprocess_namegroup_write_bytes_total counter
namedprocess_namegroup_write_bytes_total{groupname="web"} 8192.0
# HELP namedprocess_namegroup_major_page_faults_total Major page faults
# TYPE namedprocess_namegroup_major_page_faults_total counter
namedprocess_namegroup_major_page_faults_total{groupname="web"} 3.0
# HELP namedprocess_namegroup_minor_page_faults_total Minor page faults
# TYPE namedprocess_namegroup_minor_page_faults_total counter
namedprocess_namegroup_minor_page_faults_total{groupname="web"} 70.0
# HELP namedprocess_namegroup_context_switches_total Context switches
# TYPE namedprocess_namegroup_context_switches_total counter
namedprocess_namegroup_context_switches_total{ctxswitchtype="voluntary",groupname="web"} 11.0
namedprocess_namegroup_context_switches_total{ctxswitchtype="nonvoluntary",groupname="web"} 2.0
# HELP namedprocess_namegroup_memory_bytes number of bytes of memory in use
# TYPE namedprocess_namegroup_memory_bytes gauge
namedprocess_namegroup_memory_bytes{groupname="web",memtype="resident"} 1.048576e+06
namedprocess_namegroup_memory_bytes{groupname="web",memtype="virtual"} 2.097152e+06
namedprocess_namegroup_memory_bytes{groupname="web",memtype="swapped"} 0.0
# HELP namedprocess_namegroup_open_filedesc number of open file descriptors for this group
# TYPE namedprocess_namegroup_open_filedesc gauge
namedprocess_namegroup_open_filedesc{groupname="web"} 9.0
# HELP namedprocess_namegroup_worst_fd_ratio the worst (closest to 1) ratio between open fds and max fds among all procs in this group
# TYPE namedprocess_namegroup_worst_fd_ratio gauge
namedprocess_namegroup_worst_fd_ratio{groupname="web"} 0.5
# HELP namedprocess_namegroup_oldest_start_time_seconds start time in seconds since 1970/01/01 of oldest process in group
# TYPE namedprocess_namegroup_oldest_start_time_seconds gauge
namedprocess_namegroup_oldest_start_time_seconds{groupname="web"} 1.70000000125e+09
# HELP namedprocess_namegroup_num_threads Number of threads
# TYPE namedprocess_namegroup_num_threads gauge
namedprocess_namegroup_num_threads{groupname="web"} 5.0
# HELP namedprocess_namegroup_states Number of processes in states Running, Sleeping, Waiting, Zombie, or Other
# TYPE namedprocess_namegroup_states gauge
namedprocess_namegroup_states{groupname="web",state="Running"} 1.0
namedprocess_namegroup_states{groupname="web",state="Sleeping"} 1.0
namedprocess_namegroup_states{groupname="web",state="Waiting"} 0.0
namedprocess_namegroup_states{groupname="web",state="Zombie"} 0.0
namedprocess_namegroup_states{groupname="web",state="Other"} 0.0
# HELP procsnap_scrape_duration_seconds Seconds the last snapshot and grouping took
# TYPE procsnap_scrape_duration_seconds gauge
procsnap_scrape_duration_seconds 0.125
# HELP procsnap_processes Number of processes seen in the last snapshot
# TYPE procsnap_processes gauge
procsnap_processes 42.0
# HELP procsnap_read_errors_total Process files that could not be read, by reason (errno name or malformed), since start
# TYPE procsnap_read_errors_total counter
procsnap_read_errors_total{reason="EACCES"} 7.0
procsnap_read_errors_total{reason="malformed"} 1.0
# HELP procsnap_reaped_cpu_scaled_total Scrapes where the CPU credited for reaped children was scaled back to what /proc/stat says the machine spent
# TYPE procsnap_reaped_cpu_scaled_total counter
procsnap_reaped_cpu_scaled_total 0.0
# HELP procsnap_groups_dropped_total Processes whose group was not made because --max-groups groups exist; they count in group "other"
# TYPE procsnap_groups_dropped_total counter
procsnap_groups_dropped_total 0.0
# HELP procsnap_build_info A metric with a constant 1 labelled by the procsnap version
# TYPE procsnap_build_info gauge
procsnap_build_info{version="9.9.9"} 1.0
"""


def test_exact_text_exposition_of_one_full_group():
    result = ScrapeResult([_full_group()], 42, 0.125, {"malformed": 1, "EACCES": 7})
    assert generate_latest(_registry(result)) == EXPECTED_FULL


def test_none_values_are_absent_not_zero():
    group = GroupStats(name="kthreads", num_procs=1, cpu_user_seconds=0.0, cpu_system_seconds=None,
                       rss_bytes=0, vms_bytes=None, swap_bytes=None, open_fds=None)
    result = ScrapeResult([group], 1, 0.0, {})
    text = generate_latest(_registry(result)).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert 'namedprocess_namegroup_cpu_seconds_total{groupname="kthreads",mode="user"} 0.0' in lines
    assert not any('mode="system"' in line for line in lines)
    assert 'namedprocess_namegroup_memory_bytes{groupname="kthreads",memtype="resident"} 0.0' in lines
    assert not any('memtype="virtual"' in line or 'memtype="swapped"' in line for line in lines)
    # families where no group has a value are left out entirely, HELP/TYPE included
    for absent in ("read_bytes_total", "write_bytes_total", "open_filedesc", "worst_fd_ratio",
                   "oldest_start_time_seconds", "num_threads", "major_page_faults_total"):
        assert "namedprocess_namegroup_" + absent not in text
    assert 'namedprocess_namegroup_num_procs{groupname="kthreads"} 1.0' in lines
    # no read errors yet: no procsnap_read_errors_total samples
    assert "procsnap_read_errors_total{" not in text


def test_groups_in_given_order_and_labels_escaped():
    groups = [GroupStats(name='a) b (c'), GroupStats(name='new\nline "q" \\'), GroupStats(name="caf\ufffd")]
    families = group_families(groups)
    num_procs = families[0]
    assert num_procs.name == "namedprocess_namegroup_num_procs"
    assert [s.labels["groupname"] for s in num_procs.samples] == [g.name for g in groups]
    text = generate_latest(_registry(ScrapeResult(groups, 0, 0.0, {}))).decode("utf-8")
    assert 'namedprocess_namegroup_num_procs{groupname="new\\nline \\"q\\" \\\\"} 0.0\n' in text
    assert 'namedprocess_namegroup_num_procs{groupname="caf\ufffd"} 0.0\n' in text


def test_counter_names_in_openmetrics():
    result = ScrapeResult([_full_group()], 42, 0.125, {"EACCES": 7})
    text = generate_openmetrics(_registry(result)).decode()
    assert "# TYPE namedprocess_namegroup_cpu_seconds counter\n" in text
    assert 'namedprocess_namegroup_cpu_seconds_total{groupname="web",mode="user"} 1.5\n' in text
    assert "# TYPE procsnap_read_errors counter\n" in text
    assert 'procsnap_read_errors_total{reason="EACCES"} 7.0\n' in text
    assert text.endswith("# EOF\n")


def test_self_families_without_result_keep_build_info():
    names = [f.name for f in self_families(None, "1.2.3")]
    assert names == ["procsnap_build_info"]


def test_runtime_registry_has_the_client_collectors():
    text = generate_latest(runtime_registry()).decode()
    for name in ("process_cpu_seconds_total", "process_open_fds", "python_info", "python_gc_objects_collected_total"):
        assert f"\n# TYPE {name} " in "\n" + text


def test_self_process_collector_matches_prometheus_client():
    """Same families and values as prometheus_client's ProcessCollector (cpu and memory
    move between the two reads, so those are compared loosely)."""
    import os

    from prometheus_client import ProcessCollector

    from exporter.families import SelfProcessCollector

    keep = [os.open("/dev/null", os.O_RDONLY) for _ in range(50)]  # a count worth checking
    try:
        ours = {m.name: m for m in SelfProcessCollector(registry=None).collect()}
        theirs = {m.name: m for m in ProcessCollector(registry=None).collect()}
    finally:
        for fd in keep:
            os.close(fd)
    assert sorted(ours) == sorted(theirs)
    for name, metric in theirs.items():
        assert (ours[name].documentation, ours[name].type) == (metric.documentation, metric.type)
        a, b = ours[name].samples[0], metric.samples[0]
        assert a.name == b.name and a.labels == b.labels
        if name == "process_open_fds":  # listing the fd dir holds one more fd open
            assert a.value == b.value - 1 and a.value >= 50, (a.value, b.value)
        elif name in ("process_max_fds", "process_start_time_seconds"):
            assert a.value == b.value, name
        else:
            assert abs(a.value - b.value) <= max(0.05 * b.value, 0.1), name
