"""Drop-in, proven (issue 8): process-exporter 0.7.10 and procsnap on the same /proc, with
the same config, serve the same namedprocess_* families with the same sample values.

Each scenario builds a fake /proc tree (tests/dropin/tree.py), starts both exporters on it
(process-exporter ``-procfs DIR``, procsnap ``--path.procfs DIR``) on 127.0.0.1, scrapes
both once, changes the tree (counters grow, processes start and exit), scrapes both again
and compares the second scrapes: every sample of every family in scope
(``namedprocess_namegroup_*`` unless the scenario says otherwise), and the type and help
text of every family both serve. The only differences tolerated are the entries of
ALLOWED; README.md's "Migrating from process-exporter" section names each of them
(test_readme_names_allowed_difference).

A scenario whose families diverge today lists them in ``diverges`` (a family pattern, or
"*" for the whole scenario, with the divergence it shows): that part runs as its own
strict expected failure, the rest of the scenario must match now. When a fix lands, its
case passes, xfail(strict) turns that into a failure: remove the entry.

test_live runs both exporters on the real /proc, on processes this test starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import yaml

from dropin.run import (
    ONLY_PE, ONLY_PS, PROCESS_EXPORTER, VALUE, Allowed, Context, Exposition, Pair, differences,
    metadata_differences, unexplained,
)
from dropin.tree import Tree, proc
from helpers import stop_processes

pytestmark = pytest.mark.skipif(not os.access(PROCESS_EXPORTER, os.X_OK), reason="process-exporter not installed")

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
NG = "namedprocess_namegroup_"


def family(*names) -> str:
    """A pattern for these namegroup families' sample names (counters with _total)."""
    return rf"^{NG}(?:{'|'.join(names)})(?:_total)?$"


# -- conditions of allowed differences ---------------------------------------------


def _pe_group_empty(ctx: Context, d) -> bool:
    return ctx.pe.group_value(NG + "num_procs", d.key.label.get("groupname")) == 0


def _template_regexes(config: str, pred) -> list:
    """Regexes of the group names the config's name templates can give, for the templates
    pred(template) accepts (a template's actions match anything)."""
    try:
        doc = yaml.safe_load(config) or {}
    except yaml.YAMLError:
        return []
    out = []
    for m in (doc.get("process_names") or []) if isinstance(doc, dict) else []:
        name = (m or {}).get("name") or "{{.ExeBase}}"
        if pred(name):
            parts = re.split(r"\{\{.*?\}\}", name)
            out.append(re.compile(".*".join(map(re.escape, parts)), re.S))
    return out


def _per_process_group_gone(ctx: Context, d) -> bool:
    group = d.key.label.get("groupname")
    per_process = _template_regexes(ctx.config, lambda t: re.search(r"\.(PID|StartTime)\b", t))
    return _pe_group_empty(ctx, d) and any(r.fullmatch(group) for r in per_process)


def _literal_group_before_match(ctx: Context, d) -> bool:
    group = d.key.label.get("groupname")
    literal = _template_regexes(ctx.config, lambda t: "{{" not in t)
    return (group not in ctx.pe.groups() and ctx.ps.group_value(NG + "num_procs", group) == 0
            and any(r.fullmatch(group) for r in literal))


def _procsnap_without_smaps(ctx: Context, d) -> bool:
    return not ctx.facts["procsnap_smaps"]


def _float_residue(ctx: Context, d) -> bool:
    return abs(d.pe - d.ps) <= 1e-9 * max(abs(d.pe), abs(d.ps), 1.0)


def _wrapped(ctx: Context, d) -> bool:
    return d.pe >= 2.0 ** 63


def _execed_group(ctx: Context, d) -> bool:
    return d.key.label.get("groupname") in ctx.facts.get("execed_groups", ())


def _reads_zero(ctx: Context, d) -> bool:
    return d.pe == 0


# -- THE list of allowed differences ------------------------------------------------
# Each entry: key (a phrase README.md's "Migrating from process-exporter" section must
# contain), which samples, which kind of difference, what differs, and why.

