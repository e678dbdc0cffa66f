# vfiofs — `make run` shows it working, `make test` runs everything. Both set up what they
# need: Debian packages (as root, when missing) and a virtualenv in .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MNT ?= /tmp/vfiofs-demo
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc qemu-system-x86 procps
# Linux uapi headers newer than the system's, for the ABI check (never installed)
UAPI := build/uapi

.PHONY: all deps venv headers run test lint bench fuzz clean

all: venv

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root to install):$$missing"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

headers: $(UAPI)/VERSION

$(UAPI)/VERSION: tests/c/fetch-uapi-headers.sh
	sh tests/c/fetch-uapi-headers.sh build

run: deps venv
	@sh examples/demo.sh $(PY) $(MNT)

# The whole suite over /dev/fuse read/write, then the mount tests again over io_uring
# (tests/transport.py enables the fuse module's enable_uring for that run and restores it).
test: deps venv headers
	VFIOFS_TRANSPORT=dev $(PY) -m pytest -q -p no:cacheprovider
	VFIOFS_TRANSPORT=uring $(PY) -m pytest -q -p no:cacheprovider -m mount
	$(VENV)/bin/ruff check vfiofs tests examples bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

lint: venv
	$(VENV)/bin/ruff check vfiofs tests examples bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: deps venv
	$(PY) bench/run.py

fuzz: deps venv
	VFIOFS_FUZZ_EXAMPLES=20000 $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) build *.egg-info tests/c/bin bench/bin
