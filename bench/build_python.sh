#!/usr/bin/env bash
# Build a CPython from a Debian source package into .tools/NAME, once, and print the path of
# its interpreter (progress goes to stderr, so `PY=$(bench/build_python.sh NAME)` works).
#
#   py313t  free-threaded 3.13 (--disable-gil) from Debian 13 (trixie)'s python3.13,
#           for bench/freethreaded.sh
#   py314   3.14 with the GIL from Debian unstable (sid)'s python3.14: 3.14 caches a tuple's
#           hash, and the reader's records must still hash like tuples there
#
# Neither is packaged for this machine (Debian 12). The first run downloads the upstream
# tarball of the source package (a registry download, ~24 MB) with a private apt state, so
# the system apt configuration is untouched, and builds it: about 10 minutes on 2 cores.
# No --enable-optimizations (keeps the build short). Optional modules whose -dev packages
# are missing (_ctypes, _ssl, ...) are skipped: the interpreter only has to run plain Python
# and import C extensions built with `cc -shared` against `NAME/bin/pythonX.Y-config --includes`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NAME=${1:-}
case $NAME in
  py313t) suite=trixie; srcpkg=python3.13; exe=python3.13t; flags=--disable-gil ;;
  py314)  suite=sid;    srcpkg=python3.14; exe=python3.14;  flags= ;;
  *) echo "usage: bench/build_python.sh py313t|py314" >&2; exit 2 ;;
esac
PREFIX=$ROOT/.tools/$NAME
PY=$PREFIX/bin/$exe

if [[ ! -x $PY ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  log=$work/build.log
  mkdir -p "$work/lists/partial"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" > "$work/sources.list"
  apt_opts=(-q -o "Dir::State::Lists=$work/lists" -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null)
  echo "build_python: fetching the $srcpkg source package from $suite" >&2
  if ! { apt-get "${apt_opts[@]}" update >"$log" 2>&1 \
         && (cd "$work" && apt-get "${apt_opts[@]}" source --download-only "$srcpkg" >>"$log" 2>&1); }; then
    tail -n 20 "$log" >&2
    echo "build_python: could not download the $srcpkg source package from $suite" >&2
    exit 1
  fi
  tar -C "$work" -xf "$work/$srcpkg"_*.orig.tar.xz
  src=$(echo "$work"/Python-*/)
  echo "build_python: building CPython $(basename "$src" | sed 's/^Python-//') ${flags:-(default configure)} into $PREFIX (about 10 minutes)" >&2
  # shellcheck disable=SC2086  # $flags: zero or one word
  if ! (cd "$src" && ./configure -q $flags --prefix="$PREFIX" --without-ensurepip >>"$log" 2>&1 \
        && make -s -j"$(nproc)" >>"$log" 2>&1 && make -s install >>"$log" 2>&1); then
    tail -n 40 "$log" >&2
    rm -rf "$PREFIX"   # no half-installed interpreter that a later run would take as built
    echo "build_python: building $NAME failed" >&2
    exit 1
  fi
fi

echo "$PY"
