"""The ``procsnap`` command (also ``python -m exporter``).

Flags follow process-exporter's names (``--web.listen-address``, ``--config.path`` ...);
its single-dash spellings (``-config.path x``, ``-procfs /proc``, ``-children=false``)
are accepted too, so a process-exporter command line keeps working. Every setting flag
has an environment twin ``PROCSNAP_<FLAG>`` (upper case, dots and dashes -> ``_``); a
flag on the command line wins over its twin.

Exit status: 0 done, 1 runtime failure (cannot read procfs, cannot listen), 2 usage or
config error (one line on stderr, prefixed ``procsnap: ``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import resource
import signal
import sys
import threading
import time
from typing import Callable, Optional, Sequence

from exporter import __version__
from exporter.redact import secrets_of

log = logging.getLogger("procsnap")

ENV_PREFIX = "PROCSNAP_"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


def env_name(flag: str) -> str:
    """"web.listen-address" -> "PROCSNAP_WEB_LISTEN_ADDRESS"."""
    return ENV_PREFIX + flag.upper().replace(".", "_").replace("-", "_")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use true or false)")


def seconds_between(low: float, high: float, what: str) -> Callable[[str], float]:
    """A parser of a number of seconds in [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} out of range: {text!r} ({low:g} .. {high:g} seconds)")
        return value

    return parse


parse_delay = seconds_between(0, 86400, "delay")
parse_interval = seconds_between(0.05, 86400, "interval")


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
               "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """"512MiB", "1GiB", "2G", "4096" -> bytes (units are powers of 1024)."""
    value = text.strip()
    digits = len(value) - len(value.lstrip("0123456789"))
    unit = _SIZE_UNITS.get(value[digits:].strip().lower())
    if digits == 0 or unit is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (a number of bytes, or with KiB, MiB, GiB, TiB)")
    return int(value[:digits]) * unit


def parse_address(text: str) -> str:
    """HOST:PORT, or "" (no HTTP server: OTLP push only)."""
    from exporter.server import parse_listen_address

    if text == "":
        return text
    try:
        parse_listen_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parse_limit(text: str) -> int:
    """A count where 0 means no limit (--web.max-requests, --max-groups)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative: {text!r} (0 means no limit)")
    return value


def parse_path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"must start with '/': {text!r}")
    return text


def parse_keep_open(text: str) -> str:
    from exporter.reader import parse_keep_open as parse

    try:
        return parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# Go's time.ParseDuration units, in nanoseconds
_GO_DURATION_UNITS = {
    "ns": 1, "us": 10**3, "\u00b5s": 10**3, "\u03bcs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
}
_GO_DIGITS = re.compile(r"[0-9]*")
_GO_UNIT = re.compile(r"[^0-9.]*")


def _go_fraction(digits: str) -> tuple:
    """Go's leadingFraction: (value, scale) of the digits after the point, digits past
    int64 precision ignored."""
    value, scale = 0, 1.0
    for c in digits:
        if value > (2**63 - 1) // 10:
            break
        following = value * 10 + int(c)
        if following > 2**63:
            break
        value, scale = following, scale * 10
    return value, scale


def go_duration_ns(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds: "300ms", "1.5h", "2h45m", "-1m30s", "0";
    units ns, us (µs), ms, s, m, h; a number without a unit only for 0. ValueError (with
    Go's reason) if it is not one."""
    s = text
    negative = s[:1] == "-"
    if s[:1] in ("-", "+"):
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while s:
        whole = _GO_DIGITS.match(s).group(0)
        s = s[len(whole):]
        fraction = None
        if s[:1] == ".":
            fraction = _GO_DIGITS.match(s, 1).group(0)
            s = s[1 + len(fraction):]
        if not whole and not fraction:  # "", ".", "h": no digits before the unit
            raise ValueError(f"invalid duration {text!r}")
        unit = _GO_UNIT.match(s).group(0)
        s = s[len(unit):]
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}")
        if unit not in _GO_DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r} (use ns, us, ms, s, m, h)")
        scale = _GO_DURATION_UNITS[unit]
        value = int(whole or "0")
        if value > 2**63 // scale:
            raise ValueError(f"invalid duration {text!r} (out of range)")
        value *= scale
        if fraction:  # through a float64, as Go does: nanosecond-exact up to hours
            digits, digits_scale = _go_fraction(fraction)
            value += int(float(digits) * (float(scale) / digits_scale))
        total += value
        if value > 2**63 or total > 2**63:
            raise ValueError(f"invalid duration {text!r} (out of range)")
    if total > 2**63 - 1 + negative:
        raise ValueError(f"invalid duration {text!r} (out of range)")
    return -total if negative else total