ALLOWED = [
    Allowed(
        key="`-gather-smaps` is off by default",
        samples=family("memory_bytes"), labels=(("memtype", "proportionalResident|proportionalSwapped"),),
        kind=ONLY_PE, when=_procsnap_without_smaps,
        what="no memtype=proportionalResident/proportionalSwapped samples unless -gather-smaps is given",
        reason="process-exporter reads every process' smaps_rollup by default, which stalls scrapes of big "
               "processes (its issue #246); procsnap reads it only when asked",
    ),
    Allowed(
        key="`oldest_start_time_seconds` of an empty group",
        samples=family("oldest_start_time_seconds"), kind=ONLY_PE, when=_pe_group_empty,
        what="a group without processes has no oldest_start_time_seconds sample",
        reason="process-exporter reports Go's zero time, -62135596800, which is no start time",
    ),
    Allowed(
        key="`worst_fd_ratio` of an empty group",
        samples=family("worst_fd_ratio"), kind=ONLY_PE, when=_pe_group_empty,
        what="a group without processes has no worst_fd_ratio sample",
        reason="without processes there is no ratio; process-exporter reports 0 (an alert on a high ratio "
               "behaves the same)",
    ),
    Allowed(
        key="dropped once their process is gone",
        samples=rf"^{NG}", kind=ONLY_PE, when=_per_process_group_gone,
        what="a group named per process ({{.PID}}, {{.StartTime}}) is gone once its process is",
        reason="process-exporter keeps every such group forever (num_procs 0): one new series set per "
               "process that ever ran",
    ),
    Allowed(
        key="before any process matched",
        samples=rf"^{NG}", kind=ONLY_PS, when=_literal_group_before_match,
        what="a group the config names literally is served with num_procs 0 before any process matched",
        reason="'my daemon is not running' alerts need the series (process-exporter #59, #133, #336, #340)",
    ),
    Allowed(
        key="sees execs",
        samples=rf"^{NG}", kind=(ONLY_PE, ONLY_PS, VALUE), when=_execed_group,
        what="a process that execs counts in the group its new command names, from the exec on",
        reason="process-exporter reads a process' name and command line once and never sees an exec",
    ),
    Allowed(
        key="whole clock ticks",
        samples=family("cpu_seconds", "thread_cpu_seconds"), kind=VALUE, when=_float_residue,
        what="CPU seconds differ in the last bits (process-exporter 0.030000000000000027, procsnap 0.03)",
        reason="process-exporter adds up differences of float seconds; procsnap sums whole clock ticks and "
               "divides once",
    ),
    Allowed(
        key="when a thread exits",
        samples=family("context_switches"), kind=VALUE, when=_wrapped,
        what="when a thread with context switches exits, process-exporter's counter jumps to about 1.8e19",
        reason="process-exporter subtracts unsigned sums over task/*; a thread that exits takes its switches "
               "with it and the difference wraps around 2^64; procsnap's counters never go down",
    ),
    Allowed(
        key="counts them only at its first scrape",
        samples=r"^namedprocess_scrape_procread_errors$", kind=VALUE,
        what="namedprocess_scrape_procread_errors counts, at every scrape, the processes whose stat could not "
             "be read; process-exporter counts the processes it could not read in its start-up update only",
        reason="process-exporter adds to it only when it starts (a scrape never does), so an alert on it "
               "never fires for problems that come later",
    ),
    Allowed(
        key="whose `limits` file cannot be read",
        samples=rf"^{NG}", kind=ONLY_PS, labels=(("groupname", "nolimits"),),
        what="a process whose limits file cannot be read is exported, without its fd limit",
        reason="process-exporter leaves such a process out of every family, so its group looks empty "
               "though it runs",
    ),
    Allowed(
        key="absent, never 0",
        samples=family("read_bytes", "write_bytes", "open_filedesc", "worst_fd_ratio"), kind=ONLY_PE,
        when=_reads_zero,
        what="a group none of whose processes' io (or fd/ directory) could be read has no read/write_bytes "
             "(open_filedesc, worst_fd_ratio) sample",
        reason="process-exporter counts an unreadable io file (another user's process when not root) or fd/ "
               "directory as 0; procsnap reports no value rather than a wrong one",
    ),
]

# Entries README.md's section does not name yet (test_readme_names_allowed_difference
# expects these to fail; when the README gains the phrase, remove it here).
README_PENDING: set = set()


# -- scenarios --------------------------------------------------------------------------


@dataclass
class Scenario:
    id: str
    doc: str
    build: Callable  # (Tree) -> None: the tree at start
    step: Callable  # (Tree) -> None: what happens between the two scrapes
    config: Optional[str]  # YAML text, or None: no -config.path
    pe_groups: Optional[set] = None  # the groups process-exporter must report (a check of the tree)
    pe_flags: tuple = ()  # process-exporter flags, given to procsnap too (run.procsnap_flags)
    strict_flags: bool = False  # give procsnap pe_flags exactly as they are
    smaps: bool = False  # False: -gather-smaps=false
    env: dict = field(default_factory=dict)
    scope: str = rf"^{NG}"
    diverges: dict = field(default_factory=dict)  # family pattern or "*" -> divergence it shows
    facts: dict = field(default_factory=dict)


def grow_all(tree: Tree, k=1):
    """Every live process' every thread does some work: each counter grows by its own amount."""
    for p in tree.procs.values():
        if p.leader.state == "Z" or p.kthread:
            continue
        for i, t in enumerate(p.tasks, 1):
            n = (p.pid % 97 + i) * k
            t.grow(utime=3 * n, stime=n, minflt=40 * n, majflt=n, ctx=(7 * n, 2 * n),
                   read_bytes=4096 * n, write_bytes=512 * n)


def _nothing(tree):
    pass


# basic: single-threaded processes, every matcher kind, children, late starts, exits, pid reuse


BASIC_CONFIG = """\
process_names:
  - name: alpha-comm
    comm: [alpha]
  - name: "{{.ExeBase}}"
    exe: [beta, /opt/gamma/bin/gamma]
  - name: "svc:{{.Matches.svc}}"
    cmdline: ['--service=(?P<svc>[a-z]+)']
  - name: "{{.Comm}}"
    cmdline: ['^/usr/bin/worker( |$)']
  - name: "full:{{.ExeFull}}"
    comm: [fullname]
  - name: solo
    comm: [solo]
  - name: states
    comm: [st-run, st-sleep, st-disk, st-zombie, st-stopped, st-idle]
  - name: late
    comm: [late]
"""


def basic_build(t: Tree):
    t.add(proc(100, b"alpha", b"/usr/bin/alpha\0--x\0", exe="/usr/bin/alpha", utime=500, fds=9, rss_pages=2000))
    t.add(proc(101, b"alpha", b"/usr/bin/alpha\0", exe="/usr/bin/alpha", start_ticks=300, utime=7))
    t.add(proc(110, b"beta", b"/usr/bin/beta\0-d\0", exe="/usr/bin/beta", nofile=(64, 4096), fds=16))
    t.add(proc(111, b"gamma", b"/opt/gamma/bin/gamma\0", exe="/opt/gamma/bin/gamma", swap_kb=2048))
    t.add(proc(112, b"gamma", b"/usr/bin/gamma\0", exe="/usr/bin/gamma"))  # not the configured path
    t.add(proc(120, b"svcd", b"/usr/sbin/svcd\0--service=web\0", start_ticks=1200))
    t.add(proc(121, b"svcd", b"/usr/sbin/svcd\0--service=db\0", start_ticks=1300, read_bytes=10 ** 9))
    t.add(proc(130, b"worker", b"/usr/bin/worker\0--id=1\0", start_ticks=2000))
    t.add(proc(131, b"helper", b"/usr/bin/helper\0", ppid=130, start_ticks=2100))  # a child: the worker group
    t.add(proc(140, b"fullname", b"/usr/local/bin/fullname\0-x\0", vsize=1 << 34))
    t.add(proc(150, b"solo", b"/usr/bin/solo\0", start_ticks=5000, fds=100, nofile=(128, 128)))
    for pid, comm, state in ((160, b"st-run", "R"), (161, b"st-sleep", "S"), (162, b"st-disk", "D"),
                             (163, b"st-zombie", "Z"), (164, b"st-stopped", "T"), (165, b"st-idle", "I")):
        t.add(proc(pid, comm, b"" if state == "Z" else b"/usr/bin/" + comm + b"\0", state=state, ppid=1))


