"""The four Grafana dashboards, built with grafana-foundation-sdk (Grafana 11 build).

Every panel has a title, a description and a unit, and asks the ``$datasource`` variable;
the queries select through the variables ``$job``, ``$instance`` and ``$groupname`` (the
pods dashboard also ``$namespace``, ``$pod``, ``$container``) and ask nothing from the
recording rules, so a dashboard works without the rules loaded.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from . import defs
from .defs import GROUP_METRIC, GROUP_SEL, INSTANCE_SEL, POD_SEL, TOP_N

DS = models.DataSourceRef(type_val=defs.DATASOURCE["type"], uid=defs.DATASOURCE["uid"])
RATE = "$__rate_interval"
P = "namedprocess_namegroup_"  # the group families' prefix


def target(expr: str, legend: str = "", instant: bool = False, ref: str = "A", fmt_table: bool = False):
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if fmt_table:
        q = q.format(PromQueryFormat.TABLE)
    return q


def thresholds(*steps):
    """Green below the first value, then the colours given: thresholds((0.8, "orange"), ...)."""
    out = [models.Threshold(value=None, color="green")]
    out += [models.Threshold(value=v, color=c) for v, c in steps]
    return dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(out)


FD_STEPS = thresholds((defs.FD_RATIO_WARNING, "orange"), (0.95, "red"))


def _common(panel, title, description, unit, targets, w, h, min_=None, max_=None, steps=None):
    panel = panel.title(title).description(description).unit(unit).datasource(DS).span(w).height(h)
    for i, t in enumerate(targets):
        panel = panel.with_target(t.ref_id(chr(ord("A") + i)))
    if min_ is not None:
        panel = panel.min(min_)
    if max_ is not None:
        panel = panel.max(max_)
    if steps is not None:
        panel = panel.thresholds(steps)
    return panel


def graph(title, description, unit, *targets, w=12, h=8, stack=False, min_=0, max_=None, steps=None):
    p = timeseries.Panel()
    p = _common(p, title, description, unit, targets, w, h, min_, max_, steps)
    p = p.legend(common.VizLegendOptions().display_mode(common_models.LegendDisplayMode.LIST)
                 .placement(common_models.LegendPlacement.BOTTOM).show_legend(True))
    p = p.tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI)
                  .sort(common_models.SortOrder.DESCENDING))
    p = p.fill_opacity(20 if stack else 8).line_width(1)
    if stack:
        p = p.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if steps is not None:
        p = p.thresholds_style(common.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.DASHED))
    return p


def single(title, description, unit, *targets, w=4, h=4, steps=None):
    p = stat.Panel()
    p = _common(p, title, description, unit, targets, w, h, steps=steps)
    return (p.graph_mode(common_models.BigValueGraphMode.AREA).color_mode(common_models.BigValueColorMode.VALUE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def bars(title, description, unit, *targets, w=12, h=8):
    p = bargauge.Panel()
    p = _common(p, title, description, unit, targets, w, h, min_=0)
    return (p.orientation(common_models.VizOrientation.HORIZONTAL)
            .display_mode(common_models.BarGaugeDisplayMode.BASIC)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def grid(title, description, unit, columns, *targets, sort_by, w=24, h=10):
    """A table of instant queries merged on their labels; ``columns`` maps each query's
    value column to (name, unit)."""
    p = table.Panel()
    p = _common(p, title, description, unit, targets, w, h)
    rename = {f"Value #{chr(ord('A') + i)}": name for i, (name, _) in enumerate(columns)}
    p = p.with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
    p = p.with_transformation(models.DataTransformerConfig(
        id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": rename}))
    for name, col_unit in columns:
        if col_unit != unit:
            p = p.override_by_name(name, [models.DynamicConfigValue(id_val="unit", value=col_unit)])
    return p.sort_by([common.TableSortByFieldState().display_name(sort_by).desc(True)])


# -- the dashboards' frame ----------------------------------------------------------------


def var(name, label, query, description):
    return (dashboard.QueryVariable(name).label(label).description(description).datasource(DS).query(query)
            .multi(True).include_all(True).all_value(".*").refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC))


def datasource_var():
    return dashboard.DatasourceVariable(defs.DATASOURCE_VAR).label("Data source").type("prometheus").description(
        "The Prometheus that scrapes procsnap (or process-exporter).")


def group_vars(metric=GROUP_METRIC, group_filter=""):
    return [
        var("job", "Job", f"label_values({metric}, job)", "Prometheus jobs that scrape procsnap."),
        var("instance", "Instance", f'label_values({metric}{{job=~"$job"}}, instance)',
            "The procsnap targets (one a node)."),
        var("groupname", "Group",
            f'label_values({GROUP_METRIC}{{job=~"$job", instance=~"$instance"{group_filter}}}, groupname)',
            "Process groups, as the config's process_names name them."),
    ]


class Board:
    """A dashboard with panel ids in order and rows that stay open (their panels follow them)."""

    def __init__(self, uid, title, description, variables):
        self.uid = uid
        self.next_id = 1
        self.d = (dashboard.Dashboard(title).uid(uid).description(description).tags(defs.TAGS)
                  .refresh(defs.REFRESH).time(defs.TIME_FROM, "now").timezone("browser")
                  .tooltip(models.DashboardCursorSync.CROSSHAIR).editable()
                  .annotations([])  # {"list": []}: Grafana adds its built-in annotation to the list
                  .link(dashboard.DashboardLink("procsnap dashboards").type(models.DashboardLinkType.DASHBOARDS)
                        .tags(["procsnap"]).as_dropdown(True).include_vars(True).keep_time(True))
                  .with_variable(datasource_var()))
        for v in variables:
            self.d = self.d.with_variable(v)

    def row(self, title):
        self.d = self.d.with_row(dashboard.Row(title).collapsed(False).id(self._id()))
        return self

    def add(self, *panels):
        for p in panels:
            self.d = self.d.with_panel(p.id(self._id()))
        return self

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def build(self):
        return self.d.build()


# -- Process groups overview ---------------------------------------------------------------


def overview():
    s = GROUP_SEL
    b = Board("procsnap-overview", "procsnap / Process groups overview",
              "Every process group procsnap (or process-exporter) reports: the top groups by CPU, memory, "
              "I/O and open files, process and thread counts, states and restarts.", group_vars())
    cpu_rate = f"rate({P}cpu_seconds_total{{{s}}}[{RATE}])"
    b.row("Summary").add(
        single("Groups", "Process groups reported (across the selected instances).", "short",
               target(f"count(count by (groupname) ({P}num_procs{{{s}}}))")),
        single("Processes", "Processes in the selected groups.", "short", target(f"sum({P}num_procs{{{s}}})")),
        single("Threads", "Threads of the processes in the selected groups.", "short",
               target(f"sum({P}num_threads{{{s}}})")),
        single("Groups without processes",
               "Groups (per instance) with no process: a group the config names literally is reported with "
               "num_procs 0 from the first scrape, so a service that is not running shows here.", "short",
               target(f"count(sum by (job, instance, groupname) ({P}num_procs{{{s}}}) == 0) or vector(0)"),
               steps=thresholds((1, "red"))),
        single("Worst fd ratio",
               "The highest open files / soft RLIMIT_NOFILE of any process in the selected groups.",
               "percentunit", target(f"max({P}worst_fd_ratio{{{s}}})"), steps=FD_STEPS),
        single("CPU", "CPU time used by the selected groups per second (1 = one CPU busy).", "percentunit",
               target(f"sum({cpu_rate})")),
    )
    b.row("Top groups").add(
        graph("Top groups by CPU", f"The {TOP_N} groups using the most CPU (user + system; 1 = one CPU busy).",
              "percentunit", target(f"topk({TOP_N}, sum by (groupname) ({cpu_rate}))", "{{groupname}}"), w=8),
        graph("Top groups by resident memory", f"The {TOP_N} groups with the most resident memory (RSS summed "
              "over their processes; shared pages count once per process).", "bytes",
              target(f'topk({TOP_N}, sum by (groupname) ({P}memory_bytes{{{s}, memtype="resident"}}))',
                     "{{groupname}}"), w=8),
        graph("Top groups by open files", f"The {TOP_N} groups with the most open file descriptors.", "short",
              target(f"topk({TOP_N}, sum by (groupname) ({P}open_filedesc{{{s}}}))", "{{groupname}}"), w=8),
        graph("Top groups by storage reads", f"The {TOP_N} groups reading the most bytes from storage "
              "(/proc/PID/io read_bytes: page-cache hits do not count).", "binBps",
              target(f"topk({TOP_N}, sum by (groupname) (rate({P}read_bytes_total{{{s}}}[{RATE}])))",
                     "{{groupname}}"), w=8),
        graph("Top groups by storage writes", f"The {TOP_N} groups writing the most bytes to storage "
              "(/proc/PID/io write_bytes).", "binBps",
              target(f"topk({TOP_N}, sum by (groupname) (rate({P}write_bytes_total{{{s}}}[{RATE}])))",
                     "{{groupname}}"), w=8),
        graph("Top groups by fd ratio", f"The {TOP_N} groups whose worst process is closest to its open-files "
              f"limit (open fds / soft RLIMIT_NOFILE); the alert fires above {defs.FD_RATIO_WARNING:.0%}.",
              "percentunit", target(f"topk({TOP_N}, max by (groupname) ({P}worst_fd_ratio{{{s}}}))",
                                    "{{groupname}}"), w=8, max_=1, steps=FD_STEPS),
    )
    b.row("Processes and threads").add(
        graph("Processes per group", f"Processes of the {TOP_N} largest groups.", "short",
              target(f"topk({TOP_N}, sum by (groupname) ({P}num_procs{{{s}}}))", "{{groupname}}"), w=8),
        graph("Threads per group", f"Threads of the {TOP_N} groups with the most.", "short",
              target(f"topk({TOP_N}, sum by (groupname) ({P}num_threads{{{s}}}))", "{{groupname}}"), w=8),
        graph("States", "Processes and their threads by state (Running, Sleeping, Waiting = uninterruptible "
              "sleep D, Zombie, Other), summed over the selected groups.", "short",
              target(f"sum by (state) ({P}states{{{s}}})", "{{state}}"), w=8, stack=True),
        graph("Groups in uninterruptible sleep", "Processes and threads in state D (Waiting) per group: "
              "usually storage or NFS stalls; only groups with some are shown.", "short",
              target(f'sum by (groupname) ({P}states{{{s}, state="Waiting"}}) > 0', "{{groupname}}"), w=12),
        bars("Restarts in the time range", "How often the start time of a group's oldest process changed "
             "in the dashboard's time range (a restart of the group's main process, or its oldest "
             "member exiting); groups without changes are not shown.", "short",
             target(f"sort_desc(sum by (groupname) (changes({P}oldest_start_time_seconds{{{s}}}[$__range])) > 0)",
                    "{{groupname}}", instant=True), w=12),
    )
    b.row("CPU by group").add(
        grid("CPU by group", "Every selected group with its average CPU over the time range (user + "
             "system, and each), its processes, threads and resident memory now.", "percentunit",
             [("CPU", "percentunit"), ("user", "percentunit"), ("system", "percentunit"),
              ("Processes", "short"), ("Threads", "short"), ("Resident memory", "bytes")],
             target(f"sum by (groupname) (rate({P}cpu_seconds_total{{{s}}}[$__range]))", instant=True, fmt_table=True),
             target(f'sum by (groupname) (rate({P}cpu_seconds_total{{{s}, mode="user"}}[$__range]))',
                    instant=True, fmt_table=True),
             target(f'sum by (groupname) (rate({P}cpu_seconds_total{{{s}, mode="system"}}[$__range]))',
                    instant=True, fmt_table=True),
             target(f"sum by (groupname) ({P}num_procs{{{s}}})", instant=True, fmt_table=True),
             target(f"sum by (groupname) ({P}num_threads{{{s}}})", instant=True, fmt_table=True),
             target(f'sum by (groupname) ({P}memory_bytes{{{s}, memtype="resident"}})', instant=True, fmt_table=True),
             sort_by="CPU"),
    )
    return b.build()


# -- Group detail --------------------------------------------------------------------------


def group_detail():
    s = GROUP_SEL
    by = "groupname, instance"
    on = " on {{instance}}"
    b = Board("procsnap-group", "procsnap / Group detail",
              "The selected groups over time, per instance: every namedprocess_namegroup_* family, the "
              "per-thread-name families and the kernel wait channels.", group_vars())

    def rate(family, extra="", by_=by):
        return f"sum by ({by_}) (rate({P}{family}{{{s}{extra}}}[{RATE}]))"

    b.row("Processes").add(
        graph("Processes", "Processes in the group (num_procs).", "short",
              target(f"sum by ({by}) ({P}num_procs{{{s}}})", "{{groupname}}" + on), w=8),
        graph("Threads", "Threads of the group's processes (num_threads).", "short",
              target(f"sum by ({by}) ({P}num_threads{{{s}}})", "{{groupname}}" + on), w=8),
        graph("States", "The group's processes and threads by state; Waiting is uninterruptible sleep (D).",
              "short", target(f"sum by ({by}, state) ({P}states{{{s}}})", "{{groupname}} {{state}}" + on),
              w=8, stack=True),
        graph("Uptime of the oldest process", "Seconds since the group's oldest process started "
              "(oldest_start_time_seconds); a drop is a restart.", "s",
              target(f"time() - min by ({by}) ({P}oldest_start_time_seconds{{{s}}})", "{{groupname}}" + on)),
        graph("Restarts", "Changes of the oldest process' start time within the rate interval: the group's "
              "main process restarted, or its oldest member exited.", "short",
              target(f"sum by ({by}) (changes({P}oldest_start_time_seconds{{{s}}}[{RATE}]))", "{{groupname}}" + on)),
    )
    b.row("CPU and scheduling").add(
        graph("CPU by mode", "CPU time per second by mode, user and system (1 = one CPU busy).", "percentunit",
              target(rate("cpu_seconds_total", by_=f"{by}, mode"), "{{groupname}} {{mode}}" + on), stack=True),
        graph("Context switches", "Voluntary (waiting for something) and nonvoluntary (preempted) context "
              "switches per second, summed over the threads.", "cps",
              target(rate("context_switches_total", by_=f"{by}, ctxswitchtype"),
                     "{{groupname}} {{ctxswitchtype}}" + on)),
    )
    b.row("Memory").add(
        graph("Memory by type", "resident (RSS), virtual (VSZ) and swapped bytes, summed over the processes "
              "(proportionalResident/proportionalSwapped with --gather-smaps).", "bytes",
              target(f"sum by ({by}, memtype) ({P}memory_bytes{{{s}}})", "{{groupname}} {{memtype}}" + on)),
        graph("Page faults", "Major (read from storage) and minor page faults per second.", "cps",
              target(rate("major_page_faults_total"), "{{groupname}} major" + on),
              target(rate("minor_page_faults_total"), "{{groupname}} minor" + on)),
    )
    b.row("Storage and files").add(
        graph("Storage I/O", "Bytes per second read from and written to storage (/proc/PID/io).", "binBps",
              target(rate("read_bytes_total"), "{{groupname}} read" + on),
              target(rate("write_bytes_total"), "{{groupname}} write" + on), w=8),
        graph("Open file descriptors", "File descriptors open in the group's processes.", "short",
              target(f"sum by ({by}) ({P}open_filedesc{{{s}}})", "{{groupname}}" + on), w=8),
        graph("Worst fd ratio", "Open files / soft RLIMIT_NOFILE of the group's process closest to its limit.",
              "percentunit", target(f"max by ({by}) ({P}worst_fd_ratio{{{s}}})", "{{groupname}}" + on),
              w=8, max_=1, steps=FD_STEPS),
    )
    t = "{{groupname}} {{threadname}}"
    b.row("Threads by name").add(
        graph("Threads per name", "Threads of the group's multi-threaded processes by thread name "
              "(thread_count; off with --threads=false).", "short",
              target(f"sum by ({by}, threadname) ({P}thread_count{{{s}}})", t + on), w=8),
        graph("Thread CPU", "CPU time per second by thread name and mode.", "percentunit",
              target(rate("thread_cpu_seconds_total", by_=f"{by}, threadname, mode"), t + " {{mode}}" + on), w=8),
        graph("Thread storage I/O", "Bytes per second read and written by thread name.", "binBps",
              target(rate("thread_io_bytes_total", by_=f"{by}, threadname, iomode"), t + " {{iomode}}" + on), w=8),
        graph("Thread page faults", "Major and minor page faults per second by thread name.", "cps",
              target(rate("thread_major_page_faults_total", by_=f"{by}, threadname"), t + " major" + on),
              target(rate("thread_minor_page_faults_total", by_=f"{by}, threadname"), t + " minor" + on), w=8),
        graph("Thread context switches", "Context switches per second by thread name and kind.", "cps",
              target(rate("thread_context_switches_total", by_=f"{by}, threadname, ctxswitchtype"),
                     t + " {{ctxswitchtype}}" + on), w=8),
        graph("Threads by kernel wait channel", "Processes and threads of the group waiting in each kernel "
              "function (threads_wchan; off with --wchan=false).", "short",
              target(f"sum by ({by}, wchan) ({P}threads_wchan{{{s}}})", "{{groupname}} {{wchan}}" + on), w=8),
    )
    return b.build()


# -- Pods ------------------------------------------------------------------------------------


def pods():
    s = POD_SEL

    def listed(label, *matchers):
        selector = ", ".join((*matchers, 'namespace!=""'))
        return f"label_values({GROUP_METRIC}{{{selector}}}, {label})"

    job = 'job=~"$job"'
    here = (job, 'instance=~"$instance"')
    variables = [
        var("job", "Job", listed("job"), "Prometheus jobs that scrape procsnap with pod labels."),
        var("instance", "Instance", listed("instance", job), "The procsnap targets (one a node)."),
        var("namespace", "Namespace", listed("namespace", *here), "Kubernetes namespaces."),
        var("pod", "Pod", listed("pod", *here, 'namespace=~"$namespace"'), "Pods."),
        var("container", "Container", listed("container", *here, 'namespace=~"$namespace"', 'pod=~"$pod"'),
            "Containers (a process of the pod in no container, e.g. conmon, has an empty one)."),
        var("groupname", "Group", listed("groupname", *here, 'namespace=~"$namespace"', 'pod=~"$pod"',
                                         'container=~"$container"'),
            "Process groups, as the config's process_names name them."),
    ]
    b = Board("procsnap-pods", "procsnap / Pods",
              "Processes per Kubernetes namespace, pod and container. Needs the config's "
              "extra_labels: [namespace, pod, container], which puts the three labels on every family.", variables)
    ns, pod, ctr = "namespace", "namespace, pod", "namespace, pod, container"
    lpod, lctr = "{{namespace}}/{{pod}}", "{{namespace}}/{{pod}}/{{container}}"
    cpu = f"rate({P}cpu_seconds_total{{{s}}}[{RATE}])"
    b.row("Summary").add(
        single("Namespaces", "Namespaces with processes on the selected instances.", "short",
               target(f"count(count by ({ns}) ({P}num_procs{{{s}}}))")),
        single("Pods", "Pods with processes.", "short", target(f"count(count by ({pod}) ({P}num_procs{{{s}}}))")),
        single("Containers", "Containers with processes.", "short",
               target(f'count(count by ({ctr}) ({P}num_procs{{{s}, container!=""}}))')),
        single("Processes in pods", "Processes of the selected groups that run in a pod.", "short",
               target(f"sum({P}num_procs{{{s}}})")),
        single("Processes outside pods", "Processes of the selected groups that run in no pod (the node's "
               "own services: empty namespace, pod and container).", "short",
               target(f'sum({P}num_procs{{{GROUP_SEL}, namespace=""}})')),
        single("CPU in pods", "CPU time per second of the processes in pods (1 = one CPU busy).", "percentunit",
               target(f"sum({cpu})")),
    )
    b.row("Processes").add(
        graph("Processes per namespace", "Processes in each namespace.", "short",
              target(f"sum by ({ns}) ({P}num_procs{{{s}}})", "{{namespace}}"), w=8),
        graph("Processes per pod", "Processes in each pod.", "short",
              target(f"sum by ({pod}) ({P}num_procs{{{s}}})", lpod), w=8),
        graph("Processes per container", "Processes in each container (empty container: the pod's "
              "processes in no container).", "short",
              target(f"sum by ({ctr}) ({P}num_procs{{{s}}})", lctr), w=8),
        graph("Threads per pod", "Threads of the processes in each pod.", "short",
              target(f"sum by ({pod}) ({P}num_threads{{{s}}})", lpod), w=12),
        graph("Pod processes in uninterruptible sleep", "Processes and threads in state D (Waiting) or "
              "Zombie per pod.", "short",
              target(f'sum by ({pod}, state) ({P}states{{{s}, state=~"Waiting|Zombie"}})', lpod + " {{state}}"),
              w=12),
    )
    b.row("Resources").add(
        graph("CPU per pod", "CPU time per second of each pod's processes (1 = one CPU busy).", "percentunit",
              target(f"sum by ({pod}) ({cpu})", lpod)),
        graph("CPU per container", "CPU time per second of each container's processes.", "percentunit",
              target(f"sum by ({ctr}) ({cpu})", lctr)),
        graph("Resident memory per pod", "RSS summed over each pod's processes.", "bytes",
              target(f'sum by ({pod}) ({P}memory_bytes{{{s}, memtype="resident"}})', lpod)),
        graph("Resident memory per container", "RSS summed over each container's processes.", "bytes",
              target(f'sum by ({ctr}) ({P}memory_bytes{{{s}, memtype="resident"}})', lctr)),
        graph("Storage I/O per pod", "Bytes per second each pod's processes read from and write to storage.",
              "binBps", target(f"sum by ({pod}) (rate({P}read_bytes_total{{{s}}}[{RATE}]))", lpod + " read"),
              target(f"sum by ({pod}) (rate({P}write_bytes_total{{{s}}}[{RATE}]))", lpod + " write"), w=8),
        graph("Open files per pod", "File descriptors open in each pod's processes.", "short",
              target(f"sum by ({pod}) ({P}open_filedesc{{{s}}})", lpod), w=8),
        graph("Worst fd ratio per container", "Open files / soft RLIMIT_NOFILE of each container's process "
              "closest to its limit.", "percentunit",
              target(f"max by ({ctr}) ({P}worst_fd_ratio{{{s}}})", lctr), w=8, max_=1, steps=FD_STEPS),
    )
    b.row("Processes by container").add(
        grid("Processes by container", "Every container's groups with their processes, threads, average CPU "
             "over the time range and resident memory now.", "short",
             [("Processes", "short"), ("Threads", "short"), ("CPU", "percentunit"), ("Resident memory", "bytes")],
             target(f"sum by ({ctr}, groupname) ({P}num_procs{{{s}}})", instant=True, fmt_table=True),
             target(f"sum by ({ctr}, groupname) ({P}num_threads{{{s}}})", instant=True, fmt_table=True),
             target(f"sum by ({ctr}, groupname) (rate({P}cpu_seconds_total{{{s}}}[$__range]))",
                    instant=True, fmt_table=True),
             target(f'sum by ({ctr}, groupname) ({P}memory_bytes{{{s}, memtype="resident"}})',
                    instant=True, fmt_table=True),
             sort_by="Processes"),
    )
    return b.build()


# -- procsnap health -------------------------------------------------------------------------


def health():
    s = INSTANCE_SEL
    on = "{{instance}}"
    b = Board("procsnap-health", "procsnap / Health",
              "procsnap itself: targets up, snapshot time, processes seen, read errors by reason, "
              "process-exporter's error counters, OTLP exports, and procsnap's own CPU, memory and open files "
              "(the /proc files it keeps open count there).",
              group_vars(metric="procsnap_build_info"))
    b.row("Targets").add(
        single("Targets up", "procsnap targets Prometheus scrapes successfully.", "short", target(f"sum(up{{{s}}})")),
        single("Targets down", "procsnap targets Prometheus cannot scrape.", "short",
               target(f"count(up{{{s}}} == 0) or vector(0)"), steps=thresholds((1, "red"))),
        single("Versions", "procsnap instances by version (procsnap_build_info).", "short",
               target(f"count by (version) (procsnap_build_info{{{s}}})", "{{version}}")),
        single("Processes seen", "Processes in the last snapshot, over the selected instances.", "short",
               target(f"sum(procsnap_processes{{{s}}})")),
        single("Slowest snapshot", "The longest snapshot of the selected instances (reading /proc and "
               f"grouping); the alert fires above {defs.SCRAPE_SLOW_SECONDS:g} s.", "s",
               target(f"max(procsnap_scrape_duration_seconds{{{s}}})"),
               steps=thresholds((defs.SCRAPE_SLOW_SECONDS, "red"))),
        single("Series of the selected groups", "namedprocess_namegroup_* series the selected instances "
               "export for the selected groups.", "short",
               target(f'count({{__name__=~"{P}.+", {GROUP_SEL}}})')),
    )
    b.row("Snapshots").add(
        graph("Up", "1 while Prometheus scrapes the target, 0 when a scrape fails.", "short",
              target(f"up{{{s}}}", on), w=8, max_=1),
        graph("Snapshot duration", "Seconds the last snapshot and grouping took (procsnap_scrape_duration_seconds).",
              "s", target(f"procsnap_scrape_duration_seconds{{{s}}}", on), w=8,
              steps=thresholds((defs.SCRAPE_SLOW_SECONDS, "red"))),
        graph("Scrape duration", "Seconds Prometheus' scrape took, transfer included (scrape_duration_seconds).",
              "s", target(f"scrape_duration_seconds{{{s}}}", on), w=8),
        graph("Processes seen", "Processes in each instance's last snapshot (procsnap_processes).", "short",
              target(f"procsnap_processes{{{s}}}", on), w=8),
        graph("Samples per scrape", "Samples in each scrape (scrape_samples_scraped): the series procsnap exports.",
              "short", target(f"scrape_samples_scraped{{{s}}}", on), w=8),
        graph("Series per group", "namedprocess_namegroup_* series of the selected groups, per instance.", "short",
              target(f'count by (instance) ({{__name__=~"{P}.+", {GROUP_SEL}}})', on), w=8),
    )
    per_process = (f"sum by (job, instance, reason) (idelta(procsnap_read_errors_total{{{s}}}[{RATE}]))\n"
                   f"/ on (job, instance) group_left ()\n"
                   f"max by (job, instance) (procsnap_processes{{{s}}})")
    def scrape_counter(kind):
        return defs.legacy_counter(f"namedprocess_scrape_{kind}")

    b.row("Errors").add(
        graph("Read errors by reason", "Process files that could not be read per second, by reason: an errno "
              "name (EACCES: no privilege for another user's io or exe; ENOENT: the process exited during "
              "the walk) or malformed.", "cps",
              target(f"sum by (instance, reason) (rate(procsnap_read_errors_total{{{s}}}[{RATE}]))",
                     on + " {{reason}}")),
        graph("Read errors per process and snapshot", "Read errors of each reason in the last snapshot, per "
              f"process seen; the alert fires above {defs.READ_ERRORS_RATIO:.0%} for 15 minutes.", "percentunit",
              target(per_process, on + " {{reason}}"), steps=thresholds((defs.READ_ERRORS_RATIO, "orange"))),
        graph("process-exporter's error counters", "Failed snapshots (namedprocess_scrape_errors), processes "
              "whose stat could not be read (procread) and processes read without io or fd count (partial), "
              "per second.", "cps",
              *[target(f"sum by (instance) (rate({{{scrape_counter(kind)}, {s}}}[{RATE}]))", f"{on} {legend}")
                for kind, legend in (("errors", "failed"), ("procread_errors", "procread"),
                                     ("partial_errors", "partial"))]),
        graph("OTLP exports", "OTLP pushes per second by result, success or failure (only with --otlp.endpoint).",
              "cps", target(f"sum by (instance, result) (rate(procsnap_otlp_exports_total{{{s}}}[{RATE}]))",
                            on + " {{result}}")),
    )
    b.row("procsnap's own resources").add(
        graph("CPU", "CPU time procsnap itself uses per second (1 = one CPU busy).", "percentunit",
              target(f"rate(process_cpu_seconds_total{{{s}}}[{RATE}])", on), w=8),
        graph("Memory", "procsnap's own resident and virtual memory.", "bytes",
              target(f"process_resident_memory_bytes{{{s}}}", on + " resident"),
              target(f"process_virtual_memory_bytes{{{s}}}", on + " virtual"), w=8),
        graph("Open files", "Files procsnap has open, the /proc files it keeps open between snapshots "
              "(--procfs.keep-open) included, and its limit.", "short",
              target(f"process_open_fds{{{s}}}", on + " open"), target(f"process_max_fds{{{s}}}", on + " limit"), w=8),
    )
    return b.build()


DASHBOARDS = {
    "procsnap-overview.json": overview,
    "procsnap-group.json": group_detail,
    "procsnap-pods.json": pods,
    "procsnap-health.json": health,
}
