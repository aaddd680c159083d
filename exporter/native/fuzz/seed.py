"""Writes the seed corpus of the fuzz harnesses: corpus/parse/ and corpus/walk/.

    .venv/bin/python exporter/native/fuzz/seed.py

The seeds are the nasty processes of tests/test_native_parity.py (its nasty_tree: a comm
with ')' and newlines, huge numbers, missing fields and files, NULs, CRLF, ...), the
cgroup files of tests/fixtures/k8s/cgroup/, and the /proc files of processes this script
starts on this machine (a sleeping process and a process with threads; no other
process's files are read, and their cgroup, which names this machine's container, is
replaced by a fixture's). Run again after a format
change of the harnesses; the finds of a fuzz run are added with `make -C
exporter/native/fuzz merge`. Seed files are named seed-*; others are libFuzzer's.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

import test_native_parity as parity  # noqa: E402  (the nasty cases themselves)

SEP = b"@@@@"  # fuzz_walk.c's SEP
PID_FILES = ("stat", "status", "io", "limits", "cmdline", "cgroup", "wchan", "smaps_rollup")
THREAD_FILES = ("stat", "status", "io", "wchan")
MAX_THREADS = 3
# fuzz_parse.c's first byte: which parsers read the text
PICK = {"stat": [0], "status": [1, 5], "io": [2], "smaps_rollup": [3], "limits": [4],
        "cmdline": [7], "cgroup": [7], "wchan": [7]}
WCHAN, SMAPS, SECOND_WALK = 1, 2, 8
BIG_CMDLINE, BIG_STATUS = 0xF0, 0xE0  # high nibble: that file made 1 MiB + 1
LIVE_CGROUP = (REPO / "tests" / "fixtures" / "k8s" / "cgroup" / "v2-systemd-containerd").read_bytes()


def read(path: Path) -> bytes | None:
    try:
        return path.read_bytes() if path.is_file() else None
    except OSError:
        return None


def walk_input(files: dict, threads: list[dict] = (), names: bytes = b"",
               flags: int = WCHAN | SMAPS | SECOND_WALK) -> bytes:
    """fuzz_walk's input: header, the pid files (absent ones flagged), names, threads."""
    absent, sections = 0, []
    for i, name in enumerate(PID_FILES):
        data = files.get(name)
        if data is None:
            absent |= 1 << i
        sections.append(data or b"")
    sections.append(names)
    for t in threads[:MAX_THREADS]:
        sections += [t.get(name) or b"" for name in THREAD_FILES]
    return bytes([flags, absent]) + SEP.join(sections)


def write(kind: str, name: str, data: bytes, seen: set) -> None:
    digest = hashlib.sha1(data).hexdigest()
    if digest in seen:
        return
    seen.add(digest)
    (HERE / "corpus" / kind / f"seed-{name}-{digest[:8]}").write_bytes(data)


def nasty(seen_parse: set, seen_walk: set) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = parity.make_root(Path(tmp))
        parity.nasty_tree(root)
        for d in sorted(root.iterdir(), key=lambda p: p.name):
            if not d.is_dir() or not (d.name.isascii() and d.name.isdigit()):
                continue
            files = {name: read(d / name) for name in PID_FILES}
            for name, data in files.items():
                if data is not None and len(data) < 8000:
                    for pick in PICK[name]:
                        write("parse", f"nasty{d.name}-{name}", bytes([pick]) + data, seen_parse)
            write("walk", f"nasty{d.name}", walk_input(files), seen_walk)
    # what the tree holds besides processes: names the pid parser must refuse
    names = b"\0".join([b"0064", b"2147483648", b"99999999999", b"-1", b"+5", b"1 2", b"0x10",
                        b"2147483647", b"12abc", "\u0661\u0662".encode()])
    stat = parity.stat_line(100, b"names")
    write("walk", "names", walk_input({"stat": stat}, names=names), seen_walk)


def cgroups(seen_parse: set, seen_walk: set) -> None:
    for path in sorted((REPO / "tests" / "fixtures" / "k8s" / "cgroup").iterdir()):
        data = path.read_bytes()
        write("parse", f"cgroup-{path.name}", bytes([7]) + data, seen_parse)
        files = {"stat": parity.stat_line(100, b"cg"), "cgroup": data, "status": parity.status_text()}
        write("walk", f"cgroup-{path.name}", walk_input(files), seen_walk)


def numbers(seen: set) -> None:
    for text in (b"0", b"1", b"007", b"", b"-1", b"+1", b" 1", b"1 ", b"18446744073709551615",
                 b"18446744073709551616", b"99999999999999999999999", b"\xd9\xa1", b"1e3", b"0x10"):
        write("parse", "uint", bytes([6]) + text, seen)


def live(seen_parse: set, seen_walk: set) -> None:
    """Processes started here: a sleeping one, and one with threads (wchan, task/)."""
    threaded = ("import threading, time\n"
                "for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
                "print('ready', flush=True); time.sleep(60)\n")
    procs = [subprocess.Popen(["sleep", "60"]),
             subprocess.Popen([sys.executable, "-c", threaded], stdout=subprocess.PIPE)]
    try:
        procs[1].stdout.readline()
        time.sleep(0.2)
        for kind, p in zip(("sleep", "threads"), procs):
            d = Path(f"/proc/{p.pid}")
            files = {name: read(d / name) for name in PID_FILES}
            files["cgroup"] = LIVE_CGROUP
            threads = []
            for tid in sorted(os.listdir(d / "task"), key=int)[:MAX_THREADS]:
                threads.append({name: read(d / "task" / tid / name) for name in THREAD_FILES})
            for name, data in files.items():
                if data is not None:
                    for pick in PICK[name]:
                        write("parse", f"live-{kind}-{name}", bytes([pick]) + data, seen_parse)
            write("walk", f"live-{kind}", walk_input(files, threads), seen_walk)
            # the same with the cmdline (cut) or the status (malformed) made 1 MiB + 1
            for big, name in ((BIG_CMDLINE, "bigcmdline"), (BIG_STATUS, "bigstatus")):
                write("walk", f"live-{kind}-{name}", walk_input(files, threads, flags=WCHAN | SMAPS | big),
                      seen_walk)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> None:
    for kind in ("parse", "walk"):
        (HERE / "corpus" / kind).mkdir(parents=True, exist_ok=True)
        for old in (HERE / "corpus" / kind).glob("seed-*"):
            old.unlink()
    seen_parse, seen_walk = set(), set()
    nasty(seen_parse, seen_walk)
    cgroups(seen_parse, seen_walk)
    numbers(seen_parse)
    live(seen_parse, seen_walk)
    for kind in ("parse", "walk"):
        files = list((HERE / "corpus" / kind).iterdir())
        print(f"corpus/{kind}: {len(files)} inputs, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