def basic_step(t: Tree):
    grow_all(t)
    t.remove(101)  # exits; its pid is reused by a new alpha at once
    t.add(proc(101, b"alpha", b"/usr/bin/alpha\0--again\0", exe="/usr/bin/alpha", start_ticks=t.now_ticks(),
               utime=11, stime=5, minflt=300, majflt=2, ctx=(40, 4), read_bytes=8192, write_bytes=4096))
    t.remove(150)  # the only solo exits: an empty group
    t.add(proc(122, b"svcd", b"/usr/sbin/svcd\0--service=web\0", start_ticks=t.now_ticks(), utime=30, stime=3,
               ctx=(12, 1), read_bytes=1 << 20))
    t.add(proc(132, b"helper2", b"/usr/bin/helper2\0", ppid=130, start_ticks=t.now_ticks(), utime=9, minflt=90))
    t.add(proc(170, b"late", b"/usr/bin/late\0", start_ticks=t.now_ticks(), utime=250, stime=70, minflt=1000,
               majflt=3, ctx=(100, 10), read_bytes=4096, write_bytes=1 << 16, fds=7))


BASIC_GROUPS = {"alpha-comm", "beta", "gamma", "svc:web", "svc:db", "worker", "full:/usr/local/bin/fullname",
                "solo", "states", "late"}


# processes without memory: kernel threads and zombies

NO_MM_CONFIG = """\
process_names:
  - name: kernel
    comm: [kthreadd, kworker/0:1]
  - name: zombies
    comm: [defunct]
"""


def no_mm_build(t: Tree):
    t.add(proc(2, b"kthreadd", b"", kthread=True, ppid=0, start_ticks=0, stime=400))
    t.add(proc(30, b"kworker/0:1", b"", kthread=True, ppid=2, start_ticks=100, stime=900, state="I"))
    t.add(proc(40, b"defunct", b"", state="Z", utime=50))
    t.add(proc(41, b"defunct", b"", state="Z", utime=70))


# cmdline shapes: setproctitle padding, empty arguments, a Java command line over 64 KiB

CLASSPATH = ":".join(f"/opt/app/lib/dependency-{i:05d}-1.0.0.jar" for i in range(2000)).encode()
assert len(CLASSPATH) > 64 * 1024

CMDLINE_CONFIG = r"""
process_names:
  - name: "java:{{.Matches.main}}"
    cmdline: ['^\S*java -cp \S+ (?:-\S+ )*(?P<main>[a-z][\w.]*)']
  - name: "{{.ExeBase}}"
    comm: [nginx, postgres]
  - name: "args:{{.Matches.rest}}"
    cmdline: ['^/usr/bin/empties (?P<rest>.*)$']
"""


def cmdline_build(t: Tree):
    t.add(proc(200, b"java", b"/usr/bin/java\0-cp\0" + CLASSPATH + b"\0-Xmx2g\0com.example.Main\0--port\0080\0",
               exe="/usr/lib/jvm/java-17/bin/java"))
    t.add(proc(201, b"nginx", b"nginx: master process /usr/sbin/nginx -g daemon on;" + b"\0" * 13,
               exe="/usr/sbin/nginx"))
    t.add(proc(202, b"nginx", b"nginx: worker process" + b"\0" * 43, ppid=201, exe="/usr/sbin/nginx"))
    t.add(proc(203, b"postgres", b"postgres: 15/main: checkpointer " + b"\0" * 200,
               exe="/usr/lib/postgresql/15/bin/postgres"))
    t.add(proc(204, b"empties", b"/usr/bin/empties\0\0a\0\0b\0", exe="/usr/bin/empties"))


def cmdline_step(t: Tree):
    grow_all(t)
    t.add(proc(205, b"nginx", b"nginx: worker process" + b"\0" * 43, ppid=201, start_ticks=t.now_ticks(), utime=5))


# threads: the leader's and its threads' counters and states differ

def threads_build(t: Tree):
    t.add(proc(300, b"server", b"/usr/bin/server\0", state="S", ctx=(5, 1), utime=20, exe="/usr/bin/server",
               threads=[dict(comm=b"worker", state="R", ctx=(500, 30), utime=300, minflt=50),
                        dict(comm=b"worker", state="D", ctx=(400, 20), utime=200, read_bytes=1 << 20),
                        dict(comm=b"io-loop", state="S", ctx=(1000, 3), stime=90)]))
    t.add(proc(310, b"single", b"/usr/bin/single\0", ctx=(50, 5)))


def threads_step(t: Tree):
    grow_all(t)
    p = t[300]
    p.tasks[1].state, p.tasks[2].state = "S", "R"
    p.add_thread(b"worker", state="S", ctx=(3, 1), utime=2)  # a thread starts
    t.add(proc(320, b"server", b"/usr/bin/server\0", start_ticks=t.now_ticks(), ctx=(2, 0), utime=4,
               exe="/usr/bin/server", threads=[dict(comm=b"worker", ctx=(30, 2), utime=7, state="R")]))


