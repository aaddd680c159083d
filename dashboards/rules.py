"""The Prometheus rules: recording rules for the common rates, and the alerts. Each alert
has a severity, a summary, a description and a runbook_url into the README."""

from __future__ import annotations

from . import defs
from .defs import RATE_WINDOW, RULE_JOB

P = "namedprocess_namegroup_"
J = RULE_JOB
WINDOW_NAME = RATE_WINDOW  # in the recorded names: ...:rate5m


def _record(name, expr):
    return {"record": name, "expr": expr}


def recording_rules() -> list:
    """Per group (every label but the one summed away is kept: job, instance, groupname and
    the extra_labels), per second, over RATE_WINDOW."""
    w = RATE_WINDOW
    out = [
        _record(f"groupname:{P}cpu_seconds:rate{w}", f"sum without (mode) (rate({P}cpu_seconds_total{{{J}}}[{w}]))"),
        _record(f"groupname_mode:{P}cpu_seconds:rate{w}", f"rate({P}cpu_seconds_total{{{J}}}[{w}])"),
        _record(f"groupname:{P}read_bytes:rate{w}", f"rate({P}read_bytes_total{{{J}}}[{w}])"),
        _record(f"groupname:{P}write_bytes:rate{w}", f"rate({P}write_bytes_total{{{J}}}[{w}])"),
        _record(f"groupname:{P}major_page_faults:rate{w}", f"rate({P}major_page_faults_total{{{J}}}[{w}])"),
        _record(f"groupname:{P}minor_page_faults:rate{w}", f"rate({P}minor_page_faults_total{{{J}}}[{w}])"),
        _record(f"groupname:{P}context_switches:rate{w}",
                f"sum without (ctxswitchtype) (rate({P}context_switches_total{{{J}}}[{w}]))"),
        _record(f"groupname_threadname:{P}thread_cpu_seconds:rate{w}",
                f"sum without (mode) (rate({P}thread_cpu_seconds_total{{{J}}}[{w}]))"),
        _record(f"instance_reason:procsnap_read_errors:rate{w}", f"rate(procsnap_read_errors_total{{{J}}}[{w}])"),
    ]
    return out


def _alert(name, expr, severity, summary, description, for_=None):
    rule = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description, "runbook_url": defs.runbook_url(name)}
    return rule