def parse_time_limit(text: str) -> Optional[float]:
    """A Go duration as seconds; 0 is no limit (None), as in process-exporter."""
    try:
        nanos = go_duration_ns(text.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if nanos < 0:
        raise argparse.ArgumentTypeError(f"negative duration {text!r}")
    return nanos / 1e9 if nanos else None


def parse_procnames(text: str) -> tuple:
    """"a,b,,c" -> ("a", "b", "c"): process-exporter skips empty names."""
    return tuple(dict.fromkeys(name for name in text.split(",") if name))


def parse_namemapping(text: str) -> tuple:
    """"NAME1,REGEX1,NAME2,REGEX2" -> ((NAME1, REGEX1), ...), checked as process-exporter
    does (an even number of non-empty tokens; the regexes compile). A name given twice
    keeps its last regex."""
    if text == "":
        return ()
    tokens = text.split(",")
    if len(tokens) % 2:
        raise argparse.ArgumentTypeError(f"odd number of tokens in {text!r} (NAME,REGEX pairs)")
    for i, token in enumerate(tokens):
        if token == "":
            raise argparse.ArgumentTypeError(f"token {i} is empty in {text!r}")
    mapping = {}
    for name, regex in zip(tokens[::2], tokens[1::2]):
        mapping.pop(name, None)
        mapping[name] = regex
    pairs = tuple(mapping.items())
    for name, regex in pairs:
        _name_mapping_matcher(name, regex)  # raises ArgumentTypeError on a bad regex
    return pairs


def parse_choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices)})")
        return value

    return parse


class _Flag:
    """A setting: its flag name, type and default, documented with its env twin."""

    def __init__(self, name, default, parse, help_text, metavar=None, boolean=False, aliases=(), shown=None):
        self.name = name
        self.shown = shown  # the default as --help shows it, when not str(default)
        self.dest = name.replace(".", "_").replace("-", "_")
        self.default = default
        self.parse = parse
        self.help = help_text
        self.metavar = metavar
        self.boolean = boolean
        self.aliases = aliases
        self.env = env_name(name)


