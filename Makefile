# vfiofs — `make run` shows it working, `make test` runs everything. Both set up what they
# need: Debian packages (as root, when missing) and a virtualenv in .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MNT ?= /tmp/vfiofs-demo
N ?= 20000
GUEST_DEVICES ?=
# fuse3: fusermount3; gcc: the C examples; qemu-system-x86: QEMU as a client; pciutils:
# lspci in docs/topology.md; python3 and util-linux (setpriv, unshare, nsenter): the
# tests that run the daemon as an unprivileged user; kmod: depmod for the guest image
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc qemu-system-x86 procps pciutils python3 util-linux kmod
APT_GET := apt-get -o DPkg::Lock::Timeout=600
# Linux uapi headers newer than the system's, for the ABI check (never installed)
UAPI := build/uapi

.PHONY: all deps venv headers run test lint bench fuzz clean guest guest-demo

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

headers: $(UAPI)/VERSION

$(UAPI)/VERSION: tests/c/fetch-uapi-headers.sh
	sh tests/c/fetch-uapi-headers.sh build

run: deps venv
	@sh examples/demo.sh $(PY) $(MNT)

PYTEST_CMD = VFIOFS_TRANSPORT=dev $(PY) -m pytest -q -p no:cacheprovider --run-slow
URING_CMD = VFIOFS_TRANSPORT=uring $(PY) -m pytest -q -p no:cacheprovider --run-slow -m mount
RUFF_CMD = $(VENV)/bin/ruff check vfiofs tests examples bench
MYPY_CMD = $(VENV)/bin/mypy
IMPORTS_CMD = $(VENV)/bin/lint-imports --no-cache

# The whole suite over /dev/fuse read/write, then the mount tests again over io_uring
# (tests/transport.py enables the fuse module's enable_uring for that run and restores
# it), ruff, mypy and the import-linter contracts: all run, each one's result is
# reported, and the target fails if any of them failed.
test: deps venv headers guest
	@pytest=0; uring=0; ruff=0; mypy=0; imports=0; \
	$(PYTEST_CMD) || pytest=$$?; \
	$(URING_CMD) || uring=$$?; \
	$(RUFF_CMD) || ruff=$$?; \
	$(MYPY_CMD) || mypy=$$?; \
	$(IMPORTS_CMD) || imports=$$?; \
	say() { if [ "$$2" = 0 ]; then echo "  $$1: ok"; else echo "  $$1: FAILED (exit status $$2)"; fi; }; \
	echo "make test:"; say pytest $$pytest; say "pytest, mount tests over io_uring" $$uring; \
	say ruff $$ruff; say mypy $$mypy; say lint-imports $$imports; \
	[ $$pytest = 0 ] && [ $$uring = 0 ] && [ $$ruff = 0 ] && [ $$mypy = 0 ] && [ $$imports = 0 ]

# The guest image for tests/guest (Debian's kernel + a busybox initramfs), cached in
# build/guest; `make guest-demo` boots it with a console on this terminal.
guest: deps venv
	$(PY) -m tests.guest.image

guest-demo: guest
	$(PY) -m tests.guest.demo $(GUEST_DEVICES)

lint: venv
	$(RUFF_CMD)
	$(MYPY_CMD)
	$(IMPORTS_CMD)

bench: deps venv
	$(PY) bench/run.py

# a fuzzing campaign of N ioctl calls through a real mount; prints the errno histogram
fuzz: deps venv
	VFIOFS_FUZZ_CALLS=$(N) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) build *.egg-info tests/c/bin bench/bin