THREADS_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [server, single]
"""


def thread_exit_step(t: Tree):
    grow_all(t)
    t[300].end_thread(302)  # a worker with 400 voluntary switches exits


# exec: a process execs another program between the scrapes (same pid and start time)

EXEC_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [launcher, app, other]
"""


def exec_build(t: Tree):
    t.add(proc(400, b"launcher", b"/usr/bin/launcher\0--exec\0/usr/bin/app\0", exe="/usr/bin/launcher", utime=10))
    t.add(proc(401, b"other", b"/usr/bin/other\0", exe="/usr/bin/other"))


def exec_step(t: Tree):
    grow_all(t)
    p = t[400]
    p.cmdline, p.exe, p.code_base = b"/usr/bin/app\0", "/usr/bin/app", 0x5600BB000000
    p.leader.comm = b"app"
    p.grow(utime=40, minflt=500, ctx=(9, 9))


# per-process names

PER_PROCESS_CONFIG = """\
process_names:
  - name: "pid-{{.PID}}"
    comm: [job]
  - name: jobs
    comm: [batch]
"""


def per_process_build(t: Tree):
    t.add(proc(500, b"job", b"/usr/bin/job\0"))
    t.add(proc(501, b"job", b"/usr/bin/job\0"))
    t.add(proc(502, b"batch", b"/usr/bin/batch\0"))


def per_process_step(t: Tree):
    grow_all(t)
    t.remove(501)
    t.remove(502)
    t.add(proc(503, b"job", b"/usr/bin/job\0", start_ticks=t.now_ticks(), utime=3))


# templates

USERNAME_CONFIG = """\
process_names:
  - name: "{{.Username}}:{{.Comm}}"
    comm: [setuid-tool, dropped, plain]
"""


def username_build(t: Tree):
    t.add(proc(600, b"setuid-tool", b"/usr/bin/setuid-tool\0", uids=(1, 0, 0, 0)))  # real daemon, effective root
    t.add(proc(601, b"dropped", b"/usr/sbin/dropped\0", uids=(0, 1, 1, 1)))  # real root, effective daemon
    t.add(proc(602, b"plain", b"/usr/bin/plain\0", uids=(1, 1, 1, 1)))


STARTTIME_CONFIG = """\
process_names:
  - name: "{{.Comm}} since {{.StartTime}}"
    comm: [early, late]
"""


def starttime_build(ticks):
    def build(t: Tree):
        for i, tick in enumerate(ticks):
            t.add(proc(700 + i, b"early", b"/usr/bin/early\0", start_ticks=tick))
    return build


CGROUPS_CONFIG = """\
process_names:
  - name: "{{.Comm}} in {{.Cgroups}}"
    comm: [v1, v2, none]
"""


def cgroups_build(t: Tree):
    t.add(proc(850, b"v1", b"/usr/bin/v1\0", cgroup=b"12:pids:/system.slice/v1.service\n"
               b"5:cpu,cpuacct:/system.slice/v1.service\n1:name=systemd:/system.slice/v1.service\n"
               b"0::/system.slice/v1.service\n"))
    t.add(proc(851, b"v2", b"/usr/bin/v2\0", cgroup=b"0::/user.slice/user-1000.slice/session-3.scope\n"))
    t.add(proc(852, b"none", b"/usr/bin/none\0", cgroup=b""))


TRIM_CONFIG = """\
process_names:
  - name: "trim  {{- .Comm -}}  !"
    comm: [trimmed]
  - name: "{{ .Comm }} plain"
    comm: [plain]
"""


def two_procs(comm_a: bytes, comm_b: bytes):
    def build(t: Tree):
        t.add(proc(800, comm_a, b"/usr/bin/" + comm_a + b"\0"))
        t.add(proc(801, comm_b, b"/usr/bin/" + comm_b + b"\0"))
    return build


EXE_CONFIG = """\
process_names:
  - name: "slash:{{.ExeBase}}"
    exe: [/usr/sbin/daemond/]
  - name: "noargv0:{{.ExeBase}}"
    cmdline: ['^ --no-argv0$']
  - name: "root:{{.ExeBase}}"
    cmdline: ['^/ --root$']
"""


def exe_build(t: Tree):
    t.add(proc(900, b"daemond", b"/usr/sbin/daemond/\0", exe="/usr/sbin/daemond"))
    t.add(proc(901, b"anon", b"\0--no-argv0\0", exe="/usr/bin/anon"))
    t.add(proc(902, b"rootish", b"/\0--root\0", exe="/usr/bin/rootish"))


# regexes (Go's RE2 dialect)

def regex_scenario(id_, pattern, argv: bytes, what, expect):
    config = f"process_names:\n  - name: \"re:{{{{.Comm}}}}\"\n    cmdline: ['{pattern}']\n" \
             f"  - name: control\n    comm: [control]\n"

    def build(t: Tree):
        t.add(proc(1000, b"target", argv))
        t.add(proc(1001, b"control", b"/usr/bin/control\0"))
    return Scenario(id_, f"{what}: cmdline regex {pattern} on {argv!r}", build, grow_all, config, pe_groups=expect)


# A plausible rule on an argument of ~1 MB (the cmdline cap) of word characters: a
# backtracking engine takes minutes on it, RE2 (both exporters) is linear. No timing
# assertion: a stalled procsnap fails by the harness' bounded waits.

JAR_CONFIG = r"""
process_names:
  - name: "jar:{{.Matches.app}}"
    cmdline: ['(?P<app>\w+)\.jar']
"""


