"""The C core as a dynamic native module (the committed x64 tpcore.mpy) on the real
MicroPython VM, through the firmware's own classes (tpfw.pid.PID, tpfw.mpc.MPC).

- native module vs cffi (same C sources, same float32 arithmetic): identical answers, PID
  and MPC;
- the PID fallback (PIDPy, the same maths in MicroPython) within the tolerance of
  test_native_pid.py;
- the MPC fallback (MPCPy) solves another QP than the C core, the move-blocked one
  (tpfw/mpc.py): it is held to that QP's exact optimum (mpc_oracle.blocked_exact_first_move)
  within the tolerance of test_mpc_micropython.py, never to the C core;
- the MPC through the module agrees with the exact full QP as the cffi path does
  (test_mpc_exact.py);
- a control step allocates nothing (micropython.heap_lock);
- wrong sizes and types, and blobs the C core refuses, raise clear errors; a module of the
  wrong architecture or .mpy version, or none, gives the fallback with a reason, never a
  failed import.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpc_oracle import blocked_exact_first_move, exact_first_move
from test_mpc_exact import N_CASES, TOL_MOVE
from test_mpc_exact import random_case as exact_case
from test_native_mpc import case_args, random_case
from test_native_pid import pid_params, pid_steps
from vm_driver import run_micropython

from thermopilot.hil import resources
from thermopilot.host._tpcore import ffi, lib
from thermopilot.host.control import blob as mpc_blob
from thermopilot.host.control.mpc import MPC
from thermopilot.host.control.pid import PID

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import control_problems as cp  # noqa: E402

MPY = ROOT / "firmware" / "tpcore_mpy"
MANIFEST = json.loads((MPY / "manifest.json").read_text())
X64 = (MPY / "tpcore-x64.mpy").read_bytes()
vm_settings = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def board_fs(tmp_path, module=X64, stamped=None):
    """A board filesystem as deploy leaves it: the firmware package, `module` as
    lib/tpfw/tpcore.mpy and the stamp of `stamped` (default: of `module`) beside it."""
    fw = tmp_path / "lib"
    if fw.exists():
        shutil.rmtree(fw)
    (fw / "tpfw").mkdir(parents=True)
    for p in (ROOT / "firmware" / "tpfw").glob("*.py"):
        shutil.copy(p, fw / "tpfw" / p.name)
    if module is not None:
        (fw / "tpfw" / "tpcore.mpy").write_bytes(module)
    stamped = module if stamped is None else stamped
    if stamped:
        (tmp_path / "stamped.mpy").write_bytes(stamped)
        stamp = resources.native_stamp(tmp_path / "stamped.mpy")
        (fw / "tpfw" / "tpcore.sha256").write_text(stamp)
    return fw


def run_board(driver, tmp_path, payload, module=X64, stamped=None, **kw):
    fw = board_fs(tmp_path, module, stamped)
    return run_micropython(driver, tmp_path, payload, firmware=fw, **kw)


# compiling app.py and mpc.py from source together needs more than the boards' 110K heap;
# the board itself imports app (with the module) in 110K: test_natmod_board.py
_APP_AND_MPC_HEAP = "256K"

_SELECT = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw import core, mpc, pid
from tpfw import app
print(json.dumps([core.NATIVE, core.NATIVE_REASON, pid.PID is pid.PIDNative,
                  mpc.MPC is mpc.MPCNative, core.NATIVE] + ([core.tpcore.SOURCE_SHA256,
                  core.tpcore.MPC_WORKSPACE_BYTES, core.tpcore.PID_NFLOATS]
                  if core.NATIVE else [])))
"""


def test_firmware_runs_the_native_module(tmp_path):
    native, reason, pid_c, mpc_c, app_c, sha, ws_bytes, nfloats = run_board(
        _SELECT, tmp_path, [], heap=_APP_AND_MPC_HEAP
    )
    assert (native, reason, pid_c, mpc_c) == (True, "", True, True)
    assert app_c  # the application's own `import tpcore` finds the module core.py loaded
    assert sha == MANIFEST["modules"]["x64"]["source_sha256"]  # the module says its sources
    assert ws_bytes == ffi.sizeof("tp_mpc_t")  # sizeof at build time, same struct as cffi
    assert nfloats == lib.TP_PID_NFLOATS