def alerts() -> list:
    resident = f'{P}memory_bytes{{{J}, memtype="resident"}}'
    before = f"({resident} offset {defs.MEMORY_GROWTH_WINDOW})"
    growth_mib = defs.MEMORY_GROWTH_BYTES // (1024 * 1024)
    on = "{{ $labels.groupname }} on {{ $labels.instance }}"
    watched = J if defs.NOT_RUNNING_GROUPS is None else f'{J}, groupname=~"{defs.NOT_RUNNING_GROUPS}"'
    return [
        _alert(
            "ProcsnapGroupNotRunning",
            f"sum by (job, instance, groupname) ({P}num_procs{{{watched}}}) == 0",
            "critical",
            "Process group {{ $labels.groupname }} has no processes",
            "procsnap on {{ $labels.instance }} has counted no process in group {{ $labels.groupname }} "
            "for 5 minutes. A group the config names literally is reported from the first scrape, so a "
            "service that never started fires too.",
            "5m",
        ),
        _alert(
            "ProcsnapGroupFdsNearLimit",
            f"{P}worst_fd_ratio{{{J}}} > {defs.FD_RATIO_WARNING:g}",
            "warning",
            "Process group {{ $labels.groupname }} is near its open-files limit",
            f"A process of group {on} has {{{{ $value | humanizePercentage }}}} of its open-files limit "
            "(soft RLIMIT_NOFILE) in use; at 100% it can open no file or socket.",
            "10m",
        ),
        _alert(
            "ProcsnapGroupRestarting",
            f"changes({P}oldest_start_time_seconds{{{J}}}[{defs.RESTARTS_WINDOW}]) >= {defs.RESTARTS}",
            "warning",
            "Process group {{ $labels.groupname }} is restarting",
            f"The oldest process of group {on} changed {{{{ $value }}}} times in the last "
            f"{defs.RESTARTS_WINDOW}: the group's main process keeps restarting (or crashing).",
        ),
        _alert(
            "ProcsnapGroupMemoryGrowing",
            f"({resident} - {before} > {defs.MEMORY_GROWTH_BYTES})\n"
            f"and ({resident} > {1 + defs.MEMORY_GROWTH_RATIO:g} * {before})\n"
            f"and {before} > 0",
            "warning",
            "Process group {{ $labels.groupname }} keeps growing in memory",
            f"Resident memory of group {on} grew by {{{{ $value | humanize1024 }}}}B in "
            f"{defs.MEMORY_GROWTH_WINDOW} (alert: more than {defs.MEMORY_GROWTH_RATIO:.0%} and "
            f"{growth_mib} MiB), for 15 minutes: a leak, or a cache without a bound.",
            "15m",
        ),
        _alert(
            "ProcsnapGroupUninterruptibleSleep",
            f'{P}states{{{J}, state="Waiting"}} > 0',
            "warning",
            "Process group {{ $labels.groupname }} is stuck in uninterruptible sleep",
            f"{{{{ $value }}}} processes or threads of group {on} have been in state D (uninterruptible "
            f"sleep) at every evaluation for {defs.WAITING_FOR}: usually a storage or network file system "
            "that does not answer.",
            defs.WAITING_FOR,
        ),
        _alert(
            "ProcsnapDown",
            f"up{{{J}}} == 0",
            "critical",
            "procsnap on {{ $labels.instance }} cannot be scraped",
            "Prometheus has failed to scrape procsnap on {{ $labels.instance }} for 5 minutes: no process "
            "metrics from that node.",
            "5m",
        ),
        _alert(
            "ProcsnapScrapeErrors",
            f"increase({{{defs.legacy_counter('namedprocess_scrape_errors')}, {J}}}[10m]) > 0",
            "warning",
            "procsnap on {{ $labels.instance }} fails to take snapshots",
            "procsnap on {{ $labels.instance }} failed {{ $value }} snapshots in 10 minutes "
            "(namedprocess_scrape_errors): /proc could not be read, so scrapes come without process metrics.",
            "5m",
        ),
        _alert(
            "ProcsnapScrapeSlow",
            f"avg_over_time(procsnap_scrape_duration_seconds{{{J}}}[10m]) > {defs.SCRAPE_SLOW_SECONDS:g}",
            "warning",
            "procsnap on {{ $labels.instance }} is slow",
            "procsnap on {{ $labels.instance }} took {{ $value | humanizeDuration }} per snapshot on average "
            f"over 10 minutes (alert: above {defs.SCRAPE_SLOW_SECONDS:g} s); scrapes near the scrape timeout "
            "fail.",
            "15m",
        ),
        _alert(
            "ProcsnapReadErrorsRising",
            f"sum by (job, instance, reason) (idelta(procsnap_read_errors_total{{{J}}}[5m]))\n"
            f"/ on (job, instance) group_left ()\n"
            f"max by (job, instance) (procsnap_processes{{{J}}})\n"
            f"> {defs.READ_ERRORS_RATIO:g}",
            "warning",
            "procsnap on {{ $labels.instance }} cannot read many process files ({{ $labels.reason }})",
            "Each snapshot of procsnap on {{ $labels.instance }} counts {{ $labels.reason }} read errors "
            "amounting to {{ $value | humanizePercentage }} of the processes it sees, for 15 minutes (alert: "
            f"above {defs.READ_ERRORS_RATIO:.0%}): the values in those files are missing from their groups.",
            "15m",
        ),
        _alert(
            "ProcsnapOTLPExportsFailing",
            f'sum by (job, instance) (increase(procsnap_otlp_exports_total{{{J}, result="failure"}}[15m]))\n'
            f"/ sum by (job, instance) (increase(procsnap_otlp_exports_total{{{J}}}[15m]))\n"
            f"> {defs.OTLP_FAILURE_RATIO:g}",
            "warning",
            "procsnap on {{ $labels.instance }} fails to push OTLP",
            "{{ $value | humanizePercentage }} of the OTLP exports of procsnap on {{ $labels.instance }} failed "
            "in 15 minutes: the OpenTelemetry receiver is down or refuses them.",
            "15m",
        ),
    ]


def rule_groups() -> dict:
    return {
        "groups": [
            {"name": "procsnap.rules", "rules": recording_rules()},
            {"name": "procsnap.alerts", "rules": alerts()},
        ]
    }
