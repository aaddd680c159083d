"""process-exporter's config format: matching, naming, and one-line errors.

The expected names below were printed by process-exporter 0.7.10 (Debian's
prometheus-process-exporter) for the same processes; test_process_exporter_agrees runs it
on a fake /proc tree, when it is installed, and checks that it still prints them.
"""

import collections
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from exporter.config import (
    Config,
    ConfigError,
    Facts,
    cgroup_paths,
    go_base,
    go_map,
    go_regex,
    go_time,
    go_time_ns,
    load_config,
    parse_config,
    start_time_ns,
)
from procs import proc

BOOT = 1700000000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESS_EXPORTER = shutil.which("prometheus-process-exporter") or "/usr/bin/prometheus-process-exporter"


def first_name(config, p, **facts):
    matcher, captures = config.match(p)
    if matcher is None:
        return None
    return matcher.template.render(
        Facts(p.comm, p.cmdline or (), p.username, p.pid, p.start_time_seconds, p.cgroup, captures, **facts)
    )


def name_of(template, p=None, **facts):
    """The name a matcher `comm: [COMM]` with this template gives p."""
    p = p or proc(1, "a")
    config = parse_config(b"process_names: [{name: %s, comm: [%s]}]" % (quote(template), p.comm.encode()))
    return first_name(config, p, **facts)


def quote(text) -> bytes:
    """A YAML double-quoted scalar of text."""
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(
        "\t", "\\t").replace("\r", "\\r").encode() + b'"'


CONFIG = b"""
process_names:
  - comm: [bash]
  - name: "web:{{.Matches.port}}"
    exe: [/usr/sbin/nginx]
    cmdline: ['-p (?P<port>\\d+)', 'master']
  - name: "{{.ExeFull}}|{{.Username}}|{{.PID}}|{{.Cgroups}}"
    exe: [java]
  - name: "{{ .Comm }}-{{.ExeBase}}"
    cmdline: ['^/opt/']
"""


def test_first_matcher_wins_and_templates_render():
    config = parse_config(CONFIG, "c.yaml")
    assert first_name(config, proc(1, "bash", cmdline=("/bin/bash", "-l"))) == "bash"  # default name
    nginx = proc(2, "nginx", cmdline=("/usr/sbin/nginx", "-p", "80", "master"))
    assert first_name(config, nginx) == "web:80"
    assert first_name(config, proc(2, "nginx", cmdline=("/usr/sbin/nginx", "-p 81", "master"))) == "web:81"
    # exe with a path needs the full argv[0]; all cmdline regexes must match
    assert first_name(config, proc(2, "nginx", cmdline=("/srv/nginx", "-p", "80", "master"))) is None
    assert first_name(config, proc(2, "nginx", cmdline=("/usr/sbin/nginx", "-p", "80"))) is None
    java = proc(3, "java", cmdline=("/usr/lib/jvm/bin/java", "-jar"), username="app", cgroup="0::/a/b")
    assert first_name(config, java) == "/usr/lib/jvm/bin/java|app|3|[/a/b]"  # bare exe: any path
    assert first_name(config, proc(4, "svc", cmdline=("/opt/svc/run",))) == "svc-run"
    assert first_name(config, proc(5, "zsh")) is None


def test_exebase_falls_back_to_comm_without_cmdline():
    config = parse_config(b"process_names: [{cmdline: ['.*']}]")
    assert first_name(config, proc(7, "kworker/0:1", cmdline=())) == "kworker/0:1"


# -- regexes: Go's RE2 ----------------------------------------------------------------


def cmdline_name(pattern, *argv, template=None):
    """The name a single `cmdline: [pattern]` matcher gives argv, None if no match."""
    template = template or "{{.Matches}}"
    config = parse_config(b"process_names: [{name: %s, cmdline: [%s]}]" % (quote(template), quote(pattern)))
    return first_name(config, proc(1, "a", cmdline=argv))


