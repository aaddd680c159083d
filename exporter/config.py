"""process-exporter's YAML config, read unchanged.

    process_names:
      - name: "{{.Comm}}"          # Go-template subset: {{.Field}} and {{.Matches.name}}
        comm: [bash, zsh]          # OR: the process' comm is one of these
        exe: [nginx, /usr/bin/x]   # OR: basename of argv[0], or the full argv[0] for a path
        cmdline: ['-c (?P<cfg>\\S+)']  # AND: regexes searched in argv joined by spaces

All rules of one matcher must hold; the first matcher that matches a process names its
group. Unlike process-exporter, mistakes are caught at load time: an unknown key, a bad
regex, an unknown template field or a `.Matches.x` with no capture `x` is a ConfigError
whose str() is one line naming the file, the line, the matcher and the problem.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import yaml

MATCHER_KEYS = ("name", "comm", "exe", "cmdline")
TEMPLATE_FIELDS = ("Comm", "ExeBase", "ExeFull", "Username", "PID", "StartTime", "Cgroups", "Matches")
DEFAULT_NAME = "{{.ExeBase}}"


class ConfigError(Exception):
    """A config problem, as one line: 'FILE:LINE: process_names[i] (name "..."): problem'."""


# -- name templates --------------------------------------------------------------

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?$")


def go_time(epoch_seconds: float) -> str:
    """time.Time's default String() (local zone), as process-exporter's {{.StartTime}} prints."""
    whole = int(epoch_seconds)
    nanos = round((epoch_seconds - whole) * 1e9)
    local = time.localtime(whole)
    text = time.strftime("%Y-%m-%d %H:%M:%S", local)
    if nanos:
        text += ("." + f"{nanos:09d}").rstrip("0")
    return f"{text} {time.strftime('%z', local)} {time.strftime('%Z', local)}"


def cgroup_paths(cgroup_text: Optional[str]) -> list:
    """The path column of each /proc/PID/cgroup line ("0::/a/b" -> "/a/b")."""
    if not cgroup_text:
        return []
    return [line.split(":", 2)[2] for line in cgroup_text.split("\n") if line.count(":") >= 2]


@dataclass
class Facts:
    """What a name template may refer to, for one process."""

    comm: str
    cmdline: tuple
    username: Optional[str]
    pid: int
    start_time_seconds: float
    cgroup: Optional[str]
    matches: dict


def _field_getter(name: str, sub: Optional[str]) -> Callable[[Facts], str]:
    if name == "Comm":
        return lambda f: f.comm
    if name == "ExeFull":  # process-exporter takes argv[0], falling back to comm
        return lambda f: f.cmdline[0] if f.cmdline else f.comm
    if name == "ExeBase":
        return lambda f: os.path.basename(f.cmdline[0]) if f.cmdline else f.comm
    if name == "Username":
        return lambda f: f.username or ""
    if name == "PID":
        return lambda f: str(f.pid)
    if name == "StartTime":
        return lambda f: go_time(f.start_time_seconds)
    if name == "Cgroups":  # Go prints a []string as [a b]
        return lambda f: "[" + " ".join(cgroup_paths(f.cgroup)) + "]"
    assert name == "Matches" and sub is not None
    return lambda f: f.matches.get(sub, "")


@dataclass
class NameTemplate:
    source: str
    parts: list  # str literals and getters
    fields: frozenset  # field names used, e.g. {"Comm", "PID"}
    captures: frozenset  # names used as .Matches.x

    @property
    def per_process(self) -> bool:
        """A name that differs for every process: such groups are dropped once empty."""
        return bool(self.fields & {"PID", "StartTime"})

    def render(self, facts: Facts) -> str:
        return "".join(p if isinstance(p, str) else p(facts) for p in self.parts)


def compile_template(source: str) -> NameTemplate:
    parts, fields, captures = [], set(), set()
    pos = 0
    for m in _ACTION.finditer(source):
        if m.start() > pos:
            parts.append(source[pos : m.start()])
        pos = m.end()
        action = m.group(1)
        fm = _FIELD.match(action)
        if not fm:
            raise ValueError(f"unsupported template action {{{{{action}}}}}: only {{{{.Field}}}} and {{{{.Matches.name}}}}")
        name, sub = fm.groups()
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown template field .{name} (known: {', '.join('.' + f for f in TEMPLATE_FIELDS)})")
        if (name == "Matches") != (sub is not None):
            raise ValueError(f"bad template field {action}: use .Matches.name for a capture, .{name} otherwise")
        fields.add(name)
        if sub is not None:
            captures.add(sub)
        parts.append(_field_getter(name, sub))
    if "{{" in source[pos:] or "}}" in source[pos:]:
        raise ValueError(f"unclosed template action in {source!r}")
    if pos < len(source):
        parts.append(source[pos:])
    return NameTemplate(source, parts, frozenset(fields), frozenset(captures))


# -- matchers --------------------------------------------------------------------


def go_regex(pattern: str) -> "re.Pattern":
    """Compile a Go RE2 pattern with Python's re: (?<name>...) is spelled (?P<name>...)."""
    return re.compile(re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern))


