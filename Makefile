# Two commands on a fresh Debian 12 / Python 3.11 machine:
#   make demo   - sets everything up, then runs the simulated robot + policy node closed loop
#   make test   - sets everything up, then runs the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/.stamps
TORCH := torch==2.13.0
APT_PACKAGES := libusb-1.0-0
PKG_FILES := ros2_ws/src/flare_policy/setup.py ros2_ws/src/flare_bringup/setup.py training/pyproject.toml
export PYTHONUNBUFFERED := 1

.PHONY: all setup test demo bench report clean help
all: help
help:
	@echo "make demo   - set up (.venv) and run the closed-loop simulated-robot demo"
	@echo "make test   - set up (.venv) and run the tests"
	@echo "make setup  - only set up the virtual environment"
	@echo "make bench  - benchmarks (flare-policy bench kv/step/node, flare-train bench throughput/bc)"
	@echo "make report - FLaRe's experiments on mini-CHORES, small budget (cached runs; ~42 min on 2 cores)"

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	  || echo "warning: could not install$$missing (only the RealSense camera node needs it)"; \
	fi
	@touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/torch: | $(PY)
	@mkdir -p $(STAMPS)
	$(PIP) install -q $(TORCH)
	@touch $@

$(STAMPS)/deps: requirements.txt constraints.txt $(STAMPS)/torch
	$(PIP) install -q -c constraints.txt -r requirements.txt
	@touch $@

$(STAMPS)/project: $(PKG_FILES) $(STAMPS)/deps
	$(PIP) install -q --no-deps -e ros2_ws/src/flare_policy -e ros2_ws/src/flare_bringup -e training
	@touch $@

setup: $(STAMPS)/apt $(STAMPS)/project

test: setup
	$(PY) -m pytest tests

demo: setup
	$(VENV)/bin/flare-demo

bench: setup
	$(VENV)/bin/flare-policy bench kv
	$(VENV)/bin/flare-policy bench step
	$(VENV)/bin/flare-policy bench node
	$(VENV)/bin/flare-train bench throughput
	$(VENV)/bin/flare-train bench bc

report: setup
	$(VENV)/bin/flare-train report --suite mini-chores --budget small

clean:
	rm -rf $(VENV) runs