@pytest.mark.parametrize(
    "pattern, argv, expected",
    [
        # POSIX classes and Unicode classes: Python's re would not match these
        (r"--id=(?P<n>[[:digit:]]+)\z", ("app", "--id=42"), "42"),
        (r"--id=(?P<n>[[:digit:]]+)\z", ("app", "--id=42x"), None),  # \z: the very end
        (r"x (?P<n>\pL+)", ("x", "été"), "été"),
        (r"(?P<n>\p{Greek}+)", ("x", "αβγ"), "αβγ"),
        (r"(?P<n>\Qa.b*\E)", ("x", "a.b*"), "a.b*"),
        (r"(?P<n>\Qa.b*\E)", ("x", "axbb"), None),
        # \d \w \b are ASCII in Go: --role=веб1 --id=٣٣ makes no group there
        (r"--role=(?P<n>\w+\d)", ("x", "--role=веб1", "--id=٣٣"), None),
        (r"--id=(?P<n>\d+)", ("x", "--role=веб1", "--id=٣٣"), None),
        (r"--role=(?P<n>\w+\d)", ("x", "--role=web1"), "web1"),
        (r"x(?P<n>\bé)", ("xé",), "é"),  # é is not a word character: a boundary after x
        (r"(?P<n>(?i)ÉTÉ)", ("x", "été"), "été"),  # case folding is Unicode
        # Go's named-group spellings
        (r"--x=(?P<n>\w+)", ("a", "--x=yes"), "yes"),
        (r"--x=(?<n>\w+)", ("a", "--x=yes"), "yes"),
        # leftmost-first, as Go's FindStringSubmatch (leftmost-longest would take "ab")
        (r"(?P<n>a|ab)(c?)", ("x", "abc"), "a"),
        (r"(?P<n>a+?)", ("aaa",), "a"),
        # '.' does not match a newline; $ is the end of the text
        (r"(?P<n>a.b)", ("a\nb",), None),
        (r"(?P<n>b)$", ("a\nb",), "b"),
    ],
)
def test_regexes_have_go_semantics(pattern, argv, expected):
    assert cmdline_name(pattern, *argv, template="{{.Matches.n}}") == expected


def test_a_capture_name_given_twice_takes_the_last_group_as_go_does():
    # process-exporter printed "q" for this one (Go allows the name twice; the last wins,
    # even when it took no part: then it is "")
    assert cmdline_name(r"(?P<x>p) (?P<x>q)?", "a", "p q", template="{{.Matches.x}}") == "q"
    assert cmdline_name(r"(?P<x>p) (?P<x>q)?", "a", "p z", template="<{{.Matches.x}}>") == "<>"


def test_matches_has_every_subexp_name_as_process_exporter():
    # "" is the whole match, then each unnamed group: the last of them wins; an unmatched
    # group is ""; the later regex wins. Printed by process-exporter: map[:- app:foo z:]
    config = parse_config(
        b"process_names:\n"
        b"  - name: '{{.Matches}}'\n"
        b"    cmdline: ['(?P<app>\\w+)\\.(jar)', '(-)(?P<z>x)?']\n"
        b"  - name: 'none {{.Matches}}'\n"
        b"    comm: [b]\n"
    )
    assert first_name(config, proc(1, "java", cmdline=("java", "-jar", "foo.jar"))) == "map[:- app:foo z:]"
    assert first_name(config, proc(2, "b", cmdline=("b",))) == "none map[]"
    assert go_map({"b": "y", "a": "x", "": "z"}) == "map[:z a:x b:y]"