@dataclass
class Matcher:
    """One entry of process_names. Matching and naming run once per process identity."""

    template: NameTemplate
    comm: Optional[frozenset] = None
    exe_names: Optional[dict] = None  # basename -> full path, or "" to match any path
    cmdline: Optional[list] = None  # compiled regexes, all must match
    user_space_only: bool = False  # the default config's "every process but kernel threads"
    where: str = ""  # "FILE:LINE: process_names[i]" for messages

    def match(self, process) -> Optional[dict]:
        """None if it does not match; else the named captures of the cmdline regexes."""
        if self.user_space_only and process.is_kernel_thread:
            return None
        if self.comm is not None and process.comm not in self.comm:
            return None
        argv = process.cmdline or ()
        if self.exe_names is not None:
            if not argv:
                return None
            full = self.exe_names.get(os.path.basename(argv[0]))
            if full is None or (full and full != argv[0]):
                return None
        captures = {}
        if self.cmdline is not None:
            joined = " ".join(argv)
            for regex in self.cmdline:
                m = regex.search(joined)
                if m is None:
                    return None
                captures.update({k: v or "" for k, v in m.groupdict().items()})
        return captures


@dataclass
class Config:
    matchers: list = field(default_factory=list)
    path: Optional[str] = None

    @classmethod
    def default(cls) -> "Config":
        """No config file: one group per comm of every user-space process. Kernel threads
        are left out: their comms churn (kworker/u8:0-events) and would pile up series."""
        return cls([Matcher(compile_template("{{.Comm}}"), user_space_only=True, where="default config")])

    @property
    def literal_names(self) -> frozenset:
        """Group names the config gives whatever the process (templates without fields)."""
        return frozenset(m.template.source for m in self.matchers if not m.template.fields)

    def match(self, process):
        """(matcher, captures) of the first matcher that matches, or (None, None)."""
        for matcher in self.matchers:
            captures = matcher.match(process)
            if captures is not None:
                return matcher, captures
        return None, None


# -- loading ---------------------------------------------------------------------


def load_config(path: Optional[str] = None) -> Config:
    if path is None:
        return Config.default()
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    return parse_config(content, path)


def parse_config(content, path: str = "<config>") -> Config:
    try:
        root = yaml.compose(content, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(_one_line(f"{path}{line}: not valid YAML: {problem}")) from None

    def fail(node, message):
        raise ConfigError(_one_line(f"{path}:{node.start_mark.line + 1}: {message}"))

    if root is None:
        raise ConfigError(f"{path}: empty config: expected a 'process_names' list")
    if not isinstance(root, yaml.MappingNode):
        fail(root, "expected a mapping with a 'process_names' list")
    entries = None
    for key, value in root.value:
        if key.value != "process_names":
            fail(key, f"unknown key {key.value!r} (expected 'process_names')")
        entries = value
    if not isinstance(entries, yaml.SequenceNode):
        fail(entries or root, "'process_names' must be a list of matchers")
    matchers = [_parse_matcher(node, i, path, fail) for i, node in enumerate(entries.value)]
    return Config(matchers, path)


def _strings(node, what, fail):
    if not isinstance(node, yaml.SequenceNode):
        fail(node, f"{what} must be a list of strings")
    values = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or item.tag == "tag:yaml.org,2002:null":
            fail(item, f"{what} must be a list of strings")
        values.append(item.value)
    return values


def _parse_matcher(node, index, path, fail) -> Matcher:
    where = f"process_names[{index}]"
    if not isinstance(node, yaml.MappingNode):
        fail(node, f"{where}: a matcher must be a mapping with name/comm/exe/cmdline")
    fields = {}
    for key, value in node.value:
        if key.value not in MATCHER_KEYS:
            fail(key, f"{where}: unknown key {key.value!r} (expected one of {', '.join(MATCHER_KEYS)})")
        fields[key.value] = value
    name_node = fields.get("name")
    name = DEFAULT_NAME
    if name_node is not None:
        if not isinstance(name_node, yaml.ScalarNode):
            fail(name_node, f"{where}: name must be a string")
        name = name_node.value or DEFAULT_NAME
        where = f'{where} (name "{name}")'
    if not ({"comm", "exe", "cmdline"} & fields.keys()):
        fail(node, f"{where}: no matchers provided: give at least one of comm, exe, cmdline")

    matcher = Matcher(template=None, where=f"{path}:{node.start_mark.line + 1}: {where}")  # type: ignore[arg-type]
    try:
        matcher.template = compile_template(name)
    except ValueError as e:
        fail(name_node or node, f"{where}: bad name template: {e}")
    if "comm" in fields:
        matcher.comm = frozenset(_strings(fields["comm"], f"{where}: comm", fail))
    if "exe" in fields:
        exes = {}
        for exe in _strings(fields["exe"], f"{where}: exe", fail):
            exes[os.path.basename(exe)] = exe if "/" in exe else ""
        matcher.exe_names = exes
    if "cmdline" in fields:
        regexes = []
        for item, pattern in zip(fields["cmdline"].value, _strings(fields["cmdline"], f"{where}: cmdline", fail)):
            try:
                regexes.append(go_regex(pattern))
            except re.error as e:
                fail(item, f"{where}: bad cmdline regex {pattern!r}: {e}")
        matcher.cmdline = regexes
    defined = {name for regex in (matcher.cmdline or []) for name in regex.groupindex}
    missing = sorted(matcher.template.captures - defined)
    if missing:
        fail(
            name_node or node,
            f"{where}: name uses .Matches.{missing[0]} but no cmdline regex has a (?P<{missing[0]}>...) capture",
        )
    return matcher


def _one_line(message: str) -> str:
    return message.replace("\r", " ").replace("\n", " ")