# --- PID -------------------------------------------------------------------------------

_PID_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw import pid as m
cases = json.loads(open(sys.argv[1]).read())
out = []
for params, steps in cases:
    res = []
    for cls in (m.PIDNative, m.PIDPy):
        p = cls(**params)
        rows = []
        for k, (sp, y, dt, ff) in enumerate(steps):
            if k == 10:
                p.set_auto(False, output=0.3)
            if k == 15:
                p.set_auto(True)
            track = 0.25 if 20 <= k < 25 else None
            rows.append([p.update(sp, y, dt, ff, track), p.p, p.i, p.d])
        res.append(rows)
    out.append(res)
print(json.dumps(out))
"""


def same_f32(a, b):
    """a == b, floats compared as the float32 the C core computed: MicroPython's json prints a
    double to 17 digits without a round-trip guarantee (one ULP of double off has been seen),
    which says nothing about the float32 behind it."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_f32(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.float32(a) == np.float32(b)) or (a != a and b != b)
    return a == b


def _cffi_pid(params, steps):
    p = PID(**params)
    rows = []
    for k, (sp, y, dt, ff) in enumerate(steps):
        if k == 10:
            p.set_auto(False, output=0.3)
        if k == 15:
            p.set_auto(True)
        track = 0.25 if 20 <= k < 25 else None
        rows.append([p.update(sp, y, dt, ff=ff, track=track), p.p, p.i, p.d])
    return rows


@settings(vm_settings, max_examples=8)
@given(cases=st.lists(st.tuples(pid_params, pid_steps), min_size=1, max_size=12))
def test_pid_native_equals_cffi_and_fallback_is_within_tolerance(cases, tmp_path):
    got = run_board(_PID_DRIVER, tmp_path, cases, heap="1M")  # the results fill the heap
    for (params, steps), (native, fallback) in zip(cases, got, strict=True):
        want = _cffi_pid(params, steps)
        assert same_f32(native, want), (native, want)  # same C, same float32: bit for bit
        span = params["out_max"] - params["out_min"]
        np.testing.assert_allclose(
            [r[0] for r in fallback], [r[0] for r in want], rtol=0, atol=1e-3 * (1.0 + span)
        )


_PID_IO_DRIVER = r"""
import json, sys
from array import array
sys.path.insert(0, sys.argv[2])
from tpfw import pid as m
out = []
for cls in (m.PIDNative, m.PIDPy):
    p = cls(0.4, 0.05, 0.2, tf_s=1.0, out_min=0.0, out_max=1.0)
    io = array('f', [25.0, 22.0, 0.5, 0.01, 0.0, 0.0, 0.0])
    res = []
    for y in (22.0, 22.5, 23.0):
        io[1] = y
        res.append([p.step(io), io[6], p.output])
    for dt in (0.0, -1.0, float('nan')):
        io[2] = dt
        res.append([p.step(io), io[6], p.output])
    io[2] = 0.5
    io[1] = float('inf')
    res.append([p.step(io), io[6], p.output])
    try:
        p.step(array('f', [0.0] * 6))
        res.append('no error')
    except ValueError as e:
        res.append(str(e))
    out.append(res)
print(json.dumps(out))
"""


def test_pid_step_on_a_caller_array_is_the_same_api_in_c_and_micropython(tmp_path):
    native, fallback = run_board(_PID_IO_DRIVER, tmp_path, [])
    host = PID(0.4, 0.05, 0.2, tf_s=1.0, out_min=0.0, out_max=1.0)
    for (status, out, output), y in zip(native[:3], (22.0, 22.5, 23.0), strict=True):
        assert status == 0 and out == output == host.update(25.0, y, 0.5, ff=0.01)
    # bad dt_s (1), non-finite measurement (2): status returned, nothing changed
    assert [r[0] for r in native[3:7]] == [1, 1, 1, 2]
    assert all(r[1] == native[2][1] for r in native[3:7])
    for (st_n, out_n, _), (st_f, out_f, _) in zip(native[:7], fallback[:7], strict=True):
        assert st_n == st_f and abs(out_n - out_f) < 1e-5
    assert "pid_io has 6 floats, expected 7" in native[7]
    assert "io has 6 values, expected 7" in fallback[7]


