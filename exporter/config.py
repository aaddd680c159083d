"""process-exporter's YAML config, read unchanged.

    process_names:
      - name: "{{.Comm}}"          # Go text/template: {{.Field}}, {{.Matches.name}}, {{.Matches}}
        comm: [bash, zsh]          # OR: the process' comm is one of these
        exe: [nginx, /usr/bin/x]   # OR: filepath.Base of argv[0], or the full argv[0] for a path
        cmdline: ['-c (?P<cfg>\\S+)']  # AND: Go (RE2) regexes searched in argv joined by spaces

All rules of one matcher must hold; the first matcher that matches a process names its
group. Behaviour follows process-exporter 0.7.10 (config/config.go), checked against the
real binary on fake /proc trees (tests/test_config.py runs it when it is installed):

* Regexes are RE2 with Go's syntax and leftmost-first semantics, through ``google-re2``
  (linear time: no backtracking, whatever the command line). ``\\d \\w \\s \\b`` are
  ASCII, POSIX classes and ``\\pL`` work. A capture name given twice takes the last group's
  value, as Go does. ``(?<name>...)`` is accepted (Go >= 1.22 accepts it; the Go 1.19 that
  Debian's 0.7.10 is built with rejects it).
* Templates: Go text/template actions ``{{.Field}}``, ``{{.Matches.name}}``, bare
  ``{{.Matches}}`` (printed as Go prints a map[string]string), ``{{/* comments */}}`` and
  the ``{{- `` / `` -}}`` trim markers. Other actions (pipelines, if, printf) are a
  ConfigError.
* An empty file, or one without ``process_names``, matches nothing. YAML merge keys
  (``<<: *base``) work; only the first YAML document is read, as yaml.v2 does.

Unlike process-exporter, mistakes are caught at load time: an unknown key (a top-level key
that only holds YAML anchors used under process_names is allowed), a bad regex, an
unknown template field or a ``.Matches.x`` with no capture ``x`` (process-exporter prints
``<no value>``) is a ConfigError whose str() is one line naming the file, the line, the
matcher and the problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import re2
import yaml

from exporter.kubernetes import LABELS, NOT_IN_A_POD, PodInfo
from exporter.redact import redact_slice, secrets_of

MATCHER_KEYS = ("name", "comm", "exe", "cmdline")
TEMPLATE_FIELDS = ("Comm", "ExeBase", "ExeFull", "Username", "PID", "StartTime", "Cgroups", "Matches",
                   "Namespace", "Pod", "Container", "ContainerID")  # the last four: procsnap's (pods)
DEFAULT_NAME = "{{.ExeBase}}"
_NULL_TAG = "tag:yaml.org,2002:null"


class ConfigError(Exception):
    """A config problem, as one line: 'FILE:LINE: process_names[i] (name "..."): problem'."""


# -- Go's printing of the template fields -----------------------------------------


def go_base(path: str) -> str:
    """Go's filepath.Base on Linux: "" -> ".", trailing slashes dropped, "/" -> "/"."""
    if path == "":
        return "."
    path = path.rstrip("/")
    if path == "":
        return "/"
    return path[path.rfind("/") + 1 :]




def go_time_ns(unix_ns: int) -> str:
    """time.Time.String() of a UTC time given in integer nanoseconds since the epoch:
    '2023-11-14 22:13:20.25 +0000 UTC' (fraction without trailing zeros, none if zero)."""
    seconds, nanos = divmod(int(unix_ns), 1_000_000_000)
    days, second = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)  # any year: a garbled starttime must not raise
    text = f"{year:04d}-{month:02d}-{day:02d} {second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + " +0000 UTC"