def jar_build(t: Tree):
    t.add(proc(1050, b"java", b"/usr/bin/java\0-jar\0server.jar\0"))
    t.add(proc(1051, b"java", b"/usr/bin/java\0-Dx=" + b"a" * 1_000_000 + b"\0Main\0", uids=(65534,) * 4))


# the flags process-exporter users have in their unit files

def flags_build(t: Tree):
    t.add(proc(1100, b"alpha", b"/usr/bin/alpha\0"))
    t.add(proc(1101, b"svcd", b"/usr/sbin/svcd\0--service=web\0"))
    t.add(proc(1102, b"svcd", b"/usr/sbin/svcd\0--service=db\0"))


FLAGS_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [alpha, svcd]
"""


def recheck_build(t: Tree):
    t.add(proc(1200, b"renamed", b"/usr/bin/starting\0"))


def recheck_step(t: Tree):
    grow_all(t)
    t[1200].cmdline = b"/usr/bin/renamed\0--ready\0"  # a process that rewrites its argv (setproctitle)


RECHECK_CONFIG = """\
process_names:
  - name: ready
    cmdline: ['--ready']
"""


# scrape errors: files a process-exporter update cannot read

def errors_build(t: Tree):
    t.add(proc(1300, b"noio", b"/usr/bin/noio\0", missing=frozenset({"io"})))
    t.add(proc(1301, b"nolimits", b"/usr/bin/nolimits\0", missing=frozenset({"limits"})))
    t.add(proc(1302, b"ok", b"/usr/bin/ok\0"))


def partial_build(t: Tree):
    t.add(proc(1300, b"noio", b"/usr/bin/noio\0", missing=frozenset({"io"})))
    t.add(proc(1302, b"ok", b"/usr/bin/ok\0"))


ERRORS_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [noio, ok]
"""

LIMITS_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [nolimits, ok]
"""


def fds_build(t: Tree):
    t.add(proc(1400, b"unlimited", b"/usr/bin/unlimited\0", nofile=("unlimited", "unlimited"), fds=12))
    t.add(proc(1401, b"mixed", b"/usr/bin/mixed\0", nofile=("unlimited", "unlimited"), fds=5))
    t.add(proc(1402, b"mixed", b"/usr/bin/mixed\0", nofile=(10, 20), fds=9))


def nofd_build(t: Tree):
    t.add(proc(1403, b"nofd", b"/usr/bin/nofd\0", missing=frozenset({"fd"})))
    t.add(proc(1404, b"somefd", b"/usr/bin/somefd\0", missing=frozenset({"fd"})))
    t.add(proc(1405, b"somefd", b"/usr/bin/somefd\0", fds=6))


FDS_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [unlimited, mixed, nofd, somefd]
"""


def smaps_build(t: Tree):
    t.add(proc(1500, b"big", b"/usr/bin/big\0", smaps=(90000, 120), swap_kb=300, rss_pages=30000))
    t.add(proc(1501, b"big", b"/usr/bin/big\0", smaps=(1000, 0)))


SMAPS_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [big]
"""


def wchan_build(t: Tree):
    t.add(proc(1600, b"waiter", b"/usr/bin/waiter\0", wchan=b"do_select"))
    t.add(proc(1601, b"pool", b"/usr/bin/pool\0", wchan=b"futex_wait_queue",
               threads=[dict(wchan=b"futex_wait_queue"), dict(wchan=b"do_epoll_wait"), dict(state="R")]))


WCHAN_CONFIG = """\
process_names:
  - name: "{{.Comm}}"
    comm: [waiter, pool]
"""

MERGE_CONFIG = """\
base: &base
  comm: [alpha]
process_names:
  - <<: *base
    name: merged
"""

MATCHES_CONFIG = """\
process_names:
  - name: "{{.Matches}}"
    cmdline: ['--service=(?P<svc>[a-z]+)']
