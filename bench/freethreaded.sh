#!/usr/bin/env bash
# Free-threaded CPython check: the C reader builds against a free-threaded (3.13t)
# interpreter, imports without re-enabling the GIL, and gives consistent snapshots from
# several threads at once.
#
# No free-threaded CPython is packaged for this machine (Debian 12, pyenv's builds have
# the GIL), so the first run builds one from Debian 13's python3.13 source package (a
# registry download, ~23 MB) into .tools/py313t with bench/build_python.sh py313t: about
# 10 minutes on 2 cores, once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PREFIX=$ROOT/.tools/py313t
PY=$PREFIX/bin/python3.13t

bash bench/build_python.sh py313t >/dev/null

"$PY" -c 'import sysconfig, sys; assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"'
out=$(mktemp -d)
mkdir -p "$out/exporter"
cp exporter/*.py "$out/exporter/"
suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -shared -fPIC $("$PREFIX/bin/python3.13t-config" --includes) \
   exporter/native/*.c -o "$out/exporter/_reader$suffix"
echo "freethreaded: built exporter/_reader$suffix with $("$PY" -V)"
# no -X gil=0: that would force the GIL off whatever the module declares
env -u PYTHON_GIL PYTHONPATH="$out" "$PY" bench/freethreaded_check.py
rm -rf "$out"