def _civil_from_days(days: int) -> tuple:
    """(year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm)."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def go_time(epoch_seconds: float) -> str:
    """go_time_ns of epoch seconds (rounded to the nanosecond). process-exporter prints
    {{.StartTime}} in UTC, whatever the local zone."""
    return go_time_ns(round(epoch_seconds * 1_000_000_000))


def start_time_ns(boot_time: int, start_ticks: int, clock_ticks: int = 100) -> int:
    """A process' start as process-exporter computes it (proc/read.go):
    time.Unix(bootTime, 0).Add(time.Second / userHZ * time.Duration(starttime)), in
    integer nanoseconds (time.Second / userHZ is an integer division, 10 ms at 100 Hz)."""
    return int(boot_time) * 1_000_000_000 + (1_000_000_000 // clock_ticks) * int(start_ticks)


_GO_ATOI = re.compile(r"[+-]?[0-9]+\Z")


def cgroup_paths(cgroup_text: Optional[str]) -> list:
    """{{.Cgroups}}: the path column of each /proc/PID/cgroup line ("0::/a/b" -> "/a/b"), as
    prometheus/procfs parses it: one malformed line (fewer than 3 fields, or a hierarchy id
    that is not an integer) and process-exporter gets no cgroups at all."""
    if not cgroup_text:
        return []
    paths = []
    for line in cgroup_text.split("\n"):
        if line.endswith("\r"):  # bufio.ScanLines drops it
            line = line[:-1]
        fields = line.split(":", 2)
        if len(fields) < 3 or not _GO_ATOI.match(fields[0]) or abs(int(fields[0])) >= 1 << 63:
            return []
        paths.append(fields[2])
    return paths


def go_map(values: dict) -> str:
    """fmt's printing of a map[string]string: map[a:x b:y], keys sorted."""
    return "map[" + " ".join(f"{k}:{values[k]}" for k in sorted(values)) + "]"