FLAGS = (
    _Flag(
        "web.listen-address",
        ":9256",
        parse_address,
        "Address to serve HTTP on: HOST:PORT, :PORT for all interfaces (IPv4 and IPv6), [V6ADDR]:PORT; "
        "'' for none (OTLP push only).",
        metavar="ADDR",
    ),
    _Flag(
        "web.telemetry-path",
        "/metrics",
        parse_path,
        "URL path that serves the metrics. '/' shows a page linking to it, '/healthz' answers 'ok'.",
        metavar="PATH",
    ),
    _Flag(
        "web.config.file",
        None,
        str,
        "exporter-toolkit's web config (TLS, client certificates, basic auth with bcrypt hashes, response "
        "headers, rate limit), as node_exporter and process-exporter read it; re-read when it changes.",
        metavar="FILE",
    ),
    _Flag(
        "web.max-requests",
        40,
        parse_limit,
        "Parallel scrape requests served at most; more are answered 503. 0 means no limit.",
        metavar="N",
    ),
    _Flag(
        "web.enable-lifecycle",
        False,
        parse_bool,
        "Serve POST /-/reload (re-read the config files, as SIGHUP), as Prometheus' flag does; off: 403.",
        boolean=True,
    ),
    _Flag(
        "config.path",
        None,
        str,
        "process-exporter's YAML config (process_names: matchers and name templates), read unchanged. "
        "Without it (and without --procnames/--namemapping) every user-space process is grouped "
        "by its comm. Re-read on SIGHUP.",
        metavar="FILE",
    ),
    _Flag(
        "procnames",
        (),
        parse_procnames,
        "Instead of a config file, as process-exporter: group only processes whose comm (the "
        "15-byte name in /proc/PID/stat) is one of these, one group per comm. Not with --config.path.",
        metavar="NAME,...",
    ),
    _Flag(
        "namemapping",
        (),
        parse_namemapping,
        "Instead of a config file, as process-exporter: a process whose comm is NAME is grouped as "
        "NAME:CAPTURE, CAPTURE being the first non-empty capture of REGEX searched in its command line "
        "(argv joined by spaces); with no capture it is not grouped by itself. Not with --config.path.",
        metavar="NAME,REGEX,...",
    ),
    _Flag(
        "path.procfs",
        "/proc",
        str,
        "procfs mount to read processes from (a fake tree works, for tests).",
        metavar="DIR",
        aliases=("--procfs",),
    ),
    _Flag(
        "path.pod-logs",
        "/var/log/pods",
        str,
        "The kubelet's pod log directory (<namespace>_<pod>_<uid>/), mounted read-only: names the pods of "
        "processes for the {{.Namespace}}/{{.Pod}} template fields and the config's extra_labels.",
        metavar="DIR",
    ),
    _Flag(
        "path.container-logs",
        "/var/log/containers",
        str,
        "The kubelet's container log links (<pod>_<namespace>_<container>-<id>.log), mounted read-only: "
        "names the containers for {{.Container}} and extra_labels.",
        metavar="DIR",
    ),
    _Flag(
        "procfs.keep-open",
        "auto",
        parse_keep_open,
        "Keep /proc files open between scrapes for this many processes: stat and schedstat of a "
        "process that sleeps (its status, io and wchan are given from memory while it does not run), "
        "status, io and wchan too of one seen running; and for as many threads that run between scrapes "
        "their task/TID files. Each kept file pins about 4.4 KiB of kernel memory. 'auto' (the first 2000 "
        "processes: about 17 MiB while they sleep; 3000 running threads), 'all' (fastest), 'off', or a "
        "number. Capped by the open-files limit.",
        metavar="{auto,all,off,N}",
    ),
    _Flag(
        "children",
        True,
        parse_bool,
        "Count the descendants of a grouped process into its group unless they match a group of their own; "
        "--no-children or --children=false turns it off.",
        boolean=True,
    ),
    _Flag(
        "redact-cmdline",
        True,
        parse_bool,
        "Redact secrets of command lines (--password=x, --password x, -p x, token=, secret=, *_KEY=, "
        "user:pass@ in URLs) in what name templates take from them ({{.Matches}}, {{.ExeFull}}, "
        "{{.ExeBase}}, --namemapping); --no-redact-cmdline shows them as they are.",
        boolean=True,
    ),
    _Flag(
        "max-groups",
        10000,
        parse_limit,
        "At most this many groups: the processes of any further one are counted in a group named "
        "'other' (procsnap_groups_dropped_total counts them; a warning is logged once per config). "
        "0 means no limit.",
        metavar="N",
    ),
    _Flag(
        "count-reaped-children",
        True,
        parse_bool,
        "Count the CPU and page faults of children that started and exited between two scrapes, "
        "credited to the group of the process that reaped them (from its cutime/cstime/cminflt/cmajflt; "
        "process-exporter loses them). --no-count-reaped-children counts exactly as process-exporter does.",
        boolean=True,
    ),
    _Flag(
        "remove-empty-groups",
        False,
        parse_bool,
        "Forget a group once it has no processes left, instead of reporting it with num_procs 0.",
        boolean=True,
    ),
    _Flag(
        "threads",
        True,
        parse_bool,
        "Report per-thread-name metrics as well (namedprocess_namegroup_thread_*), as process-exporter "
        "does by default; --threads=false turns them off.",
        boolean=True,
    ),
    _Flag(
        "wchan",
        True,
        parse_bool,
        "Report namedprocess_namegroup_threads_wchan (how many processes and threads of a group wait "
        "at each kernel function), as process-exporter does. Reading /proc/PID/wchan costs about 6 us a "
        "process, a sixth of a scrape; --wchan=false skips it.",
        boolean=True,
    ),
    _Flag(
        "gather-smaps",
        False,
        parse_bool,
        "Report proportional memory (memory_bytes memtype proportionalResident and proportionalSwapped, "
        "from /proc/PID/smaps_rollup). Off by default, unlike process-exporter: the kernel walks every "
        "page table of a process to answer (about 6 ms per GiB resident), holding its memory map lock.",
        boolean=True,
    ),
    _Flag(
        "gather-smaps.max-rss",
        1 << 30,
        parse_size,
        "With --gather-smaps: skip processes whose resident memory is larger than this (their "
        "proportional memory is left out of their group's sum). 0 means no limit.",
        metavar="SIZE",
        shown="1GiB",
    ),
    _Flag(
        "recheck",
        False,
        parse_bool,
        "Match every process against the config again on each scrape, not only when it starts "
        "or execs (process-exporter's -recheck).",
        boolean=True,
    ),
    _Flag(
        "recheck-with-time-limit",
        None,
        parse_time_limit,
        "Recheck a process only this long after its start (a Go duration: 30s, 5m, 1h30m); "
        "implies --recheck. 0 means no limit.",
        metavar="DURATION",
    ),
    _Flag(
        "otlp.endpoint",
        None,
        str,
        "Push the groups over OTLP to this endpoint (an OpenTelemetry Collector: http://HOST:4318 for "
        "http/protobuf, http://HOST:4317 for grpc), as OTEL_EXPORTER_OTLP_ENDPOINT; that variable or "
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT turns the push on too. Headers, timeout, compression and "
        "certificates come from the standard OTEL_EXPORTER_OTLP_* variables. /metrics keeps serving.",
        metavar="URL",
    ),
    _Flag(
        "otlp.protocol",
        None,
        parse_choice(("http/protobuf", "grpc")),
        "OTLP transport: http/protobuf or grpc (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).",
        metavar="{http/protobuf,grpc}",
    ),
    _Flag(
        "otlp.interval",
        None,
        parse_interval,
        "Seconds between OTLP pushes, one snapshot each (default: OTEL_METRIC_EXPORT_INTERVAL, else 30).",
        metavar="SECONDS",
    ),
    _Flag(
        "once",
        False,
        parse_bool,
        "Print one exposition (Prometheus text format) to stdout and exit instead of serving HTTP. "
        "Counters of processes already running at the first snapshot start at 0 (as in "
        "process-exporter): use --once.delay to see them move.",
        boolean=True,
    ),
    _Flag(
        "once.delay",
        0.0,
        parse_delay,
        "With --once (implied when > 0): take a first snapshot, wait this long, and print the second "
        "scrape, so counters have moved by that interval's worth. 0 prints the first snapshot.",
        metavar="SECONDS",
    ),
    _Flag(
        "backend",
        "native",
        parse_choice(("native", "python", "bpf", "auto")),
        "Snapshot reader: 'native' (the C extension) or 'python' (pure Python, same results, slower). "
        "native falls back to python with a warning when the extension is not built. 'bpf' reads the same "
        "values with a BPF task iterator (needs CAP_BPF + CAP_PERFMON or CAP_SYS_ADMIN, Linux >= 5.8 with "
        "BTF, procsnap's own pid namespace); 'auto' is bpf where it loads. Where bpf cannot load, both fall "
        "back to native and say why once at start.",
        metavar="{native,python,bpf,auto}",
    ),
    _Flag(
        "log.level",
        "info",
        parse_choice(tuple(LOG_LEVELS)),
        "Least severe log messages written to stderr: debug, info, warn or error.",
        metavar="{debug,info,warn,error}",
    ),
    _Flag(
        "debug",
        False,
        parse_bool,
        "Same as --log.level debug (process-exporter's -debug).",
        boolean=True,
    ),
)

