# vfiofs — `make run` shows it working, `make test` runs everything. Both set up what they
# need: Debian packages (as root, when missing) and a virtualenv in .venv.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MNT ?= /tmp/vfiofs-demo
GUEST_DEVICES ?=
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc qemu-system-x86 procps kmod

.PHONY: all deps venv run test lint bench fuzz clean guest guest-demo

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

run: deps venv
	@sh examples/demo.sh $(PY) $(MNT)

test: deps venv guest
	$(PY) -m pytest -q -p no:cacheprovider
	$(VENV)/bin/ruff check vfiofs tests examples bench
	$(VENV)/bin/mypy

# The guest image for tests/guest (Debian's kernel + a busybox initramfs), cached in
# build/guest; `make guest-demo` boots it with a console on this terminal.
guest: deps venv
	$(PY) -m tests.guest.image

guest-demo: guest
	$(PY) -m tests.guest.demo $(GUEST_DEVICES)

lint: venv
	$(VENV)/bin/ruff check vfiofs tests examples bench
	$(VENV)/bin/mypy

bench: deps venv
	$(PY) bench/run.py

fuzz: deps venv
	VFIOFS_FUZZ_EXAMPLES=20000 $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

clean:
	rm -rf $(VENV) build *.egg-info tests/c/bin bench/bin
