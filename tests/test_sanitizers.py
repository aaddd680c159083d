"""The sanitizer pass (issue 12): the C reader under AddressSanitizer and
UndefinedBehaviorSanitizer, in two ways.

- The libFuzzer harnesses of exporter/native/fuzz/ (the parsers, and the walk over a fake
  tree) built with clang -fsanitize=fuzzer,address,undefined and run FUZZ_SECONDS each
  (10 here; `make fuzz` runs them longer) from the committed corpus: no crash, no report.
- The extension built with ASan + UBSan into a directory of its own (the normal build is
  untouched), and tests/test_native_parity.py and tests/test_snapshot.py run once against
  it in a subprocess, the ASan runtime preloaded: no report. The Python twin's runs of the
  backend-parametrized tests are left out (they read nothing through C), and so are the
  RSS-bounded leak test (ASan's quarantine holds freed memory) and the 3 MiB cmdline case
  (the reader stops at 1 MiB as in the 1 MiB + 1 case; the rest is Python making bytes).

The two see different things. The walk reads each file into a buffer with room to spare,
so a parser reading a little past the text it was given reads its own buffer there and
ASan says nothing; the parse harness hands the parsers exact-size inputs, where it does.

A report fails: UBSan is built -fno-sanitize-recover=all, ASan halts on the first error,
and every report is written to a log file of its own (log_path: pytest's capture cannot
swallow it, and a child process's report counts too). LeakSanitizer is off for the
extension (CPython leaks by design at exit) and on for the harnesses. The canary test
shows the pass failing on a planted out-of-bounds read and overflow.

clang and compiler-rt are Debian's; `make test` installs them (its sanitizer-tools
target). Without them these tests are skipped.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_DIR = os.path.join(REPO, "exporter", "native", "fuzz")
FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "10"))
HARNESSES = ("parse", "walk")

SAN_CFLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
# CPython leaks by design; a report ends the process with status 1
ASAN_OPTIONS = "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=1"
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1"
REPORT = re.compile(rb"ERROR: AddressSanitizer|runtime error:|SUMMARY: \w+Sanitizer|ERROR: libFuzzer")


def _clang_runtime(name: str) -> str | None:
    """The path of a compiler-rt file of the clang on PATH, or None."""
    if shutil.which("clang") is None:
        return None
    out = subprocess.run(["clang", f"-print-file-name={name}"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


ASAN_RUNTIME = _clang_runtime("libclang_rt.asan-x86_64.so")
needs_clang = pytest.mark.skipif(
    ASAN_RUNTIME is None or _clang_runtime("libclang_rt.fuzzer-x86_64.a") is None,
    reason="clang and its compiler-rt are not installed (make test installs them)",
)
pytestmark = needs_clang


def sanitizer_env(logdir: str, **extra) -> dict:
    """The environment of a process run against sanitized code: the ASan runtime preloaded
    (Python itself is not built with it), reports to files in logdir."""
    os.makedirs(logdir, exist_ok=True)
    env = dict(os.environ, **extra)
    env["LD_PRELOAD"] = ASAN_RUNTIME
    env["ASAN_OPTIONS"] = f"{ASAN_OPTIONS}:log_path={logdir}/report"
    env["UBSAN_OPTIONS"] = f"{UBSAN_OPTIONS}:log_path={logdir}/report"
    return env


def reports(logdir: str) -> str:
    """Every sanitizer report written to logdir, concatenated ('' when none)."""
    text = []
    for name in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else ():
        with open(os.path.join(logdir, name), "rb") as f:
            text.append(f"--- {name}\n" + f.read().decode(errors="replace"))
    return "\n".join(text)


def build_sanitized_extension(dest: str, src_root: str = REPO) -> str:
    """exporter/ of src_root with its C reader built with ASan + UBSan, in dest (a directory
    to put first on sys.path). The Python modules are copies; the extension is compiled
    from exporter/native/*.c as setup.py compiles exporter._reader, by clang directly (so
    nothing else setup.py builds comes along). Returns the extension's path."""
    pkg = os.path.join(dest, "exporter")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(os.path.join(src_root, "exporter"), pkg,
                    ignore=shutil.ignore_patterns("*.so", "*.stamp", "__pycache__", "native"))
    sources = sorted(glob.glob(os.path.join(src_root, "exporter", "native", "*.c")))
    assert sources
    ext = os.path.join(pkg, "_reader" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = ["clang", "-shared", "-fPIC", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
           *SAN_CFLAGS.split(), "-shared-libasan", "-I" + sysconfig.get_paths()["include"],
           *sources, "-o", ext]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, " ".join(cmd) + "\n" + out.stdout + out.stderr
    return ext


# The inner pytest: the sanitized exporter first on sys.path (before the working directory
# that -c puts there), proven loaded before any test runs; the Python twin's parametrized
# runs deselected.
INNER = textwrap.dedent("""
    import sys
    san = sys.argv[1]
    sys.path.insert(0, san)
    import exporter._reader
    assert exporter._reader.__file__.startswith(san + "/"), exporter._reader.__file__
    from exporter.reader import native_available
    assert native_available()
    import pytest

    class OnlyNative:
        def pytest_collection_modifyitems(self, config, items):
            python = [i for i in items
                      if getattr(i, "callspec", None) and i.callspec.params.get("backend") == "python"]
            if python:
                config.hook.pytest_deselected(items=python)
                items[:] = [i for i in items if i not in python]

    print("sanitized reader:", exporter._reader.__file__, flush=True)
    sys.exit(pytest.main(sys.argv[2:], plugins=[OnlyNative()]))
""")


def run_tests_sanitized(san: str, logdir: str, tests: list[str], timeout: int = 1200):
    """pytest on tests against the sanitized build in san. (returncode, output, reports)"""
    env = sanitizer_env(logdir, PYTHONPATH=san, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_ADDOPTS", None)
    # cwd: the sanitized tree, so children started with `python -c` import it too
    out = subprocess.run([sys.executable, "-c", INNER, san, "-q", "-p", "no:cacheprovider",
                          "--rootdir", REPO, *tests],
                         cwd=san, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=timeout)
    return out.returncode, (out.stdout + out.stderr).decode(errors="replace"), reports(logdir)


def test_parity_and_snapshot_tests_under_asan_and_ubsan(tmp_path):
    san = str(tmp_path / "asan")
    build_sanitized_extension(san)
    tests = [os.path.join(REPO, "tests", name) for name in ("test_native_parity.py", "test_snapshot.py")]
    tests += [  # rootdir nodeids
        # RSS bounds mean nothing here: ASan keeps freed memory in quarantine (up to 256 MiB)
        "--deselect", "tests/test_snapshot.py::test_repeated_snapshots_do_not_leak",
        # the C reader reads 1 MiB of it as of the 1 MiB + 1 case; the rest is the test's
        # Python making 3 MiB of bytes one by one (about 20 s here)
        "--deselect", "tests/test_native_parity.py::test_cmdline_whole_then_cut_at_1mib[3145728]",
    ]
    rc, output, found = run_tests_sanitized(san, str(tmp_path / "logs"), tests)
    assert found == "", f"sanitizer reports:\n{found}\n--- pytest output (tail):\n{output[-4000:]}"
    assert not REPORT.search(output.encode()), output[-8000:]
    assert rc == 0, output[-8000:]
    assert f"sanitized reader: {san}/exporter/_reader" in output
    assert "exporter._reader not built" not in output  # no native test skipped for want of it
    assert re.search(r"\b\d{2,} passed", output), output[-2000:]


@pytest.mark.parametrize("harness", HARNESSES)
def test_fuzz_harness_short_run(tmp_path, harness):
    """`make fuzz`, bounded: FUZZ_SECONDS of one harness from its corpus (finds go to a
    temporary directory; the committed corpus is only read)."""
    out_dir = str(tmp_path / "fuzz")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("ASAN_OPTIONS", None)
    env.pop("UBSAN_OPTIONS", None)
    out = subprocess.run(["make", "-s", "-C", FUZZ_DIR, "run", f"HARNESSES={harness}",
                          f"FUZZ_SECONDS={FUZZ_SECONDS}", f"OUT={out_dir}"],
                         env=env, capture_output=True, text=True, timeout=FUZZ_SECONDS + 300)
    log_path = os.path.join(out_dir, f"fuzz_{harness}.log")
    log = open(log_path, errors="replace").read() if os.path.exists(log_path) else ""
    assert out.returncode == 0, out.stdout + out.stderr + log[-6000:]
    assert not REPORT.search(log.encode()), log[-6000:]
    assert "Done" in log and "stat::number_of_executed_units" in log, log[-3000:]
    execs = int(re.search(r"stat::number_of_executed_units: *(\d+)", log).group(1))
    assert execs > 10 * FUZZ_SECONDS, f"only {execs} inputs in {FUZZ_SECONDS} s"
    assert os.listdir(os.path.join(out_dir, "artifacts")) == []
    # the harness removes its tree at exit
    assert not [n for n in os.listdir(tmp_path) if n.startswith("procsnap-fuzz-walk-")]


CANARY = r"""
#include <limits.h>
#include <stdlib.h>
int canary_oob(int i) { volatile int *a = malloc(4 * sizeof(int)); int v; a[0] = 1; v = a[i]; free((void *)a); return v; }
int canary_overflow(int x) { return x + 1; }
"""


@pytest.mark.parametrize("call, expect", [
    ("canary_oob(4)", "heap-buffer-overflow"),
    ("canary_overflow(2**31 - 1)", "signed integer overflow"),
])
def test_a_report_fails_the_pass(tmp_path, call, expect):
    """Code built with the extension's flags and run as the pass runs it: a planted bug is
    reported in the log directory and the process fails, under pytest's capture too."""
    src, lib = tmp_path / "canary.c", tmp_path / "libcanary.so"
    src.write_text(CANARY)
    subprocess.run(["clang", "-shared", "-fPIC", *SAN_CFLAGS.split(), "-shared-libasan", "-o", str(lib), str(src)],
                   check=True)
    test = tmp_path / "test_canary.py"
    test.write_text(f"import ctypes\ndef test_it():\n    ctypes.CDLL({str(lib)!r}).{call}\n")
    logdir = str(tmp_path / "logs")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
                         cwd=str(tmp_path), env=sanitizer_env(logdir), capture_output=True, timeout=120)
    assert out.returncode != 0
    assert expect in reports(logdir), (out.stdout + out.stderr).decode(errors="replace")
