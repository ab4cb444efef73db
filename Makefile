# numamove: `make run` and `make test` set everything up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PKGS := libnuma1 libnuma-dev numactl qemu-system-x86 busybox-static cpio groff-base
CFLAGS_CHECK := -O2 -std=gnu11 -Wall -Wextra -Werror -pthread

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## install the Debian packages numamove and its tests need (when root and missing)
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages: $$missing (run as root, or: sudo apt-get install $$missing)" >&2; exit 1; fi; \
	fi

$(STAMP): setup.py bin/numamove csrc/numamove.c csrc/numamove.h csrc/build_ffi.py $(wildcard numamove/*.py)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing numamove and its Python packages into $(VENV) (log: $(VENV)/pip.log)"
	@# compat: a plain path in a .pth file; the default editable finder imports pathlib, re and
	@# fnmatch at every interpreter start (~10 ms of each numamove run)
	@$(PY) -m pip install -e '.[test,lint]' --config-settings editable_mode=compat >$(VENV)/pip.log 2>&1 \
	  || { tail -30 $(VENV)/pip.log >&2; exit 1; }
	@$(PY) -c 'import numamove._native' || { echo "build failed: see $(VENV)/pip.log" >&2; exit 1; }
	@# bytecode now, whatever PYTHONDONTWRITEBYTECODE says: compiling at every start costs ~25 ms
	@$(PY) -m compileall -q numamove $(VENV)/lib >/dev/null
	@touch $@

build: deps $(STAMP) ## create .venv, install numamove and build its C extension

run: build ## the main job: move a live workload and a cgroup between nodes (one node: in a two-node guest)
	$(PY) tests/vm/harness.py demo

test: build ## every test: the host suite, then both NUMA guests (QEMU)
	$(PY) -m pytest -q tests
	$(PY) tests/vm/harness.py run --topology all

test-host: build ## only the host tests (multi-node tests are skipped with the reason)
	$(PY) -m pytest -q tests

test-numa: build ## only the multi-node tests, inside the two QEMU guests
	$(PY) tests/vm/harness.py run --topology all

bench: build ## benchmarks: engine vs memcpy here; in 2-node guests whole runs, proc vs migratepages, auto vs push/pull, a group's move vs cpuset.mems
	@mkdir -p .cache
	NUMAMOVE_CALIBRATION=.cache/calibration.json $(VENV)/bin/numamove calibrate -q
	NUMAMOVE_CALIBRATION=.cache/calibration.json $(VENV)/bin/numamove bench --size 1G --threads 1,2,4,auto \
	  --policy push,pull,auto --repeats 5
	$(VENV)/bin/numamove bench --buffer --size 1G --threads 1,2 --repeats 5
	$(PY) tests/vm/harness.py bench-whole
	$(PY) tests/vm/harness.py bench
	$(PY) tests/vm/harness.py bench-auto
	$(PY) tests/vm/harness.py bench-cgroup

nmbench: build/nmbench ## the C engine alone vs memcpy, no Python (build/nmbench SIZE_MIB THREADS...)

build/nmbench: csrc/nmbench.c csrc/numamove.c csrc/numamove.h
	@mkdir -p build
	gcc $(CFLAGS_CHECK) -Icsrc -o $@ csrc/nmbench.c csrc/numamove.c

man: build ## regenerate man/numamove.8 from the CLI's help (a test fails while it is stale)
	$(PY) -m numamove.manpage > man/numamove.8

lint: build ## ruff, mypy --strict on numamove/, and a -Werror build of the C
	$(VENV)/bin/ruff check numamove tests csrc
	$(VENV)/bin/mypy --strict numamove
	@# a whole -O2 build: -fsyntax-only misses the warnings that need the optimizer (maybe-uninitialized)
	gcc $(CFLAGS_CHECK) -Icsrc -o /dev/null csrc/nmbench.c csrc/numamove.c

clean: ## remove build outputs (keeps the guest kernel cache in .cache/)
	rm -rf build *.egg-info numamove/_native_lib.* numamove/__pycache__ tests/__pycache__ .pytest_cache .mypy_cache .ruff_cache

distclean: clean ## also remove .venv and the cached guest kernel
	rm -rf $(VENV) .cache

.PHONY: help deps build run test test-host test-numa bench nmbench man lint clean distclean
