"""The definitions the dashboards and the rules share: the job label, the selectors, the
windows and the thresholds. Change them here and run ``python -m dashboards.build``."""

from __future__ import annotations

# -- the job ------------------------------------------------------------------------------

# The rules select this job. The Helm chart's ServiceMonitor/PodMonitor name the job after
# app.kubernetes.io/name, which is "procsnap"; a static scrape config should use it too.
JOB = "procsnap"
RULE_JOB = f'job="{JOB}"'

# The README section the alerts' runbook_url point into (an anchor per alert).
RUNBOOK_BASE = "https://github.com/procsnap/procsnap/blob/main/README.md"


def runbook_url(alert: str) -> str:
    """The README anchor of an alert: GitHub's slug of the heading that names it."""
    return f"{RUNBOOK_BASE}#{alert.lower()}"


# -- dashboards ----------------------------------------------------------------------------

DATASOURCE_VAR = "datasource"
DATASOURCE = {"type": "prometheus", "uid": "${%s}" % DATASOURCE_VAR}

# The metric the group dashboards' variables are listed from: every procsnap and
# process-exporter has it, whatever its flags.
GROUP_METRIC = "namedprocess_namegroup_num_procs"

# Selectors built from the variables (Grafana substitutes them; multi and All give regexes).
JOB_SEL = 'job=~"$job"'
INSTANCE_SEL = f'{JOB_SEL}, instance=~"$instance"'
GROUP_SEL = f'{INSTANCE_SEL}, groupname=~"$groupname"'
# The pods dashboard: the same, for processes that run in a pod (extra_labels on).
POD_SEL = f'{GROUP_SEL}, namespace!="", namespace=~"$namespace", pod=~"$pod", container=~"$container"'



def legacy_counter(name: str) -> str:
    """A matcher for one of process-exporter's counters without the _total suffix
    (namedprocess_scrape_errors, ..._procread_errors, ..._partial_errors): Prometheus stores
    them with _total when it scrapes procsnap in OpenMetrics (as it asks by default), without
    when it scrapes the text format (process-exporter, or a scraper that asks for it)."""
    return f'__name__=~"{name}(_total)?"'


TOP_N = 10  # series in the "top groups" panels
TAGS = ["procsnap", "process-exporter"]
REFRESH = "30s"
TIME_FROM = "now-3h"

# -- thresholds (the alerts use them; the dashboards draw them) ----------------------------

# ProcsnapGroupNotRunning watches these groups (a groupname regex; None: every group). It
# fires for any group at num_procs 0, and a group named by a template ({{.Comm}}) stays at 0
# once its processes are gone: with such a config, name the groups that must run here.
NOT_RUNNING_GROUPS = None
FD_RATIO_WARNING = 0.8  # worst_fd_ratio: open fds / soft RLIMIT_NOFILE of the worst process
RESTARTS = 3  # oldest start time changes ...
RESTARTS_WINDOW = "15m"  # ... within this window
MEMORY_GROWTH_RATIO = 0.5  # resident memory up by half ...
MEMORY_GROWTH_BYTES = 256 * 1024 * 1024  # ... and by at least this much ...
MEMORY_GROWTH_WINDOW = "1h"  # ... against this long ago
WAITING_FOR = "15m"  # processes or threads in uninterruptible sleep (D) this long
SCRAPE_SLOW_SECONDS = 2.0  # procsnap's snapshot and grouping, averaged over 10 minutes
READ_ERRORS_RATIO = 0.05  # read errors of a reason per process and snapshot
OTLP_FAILURE_RATIO = 0.5  # failed OTLP exports / all exports

# The window of the recording rules ("the common rates").
RATE_WINDOW = "5m"