_LONG_NAMES = {f.name for f in FLAGS} | {"no-children", "no-count-reaped-children", "no-redact-cmdline", "version",
                                         "man", "help", "procfs"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, "procsnap: ...", exit 2
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="procsnap",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "procsnap: a Linux process exporter for Prometheus, a drop-in for process-exporter\n"
            "(same config file, same namedprocess_namegroup_* metrics, same port 9256).\n"
            "Each scrape takes one snapshot of every process; concurrent scrapes share it."
        ),
        epilog=(
            "Every flag above except --version, --man and --help can also be set in the environment:\n"
            "PROCSNAP_ + the flag name in upper case with '.' and '-' as '_', e.g.\n"
            "PROCSNAP_WEB_LISTEN_ADDRESS=127.0.0.1:9256, PROCSNAP_CHILDREN=false. A flag given on the\n"
            "command line wins over its variable. process-exporter's single-dash spellings\n"
            "(-config.path FILE, -procfs DIR, -children=false, -threads=false, -debug) are accepted.\n\n"
            "Signals: SIGHUP re-reads --config.path and --web.config.file (a bad file is logged and the\n"
            "old config kept); SIGTERM/SIGINT stop the server once the scrapes in flight are answered.\n"
            "Exit status: 0 ok, 1 runtime failure (procfs unreadable, address in use), 2 usage or config error."
        ),
    )
    for flag in FLAGS:
        help_text = f"{flag.help}{_default_text(flag)} [env {flag.env}]"
        if flag.boolean:
            parser.add_argument(
                f"--{flag.name}",
                *flag.aliases,
                dest=flag.dest,
                nargs="?",
                const=True,
                type=flag.parse,
                metavar="BOOL",
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{flag.name}", *flag.aliases, dest=flag.dest, type=flag.parse, metavar=flag.metavar, help=help_text
            )
    parser.add_argument("--no-children", dest="children", action="store_false", default=None, help="Same as --children=false.")
    parser.add_argument("--no-count-reaped-children", dest="count_reaped_children", action="store_false", default=None,
                        help="Same as --count-reaped-children=false.")
    parser.add_argument("--no-redact-cmdline", dest="redact_cmdline", action="store_false", default=None,
                        help="Same as --redact-cmdline=false.")
    parser.add_argument("--version", action="store_true", help="Print the version and exit.")
    parser.add_argument("--man", action="store_true", help="Print a short manual (the config format, every flag) and exit.")
    return parser


