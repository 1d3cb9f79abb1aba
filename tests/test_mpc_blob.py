"""The MPC blob layout is written once (thermopilot.host.control.blob) and generated for the
C core and the firmware; the three readers agree on it."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from thermopilot.host._tpcore import ffi, lib
from thermopilot.host.control import blob
from thermopilot.host.control.design import mpc_precompute

ROOT = Path(__file__).resolve().parent.parent


def test_generated_files_are_current():
    assert blob.main(["--check"]) == 0, "run python -m thermopilot.host.control.blob"
    assert blob.C_HEADER.read_text() == blob.generate_c_header()
    assert blob.FIRMWARE.read_text() == blob.generate_firmware()
    proc = subprocess.run(
        [sys.executable, "-m", "thermopilot.host.control.blob", "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_on_a_stale_or_missing_file(tmp_path, capsys):
    header = tmp_path / "tp_mpc_blob.h"
    firmware = tmp_path / "mpc_blob.py"
    header.write_text(blob.generate_c_header())
    firmware.write_text(blob.generate_firmware().replace("VERSION = const(", "VERSION = const(1+"))
    assert blob.main(["--check", "--c-header", str(header), "--firmware", str(firmware)]) == 1
    assert "mpc_blob.py is out of date" in capsys.readouterr().out
    firmware.write_text(blob.generate_firmware())
    assert blob.main(["--check", "--c-header", str(header), "--firmware", str(firmware)]) == 0
    missing = tmp_path / "none.h"
    assert blob.main(["--check", "--c-header", str(missing), "--firmware", str(firmware)]) == 1


def test_generated_files_say_so_and_name_their_generator():
    for path in (blob.C_HEADER, blob.FIRMWARE):
        head = path.read_text().splitlines()[0]
        assert "do not edit" in head and "host/control/blob.py" in head, path


def test_c_header_constants_match_the_host():
    assert int(lib.TP_MPC_BLOB_VERSION) == blob.VERSION
    assert int(lib.TP_MPC_HEADER_BYTES) == blob.HEADER_BYTES
    assert int(lib.TP_MPC_BLOB_MAGIC).to_bytes(4, "little") == blob.MAGIC


@pytest.fixture()
def firmware_mpc():
    saved = {k: sys.modules.get(k) for k in ("micropython", "tpfw", "tpfw.mpc", "tpfw.mpc_blob")}
    stub = types.ModuleType("micropython")
    stub.const = lambda x: x
    stub.native = stub.viper = lambda f: f
    sys.modules["micropython"] = stub
    for k in ("tpfw", "tpfw.mpc", "tpfw.mpc_blob"):
        sys.modules.pop(k, None)
    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        import tpfw.mpc

        yield tpfw.mpc
    finally:
        sys.path.remove(str(ROOT / "firmware"))
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.mark.parametrize("dims", [(1, 1, 0, 0, 1), (4, 2, 1, 4, 20), (8, 3, 3, 8, 30)])
def test_host_firmware_and_c_read_the_same_layout(dims, firmware_mpc):
    nx, nu, nd, ny, n = dims
    rng = np.random.default_rng(nx * 100 + n)
    A = rng.normal(size=(nx, nx))
    A *= 0.8 / np.max(np.abs(np.linalg.eigvals(A)))
    data = mpc_precompute(
        A, rng.normal(size=(nx, nu)), rng.normal(size=(nx, nd)) if nd else None, np.eye(nx),
        np.eye(nu), horizon=n, C=rng.normal(size=(ny, nx)) if ny else None,
        R_du=0.1 * np.eye(nu), u_min=-1.0, u_max=1.0, du_min=-0.1, du_max=0.1,
        y_min=-1.0, y_max=1.0,
    )  # fmt: skip
    host = blob.unpack(data)
    nb = host["nb"]
    assert len(data) == blob.HEADER_BYTES + 4 * sum(
        c for _, c in blob.fields(nx, nu, nd, ny, n, nb)
    )
    # firmware: the generated layout gives every field the values the host stored
    dims_fw, fields = firmware_mpc._fields(data)
    assert dims_fw == (nx, nu, nd, ny, n, nb)
    for name, _ in blob.fields(nx, nu, nd, ny, n, nb):
        got = np.array(fields[name], dtype=float).ravel()
        np.testing.assert_array_equal(got, np.asarray(host[name], dtype=float).ravel(), name)
    assert firmware_mpc.parse_blob(data)[:5] == (nx, nu, nd, ny, n)
    # C: the generated X-macro lists give the same length, and the values land in place
    m = ffi.new("tp_mpc_t *")
    assert lib.tp_mpc_load(m, data, len(data)) == lib.TP_MPC_BLOB_OK
    np.testing.assert_array_equal(np.array(ffi.unpack(m.u_max, nu)), np.float32(host["u_max"]))
    assert m.max_iter == host["max_iter"] and np.float32(m.tol) == np.float32(host["tol"])
    with pytest.raises(ValueError, match="length"):
        firmware_mpc.parse_blob(data[:-4])