def test_a_huge_argument_is_matched_in_linear_time():
    # A backtracking engine takes O(n^2) on (\w+)\.jar against a long run of word
    # characters (about a minute at 65,000; years at 1,000,000). RE2 is linear. The bound
    # is generous: it catches a hang, it is not a timing assertion. The match runs in a
    # child process so that a hang is killed, not waited for.
    code = textwrap.dedent(
        r"""
        import time
        from types import SimpleNamespace
        from exporter.config import parse_config
        config = parse_config(b"process_names: [{name: '{{.Matches.app}}', cmdline: ['(?P<app>\\w+)\\.jar']}]")
        for arg, expected in [("a" * 1_000_000, None), ("a" * 999_996 + ".jar", "a" * 999_996),
                              ("\u00e9" * 999_000 + "x.jar", "x"), ("x." * 500_000, None)]:
            p = SimpleNamespace(comm="java", cmdline=("java", arg), is_kernel_thread=False)
            t = time.monotonic()
            matcher, captures = config.match(p)
            took = time.monotonic() - t
            assert (captures or {}).get("app") == expected, (len(arg), captures and len(captures.get("app")))
            print(round(took, 3))
        """
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("matching a 1,000,000-character argument hung (backtracking regex engine?)")
    assert r.returncode == 0, r.stderr
    assert all(float(took) < 10 for took in r.stdout.split()), r.stdout


def test_go_regex_reports_subexp_names():
    assert go_regex(r"(a)(?P<x>b)(?:c)(?<y>d)(?i)[(](\()").names == ("", "", "x", "y", "")
    assert go_regex(r"\Q(?P<no>\E(?P<x>a)[[:alpha:](?P<z>]").names == ("", "x")
    assert go_regex(r"[]()](?P<x>a)").names == ("", "x")


# -- templates: Go's text/template ---------------------------------------------------


@pytest.mark.parametrize(
    "template, expected",
    [
        # printed by process-exporter for comm "a"
        ("x \n\t {{- .Comm -}} \n y", "xay"),
        ("p {{-\n.Comm\t-}}\rq", "paq"),
        ("x {{/* c */}} y {{- /* d */ -}} z}}w", "x  yz}}w"),
        ("{{ .Comm }}{{.PID}}", "a1"),
        ("{{.Comm}} }} {{", None),
        ("a-{{.Comm}} -b", "a-a -b"),  # no trim marker without the space: a dash is text
        ("{{.Comm}}{{/**/}}", "a"),
    ],
)
def test_trim_markers_and_comments_as_text_template(template, expected):
    if expected is None:
        with pytest.raises(ConfigError, match="unclosed action"):
            name_of(template)
    else:
        assert name_of(template) == expected


@pytest.mark.parametrize(
    "template, problem",
    [
        # process-exporter refuses these too
        ("x {{.Comm-}} y", "unsupported template action {{.Comm-}}"),
        ("x {{-.Comm}} y", "unsupported template action {{-.Comm}}"),
        ("x {{ /* c */ }} y", "unsupported template action"),
        ("x {{/* c */ }} y", "comment ends before closing delimiter"),
        ("x {{/* c", "unclosed comment"),
        ("x {{.Comm", "unclosed action"),
        ("{{.Comm.x}}", "bad template field .Comm.x"),
        ("{{.comm}}", "unknown template field .comm"),
        ("{{printf \"%s\" .Comm}}", "unsupported template action"),
    ],
)
def test_bad_templates_are_config_errors(template, problem):
    with pytest.raises(ConfigError) as info:
        name_of(template)
    assert problem in str(info.value) and "bad name template" in str(info.value)


def test_literal_names_are_what_the_template_renders():
    config = parse_config(b'process_names: [{name: "a {{- /* x */ -}} b", comm: [x]}, {name: "{{.Comm}}", comm: [y]}]')
    assert config.literal_names == frozenset({"ab"})
    assert [m.template.per_process for m in config.matchers] == [False, False]
    assert parse_config(b"process_names: [{name: '{{.StartTime}}', comm: [x]}]").matchers[0].template.per_process


@pytest.mark.parametrize(
    "ticks, expected",
    [  # printed by process-exporter with btime 1700000000
        (0, "2023-11-14 22:13:20 +0000 UTC"),
        (1, "2023-11-14 22:13:20.01 +0000 UTC"),
        (10, "2023-11-14 22:13:20.1 +0000 UTC"),
        (25, "2023-11-14 22:13:20.25 +0000 UTC"),
        (123456789, "2023-11-29 05:09:27.89 +0000 UTC"),
    ],
)
def test_start_time_is_utc_as_go_prints_it(monkeypatch, ticks, expected):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # the local zone must not matter
    time.tzset()
    try:
        p = proc(1, "a", start_ticks=ticks, start_time_seconds=BOOT + ticks / 100)
        # from the raw ticks and boot time, and from the float seconds the grouper has today
        assert name_of("{{.StartTime}}", p, start_ticks=ticks, boot_time=BOOT, clock_ticks=100) == expected
        assert name_of("{{.StartTime}}", p) == expected
        assert go_time_ns(start_time_ns(BOOT, ticks)) == expected
    finally:
        monkeypatch.undo()
        time.tzset()


def test_go_time():
    assert go_time(1700000000.0) == "2023-11-14 22:13:20 +0000 UTC"
    assert go_time(1700000000.5) == "2023-11-14 22:13:20.5 +0000 UTC"
    assert go_time_ns(1_700_000_000_000_000_001) == "2023-11-14 22:13:20.000000001 +0000 UTC"
    assert go_time_ns(0) == "1970-01-01 00:00:00 +0000 UTC"


def test_username_is_the_facts_username():
    # the grouper passes the EFFECTIVE uid's user name (process-exporter printed "nobody"
    # for real uid 0, effective uid 65534, and "4242" for an effective uid no user has)
    assert name_of("{{.Username}}", proc(1, "a", username="nobody")) == "nobody"
    assert name_of("{{.Username}}", proc(1, "a", username="4242")) == "4242"
    assert name_of("<{{.Username}}>", proc(1, "a", username=None)) == "<>"


@pytest.mark.parametrize(
    "argv, base, full",
    [  # printed by process-exporter ({{.ExeBase}}, {{.ExeFull}}) for comm "e"
        (("", "--x"), ".", ""),
        (("/usr/bin/foo/",), "foo", "/usr/bin/foo/"),
        (("/",), "/", "/"),
        (("foo//",), "foo", "foo//"),
        (("",), ".", ""),  # a cmdline of NULs only: procfs makes it [""]
        ((), "e", "e"),  # an empty cmdline: comm
        (("a", "", "b"), "a", "a"),
    ],
)
def test_exe_base_and_full_as_process_exporter(argv, base, full):
    assert name_of("[{{.ExeBase}}][{{.ExeFull}}]", proc(1, "e", cmdline=argv)) == f"[{base}][{full}]"


def test_go_base():
    cases = {"": ".", "/": "/", "///": "/", "a": "a", "a/": "a", "/a/b//": "b", "/x/.": ".", "a//b": "b"}
    assert {path: go_base(path) for path in cases} == cases


def test_exe_rules_as_process_exporter():
    config = parse_config(
        b"process_names:\n"
        b"  - {name: 'full', exe: [/usr/bin/foo/]}\n"
        b"  - {name: 'bar', exe: [bar/]}\n"
        b"  - {name: 'root', exe: [/]}\n"
        b"  - {name: 'dot', exe: ['.']}\n"
        b"  - {name: 'base', exe: [foo]}\n"
        b"  - {name: 'empty', exe: ['']}\n"
    )
    names = {argv: first_name(config, proc(1, "p", cmdline=argv)) for argv in [
        ("/usr/bin/foo",), ("/usr/bin/foo/",), ("", "--x"), ("/",), ("",), ("foo",), ("/opt/bar//",), ("bar/",), (),
    ]}
    assert names == {
        ("/usr/bin/foo",): "base",
        ("/usr/bin/foo/",): "full",
        ("", "--x"): "dot",  # filepath.Base("") is "."
        ("/",): "root",
        ("",): "dot",
        ("foo",): "base",
        ("/opt/bar//",): None,  # the rule's full path is "bar/"
        ("bar/",): "bar",
        (): None,
    }


def test_cgroups_as_procfs_parses_them():
    assert cgroup_paths("12:cpu,cpuacct:/x\n0::/user.slice/a b") == ["/x", "/user.slice/a b"]
    assert cgroup_paths("0::/a:b") == ["/a:b"]
    assert cgroup_paths("garbage\n0::/y") == []  # one bad line: none at all
    assert cgroup_paths("x:y:/z") == []  # the hierarchy id must be an integer
    assert cgroup_paths("") == [] and cgroup_paths(None) == []
    assert name_of("{{.Cgroups}}", proc(1, "a", cgroup="1:a:/x\n0::/y")) == "[/x /y]"


# -- the YAML file -------------------------------------------------------------------


def test_merge_keys():
    config = parse_config(
        b"""
.bases:                   # process-exporter ignores this key; it only holds the anchor
  jar: &jar
    name: "jar:{{.Matches.app}}"
    cmdline: ['(?P<app>\\w+)\\.jar']
process_names:
  - <<: *jar
    comm: [java]
  - <<: [*jar]
    name: "w:{{.Matches.app}}"
""",
        "c.yaml",
    )
    assert first_name(config, proc(1, "java", cmdline=("java", "-jar", "app.jar"))) == "jar:app"
    assert first_name(config, proc(2, "javaw", cmdline=("java", "-jar", "w.jar"))) == "w:w"


@pytest.mark.parametrize("content", [b"", b"# nothing here\n", b"---\n", b"process_names:\n", b"process_names: []\n"])
def test_a_config_without_matchers_matches_nothing(content):
    config = parse_config(content, "c.yaml")
    assert config.matchers == [] and config.literal_names == frozenset()
    assert config.match(proc(1, "bash")) == (None, None)


def test_nulls_and_scalars_as_yaml_v2_decodes_them():
    config = parse_config(
        b"process_names:\n"
        b"  - {name: ~, comm: [a]}\n"  # the default name
        b"  - {name: 'n{{.Comm}}', comm: [~]}\n"  # a null item is ""
        b"  - {name: x, comm: ~, cmdline: [xx]}\n"  # a null rule is no rule
        b"  - {name: 7, comm: [123]}\n"
        b"  - {name: y, comm: []}\n"  # never matches
    )
    assert first_name(config, proc(1, "a", cmdline=("/bin/ab",))) == "ab"
    assert first_name(config, proc(2, "", cmdline=("b",))) == "n"
    assert first_name(config, proc(3, "z", cmdline=("xx",))) == "x"
    assert first_name(config, proc(4, "123")) == "7"
    assert first_name(config, proc(5, "y")) is None


def test_only_the_first_document_is_read_and_a_repeated_key_wins():
    config = parse_config(b"process_names:\n  - {name: x, name: y, comm: [a]}\n---\n[[[\n")
    assert first_name(config, proc(1, "a")) == "y"


def test_default_config_groups_by_comm_and_skips_kernel_threads():
    config = load_config(None)
    assert first_name(config, proc(1, "sshd")) == "sshd"
    assert first_name(config, proc(2, "kworker/u8:0", is_kernel_thread=True, cmdline=())) is None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"process_names:\n  - comm: [a]\n    cmdlines: [x]\n",
         "c.yaml:3: process_names[0]: unknown key 'cmdlines' (expected one of name, comm, exe, cmdline)"),
        (b"process_names:\n  - name: x\n    cmdline: ['(']\n",
         "c.yaml:3: process_names[0] (name \"x\"): bad cmdline regex '(': missing ): ("),
        (b"process_names:\n  - name: x\n    cmdline: [a, '\\C']\n",
         "c.yaml:3: process_names[0] (name \"x\"): bad cmdline regex '\\\\C': invalid escape sequence: `\\C`"),
        (b"process_names:\n  - name: x\n    cmdline:\n      - '(?P<caf\xc3\xa9>a)'\n",
         "c.yaml:4: process_names[0] (name \"x\"): bad cmdline regex '(?P<caf\u00e9>a)': invalid named capture"),
        (b"process_names:\n  - name: x\n    cmdline: ['(?=a)']\n", "bad cmdline regex '(?=a)': invalid perl operator"),
        (b"process_names:\n  - name: x\n    cmdline: ['a{1001}']\n", "invalid repetition size"),
        (b"process_names:\n  - name: '{{.Foo}}'\n    comm: [a]\n",
         'c.yaml:2: process_names[0] (name "{{.Foo}}"): bad name template: unknown template field .Foo'),
        (b"process_names:\n  - name: '{{.Matches.port}}'\n    cmdline: ['x']\n",
         "no cmdline regex has a (?P<port>...) capture"),
        (b"process_names:\n  - name: x\n", 'c.yaml:2: process_names[0] (name "x"): no matchers provided'),
        (b"process_names:\n  - name: x\n    comm: ~\n", 'c.yaml:2: process_names[0] (name "x"): no matchers provided'),
        (b"procnames: []\n", "c.yaml:1: unknown key 'procnames' (expected 'process_names' or 'extra_labels')"),
        (b"base: &b {comm: [a]}\nprocess_names: [{comm: [b]}]\n", "c.yaml:1: unknown key 'base'"),  # unused
        (b"process_names:\n  - comm: a\n", "c.yaml:2: process_names[0]: comm must be a list of strings"),
        (b"process_names:\n  - comm: [[a]]\n", "c.yaml:2: process_names[0]: comm must be a list of strings"),
        (b"process_names:\n  - <<: 3\n    comm: [a]\n", "c.yaml:2: not valid YAML: expected a mapping"),
        (b"process_names: 3\n", "c.yaml:1: 'process_names' must be a list of matchers"),
        (b"process_names: [\n", "c.yaml:2: not valid YAML"),
        (b"hello\n", "c.yaml:1: expected a mapping with a 'process_names' list"),
        (b"- a\n", "c.yaml:1: expected a mapping with a 'process_names' list"),
    ],
)
def test_bad_config_is_one_line_naming_file_line_and_matcher(content, message):
    with pytest.raises(ConfigError) as info:
        parse_config(content, "c.yaml")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(message) or message in text, text


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}/nope.yaml: cannot read config: No such file")):
        load_config(str(tmp_path / "nope.yaml"))