_ALLOC_DRIVER = r"""
import gc, json, sys, micropython
from array import array
sys.path.insert(0, sys.argv[2])
from tpfw import mpc as mm, pid as pm
blob_hex, args = json.loads(open(sys.argv[1]).read())
blob = bytes.fromhex(blob_hex)

def locked_ticks(pid, io, ctl, x0, u_prev, d, x_ref, u_ref, n):
    # one board tick: a PID step and an MPC step on preallocated arrays
    micropython.heap_lock()
    try:
        k = 0
        while k < n:
            pid.step(io)
            ctl.solve(x0, u_prev, d, x_ref, u_ref)
            k += 1
    finally:
        micropython.heap_unlock()

def per_call_bytes(f, n):
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    k = 0
    while k < n:
        f()
        k += 1
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) // n

pid = pm.PID(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
io = array('f', [25.0, 20.0, 0.5, 0.0, 0.0, 0.0, 0.0])
ctl = mm.MPC(blob)
arrays = [array('f', a) for a in args]
locked_ticks(pid, io, ctl, arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], 100)
out = [type(ctl).__name__, ctl.status, ctl.iterations, list(ctl.u0)]
# lists of floats made once also go in without a copy on the heap
lists = [list(a) for a in arrays]
ctl.u0[0] = 0.0
locked_ticks(pid, io, ctl, lists[0], lists[1], lists[2], lists[3], lists[4], 20)
out += [ctl.status, list(ctl.u0)]
fb = pm.PIDPy(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
out += [per_call_bytes(lambda: io[6], 20),  # what one new float costs here
        per_call_bytes(lambda: pid.update(25.0, 20.0, 0.5), 20),
        per_call_bytes(lambda: fb.update(25.0, 20.0, 0.5), 20)]
print(json.dumps(out))
"""


def _heat_pump():
    """The heat-pump problem of the benchmarks (nx 4, nu 2, nd 1, N 20, hard output limits)
    and its first step, in float32 values (what the module is given)."""
    model = cp.heat_pump()
    args = [np.float32(a).astype(float) for a in cp.scenario(model)]
    return cp.blob_for(model), args


def test_a_tick_through_the_module_allocates_nothing(tmp_path):
    blob, args = _heat_pump()
    cls, status, iterations, u_locked, status_lists, u_lists, one_float, native, fallback = (
        run_board(_ALLOC_DRIVER, tmp_path, [blob.hex(), [a.tolist() for a in args]])
    )
    assert cls == "MPCNative"  # the module's path, not the fallback
    mpc = MPC(blob)
    u = mpc.step(*args).tolist()
    # the locked solves really solved the problem: the cffi answer, bit for bit
    assert same_f32([status, iterations, u_locked], [0, mpc.iterations, u])
    assert mpc.status == "solved" and iterations >= 2
    assert same_f32([status_lists, u_lists], [0, u])
    # update() returns a new float: one boxed float (a 32-byte GC block on this 64-bit VM,
    # 16 bytes on a 32-bit board), nothing else
    print("bytes per PID.update: C core %d, MicroPython %d" % (native, fallback))
    assert 0 < one_float <= 32
    assert native == one_float
    assert fallback > 10 * one_float


# --- MPC -------------------------------------------------------------------------------

# The C core and the MicroPython fallback solve different QPs from the same blob: the module
# the full QP (as the cffi path: bit for bit), the fallback the move-blocked QP (one move, or
# nb blocks, held over the horizon; tpfw/mpc.py). Each is held to its own QP.
#
# test_mpc_micropython.py states: given enough iterations the fallback's first move is within
# 2e-3 * (1 + max|u0|) of its QP's optimum; whatever the budget it respects the hard input
# and rate limits. "Enough": over 600 random plants like case_args draws, 3000 iterations
# left one at 2.1e-3; with 20 000, 400 of them (that one included) were all within 6.2e-4.
# Float32 residuals stall above the early exit on about 1 plant in 12, which then runs to
# the budget (a few seconds on the VM).
FALLBACK_TOL_MOVE = 2e-3
FALLBACK_CONVERGED_ITER = 20000