"""


SCENARIOS = [
    Scenario("basic", "every matcher kind, children, late starts, an exit, pid reuse, every state",
             basic_build, basic_step, BASIC_CONFIG, BASIC_GROUPS),
    Scenario("no-mm", "kernel threads and zombies: no memory map, no Vm lines in status", no_mm_build, grow_all,
             NO_MM_CONFIG, {"kernel", "zombies"}),
    Scenario("cmdlines", "setproctitle padding, empty arguments, a Java command line over 64 KiB",
             cmdline_build, cmdline_step, CMDLINE_CONFIG,
             {"java:com.example.Main", "nginx -g daemon on;", "nginx: worker process", "main: checkpointer ",
              "args: a  b"}),
    Scenario("threads", "threads whose context switches and states differ from the leader's (-threads=false)",
             threads_build, threads_step, THREADS_CONFIG, {"server", "single"}, pe_flags=("-threads=false",)),
    Scenario("thread-families", "process-exporter's defaults (-threads): the per-thread-name families too",
             threads_build, threads_step, THREADS_CONFIG, {"server", "single"}),
    Scenario("thread-families-exit", "-threads on, a thread with context switches exits between the scrapes",
             threads_build, thread_exit_step, THREADS_CONFIG, {"server", "single"}),
    Scenario("thread-exit", "a thread with context switches exits between the scrapes (-threads=false)",
             threads_build, thread_exit_step, THREADS_CONFIG, {"server", "single"}, pe_flags=("-threads=false",)),
    Scenario("wchan", "processes and threads waiting in the kernel (wchan)", wchan_build, grow_all, WCHAN_CONFIG,
             {"waiter", "pool"}, pe_flags=("-threads=false",)),
    Scenario("exec", "a process execs another program (same pid, same start time)", exec_build, exec_step,
             EXEC_CONFIG, {"launcher", "other"}, facts={"execed_groups": {"launcher", "app"}}),
    Scenario("per-process-names", "{{.PID}} groups whose process exits; a literal group emptied",
             per_process_build, per_process_step, PER_PROCESS_CONFIG, {"pid-500", "pid-501", "pid-503", "jobs"}),
    Scenario("fd-unlimited", "unlimited open-files limits", fds_build, grow_all, FDS_CONFIG, {"unlimited", "mixed"}),
    Scenario("fd-unreadable", "processes whose fd/ directory cannot be listed", nofd_build, grow_all, FDS_CONFIG,
             {"nofd", "somefd"}),
    Scenario("unreadable-io", "a group whose only process has no io file", errors_build, grow_all,
             ERRORS_CONFIG, {"noio", "ok"}),
    Scenario("scrape-partial-errors", "namedprocess_scrape_* after reads that fail in part (no io file)",
             partial_build, grow_all, ERRORS_CONFIG, scope=r"^namedprocess_scrape_"),
    Scenario("scrape-procread-errors", "namedprocess_scrape_* after a process whose limits cannot be read",
             errors_build, grow_all, ERRORS_CONFIG, scope=r"^namedprocess_scrape_"),
    Scenario("unreadable-limits", "a process whose limits file cannot be read", errors_build, grow_all,
             LIMITS_CONFIG, {"ok"}),
    Scenario("smaps-default", "process-exporter's default -gather-smaps against procsnap's default",
             smaps_build, grow_all, SMAPS_CONFIG, {"big"}, smaps=True),
    Scenario("flag-gather-smaps", "-gather-smaps given to both: proportional memory from smaps_rollup",
             smaps_build, grow_all, SMAPS_CONFIG, {"big"}, smaps=True, pe_flags=("-gather-smaps",),
             strict_flags=True),
    Scenario("flags-unit-file", "the flags of a process-exporter unit file: -threads=false -gather-smaps=false",
             flags_build, grow_all, FLAGS_CONFIG, {"alpha", "svcd"}, pe_flags=("-threads=false",),
             strict_flags=True),
    Scenario("flag-procnames", "-procnames instead of a config", flags_build, grow_all, None, {"alpha", "svcd"},
             pe_flags=("-procnames", "alpha,svcd"), strict_flags=True),
    Scenario("flag-namemapping", "-procnames with -namemapping", flags_build, grow_all, None,
             {"svcd:web", "svcd:db"}, pe_flags=("-procnames", "svcd", "-namemapping", "svcd,--service=([a-z]+)"),
             strict_flags=True),
    Scenario("flag-recheck", "-recheck: a process whose command line changes to match", recheck_build,
             recheck_step, RECHECK_CONFIG, {"ready"}, pe_flags=("-recheck",), strict_flags=True),
    Scenario("username", "{{.Username}} of processes whose real and effective uids differ", username_build,
             grow_all, USERNAME_CONFIG, {"root:setuid-tool", "daemon:dropped", "daemon:plain"}),
    Scenario("starttime-ticks", "{{.StartTime}} of start times with hundredths (TZ=UTC0)",
             starttime_build([1234567, 2345601, 3456790]), grow_all, STARTTIME_CONFIG, None, env={"TZ": "UTC0"}),
    Scenario("starttime-zone", "{{.StartTime}} of whole-second start times, local zone +05:30",
             starttime_build([1234500, 2345600]), grow_all, STARTTIME_CONFIG, None, env={"TZ": "XST-5:30"}),
    Scenario("oldest-start-fraction", "start times with hundredths of a second", starttime_build([1234567, 2345601]),
             grow_all, "process_names:\n  - name: early\n    comm: [early]\n", {"early"}),
    Scenario("cgroups", "{{.Cgroups}} of cgroup v1, v2 and empty cgroup files", cgroups_build, grow_all,
             CGROUPS_CONFIG, {"v2 in [/user.slice/user-1000.slice/session-3.scope]", "none in []"}),
    Scenario("template-trim", "Go template trim markers {{- -}}", two_procs(b"trimmed", b"plain"), grow_all,
             TRIM_CONFIG, {"trimtrimmed!", "plain plain"}),
    Scenario("exe-edges", "exe: with a trailing slash; .ExeBase of an empty argv[0] and of /", exe_build,
             grow_all, EXE_CONFIG, {"slash:daemond", "noargv0:.", "root:/"}),
    regex_scenario("regex-posix-class", "--id=[[:digit:]]+", b"/usr/bin/target\0--id=42\0",
                   "RE2: a POSIX class", {"re:target", "control"}),
    regex_scenario("regex-unicode-class", r"--role=\pL+$", b"/usr/bin/target\0--role=web\0",
                   "RE2: a Unicode class", {"re:target", "control"}),
    regex_scenario("regex-end-of-text", r"--last\z", b"/usr/bin/target\0--last\0",
                   "RE2: end of text", {"re:target", "control"}),
    regex_scenario("regex-quoted", r"\Q--opt=a.b+c\E", b"/usr/bin/target\0--opt=a.b+c\0",
                   "RE2: quoted text", {"re:target", "control"}),
    regex_scenario("regex-ascii-digits", r"--id=\d+$", "/usr/bin/target\0--id=\u0663\u0663\0".encode(),
                   "RE2: \\d is ASCII only", {"control"}),
    Scenario("regex-long-argument", "(?P<app>\\w+)\\.jar on a 1 MB argument that has no .jar", jar_build,
             grow_all, JAR_CONFIG, {"jar:server"}),
    Scenario("config-merge-keys", "a config with a YAML merge key (<<: *base)", flags_build, grow_all,
             MERGE_CONFIG, {"merged"}),
    Scenario("config-bare-matches", "a name template of bare {{.Matches}}", flags_build, grow_all,
             MATCHES_CONFIG, {"map[:--service=db svc:db]", "map[:--service=web svc:web]"}),
    Scenario("config-empty", "an empty config file: nothing matches", flags_build, grow_all, "", set()),
]


# -- running ------------------------------------------------------------------------------


@dataclass
class Result:
    pe: Exposition
    ps: Exposition
    config: str
    texts: tuple  # the second scrapes' texts (process-exporter, procsnap)


_runs: dict = {}


def run_scenario(s: Scenario, workdir) -> Result:
    """Build the tree, start both, scrape, step, scrape again: cached per scenario, so each
    of a scenario's cases compares the same two scrapes."""
    if s.id not in _runs:
        try:
            _runs[s.id] = _run(s, workdir)
        except Exception as e:  # every case of the scenario fails the same way
            _runs[s.id] = e
    result = _runs[s.id]
    if isinstance(result, Exception):
        raise result
    return result