@dataclass
class Facts:
    """What a name template may refer to, for one process.

    ``username`` is the user of the process' EFFECTIVE uid (second column of the status
    Uid line), as process-exporter's {{.Username}}: the user name, or the uid in decimal
    when no user has it; None renders as "".

    {{.StartTime}} is computed from the raw fields when ``start_ticks`` and ``boot_time``
    are given (stat starttime, /proc/stat btime, USER_HZ): boot_time + start_ticks ticks,
    exactly as process-exporter does. Without them it is ``start_time_seconds`` rounded
    to a whole tick (exact when the boot time is whole seconds, as btime always is).
    """

    comm: str
    cmdline: tuple  # argv; () when empty
    username: Optional[str]  # the EFFECTIVE uid's user (see above)
    pid: int
    start_time_seconds: float
    cgroup: Optional[str]  # text of /proc/PID/cgroup
    matches: dict  # the captures config.match returned
    start_ticks: Optional[int] = None
    boot_time: Optional[int] = None
    clock_ticks: int = 100
    pod: PodInfo = NOT_IN_A_POD  # the Kubernetes pod and container it runs in

    def start_time_ns(self) -> int:
        hz = self.clock_ticks or 100
        if self.start_ticks is not None and self.boot_time is not None:
            return start_time_ns(self.boot_time, self.start_ticks, hz)
        return round(self.start_time_seconds * hz) * (1_000_000_000 // hz)

    @property
    def exe_full(self) -> str:
        """argv[0], or comm when there is no argv (process-exporter's ExeFull)."""
        return self.cmdline[0] if self.cmdline else self.comm

    @property
    def exe_base(self) -> str:
        return go_base(self.cmdline[0]) if self.cmdline else self.comm


# -- name templates (Go text/template, the part process-exporter configs use) --------

_SPACE = " \t\r\n"  # text/template's spaceChars, trimmed by {{- and -}}
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\Z")


_POD_FIELDS = {"Namespace": 0, "Pod": 1, "Container": 2, "ContainerID": 3}  # PodInfo positions


def _field_getter(name: str, sub: Optional[str]) -> Callable[[Facts], str]:
    if name == "Comm":
        return lambda f: f.comm
    if name == "ExeFull":
        return lambda f: f.exe_full
    if name == "ExeBase":
        return lambda f: f.exe_base
    if name == "Username":
        return lambda f: f.username or ""
    if name == "PID":
        return lambda f: str(f.pid)
    if name == "StartTime":
        return lambda f: go_time_ns(f.start_time_ns())
    if name in _POD_FIELDS:
        at = _POD_FIELDS[name]
        return lambda f: f.pod[at]
    if name == "Cgroups":  # Go prints a []string as [a b]
        return lambda f: "[" + " ".join(cgroup_paths(f.cgroup)) + "]"
    assert name == "Matches"
    if sub is None:
        return lambda f: go_map(f.matches)
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

    @property
    def literal(self) -> Optional[str]:
        """The name, when it uses no field (what it renders to, trim markers and comments
        applied); None otherwise."""
        if self.fields:
            return None
        return "".join(self.parts)

    def render(self, facts: Facts) -> str:
        return "".join(p if isinstance(p, str) else p(facts) for p in self.parts)


def _right_trim_at(source: str, i: int) -> int:
    """Length of the right delimiter at i: 4 for ' -}}' (a trim marker), 2 for '}}', 0."""
    if i < len(source) and source[i] in _SPACE and source.startswith("-}}", i + 1):
        return 4
    return 2 if source.startswith("}}", i) else 0


def compile_template(source: str) -> NameTemplate:
    """Parse a name the way text/template lexes it: text up to each '{{'; '{{- ' (dash
    then a space, tab, CR or LF) trims the white space before it, ' -}}' the white space
    after it; '{{/*' starts a comment that must end with '*/}}' or '*/ -}}'; '}}' outside
    an action is plain text. Raises ValueError for anything else process-exporter would
    reject or that procsnap does not render."""
    parts: list = []
    fields, captures = set(), set()
    pos, trim_next = 0, False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            if text:
                parts.append(text)
            break
        inner = start + 2
        if source.startswith("-", inner) and inner + 1 < len(source) and source[inner + 1] in _SPACE:
            text = text.rstrip(_SPACE)
            inner += 2
        if text:
            parts.append(text)
        if source.startswith("/*", inner):
            end = source.find("*/", inner + 2)
            if end < 0:
                raise ValueError("unclosed comment")
            delim = _right_trim_at(source, end + 2)
            if not delim:
                raise ValueError("comment ends before closing delimiter")
            trim_next, pos = delim == 4, end + 2 + delim
            continue
        close = source.find("}}", inner)
        if close < 0:
            raise ValueError("unclosed action")
        body = source[inner:close]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE
        if trim_next:
            body = body[:-2]
        action = body.strip(_SPACE)
        pos = close + 2
        fm = _FIELD.match(action)
        if not fm:
            raise ValueError(
                f"unsupported template action {{{{{action}}}}}: procsnap renders {{{{.Field}}}}, "
                f"{{{{.Matches.name}}}}, {{{{.Matches}}}}, comments and {{{{- -}}}} trim markers"
            )
        name, sub = fm.groups()
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown template field .{name} (known: {', '.join('.' + f for f in TEMPLATE_FIELDS)})")
        if sub is not None and name != "Matches":
            raise ValueError(f"bad template field {action}: .{name} has no fields (only .Matches.name does)")
        fields.add(name)
        if sub is not None:
            captures.add(sub)
        parts.append(_field_getter(name, sub))
    # adjacent literals (left by comments) are joined
    merged: list = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    return NameTemplate(source, merged, frozenset(fields), frozenset(captures))


# -- matchers --------------------------------------------------------------------


class RegexError(ValueError):
    """A pattern Go's regexp.Compile would reject."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are ConfigErrors, not lines on stderr
# Everything else stays RE2's default, which is Go's regexp: Perl-like syntax (ASCII \d \w
# \s \b, Unicode \pL, POSIX classes, \Q...\E, \z), leftmost-first (longest_match off, as
# Go's MatchString/FindStringSubmatch), UTF-8 text, case sensitive, '.' not matching \n.

_NAMED_GROUP = re.compile(r"\(\?P?<(?![=!])")
_CAPTURE_NAME = re.compile(r"[A-Za-z0-9_]+\Z")  # Go's isValidCaptureName: ASCII word characters


def _class_end(pattern: str, i: int) -> int:
    """The index after the ']' closing the character class that opens at pattern[i], as
    Go's parseClass reads it (']' first is a literal, [:name:] nests); len(pattern) if it
    is unclosed (RE2 reports that)."""
    n = len(pattern)
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < n:
        c = pattern[j]
        if c == "\\":
            if pattern.startswith("C", j + 1):
                raise RegexError("invalid escape sequence: `\\C`")
            j += 2
        elif c == "[" and pattern.startswith(":", j + 1) and pattern.find(":]", j + 2) >= 0:
            j = pattern.find(":]", j + 2) + 2
        elif c == "]":
            return j + 1
        else:
            j += 1
    return n


def _go_groups(pattern: str):
    """(pattern for RE2, Go's SubexpNames) of a Go pattern. SubexpNames has "" for the
    whole match and for unnamed groups. A name given again is passed to RE2 as an unnamed
    group (same index): Go allows repeated names. Raises RegexError for what Go rejects and
    RE2 accepts: \\C, capture names that are not ASCII word characters."""
    names = [""]
    seen: set = set()
    out: list = []
    i, n, copied = 0, len(pattern), 0
    while i < n:
        c = pattern[i]
        if c == "\\":
            if pattern.startswith("Q", i + 1):
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
            elif pattern.startswith("C", i + 1):
                raise RegexError("invalid escape sequence: `\\C`")
            else:
                i += 2
        elif c == "[":
            i = _class_end(pattern, i)
        elif c == "(":
            named = _NAMED_GROUP.match(pattern, i)
            if named:
                close = pattern.find(">", named.end())
                if close < 0:
                    break  # RE2: invalid named capture group
                name = pattern[named.end() : close]
                if not _CAPTURE_NAME.match(name):
                    raise RegexError(f"invalid named capture: `{pattern[i : close + 1]}`")
                names.append(name)
                if name in seen:
                    out.append(pattern[copied:i] + "(")
                    copied = close + 1
                seen.add(name)
                i = close + 1
            else:
                if not pattern.startswith("?", i + 1):
                    names.append("")
                i += 1
        else:
            i += 1
    out.append(pattern[copied:])
    return "".join(out), tuple(names)


class GoRegex:
    """A cmdline regex compiled as Go's regexp.Compile would, matched in linear time."""

    __slots__ = ("pattern", "regex", "names")

    def __init__(self, pattern: str):
        self.pattern = pattern
        translated, names = _go_groups(pattern)
        try:
            self.regex = re2.compile(translated, _RE2_OPTIONS)
        except re2.error as e:
            problem = e.args[0] if e.args else "bad regex"
            if isinstance(problem, bytes):
                problem = problem.decode("utf-8", "replace")
            raise RegexError(str(problem)) from None
        if len(names) != self.regex.groups + 1:  # cannot happen; RE2's count is the truth
            index = {i: name for name, i in self.regex.groupindex.items()}
            names = tuple(index.get(i, "") for i in range(self.regex.groups + 1))
        self.names = names

    @property
    def capture_names(self) -> frozenset:
        return frozenset(self.names) - {""}

    def submatch(self, text: str, secrets=None) -> Optional[tuple]:
        """Go's FindStringSubmatch: None, or the whole match then each group ("" when a
        group took no part). ``secrets``: () -> the secret spans of text (exporter.redact),
        asked only if a group is not empty; the parts of groups inside them are redacted."""
        m = self.regex.search(text)
        if m is None:
            return None
        groups = tuple(m.group(i) or "" for i in range(len(self.names)))
        if secrets is None or not any(groups):
            return groups
        spans = secrets()
        if not spans:
            return groups
        return tuple(redact_slice(text, *m.span(i), spans) if g else g for i, g in enumerate(groups))

    def __repr__(self):
        return f"GoRegex({self.pattern!r})"


def go_regex(pattern: str) -> GoRegex:
    """Compile a cmdline regex with Go's syntax and semantics; RegexError if Go rejects it."""
    return GoRegex(pattern)


@dataclass
class Matcher:
    """One entry of process_names. Matching and naming run once per process identity."""

    template: NameTemplate
    comm: Optional[frozenset] = None
    exe_names: Optional[dict] = None  # filepath.Base -> full path, or "" to match any path
    cmdline: Optional[list] = None  # GoRegex, all must match
    user_space_only: bool = False  # the default config's "every process but kernel threads"
    where: str = ""  # "FILE:LINE: process_names[i]" for messages

    def match(self, process, redact: bool = True) -> Optional[dict]:
        """None if it does not match; else the Matches of process-exporter's templates:
        for each cmdline regex in order, each SubexpName -> its group ("" for the whole
        match and unnamed groups, so the last of those wins; a later name wins). With
        ``redact``, the secrets of the command line in them are <redacted>."""
        if self.user_space_only and process.is_kernel_thread:
            return None
        if self.comm is not None and process.comm not in self.comm:
            return None
        argv = process.cmdline or ()
        if self.exe_names is not None:
            if not argv:
                return None
            full = self.exe_names.get(go_base(argv[0]))
            if full is None or (full and full != argv[0]):
                return None
        captures: dict = {}
        if self.cmdline is not None:
            joined = " ".join(argv)
            secrets = secrets_of(joined) if redact else None
            for regex in self.cmdline:
                groups = regex.submatch(joined, secrets)
                if groups is None:
                    return None
                captures.update(zip(regex.names, groups))
        return captures


@dataclass
class Config:
    matchers: list = field(default_factory=list)
    path: Optional[str] = None
    extra_labels: tuple = ()  # of exporter.kubernetes.LABELS: labels beside groupname on every family

    @classmethod
    def default(cls) -> "Config":
        """No config file: one group per comm of every user-space process. Kernel threads
        are left out: their comms churn (kworker/u8:0-events) and would pile up series."""
        return cls([Matcher(compile_template("{{.Comm}}"), user_space_only=True, where="default config")])

    @property
    def literal_names(self) -> frozenset:
        """Group names the config gives whatever the process (templates without fields)."""
        return frozenset(m.template.literal for m in self.matchers if m.template.literal is not None)

    def match(self, process, redact: bool = True):
        """(matcher, captures) of the first matcher that matches, or (None, None)."""
        for matcher in self.matchers:
            captures = matcher.match(process, redact)
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


def yaml_problem(e: yaml.YAMLError, path: str) -> str:
    """One line naming the file and line of a YAML error (the config and the web config)."""
    mark = getattr(e, "problem_mark", None)
    line = f":{mark.line + 1}" if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    return one_line(f"{path}{line}: not valid YAML: {problem}")


def _yaml_error(e: yaml.YAMLError, path: str) -> ConfigError:
    return ConfigError(yaml_problem(e, path))


def _is_null(node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _merge(node, path: str) -> None:
    """Apply the YAML merge keys (<<: *base, <<: [*a, *b]) of a mapping node in place:
    its own keys win, then earlier merged mappings (as yaml.v2 and PyYAML do)."""
    try:
        yaml.constructor.SafeConstructor().flatten_mapping(node)
    except yaml.YAMLError as e:
        raise _yaml_error(e, path) from None


def _node_ids(node, into: set) -> set:
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in into:
            continue
        into.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack += (k, v)
    return into


def parse_config(content, path: str = "<config>") -> Config:
    try:  # yaml.v2 reads the first document only
        root = next(yaml.compose_all(content, Loader=yaml.SafeLoader), None)
    except yaml.YAMLError as e:
        raise _yaml_error(e, path) from None

    def fail(node, message):
        raise ConfigError(one_line(f"{path}:{node.start_mark.line + 1}: {message}"))

    if root is None or _is_null(root):  # an empty file (or only comments): no matchers
        return Config([], path)
    if not isinstance(root, yaml.MappingNode):
        fail(root, "expected a mapping with a 'process_names' list")
    _merge(root, path)
    entries, others, extra_labels = None, [], ()
    for key, value in root.value:
        if key.value == "process_names":
            entries = value
        elif key.value == "extra_labels" and not _is_null(value):
            extra_labels = tuple(_strings(value, "extra_labels", fail))
            unknown = [label for label in extra_labels if label not in LABELS]
            if unknown or len(set(extra_labels)) != len(extra_labels):
                fail(value, f"extra_labels: {unknown[0] if unknown else 'a label given twice'!s}: "
                            f"each may be one of {', '.join(LABELS)}, once")
        else:
            others.append((key, value))
    matchers = []
    if entries is not None and not _is_null(entries):
        if not isinstance(entries, yaml.SequenceNode):
            fail(entries, "'process_names' must be a list of matchers")
        matchers = [_parse_matcher(node, i, path, fail) for i, node in enumerate(entries.value)]
    if others:
        # a key process-exporter ignores is a mistake, unless it holds YAML anchors that
        # process_names uses (a place for the bases of merge keys)
        used = _node_ids(entries, set()) if entries is not None else set()
        for key, value in others:
            if not (_node_ids(value, set()) & used):
                fail(key, f"unknown key {key.value!r} (expected 'process_names' or 'extra_labels')")
    return Config(matchers, path, extra_labels)


def _strings(node, what, fail):
    """A list of strings as yaml.v2 decodes it into []string: any scalar is its text,
    a null item is ""."""
    if not isinstance(node, yaml.SequenceNode):
        fail(node, f"{what} must be a list of strings")
    values = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            fail(item, f"{what} must be a list of strings")
        values.append("" if item.tag == _NULL_TAG else item.value)
    return values


def _parse_matcher(node, index, path, fail) -> Matcher:
    where = f"process_names[{index}]"
    if not isinstance(node, yaml.MappingNode):
        fail(node, f"{where}: a matcher must be a mapping with name/comm/exe/cmdline")
    _merge(node, path)
    fields = {}
    for key, value in node.value:
        if key.value not in MATCHER_KEYS:
            fail(key, f"{where}: unknown key {key.value!r} (expected one of {', '.join(MATCHER_KEYS)})")
        if _is_null(value):  # as yaml.v2: a null is the field left out
            fields.pop(key.value, None)
        else:
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
            if "/" in exe:
                exes[go_base(exe)] = exe
            else:
                exes[exe] = ""
        matcher.exe_names = exes
    if "cmdline" in fields:
        regexes = []
        for item, pattern in zip(fields["cmdline"].value, _strings(fields["cmdline"], f"{where}: cmdline", fail)):
            try:
                regexes.append(go_regex(pattern))
            except RegexError as e:
                fail(item, f"{where}: bad cmdline regex {pattern!r}: {e}")
        matcher.cmdline = regexes
    defined = frozenset().union(*(regex.capture_names for regex in matcher.cmdline or []))
    missing = sorted(matcher.template.captures - defined)
    if missing:
        fail(
            name_node or node,
            f"{where}: name uses .Matches.{missing[0]} but no cmdline regex has a (?P<{missing[0]}>...) capture",
        )
    return matcher


def one_line(message: str) -> str:
    """A message as one line (a YAML value may hold line breaks)."""
    return message.replace("\r", " ").replace("\n", " ")