_MPC_DRIVER = r"""
import json, sys
from array import array
sys.path.insert(0, sys.argv[2])
from tpfw import mpc as m
assert m.MPC is m.MPCNative
cases = json.loads(open(sys.argv[1]).read())
out = []
for blob_hex, budget, steps in cases:
    blob = bytes.fromhex(blob_hex)
    native = m.MPCNative(blob)
    shipped = m.MPCPy(blob)  # the budget the blob ships (fb_iter)
    converged = m.MPCPy(blob)
    converged.max_iter = budget
    rows = []
    for args in steps:
        a = [array('f', v) for v in args]
        st = native.solve(*a)
        row = [[list(native.u0), st, native.iterations, native.res_primal, native.res_dual]]
        for s in (shipped, converged):
            st = s.solve(*a)
            row.append([list(s.u0), st, s.iterations])
        rows.append(row)
    out.append([shipped.max_iter, rows])
print(json.dumps(out))
"""


def _inside_hard_limits(u, u_prev, info, slack=1e-5):
    lo = np.maximum(info["u_min"], u_prev + info["du_min"])
    hi = np.minimum(info["u_max"], u_prev + info["du_max"])
    return bool(np.all(u >= lo - slack) and np.all(u <= hi + slack))


@settings(vm_settings, max_examples=5)
@given(cases=st.lists(st.tuples(case_args, st.integers(1, 3)), min_size=1, max_size=4))
def test_mpc_module_equals_cffi_and_the_fallback_solves_its_own_qp(cases, tmp_path):
    payload, want = [], []
    for args, blocks in cases:
        blob, (x, u_prev, d, x_ref, u_ref) = random_case(
            **args, blocks=min(blocks, args["horizon"])
        )
        info = mpc_blob.unpack(blob)
        mpc = MPC(blob)
        steps, results = [], []
        for _ in range(2):  # the second step from where the first move takes the plant
            f32 = [np.float32(a).astype(float) for a in (x, u_prev, d, x_ref, u_ref)]
            u = mpc.step(*f32)
            status, u_blocked = blocked_exact_first_move(blob, *f32)
            assert status == "Solved", status
            steps.append([a.tolist() for a in f32])
            c_row = [u.tolist(), mpc.status_code, mpc.iterations, *mpc.residuals]
            results.append((c_row, u_blocked, f32[1]))
            x = info["A"] @ f32[0] + info["B"] @ u + info["E"] @ f32[2]
            u_prev = u
        payload.append([blob.hex(), FALLBACK_CONVERGED_ITER, steps])
        want.append((info, results))
    got = run_board(_MPC_DRIVER, tmp_path, payload, heap="1M", timeout=600)
    for (info, case_want), (shipped_budget, rows) in zip(want, got, strict=True):
        assert shipped_budget == info["fb_iter"]
        for (c_row, u_blocked, u_prev), (native, shipped, converged) in zip(
            case_want, rows, strict=True
        ):
            assert same_f32(native, c_row)  # same C, same float32: bit for bit, residuals too
            u_fb, status_fb, iterations_fb = converged
            assert status_fb in (0, 1) and iterations_fb >= 1, converged
            err = float(np.max(np.abs(np.array(u_fb) - u_blocked)))
            assert err <= FALLBACK_TOL_MOVE * (1.0 + np.max(np.abs(u_blocked))), (
                u_fb,
                u_blocked,
                iterations_fb,
            )
            assert shipped[1] in (0, 1) and 1 <= shipped[2] <= shipped_budget, shipped
            for u_any in (u_fb, shipped[0], native[0]):
                assert _inside_hard_limits(np.array(u_any), u_prev, info), (u_any, u_prev)


_EXACT_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw import mpc as m
assert m.MPC is m.MPCNative
out = []
for blob_hex, args in json.loads(open(sys.argv[1]).read()):
    s = m.MPC(bytes.fromhex(blob_hex))
    st = s.solve(*args)  # lists: converted to float32 inside the module
    out.append([list(s.u0), st, s.iterations])