def _run(s: Scenario, workdir) -> Result:
    tree = Tree(os.path.join(workdir, "proc"))
    s.build(tree)
    tree.write()
    config = None
    if s.config is not None:
        config = os.path.join(workdir, "config.yaml")
        with open(config, "w") as f:
            f.write(s.config)
    with Pair(workdir, tree.root, config, s.pe_flags, smaps=s.smaps, strict_flags=s.strict_flags,
              env=s.env) as pair:
        pair.scrape()
        s.step(tree)
        tree.write()
        texts = pair.scrape()
    return Result(Exposition.parse(texts[0], s.scope), Exposition.parse(texts[1], s.scope), s.config or "", texts)


def cases():
    for s in SCENARIOS:
        if "*" in s.diverges:
            yield pytest.param(s, "*", id=s.id, marks=pytest.mark.xfail(strict=True, reason=s.diverges["*"]))
            continue
        yield pytest.param(s, None, id=s.id)
        for selector, reason in s.diverges.items():
            part = re.sub(r"\W+", "-", selector.replace(NG, "").replace("(?:_total)?$", "")).strip("-")
            yield pytest.param(s, selector, id=f"{s.id}:{part}", marks=pytest.mark.xfail(strict=True, reason=reason))


def _report(title, items, limit=40):
    items = list(items)
    shown = "\n".join(f"  {i}" for i in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}):\n{shown}{more}"


@pytest.mark.parametrize("scenario, part", list(cases()))
def test_dropin(scenario: Scenario, part, tmp_path_factory):
    """Everything in scope is identical but for ALLOWED; ``part`` None is the scenario
    without its known divergences, a pattern is one divergence, "*" the whole scenario."""
    workdir = _runs_dir(tmp_path_factory, scenario)
    r = run_scenario(scenario, workdir)
    if scenario.pe_groups is not None:
        assert r.pe.groups() >= scenario.pe_groups, (
            f"the tree does not give process-exporter the groups it should (a test bug): {sorted(r.pe.groups())}")
    divergent = [re.compile(p) for p in scenario.diverges if p != "*"]
    if part in (None, "*"):
        def select(name):
            return not any(p.search(name) for p in divergent)
    else:
        pattern = re.compile(part)

        def select(name):
            return bool(pattern.search(name))
    assert any(select(k.name) for k in r.pe.samples) or scenario.pe_groups == set(), \
        "process-exporter serves nothing to compare (a test bug)"
    ctx = Context(r.pe, r.ps, r.config, context_facts(scenario))
    left, _ = unexplained(differences(r.pe, r.ps, select), ALLOWED, ctx)
    meta = metadata_differences(r.pe, r.ps, select)
    report = ([_report("samples that differ", left)] if left else []) + \
        ([_report("families whose type or help differ", meta)] if meta else [])
    assert not left and not meta, "\n".join(report)


def context_facts(s: "Scenario") -> dict:
    """The scenario's facts, and whether procsnap was given -gather-smaps."""
    return {**s.facts, "procsnap_smaps": "-gather-smaps" in s.pe_flags}


_dirs: dict = {}


def _runs_dir(factory, s: Scenario):
    if s.id not in _dirs:
        _dirs[s.id] = str(factory.mktemp(re.sub(r"\W+", "-", s.id)))
    return _dirs[s.id]


def test_every_allowed_difference_is_seen(tmp_path_factory):
    """No stale entry: each allowed difference covers a difference of some scenario that runs
    (the allowed-but-not-yet entries excepted: procsnap does not do them today)."""
    used = {}
    for s in SCENARIOS:
        try:
            r = run_scenario(s, _runs_dir(tmp_path_factory, s))
        except AssertionError:
            continue
        _, u = unexplained(differences(r.pe, r.ps, lambda n: True), ALLOWED,
                           Context(r.pe, r.ps, r.config, context_facts(s)))
        for k in u:
            used[k] = used.get(k, 0) + u[k]
    unused = [a.key for a in ALLOWED if a.key not in used and a.key not in NOT_SEEN_YET]
    assert not unused, f"allowed differences no scenario shows: {unused}"


# allowed differences procsnap does not show yet (it does not do the thing allowed)
NOT_SEEN_YET = {"before any process matched"}


# -- README ---------------------------------------------------------------------------------


def migrating_section() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Migrating from process-exporter\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "README.md has no '## Migrating from process-exporter' section"
    return m.group(1)


@pytest.mark.parametrize("entry", [
    pytest.param(a, id=a.key, marks=[pytest.mark.xfail(strict=True, reason=f"README does not name {a.key!r} yet")]
                 if a.key in README_PENDING else [])
    for a in ALLOWED
])
def test_readme_names_allowed_difference(entry: Allowed):
    """README's migration section and ALLOWED say the same things."""
    section = " ".join(migrating_section().split())
    assert entry.key in section, f"README.md's 'Migrating from process-exporter' lacks {entry.key!r}: {entry.what}"


# -- live: the real /proc, processes this test starts ----------------------------------------

SLEEPER = "import sys, time\nprint('ready', flush=True)\nsys.stdin.read()\n"

