"""process-exporter's config format: matching, naming, and one-line errors."""

import re

import pytest

from exporter.config import ConfigError, Config, go_time, load_config, parse_config
from procs import proc


def first_name(config, p):
    matcher, captures = config.match(p)
    if matcher is None:
        return None
    from exporter.config import Facts

    return matcher.template.render(
        Facts(p.comm, p.cmdline or (), p.username, p.pid, p.start_time_seconds, p.cgroup, captures)
    )


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


def test_go_named_group_syntax_is_accepted():
    config = parse_config(b"process_names: [{name: '{{.Matches.x}}', cmdline: ['--x=(?<x>\\w+)']}]")
    assert first_name(config, proc(1, "a", cmdline=("a", "--x=yes"))) == "yes"


def test_start_time_renders_like_go(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    assert go_time(1700000000.0) == "2023-11-14 22:13:20 +0000 UTC"
    assert go_time(1700000000.5) == "2023-11-14 22:13:20.5 +0000 UTC"


def test_default_config_groups_by_comm_and_skips_kernel_threads():
    config = load_config(None)
    assert first_name(config, proc(1, "sshd")) == "sshd"
    assert first_name(config, proc(2, "kworker/u8:0", is_kernel_thread=True, cmdline=())) is None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"process_names:\n  - comm: [a]\n    cmdlines: [x]\n",
         'c.yaml:3: process_names[0]: unknown key \'cmdlines\' (expected one of name, comm, exe, cmdline)'),
        (b"process_names:\n  - name: x\n    cmdline: ['(']\n",
         'c.yaml:3: process_names[0] (name "x"): bad cmdline regex \'(\': missing ), unterminated subpattern at position 0'),
        (b"process_names:\n  - name: '{{.Foo}}'\n    comm: [a]\n",
         'c.yaml:2: process_names[0] (name "{{.Foo}}"): bad name template: unknown template field .Foo'),
        (b"process_names:\n  - name: '{{.Matches.port}}'\n    cmdline: ['x']\n",
         "no cmdline regex has a (?P<port>...) capture"),
        (b"process_names:\n  - name: x\n", 'c.yaml:2: process_names[0] (name "x"): no matchers provided'),
        (b"procnames: []\n", "c.yaml:1: unknown key 'procnames' (expected 'process_names')"),
        (b"process_names:\n  - comm: a\n", "c.yaml:2: process_names[0]: comm must be a list of strings"),
        (b"process_names: [\n", "c.yaml:2: not valid YAML"),
        (b"", "c.yaml: empty config"),
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