print(json.dumps(out))
"""


def test_mpc_through_the_module_agrees_with_the_exact_qp(tmp_path):
    # the cases and stated bound of test_mpc_exact.py, on the board's path
    cases = [exact_case(seed) for seed in range(N_CASES)]
    payload = [[blob.hex(), [a.tolist() for a in args]] for blob, args in cases]
    got = run_board(_EXACT_DRIVER, tmp_path, payload, heap="2M", timeout=600)  # 60 blobs
    worst, solved = 0.0, 0
    for seed, ((blob, args), (u_vm, status, iterations)) in enumerate(
        zip(cases, got, strict=True)
    ):
        mpc = MPC(blob)
        u_c = mpc.step(*args)  # the same doubles, rounded to float32 by cffi
        assert (u_vm, status, iterations) == (u_c.tolist(), mpc.status_code, mpc.iterations)
        assert status in (0, 1), (seed, status, iterations)  # solved, or at the budget
        solved += status == 0
        exact_status, u_o = exact_first_move(blob, *args)
        assert exact_status == "Solved", (seed, exact_status)
        err = float(np.max(np.abs(np.array(u_vm) - u_o)))
        assert err <= TOL_MOVE * (1.0 + np.max(np.abs(u_o))), (seed, u_vm, u_o)
        worst = max(worst, err / (1.0 + np.max(np.abs(u_o))))
    assert solved >= 0.95 * N_CASES, solved
    print("worst relative first-move difference, module on the VM vs the exact QP: %.2e" % worst)


# --- bad input -------------------------------------------------------------------------

_BAD_INPUT_DRIVER = r"""
import json, sys
from array import array
sys.path.insert(0, sys.argv[2])
from tpfw import mpc as m, pid as pm
import tpcore
blob, nan_model, no_budget = [bytes.fromhex(h) for h in json.loads(open(sys.argv[1]).read())]
s = m.MPC(blob)
nx, nu, nd = s.nx, s.nu, s.nd
ok = [array('f', [0.0] * n) for n in (nx, nu, nd, nx, nu)]
out = []
def attempt(f):
    try:
        f()
        out.append('no error')
    except (ValueError, TypeError) as e:
        out.append('%s: %s' % (type(e).__name__, e))
short = list(ok)
short[0] = array('f', [0.0] * (nx - 1))
attempt(lambda: s.solve(*short))
wide = list(ok)
wide[1] = [0.0] * (nu + 1)
attempt(lambda: s.solve(*wide))
dbl = list(ok)
dbl[3] = array('d', [0.0] * nx)
attempt(lambda: s.solve(*dbl))
txt = list(ok)
txt[4] = 'ab'
attempt(lambda: s.solve(*txt))
attempt(lambda: m.MPC(nan_model))
attempt(lambda: m.MPC(no_budget))
attempt(lambda: m.MPC(blob[:-4]))
attempt(lambda: tpcore.mpc_solve(bytearray(tpcore.MPC_WORKSPACE_BYTES), *ok, s.u0, s._info))
attempt(lambda: tpcore.mpc_load(bytearray(100), blob))
attempt(lambda: tpcore.pid_step(array('f', [0.0] * 22), array('f', [0.0] * 7)))
attempt(lambda: tpcore.pid_step(bytearray(92), array('f', [0.0] * 7)))
st = s.solve([float('nan')] * nx, *ok[1:])
out.append(st)
# a refused blob left the workspace unloaded: the solve says so instead of running
ws = bytearray(tpcore.MPC_WORKSPACE_BYTES)
out.append(tpcore.mpc_load(ws, blob))
out.append(tpcore.mpc_load(ws, nan_model))
attempt(lambda: tpcore.mpc_solve(ws, *ok, s.u0, s._info))
print(json.dumps(out))
"""


def test_wrong_sizes_and_types_raise_clear_errors(tmp_path):
    blob, _ = _heat_pump()
    info = mpc_blob.unpack(blob)
    nx, nu = info["nx"], info["nu"]
    dims = tuple(info[k] for k in ("nx", "nu", "nd", "ny", "n", "nb"))
    # two blobs with a valid CRC that the C core refuses: a NaN in the model (A[0, 0]), and
    # an iteration budget of 0; the board's own header check passes both on to the C core
    values = dict(info)
    values["A"] = info["A"].copy()
    values["A"][0, 0] = np.nan
    nan_model = mpc_blob.pack(dims, values)
    no_budget = mpc_blob.pack(dims, dict(info, max_iter=0))
    for bad in (nan_model, no_budget):
        mpc_blob.unpack(bad)  # CRC and layout valid
        with pytest.raises(ValueError, match="non-finite values or settings out of range"):
            MPC(bad)  # the host refuses it too, in the same words
    got = run_board(_BAD_INPUT_DRIVER, tmp_path, [blob.hex(), nan_model.hex(), no_budget.hex()])
    assert got[0] == "ValueError: tpcore: x0 has %d floats, expected %d" % (nx - 1, nx)
    assert got[1] == "ValueError: tpcore: u_prev has %d values, expected %d" % (nu + 1, nu)
    assert got[2] == (
        "ValueError: tpcore: x_ref must be an array('f') or a list/tuple of %d numbers, "
        "got <class 'array'>" % nx
    )
    assert got[3].startswith("ValueError: tpcore: u_ref must be an array('f') or a list/tuple")
    assert got[3].endswith("got <class 'str'>")
    refused = (
        "ValueError: MPC blob refused by the C core: non-finite values or settings out of range"
    )
    assert got[4] == refused
    assert got[5] == refused
    assert got[6].startswith("ValueError: MPC blob length")
    assert got[7] == "ValueError: tpcore: no MPC model loaded in this workspace"
    assert got[8] == "ValueError: tpcore: mpc_workspace has 100 bytes, expected %d" % ffi.sizeof(
        "tp_mpc_t"
    )
    assert got[9] == "ValueError: tpcore: pid_state has 22 floats, expected 23"
    assert got[10].startswith("ValueError: tpcore: pid_state must be an array('f') of 23 floats")
    assert got[11] == 3  # non-finite state: the BAD_INPUT status, as the fallback returns
    assert got[12:14] == [lib.TP_MPC_BLOB_OK, lib.TP_MPC_BLOB_BAD_MODEL]
    assert got[14] == "ValueError: tpcore: no MPC model loaded in this workspace"


# --- the fallback, never a crash -------------------------------------------------------

_BOOT_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw import core, mpc, pid
from tpfw import app  # the application imports too (it looks for tpcore itself)
print(json.dumps([core.NATIVE, core.NATIVE_REASON, pid.PID is pid.PIDPy, mpc.MPC is mpc.MPCPy,
                  core.NATIVE, pid.PID(0.5, 0.1, 0.0).update(30.0, 29.0, 0.1)]))
"""


