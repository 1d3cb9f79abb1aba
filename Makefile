# ThermoPilot: `make demo` and `make test` do all set-up themselves, once; both are quiet when
# everything is already installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.thermopilot-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NATIVE := $(wildcard firmware/native/*.c firmware/native/*.h) host/native_build.py

.PHONY: demo test setup system-packages bench bench-protocol bench-control bench-plants \
	bench-firmware lint clean

demo: setup
	@$(VENV)/bin/thermopilot hil run hil/scenarios/battery_hold.toml

test: setup system-packages lint
	@$(PY) -m pytest -q

setup: $(STAMP)

$(PY):
	@$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py $(NATIVE) | $(PY)
	@echo "setting up $(VENV) (once)"
	@$(PY) -m pip install -qq --disable-pip-version-check --upgrade pip setuptools wheel cffi
	@$(PY) -m pip install -qq --disable-pip-version-check -e '.[test]'
	@touch $@

# Cross compilers for the C core's portability check (Cortex-M0+/M33, RV32) and valgrind for
# the instruction-count benchmark; installed from Debian's packages when missing.
system-packages:
	@if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v riscv64-unknown-elf-gcc >/dev/null \
	   || ! command -v valgrind >/dev/null; then \
	  echo "installing gcc-arm-none-eabi, gcc-riscv64-unknown-elf, valgrind (once)"; \
	  $(SUDO) apt-get update -q >/dev/null && \
	  $(SUDO) apt-get install -y -q gcc-arm-none-eabi gcc-riscv64-unknown-elf valgrind >/dev/null; \
	fi

bench: bench-protocol bench-control bench-plants bench-firmware

bench-protocol: setup
	@$(PY) benchmarks/bench_protocol.py

bench-control: setup system-packages
	@$(PY) benchmarks/bench_control.py

bench-plants: setup
	@$(PY) benchmarks/bench_plants.py

bench-firmware: setup
	@$(PY) benchmarks/bench_firmware.py

lint: setup
	@$(VENV)/bin/ruff check --quiet .
	@$(VENV)/bin/ruff format --check --quiet .

clean:
	rm -rf $(VENV) build *.egg-info report host/_tpcore*.so
