"""The firmware's C-module path (PIDNative, MPCNative) against the host classes.

The board's `tpcore` module cannot be built here (no MicroPython source tree), so this test
stands in a `tpcore` written over the same C core through cffi, with the argument layout of
firmware/native/tp_mod.c (array('f') buffers mapped onto tp_pid_t / tp_mpc_t). It checks the
firmware glue: field indices, buffer sizes, argument order; the answers must be identical to
the host classes (same C code, same float32).
"""

import sys
import types
from array import array
from pathlib import Path

import numpy as np
import pytest

from thermopilot.host._tpcore import ffi, lib
from thermopilot.host.control.mpc import MPC
from thermopilot.host.control.pid import PID

ROOT = Path(__file__).resolve().parent.parent


def _tpcore_stand_in():
    mod = types.ModuleType("tpcore")

    def pid(buf):
        return ffi.from_buffer("tp_pid_t *", buf, require_writable=True)

    def mpc(ws):
        return ffi.from_buffer("tp_mpc_t *", ws, require_writable=True)

    mod.PID_NFLOATS = lib.TP_PID_NFLOATS
    mod.MPC_WORKSPACE_BYTES = ffi.sizeof("tp_mpc_t")
    mod.pid_init = lambda buf, kp, ki, kd, lo, hi: lib.tp_pid_init(pid(buf), kp, ki, kd, lo, hi)
    mod.pid_reset = lambda buf, out: lib.tp_pid_reset(pid(buf), out)

    def pid_set_auto(buf, auto, *output):
        lib.tp_pid_set_auto(pid(buf), 1 if auto else 0, output[0] if output else 0.0, len(output))

    def pid_step(buf, io):
        return lib.tp_pid_step(pid(buf), io[0], io[1], io[2], io[3], io[4], io[5] != 0.0)

    def mpc_load(ws, blob):
        return lib.tp_mpc_load(mpc(ws), blob, len(blob))

    def mpc_solve(ws, inp, u0, info):
        m = mpc(ws)
        nx, nu, nd = m.nx, m.nu, m.nd
        p = ffi.from_buffer("tp_float[]", inp)
        st = lib.tp_mpc_solve(m, p, p + nx, p + nx + nu, p + nx + nu + nd, p + 2 * nx + nu + nd)
        for i in range(nu):
            u0[i] = m.u0[i]
        info[0], info[1], info[2] = m.iterations, m.res_primal, m.res_dual
        return st

    mod.pid_set_auto = pid_set_auto
    mod.pid_step = pid_step
    mod.mpc_load = mpc_load
    mod.mpc_reset = lambda ws: lib.tp_mpc_reset(mpc(ws))
    mod.mpc_solve = mpc_solve
    return mod


@pytest.fixture()
def firmware():
    saved = {
        k: sys.modules.get(k)
        for k in ("tpcore", "micropython", "tpfw", "tpfw.pid", "tpfw.mpc", "tpfw.mpc_blob")
    }
    stub = types.ModuleType("micropython")
    stub.const = lambda x: x
    stub.native = stub.viper = lambda f: f
    sys.modules["micropython"] = stub
    sys.modules["tpcore"] = _tpcore_stand_in()
    for k in ("tpfw", "tpfw.pid", "tpfw.mpc", "tpfw.mpc_blob"):
        sys.modules.pop(k, None)
    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        import tpfw.mpc
        import tpfw.pid

        yield tpfw.pid, tpfw.mpc
    finally:
        sys.path.remove(str(ROOT / "firmware"))
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_firmware_picks_the_c_module(firmware):
    pid_mod, mpc_mod = firmware
    assert pid_mod.PID is pid_mod.PIDNative
    assert mpc_mod.MPC is mpc_mod.MPCNative
    assert pid_mod._NFLOATS == lib.TP_PID_NFLOATS


def test_native_pid_glue_matches_host_pid(firmware):
    pid_mod, _ = firmware
    kw = dict(out_min=0.0, out_max=1.0, reverse=True, tf_s=2.0, beta=0.7, gamma=0.1,
              rate_max=0.2, tt_s=3.0)  # fmt: skip
    fw = pid_mod.PID(0.4, 0.05, 0.3, **kw)
    host = PID(0.4, 0.05, 0.3, **kw)
    rng = np.random.default_rng(7)
    for k in range(200):
        sp, y, dt = 30.0, 30.0 + rng.normal(), 0.5
        if k == 50:
            fw.set_auto(False, output=0.3)
            host.set_auto(False, output=0.3)
        if k == 80:
            fw.set_auto(True)
            host.set_auto(True)
        track = 0.25 if 120 <= k < 140 else None
        a = fw.update(sp, y, dt, ff=0.01, track=track)
        b = host.update(sp, y, dt, ff=0.01, track=track)
        assert a == b
        assert (fw.p, fw.i, fw.d, fw.output) == (host.p, host.i, host.d, host.output)
    fw.kp = 1.5
    host.kp = 1.5
    assert fw.update(30.0, 31.0, 0.5) == host.update(30.0, 31.0, 0.5)
    assert fw.reverse and fw.auto


def test_native_mpc_glue_matches_host_mpc(firmware):
    _, mpc_mod = firmware
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import control_problems as cp
    finally:
        sys.path.pop(0)
    model = cp.heat_pump()
    blob = cp.blob_for(model)
    x0, u_prev, d, x_ref, u_ref = cp.scenario(model)
    fw = mpc_mod.MPC(blob)
    host = MPC(blob)
    u = u_prev
    for _ in range(3):
        st = fw.solve(array("f", x0), array("f", u), array("f", d), array("f", x_ref),
                      array("f", u_ref))  # fmt: skip
        want = host.step(x0, u, d, x_ref, u_ref)
        assert st == host.status_code
        assert fw.iterations == host.iterations
        assert list(fw.u0) == list(np.float32(want))
        u = want