def _patched(offset, value):
    data = bytearray(X64)
    data[offset] = value
    return bytes(data)


ARMV6M = (MPY / "tpcore-armv6m.mpy").read_bytes()
RV32IMC = (MPY / "tpcore-rv32imc.mpy").read_bytes()
SUB_V2 = _patched(2, (X64[2] & ~3) | 2)  # .mpy v6.2: another MicroPython's native ABI
V5 = _patched(1, 5)


@pytest.mark.parametrize(
    "module, stamped, reason",
    [
        (None, b"", "no tpcore module (lib/tpfw/tpcore.mpy)"),
        (ARMV6M, None, "tpcore.mpy: incompatible .mpy arch"),
        (RV32IMC, None, "tpcore.mpy: incompatible .mpy arch"),
        (SUB_V2, None, "tpcore.mpy: incompatible .mpy file"),
        (V5, None, "tpcore.mpy: incompatible .mpy file"),
        # MicroPython's loader never returns from these; the stamp keeps them out
        (X64[:4000], X64, "tpcore.mpy: 4000 bytes, stamp says %d (copy cut short?)" % len(X64)),
        (X64[:4000], b"", "tpcore.mpy unchecked: no valid tpcore.sha256 beside it"),
        (_patched(3000, X64[3000] ^ 0x40), X64, "tpcore.mpy does not match its SHA-256"),
    ],
    ids=["missing", "armv6m", "rv32imc", "sub-version", "version", "cut", "no-stamp", "flip"],
)
def test_a_module_that_cannot_load_gives_the_fallback_and_a_reason(
    tmp_path, module, stamped, reason
):
    native, why, pid_py, mpc_py, app_c_core, u = run_board(
        _BOOT_DRIVER, tmp_path, [], module, stamped, heap=_APP_AND_MPC_HEAP, timeout=60
    )
    assert (native, pid_py, mpc_py, app_c_core) == (False, True, True, False)
    assert why.startswith(reason) and len(why) <= 60, why  # fits a LOG frame's text
    assert u == pytest.approx(0.5 * 1.0 + 0.1 * 1.0 * 0.1)  # and the fallback runs