# A process with N threads: each thread, and the main one, blocks on an event; each line on
# stdin makes every thread switch context a few hundred times, then block again.
THREADED = r"""
import sys, threading
n, rounds = int(sys.argv[1]), 200
go = [threading.Event() for _ in range(n - 1)]
done = [threading.Event() for _ in range(n - 1)]
def work(i):
    while True:
        go[i].wait(); go[i].clear()
        e = threading.Event()
        for _ in range(rounds):
            e.wait(0.0001)
        done[i].set()
for i in range(n - 1):
    threading.Thread(target=work, args=(i,), daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    for i in range(n - 1):
        go[i].set()
    for i in range(n - 1):
        done[i].wait(); done[i].clear()
    print("done", flush=True)
"""


def _task_states(pids) -> dict:
    """{(pid, tid): (state, voluntary, nonvoluntary switches)} of these processes' threads."""
    out = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
                    fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            except OSError:
                continue
            out[pid, tid] = tuple(fields[k].split()[0] for k in
                                  (b"State", b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches"))
    return out


def _all_tasks_asleep(pids, timeout=20.0) -> bool:
    """Wait (bounded) until every thread of these processes sleeps and has not switched
    for 50 ms, so that nothing the exporters read moves while they read it."""
    deadline = time.monotonic() + timeout
    before = None
    while time.monotonic() < deadline:
        now = _task_states(pids)
        if now and now == before and all(state == b"S" for state, _, _ in now.values()):
            return True
        before = now
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Both exporters on the real /proc, on a config that matches only this test's processes
    (a unique marker at the end of their command lines). Returns the two scrapes of each."""
    workdir = tmp_path_factory.mktemp("live")
    tag = f"dropin-{uuid.uuid4().hex[:12]}"
    long_arg = ":".join(f"/opt/app/lib/dep-{i:05d}.jar" for i in range(3500))  # ~80 KiB, one argument
    procs = []

    def spawn(*argv):
        p = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(p)
        return p

    config = os.path.join(workdir, "config.yaml")
    with open(config, "w") as f:
        f.write("process_names:\n"
                "  - name: live-single\n"
                f"    cmdline: ['{tag}-single$']\n"
                "  - name: live-threads\n"
                f"    cmdline: ['{tag}-threads$']\n"
                '  - name: "live-long:{{.Matches.main}}"\n'
                f"    cmdline: [' -cp \\S+ (?P<main>[a-z][\\w.]*) {tag}-long$']\n")
    try:
        for _ in range(2):  # spawn() keeps each in procs
            spawn("-c", SLEEPER, f"{tag}-single")
        threaded = spawn("-c", THREADED, "5", f"{tag}-threads")
        spawn("-c", SLEEPER, "-cp", long_arg, "com.example.Main", f"{tag}-long")
        for p in procs:
            assert p.stdout.readline() == b"ready\n"
        pids = [p.pid for p in procs]
        assert _all_tasks_asleep(pids), "the test's processes did not settle"
        with Pair(workdir, "/proc", config) as pair:
            first = pair.scrape()
            threaded.stdin.write(b"go\n")
            threaded.stdin.flush()
            assert threaded.stdout.readline() == b"done\n"
            assert _all_tasks_asleep(pids), "the test's processes did not settle"
            second = pair.scrape()
        yield {
            "groups": {"live-single", "live-threads", "live-long:com.example.Main"},
            "first": [Exposition.parse(t, rf"^{NG}") for t in first],
            "second": [Exposition.parse(t, rf"^{NG}") for t in second],
        }
    finally:
        stop_processes(procs)
        for p in procs:
            p.stdin.close()


def _values(e: Exposition, fam: str, groups) -> dict:
    return {(k.label["groupname"], tuple(kv for kv in k.labels if kv[0] != "groupname")): v
            for k, v in e.samples.items() if re.fullmatch(family(fam), k.name) and k.label.get("groupname") in groups}


LIVE_CHECKS = [
    pytest.param("num_procs", id="num_procs"),
    pytest.param("num_threads", id="num_threads"),
    pytest.param("states", id="states"),
    pytest.param("context_switches", id="context_switches"),
    pytest.param("monotonic", id="counters-monotonic"),
]


@pytest.mark.parametrize("check", LIVE_CHECKS)
def test_live(live, check):
    """Stable values are equal; counters never go down in either exporter."""
    groups = live["groups"]
    (pe1, ps1), (pe2, ps2) = live["first"], live["second"]
    assert pe2.groups() == groups, f"process-exporter's groups: {sorted(pe2.groups())}"
    if check == "monotonic":
        counters = ("cpu_seconds", "read_bytes", "write_bytes", "major_page_faults", "minor_page_faults",
                    "context_switches")
        for name, (a, b) in (("process-exporter", (pe1, pe2)), ("procsnap", (ps1, ps2))):
            for fam in counters:
                before, after = _values(a, fam, groups), _values(b, fam, groups)
                assert set(before) <= set(after), (name, fam)
                down = {k: (before[k], after[k]) for k in before if after[k] < before[k]}
                assert not down, f"{name}: {fam} went down: {down}"
        # both serve the same counter samples (the io ones of one's own processes are readable)
        for fam in counters:
            assert set(_values(pe2, fam, groups)) == set(_values(ps2, fam, groups)), fam
        return
    pe, ps = _values(pe2, check, groups), _values(ps2, check, groups)
    assert pe, f"process-exporter serves no {check}"
    differ = [f"{group} {dict(labels)}: process-exporter {pe.get((group, labels))}, "
              f"procsnap {ps.get((group, labels))}"
              for group, labels in sorted(set(pe) | set(ps)) if pe.get((group, labels)) != ps.get((group, labels))]
    assert not differ, f"{check} differs:\n  " + "\n  ".join(differ)