_MANUAL = """\
procsnap - a Linux process exporter for Prometheus, a drop-in for process-exporter

Usage:
  procsnap [flags] --config.path FILE.yaml
  procsnap [flags] --procnames NAME1,...,NAMEN [--namemapping NAME1,REGEX1,...]
  procsnap [flags]                     (every user-space process, one group per comm)

procsnap reads every process under /proc, puts each into a named group and serves the
groups' totals as process-exporter's namedprocess_namegroup_* metrics (CPU, I/O, memory,
page faults, context switches, open files, states, threads) on :9256/metrics. Each
scrape takes one snapshot of every process; concurrent scrapes share it. Flags may be
spelled with one dash as process-exporter's are (-config.path FILE, -threads=false).

Config file (process-exporter's format, read unchanged):

  process_names:
    - comm: [bash, zsh]                   # OR: the comm (15 bytes, /proc/PID/stat) is one of these
    - name: "{{.ExeBase}}:{{.Matches.cfg}}"
      exe: [nginx, /usr/local/bin/envoy]  # OR: basename of argv[0], or all of argv[0] for a path
      cmdline: ['-c (?P<cfg>\\S+)']        # AND: regexes searched in argv joined by spaces
    - name: "{{.Comm}}"
      cmdline: ['.+']                     # everything else with a command line

  All rules of a matcher must hold; the first matcher that matches names the process'
  group (default name {{.ExeBase}}); unmatched processes are not exported, except that
  with --children (the default) a process joins the group of its nearest grouped
  ancestor. Names may use {{.Comm}}, {{.ExeBase}}, {{.ExeFull}}, {{.Username}},
  {{.PID}}, {{.StartTime}}, {{.Cgroups}} and {{.Matches.NAME}} (a named capture).
  A bad config stops the start (exit 2); SIGHUP re-reads it.

Without a config file (process-exporter's -procnames/-namemapping):

  --procnames bash,sshd groups every process whose comm is bash or sshd, one group per
  comm; other processes are ignored (or join a grouped ancestor, with --children).
  --namemapping "python3,([^/ ]+)\\.py,java,-jar\\s+([^/ ]+)\\.jar" names a python3
  process running app.py "python3:app" and a java -jar x.jar one "java:x": the first
  non-empty capture of the regex on the command line; a python3 process the regex does
  not capture from is not grouped by itself. Both flags may be given together.

Flags (each has an environment twin; a flag on the command line wins over it):

"""


def manual() -> str:
    """--man: what procsnap is, the config format, every flag."""
    import textwrap

    lines = [_MANUAL]
    for flag in FLAGS:
        spelling = f"--{flag.name}" + ("[=BOOL]" if flag.boolean else f" {flag.metavar or 'VALUE'}")
        lines.append(f"  {spelling}\n")
        body = f"{flag.help.replace('%%', '%')}{_default_text(flag)} [env {flag.env}]"
        lines.append(textwrap.fill(body, width=88, initial_indent="      ", subsequent_indent="      ") + "\n")
    lines.append(
        "  --no-children\n      Same as --children=false.\n"
        "  --version, --man, --help\n      Print the version, this manual, or the usage, and exit.\n"
        "\nSignals: SIGHUP re-reads --config.path and --web.config.file; SIGTERM/SIGINT stop the server\n"
        "once the scrapes in flight are answered.\n"
        "Exit status: 0 ok, 1 runtime failure (procfs unreadable, address in use), 2 usage or config error.\n"
    )
    return "".join(lines)


def _default_text(flag) -> str:
    return "" if flag.default in (None, ()) else f" (default: {flag.shown or _show(flag.default)})"


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_style(argv: Sequence[str]) -> list:
    """process-exporter (Go flag) spells long flags with one dash: -config.path x."""
    out = []
    for i, token in enumerate(argv):
        if token == "--":
            out.extend(argv[i:])
            break
        if token.startswith("-") and not token.startswith("--") and len(token) > 2:
            if token[1:].split("=", 1)[0] in _LONG_NAMES:
                token = "-" + token
        out.append(token)
    return out


