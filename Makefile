# ThermoPilot: `make demo` and `make test` do all set-up themselves, once; both are quiet when
# everything is already installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.thermopilot-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NATIVE := $(wildcard firmware/native/*.c firmware/native/*.h) host/native_build.py

.PHONY: demo test setup system-packages bench bench-protocol bench-control bench-plants \
	bench-firmware bench-natmod bench-hil lint clean natmod

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

bench: bench-protocol bench-control bench-plants bench-firmware bench-natmod bench-hil

bench-protocol: setup
	@$(PY) benchmarks/bench_protocol.py

bench-control: setup system-packages
	@$(PY) benchmarks/bench_control.py

bench-plants: setup
	@$(PY) benchmarks/bench_plants.py

bench-firmware: setup
	@$(PY) benchmarks/bench_firmware.py

bench-natmod: setup
	@$(PY) benchmarks/bench_natmod.py

# one-hour scenarios of every plant as whole `thermopilot hil run` processes, this tree and
# HIL_BASELINE (the rig before the lockstep work) interleaved; about 10 minutes
HIL_BASELINE ?= b910325
bench-hil: setup
	@$(PY) benchmarks/bench_hil.py --baseline $(HIL_BASELINE)

# The C core as MicroPython dynamic native modules (.mpy), one per board architecture, into
# firmware/tpcore_mpy/ with its manifest. Needs a MicroPython source tree (git clone
# https://github.com/micropython/micropython) and the cross compilers; CI never runs this,
# it tests the committed files. Default: x64 armv6m armv7emsp rv32imc, and xtensawin (classic
# ESP32) where Espressif's toolchain is on PATH; NATMOD_ARCHS="..." picks some.
NATMOD_ARCHS ?=
natmod: setup
	@if [ -z "$(MPY_DIR)" ]; then \
	  echo "usage: make natmod MPY_DIR=/path/to/micropython (see boards/custom-firmware.md)"; \
	  exit 2; fi
	@$(PY) -c "import elftools, ar" 2>/dev/null || \
	  $(PY) -m pip install -qq --disable-pip-version-check -e '.[natmod]'
	@$(PY) firmware/native/natmod/build.py --mpy-dir "$(MPY_DIR)" $(NATMOD_ARCHS)

lint: setup
	@$(VENV)/bin/ruff check --quiet .
	@$(VENV)/bin/ruff format --check --quiet .

clean:
	rm -rf $(VENV) build *.egg-info report host/_tpcore*.so