def test_empty_file_loads(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_bytes(b"")
    assert load_config(str(path)).matchers == []


def test_process_exporter_example_config_loads():
    # the example from process-exporter's README, unchanged
    config = parse_config(
        b"""process_names:
  - name: "{{.Comm}}"
    cmdline:
    - '.+'
  - name: "{{.ExeFull}}:{{.Matches.Cfgfile}}"
    exe:
    - /usr/local/bin/prometheus
    cmdline:
    - -config.file\\s+(?P<Cfgfile>\\S+)
"""
    )
    assert isinstance(config, Config) and len(config.matchers) == 2
    prom = proc(1, "prometheus", cmdline=("/usr/local/bin/prometheus", "-config.file", "/etc/p.yml"))
    assert first_name(config, prom) == "prometheus"
    assert first_name(Config(config.matchers[1:]), prom) == "/usr/local/bin/prometheus:/etc/p.yml"


# -- the same names as process-exporter, on the same processes -----------------------

UNKNOWN_UID = 2999999  # a uid no user has (process-exporter prints the number)


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


DIFF_CONFIG = r"""
.bases:
  jar: &jar
    name: "jar:{{.Matches.app}}"
    cmdline: ['(?P<app>\w+)\.jar']
process_names:
  - {name: "posix:{{.Matches.n}}", comm: [posix], cmdline: ['--id=(?P<n>[[:digit:]]+)\z']}
  - {name: "ascii:{{.Matches.r}}", comm: [ascii], cmdline: ['--role=(?P<r>\w+\d)\b']}
  - {name: "quote:{{.Matches.q}}:{{.Matches.l}}", comm: [quote], cmdline: ['(?P<q>\Qa.b*\E) (?P<l>\pL+)']}
  - {name: "dup:{{.Matches.x}}", comm: [dup], cmdline: ['(?P<x>p) (?P<x>q)?']}
  - {name: "first:{{.Matches.x}}", comm: [first], cmdline: ['(?P<x>a|ab)(?P<y>c?)']}
  - {name: "map:{{.Matches}}", comm: [map], cmdline: ['(?P<app>\w+)\.(jar)', '(-)(?P<z>x)?']}
  - {name: "nomap:{{.Matches}}", comm: [nomap]}
  - {name: "x \n\t {{- .Comm -}} \n y", comm: [trim]}
  - {name: "c {{/* note */}} d {{- /* e */ -}} f}}g", comm: [comment]}
  - {name: "st:{{.StartTime}}", comm: [st]}
  - {name: "u:{{.Username}}", comm: [user]}
  - {name: "e:{{.ExeBase}}:{{.ExeFull}}", comm: [exe]}
  - {name: "cg:{{.Cgroups}}", comm: [cg]}
  - {name: "full:{{.ExeFull}}", comm: [exerule], exe: [/usr/bin/foo/]}
  - {name: "bar:{{.ExeFull}}", comm: [exerule], exe: [bar/]}
  - {name: "root", comm: [exerule], exe: [/]}
  - {name: "dot:{{.ExeFull}}", comm: [exerule], exe: ['.']}
  - {name: "base:{{.ExeFull}}", comm: [exerule], exe: [foo]}
  - <<: *jar
    comm: [java]
  - {name: ~, comm: [defname]}
"""

# (comm, /proc/PID/cmdline, extra) of each process of the tree
DIFF_PROCS = [
    ("posix", b"app\0--id=42\0", {}),
    ("posix", "app\0--id=٣٣\0".encode(), {}),
    ("posix", b"app\0--id=42x\0", {}),
    ("ascii", "x\0--role=веб1\0--id=٣٣\0".encode(), {}),
    ("ascii", b"x\0--role=web1\0", {}),
    ("quote", "x\0a.b* été\0".encode(), {}),
    ("quote", "x\0axb* été\0".encode(), {}),
    ("dup", b"a\0p q\0", {}),
    ("dup", b"a\0p z\0", {}),
    ("first", b"x\0abc\0", {}),
    ("map", b"java\0-jar\0foo.jar\0", {}),
    ("nomap", b"nomap\0", {}),
    ("trim", b"trim\0", {}),
    ("comment", b"comment\0", {}),
    *[("st", b"st\0", {"start": ticks}) for ticks in (0, 1, 10, 25, 123456789)],
    ("user", b"user\0", {"uid": 1000, "euid": 0}),
    ("user", b"user\0", {"uid": 0, "euid": UNKNOWN_UID}),
    *[("exe", cmdline, {}) for cmdline in (b"\0--x\0", b"/usr/bin/foo/\0", b"/\0", b"foo//\0", b"", b"a\0\0b\0\0\0")],
    ("cg", b"cg\0", {"cgroup": b"12:cpu,cpuacct:/x\n0::/user.slice/a b\n"}),
    ("cg", b"cg\0", {"cgroup": b"garbage\n0::/y\n"}),
    ("cg", b"cg\0", {"cgroup": b"x:y:/z\n"}),
    ("cg", b"cg\0", {"cgroup": b""}),
    *[("exerule", cmdline, {}) for cmdline in (
        b"/usr/bin/foo\0", b"/usr/bin/foo/\0", b"/opt/bar//\0", b"bar/\0", b"/\0", b"\0--x\0", b"foo\0")],
    ("java", b"java\0-jar\0app.jar\0", {}),
    ("defname", b"/usr/bin/svc\0-d\0", {}),
]

DIFF_EXPECTED = {
    "posix:42": 1,
    "ascii:web1": 1,
    "quote:a.b*:été": 1,
    "dup:q": 1,
    "dup:": 1,
    "first:a": 1,
    "map:map[:- app:foo z:]": 1,
    "nomap:map[]": 1,
    "xtrimy": 1,
    "c  df}}g": 1,
    "st:2023-11-14 22:13:20 +0000 UTC": 1,
    "st:2023-11-14 22:13:20.01 +0000 UTC": 1,
    "st:2023-11-14 22:13:20.1 +0000 UTC": 1,
    "st:2023-11-14 22:13:20.25 +0000 UTC": 1,
    "st:2023-11-29 05:09:27.89 +0000 UTC": 1,
    f"u:{user_name(0)}": 1,
    f"u:{user_name(UNKNOWN_UID)}": 1,
    "e:.:": 1,
    "e:foo:/usr/bin/foo/": 1,
    "e:/:/": 1,
    "e:foo:foo//": 1,
    "e:exe:exe": 1,
    "e:a:a": 1,
    "cg:[/x /user.slice/a b]": 1,
    "cg:[]": 3,
    "base:/usr/bin/foo": 1,
    "full:/usr/bin/foo/": 1,
    "bar:bar/": 1,
    "root": 1,
    "dot:": 1,
    "base:foo": 1,
    "jar:app": 1,
    "svc": 1,
}


def procfs_argv(data: bytes) -> tuple:
    """argv as prometheus/procfs's CmdLine makes it (what process-exporter matches): a
    cmdline of NULs only is [""], where exporter.tracker.parse_cmdline gives ()."""
    if not data:
        return ()
    return tuple(a.decode() for a in data.rstrip(b"\0").split(b"\0"))


def procsnap_names() -> collections.Counter:
    config = parse_config(DIFF_CONFIG.encode(), "diff.yaml")
    names = collections.Counter()
    for pid, (comm, cmdline, extra) in enumerate(DIFF_PROCS, start=100):
        ticks = extra.get("start", 0)
        p = proc(pid, comm, cmdline=procfs_argv(cmdline), start_ticks=ticks, start_time_seconds=BOOT + ticks / 100,
                 username=user_name(extra.get("euid", 0)), cgroup=extra.get("cgroup", b"0::/\n").decode().rstrip("\n"))
        name = first_name(config, p, start_ticks=ticks, boot_time=BOOT, clock_ticks=100)
        if name is not None:
            names[name] += 1
    return names


def test_names_are_the_ones_process_exporter_prints():
    assert procsnap_names() == DIFF_EXPECTED


def _tree_maker():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "make_proc_trees.py")
    spec = importlib.util.spec_from_file_location("make_proc_trees_for_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_diff_tree(root):
    m = _tree_maker()
    assert m.BTIME == BOOT
    m.write_root(root)
    for pid, (comm, cmdline, extra) in enumerate(DIFF_PROCS, start=100):
        uid, euid = extra.get("uid", 0), extra.get("euid", 0)
        status = m.status_bytes(pid, comm.encode())
        status = re.sub(rb"\nUid:[^\n]*", b"\nUid:\t%d\t%d\t%d\t%d" % (uid, euid, euid, euid), status)
        m.write_pid(root, pid, stat=m.stat_bytes(pid, comm.encode(), ppid=0, starttime=extra.get("start", 0)),
                    status=status, io=m.io_bytes(0, 0), cmdline=cmdline, cgroup=extra.get("cgroup", b"0::/\n"))


@pytest.mark.skipif(not os.access(PROCESS_EXPORTER, os.X_OK), reason="process-exporter not installed")
def test_process_exporter_agrees(tmp_path):
    from helpers import free_port, http_get
    from prometheus_client.parser import text_string_to_metric_families

    root = str(tmp_path / "proc")
    write_diff_tree(root)
    config = tmp_path / "diff.yaml"
    config.write_text(DIFF_CONFIG)
    port = free_port()
    pe = subprocess.Popen(
        [PROCESS_EXPORTER, "-procfs", root, "-config.path", str(config), "-web.listen-address", f"127.0.0.1:{port}",
         "-children=false", "-threads=false", "-gather-smaps=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        body, deadline = None, time.monotonic() + 30
        while body is None and pe.poll() is None and time.monotonic() < deadline:
            try:
                status, body = http_get(port)
                assert status == 200, status
            except OSError:
                time.sleep(0.05)
        assert body is not None, pe.communicate(timeout=10)[0].decode() if pe.poll() is not None else "no answer"
    finally:
        if pe.poll() is None:
            pe.terminate()
        pe.communicate(timeout=10)
    names = collections.Counter()
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "namedprocess_namegroup_num_procs":
            for sample in family.samples:
                names[sample.labels["groupname"]] += int(sample.value)
    assert names == DIFF_EXPECTED
    assert procsnap_names() == names


def test_start_time_of_a_garbled_starttime_renders_without_raising():
    from exporter.config import go_time_ns, start_time_ns

    assert go_time_ns(start_time_ns(1700000000, 25)) == "2023-11-14 22:13:20.25 +0000 UTC"
    assert go_time_ns(start_time_ns(2**64 - 1, 2**64 - 1)).endswith(" +0000 UTC")  # year beyond 9999