def parse_args(argv: Optional[Sequence[str]] = None, environ=None) -> argparse.Namespace:
    """Flags, then their env twins, then defaults. Exits 2 on a bad value."""
    parser = build_parser()
    environ = os.environ if environ is None else environ
    args = parser.parse_args(_go_style(list(sys.argv[1:] if argv is None else argv)))
    for flag in FLAGS:
        if getattr(args, flag.dest) is not None:
            continue
        text = environ.get(flag.env)
        if text is not None and text != "":
            try:
                value = flag.parse(text)
            except argparse.ArgumentTypeError as e:
                parser.error(f"{flag.env}: {e}")
        else:
            value = flag.default
        setattr(args, flag.dest, value)
    if args.once_delay > 0:
        args.once = True
    if args.recheck_with_time_limit is not None:  # as process-exporter: a limit implies -recheck
        args.recheck = True
    if args.debug:
        args.log_level = "debug"
    if args.config_path is not None and (args.procnames or args.namemapping):
        parser.error("--config.path cannot be used with --procnames or --namemapping")
    return args


# -- running ---------------------------------------------------------------------------


def raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: the native reader keeps files open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            return
    if soft != resource.RLIM_INFINITY and soft >= target:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.debug("raised RLIMIT_NOFILE soft limit from %s to %s", soft, target)
    except (OSError, ValueError) as e:
        log.debug("could not raise RLIMIT_NOFILE: %s", e)


def _die(message: str, status: int) -> int:
    print(f"procsnap: {message}", file=sys.stderr)
    return status


def _load_config(path, procnames=(), namemapping=()):
    """Config or raises ConfigError / OSError: the file, else the one --procnames and
    --namemapping make, else the default config."""
    from exporter.config import load_config

    if path is None and (procnames or namemapping):
        return names_config(procnames, namemapping)
    return load_config(path)


# -- --procnames / --namemapping: process-exporter's config-less selection -------------------

NAME_MAPPING_CAPTURE = "namemapping"  # the .Matches key a name mapping's capture is passed as


class _NameMapping:
    """process-exporter's -namemapping pair NAME,REGEX: a process whose comm is NAME and
    whose command line (argv joined by spaces) REGEX matches with a non-empty capture is
    named "NAME:" + the first non-empty capture (numbered, named or not); other processes
    with that comm match nothing. The regex is compiled by the config module (the same
    engine and dialect as a config file's cmdline regexes); anything else a matcher has
    comes from that parsed matcher."""

    def __init__(self, inner, template):
        self.inner = inner
        self.template = template
        self.name = next(iter(inner.comm))
        self.regex = inner.cmdline[0]

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def match(self, process, redact: bool = True):
        if process.comm != self.name:
            return None
        joined = " ".join(process.cmdline or ())
        groups = self.regex.submatch(joined, secrets_of(joined) if redact else None)
        for value in groups[1:] if groups else ():
            if value:
                return {NAME_MAPPING_CAPTURE: value}
        return None

    def __repr__(self):
        return f"_NameMapping({self.name!r}, {self.regex.pattern!r})"


def _name_mapping_matcher(name: str, regex: str) -> _NameMapping:
    """The matcher of one -namemapping pair; ArgumentTypeError for a bad regex."""
    import yaml

    from exporter.config import ConfigError, compile_template, parse_config

    content = yaml.safe_dump({"process_names": [{"name": "{{.Comm}}", "comm": [name], "cmdline": [regex]}]})
    try:
        inner = parse_config(content, "--namemapping").matchers[0]
    except ConfigError as e:
        detail = str(e).split(": bad cmdline regex ", 1)[-1]
        raise argparse.ArgumentTypeError(f"bad regex for {name!r}: {detail}") from None
    return _NameMapping(inner, compile_template("{{.Comm}}:{{.Matches.%s}}" % NAME_MAPPING_CAPTURE))


def names_config(procnames: Sequence[str], namemapping: Sequence[tuple]):
    """The Config process-exporter builds from -procnames and -namemapping (no -config.path):
    a process whose comm is a mapped NAME is named by its mapping (or nothing); one whose
    comm is in procnames is in the group of that comm; every other process matches
    nothing (with --children it joins its nearest grouped ancestor)."""
    import yaml

    from exporter.config import Config, parse_config

    mapped = dict(namemapping)
    matchers = [_name_mapping_matcher(name, regex) for name, regex in mapped.items()]
    plain = [name for name in procnames if name not in mapped]
    if plain:
        content = yaml.safe_dump({"process_names": [{"name": "{{.Comm}}", "comm": plain}]})
        matchers.extend(parse_config(content, "--procnames").matchers)
    return Config(matchers, "--procnames/--namemapping")


def _config_error_line(e: BaseException, path) -> str:
    from exporter.config import ConfigError

    if isinstance(e, ConfigError):
        return str(e).splitlines()[0] if str(e) else "bad config"
    if isinstance(e, OSError):
        return f"cannot read config {path}: {e.strerror or e}"
    return f"config {path}: {e}"


