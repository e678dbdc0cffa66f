# vfiofs — `make run` shows it working, `make test` runs everything. Both set up what they
# need: Debian packages (as root, when missing) and a virtualenv in .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MNT ?= /tmp/vfiofs-demo
N ?= 20000
# fuse3: fusermount3; gcc: the C examples; qemu-system-x86: QEMU as a client; pciutils:
# lspci in docs/topology.md; python3 and util-linux (setpriv, unshare, nsenter): the
# tests that run the daemon as an unprivileged user
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc qemu-system-x86 procps pciutils python3 util-linux
APT_GET := apt-get -o DPkg::Lock::Timeout=600

.PHONY: all deps venv run test lint bench fuzz clean

all: venv

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing Debian packages (run as root to install):$$missing"; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: deps venv
	@sh examples/demo.sh $(PY) $(MNT)

PYTEST_CMD = $(PY) -m pytest -q -p no:cacheprovider --run-slow
RUFF_CMD = $(VENV)/bin/ruff check vfiofs tests examples bench
MYPY_CMD = $(VENV)/bin/mypy

# pytest (slow tests included), ruff and mypy all run; each one's result is reported and
# the target fails if any of them failed
test: deps venv
	@pytest=0; ruff=0; mypy=0; \
	$(PYTEST_CMD) || pytest=$$?; \
	$(RUFF_CMD) || ruff=$$?; \
	$(MYPY_CMD) || mypy=$$?; \
	say() { if [ "$$2" = 0 ]; then echo "  $$1: ok"; else echo "  $$1: FAILED (exit status $$2)"; fi; }; \
	echo "make test:"; say pytest $$pytest; say ruff $$ruff; say mypy $$mypy; \
	[ $$pytest = 0 ] && [ $$ruff = 0 ] && [ $$mypy = 0 ]

lint: venv
	$(RUFF_CMD)
	$(MYPY_CMD)

bench: deps venv
	$(PY) bench/run.py

# a fuzzing campaign of N ioctl calls through a real mount; prints the errno histogram
fuzz: deps venv
	VFIOFS_FUZZ_CALLS=$(N) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) build *.egg-info tests/c/bin bench/bin