def _choose_backend(requested: str) -> str:
    from exporter.reader import native_available

    if requested == "native" and not native_available():
        log.warning("the native reader (exporter._reader) is not built; using the python backend")
        return "python"
    return requested


def _log_backend(reader) -> None:
    """Once at start, for --backend bpf/auto: which backend runs, and why not bpf."""
    if reader.requested not in ("bpf", "auto"):
        return
    if reader.backend == "bpf":
        log.info("backend bpf: the BPF task iterator is loaded (static facts from %s)", reader.procfs)
    else:
        (log.warning if reader.requested == "bpf" else log.info)(
            "backend %s: bpf not loaded: %s", reader.backend, reader.fallback_reason)


# With the default config (one group per comm), a group that stays empty this long is
# dropped: short-lived uniquely named processes must not pile up series for good.
DEFAULT_CONFIG_EMPTY_GRACE = 300.0


def _default_config(args) -> bool:
    return args.config_path is None and not args.procnames and not args.namemapping


def make_exporter(args, config):
    from exporter.app import Exporter
    from exporter.grouper import Grouper
    from exporter.hostfacts import HostFacts
    from exporter.kubernetes import PodDirectory
    from exporter.reader import UNLIMITED, Reader
    from exporter.tracker import Tracker

    facts = HostFacts(procfs=args.path_procfs)
    smaps_max_rss = (args.gather_smaps_max_rss or UNLIMITED) if args.gather_smaps else None
    reader = Reader(args.path_procfs, _choose_backend(args.backend), facts.page_size, args.procfs_keep_open,
                    args.wchan, smaps_max_rss, machine_cpu=args.count_reaped_children)
    _log_backend(reader)
    grouper = Grouper(
        config,
        facts.clock_ticks,
        facts.boot_time,
        children=args.children,
        remove_empty_groups=args.remove_empty_groups,
        empty_grace_seconds=DEFAULT_CONFIG_EMPTY_GRACE if _default_config(args) else None,
        recheck=args.recheck,
        recheck_seconds=args.recheck_with_time_limit or None,
        pods=PodDirectory(args.path_pod_logs, args.path_container_logs),
        count_reaped=args.count_reaped_children,
        redact=args.redact_cmdline,
        max_groups=args.max_groups or None,
    )
    return Exporter(Tracker(reader, facts), grouper, threads=args.threads, smaps=args.gather_smaps)


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before serving (or in --once): one line, no traceback
        return _die("interrupted; nothing printed", 130)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.version:
        print(f"procsnap version {__version__} (python {sys.version.split()[0]})")
        return 0
    if args.man:
        sys.stdout.write(manual())
        sys.stdout.flush()
        return 0
    logging.basicConfig(
        level=LOG_LEVELS[args.log_level], format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    raise_nofile_limit()

    from exporter.config import ConfigError

    try:
        config = _load_config(args.config_path, args.procnames, args.namemapping)
    except (ConfigError, OSError) as e:
        return _die(_config_error_line(e, args.config_path), 2)
    if not _default_config(args) and args.config_path is None:
        log.info("groups from --procnames %s --namemapping %s", ",".join(args.procnames) or "(none)",
                 ",".join(f"{n},{r}" for n, r in args.namemapping) or "(none)")

    push = None
    if not args.once and _push_wanted(args):
        from exporter import otlp

        try:
            push = otlp.settings(args.otlp_endpoint, args.otlp_protocol, args.otlp_interval)
        except ValueError as e:
            return _die(str(e), 2)
    if not args.once and not args.web_listen_address and push is None:
        return _die("--web.listen-address is empty and no OTLP endpoint is set (--otlp.endpoint): "
                    "nothing would see the metrics", 2)

    try:
        exporter = make_exporter(args, config)
        first = exporter.scrape()
    except (OSError, ValueError) as e:
        return _die(_procfs_problem(e, args.path_procfs), 1)
    log.debug("first snapshot: %d processes, %d groups", first.processes, len(first.groups))
    # What start-up made (modules, config, the first snapshot's static facts) lives on:
    # keep it out of the cyclic GC's full collections, which run during scrapes.
    gc.freeze()

    if args.once:
        return _print_once(exporter, args)
    return _serve(exporter, args, push)


def _procfs_problem(e: BaseException, procfs: str) -> str:
    """One line on why the procfs root cannot be read (the message names the file)."""
    detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return f"{detail} (--path.procfs {procfs})"


def _print_once(exporter, args) -> int:
    # The first snapshot is taken; with a delay, a second one that far apart is printed.
    if args.once_delay > 0:
        time.sleep(args.once_delay)
        try:
            exporter.scrape()
        except (OSError, ValueError) as e:
            return _die(_procfs_problem(e, args.path_procfs), 1)
    output = b"".join(exporter.exposition(scrape=False))  # the snapshot already taken
    exporter.close()
    try:
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
        return 0
    except BrokenPipeError:  # `procsnap --once | head`: the reader has what it wanted
        status = 0
    except OSError as e:  # a full disk, /dev/full
        status = _die(f"cannot write the exposition to stdout: {e.strerror or e}", 1)
    # stdout still holds the unwritten bytes: let the exit flush go nowhere
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


def _push_wanted(args) -> bool:
    """OTLP push is on: --otlp.endpoint, or a standard endpoint variable."""
    from_env = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(args.otlp_endpoint or from_env)


def _serve(exporter, args, push) -> int:
    """/metrics on --web.listen-address (unless empty) and the OTLP push (``push``, the
    otlp.Settings, unless None) until SIGTERM/SIGINT."""
    server = pusher = security = None
    exporter.config_reload_ok = True  # procsnap_config_last_reload_successful
    reloading = threading.Lock()

    def reload_all(trigger: str) -> Optional[str]:
        """SIGHUP and /-/reload: re-read the config and the web config; why not, or None."""
        with reloading:
            errors = []
            if args.config_path is None and (args.procnames or args.namemapping):
                log.info("%s: the groups come from --procnames/--namemapping; nothing to re-read", trigger)
            else:
                errors.append(_reload(exporter, args.config_path))
            if security is not None:
                errors.append(security.reload())
            errors = [e for e in errors if e]
            exporter.config_reload_ok = not errors
            return "; ".join(errors) or None

    if args.web_listen_address:
        from exporter.server import MetricsServer, make_app

        if args.web_config_file:
            from exporter.webconfig import WebConfigError, WebSecurity

            try:
                security = WebSecurity(args.web_config_file,
                                       on_reload=lambda ok: setattr(exporter, "config_reload_ok", ok))
            except WebConfigError as e:
                return _die(str(e), 2)
            for warning in security.config.warnings:
                log.warning("%s: %s", args.web_config_file, warning)
        lifecycle = (lambda: reload_all("/-/reload")) if args.web_enable_lifecycle else None
        try:
            server = MetricsServer(make_app(exporter, args.web_telemetry_path, args.web_max_requests, lifecycle),
                                   args.web_listen_address, security=security)
        except ValueError as e:
            return _die(str(e), 2)
        except OSError as e:
            return _die(f"cannot listen on {args.web_listen_address}: {e.strerror or e}", 1)

    wake = threading.Event()
    pending = {"reload": False, "stop": False}

    def on_hup(signum, frame):
        pending["reload"] = True
        wake.set()

    def on_stop(signum, frame):
        pending["stop"] = True
        wake.set()

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

    if server is not None:
        server.start()
        host, _ = server.server_address[:2]
        log.info(
            "procsnap %s listening on %s, metrics at %s (backend %s)",
            __version__,
            f"[{host}]:{server.port}" if ":" in host else f"{host}:{server.port}",
            args.web_telemetry_path,
            exporter.reader.backend,
        )
        if security is not None:
            config = security.config
            log.info("web config %s: TLS %s, basic auth %s, rate limit %s", args.web_config_file,
                     f"on (client certificates: {config.client_auth})" if config.tls else "off",
                     f"for {len(config.users)} users" if config.users else "off",
                     "%g/s, burst %d" % (1 / config.rate_limit[0], config.rate_limit[1]) if config.rate_limit else "off")
    if push is not None:
        from exporter import otlp

        pusher = otlp.Pusher(exporter, push, threads=args.threads, smaps=args.gather_smaps)
        exporter.otlp_exports = pusher.exports
        log.info("procsnap %s pushing OTLP (%s) to %s every %gs", __version__, push.protocol, otlp.describe(push),
                 push.interval)
    try:
        while not pending["stop"]:
            wake.wait(1.0)
            wake.clear()
            if pending["reload"]:
                pending["reload"] = False
                reload_all("SIGHUP")
    finally:
        if server is not None:
            server.shutdown()  # answers the scrapes in flight first
        if pusher is not None:
            pusher.shutdown()  # a last export, within its timeout
        exporter.close()
    log.info("stopped")
    return 0


def _reload(exporter, path) -> Optional[str]:
    """Re-read the config: None, or (logged) why the old one stays."""
    from exporter.config import ConfigError

    try:
        config = _load_config(path)
    except (ConfigError, OSError) as e:
        line = _config_error_line(e, path)
        log.error("config reload failed, keeping the old config: %s", line)
        return line
    exporter.reload(config)
    log.info("config reloaded from %s", path or "(default config)")


if __name__ == "__main__":
    sys.exit(main())
