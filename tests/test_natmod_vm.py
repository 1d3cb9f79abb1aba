"""The C core as a dynamic native module (the committed x64 tpcore.mpy) on the real
MicroPython VM, through the firmware's own classes (tpfw.pid.PID, tpfw.mpc.MPC).

- native module vs cffi (same C sources, same float32 arithmetic): identical answers;
- native module vs the MicroPython fallback: the tolerances of test_native_pid.py /
  test_native_mpc.py (double scalars on the VM vs float32);
- the MPC through the module agrees with the exact QP as the cffi path does (test_mpc_exact.py);
- a control step allocates nothing (micropython.heap_lock);
- wrong sizes and types raise clear errors; a module of the wrong architecture or .mpy
  version, or none, gives the fallback with a reason, never a failed import.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpc_oracle import exact_first_move
from test_mpc_exact import N_CASES, TOL_MOVE
from test_mpc_exact import random_case as exact_case
from test_native_mpc import case_args, heat_pump_blob, random_case
from test_native_pid import pid_params, pid_steps
from vm_driver import run_micropython

from thermopilot.hil import resources
from thermopilot.host._tpcore import ffi, lib
from thermopilot.host.control.mpc import MPC
from thermopilot.host.control.pid import PID

ROOT = Path(__file__).resolve().parent.parent
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
        assert native == want  # same C, same float32: bit for bit
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
blob = bytes.fromhex(json.loads(open(sys.argv[1]).read())[0])

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
x0 = array('f', [0.5] * ctl.nx)
u_prev = array('f', [0.0] * ctl.nu)
d = array('f', [1.0] * ctl.nd)
x_ref = array('f', [0.0] * ctl.nx)
u_ref = array('f', [0.0] * ctl.nu)
locked_ticks(pid, io, ctl, x0, u_prev, d, x_ref, u_ref, 200)
# lists of floats made once also go in without a copy on the heap
lists = [list(x0), list(u_prev), list(d), list(x_ref), list(u_ref)]
locked_ticks(pid, io, ctl, lists[0], lists[1], lists[2], lists[3], lists[4], 50)
fb = pm.PIDPy(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
print(json.dumps([ctl.status, ctl.iterations,
                  per_call_bytes(lambda: io[6], 20),  # what one new float costs here
                  per_call_bytes(lambda: pid.update(25.0, 20.0, 0.5), 20),
                  per_call_bytes(lambda: fb.update(25.0, 20.0, 0.5), 20)]))
"""


def test_a_tick_through_the_module_allocates_nothing(tmp_path):
    blob, _ = heat_pump_blob(water_k=1.0)
    status, iterations, one_float, native_update, fallback_update = run_board(
        _ALLOC_DRIVER, tmp_path, [blob.hex()]
    )
    assert status in (0, 1) and iterations >= 1  # the MPC really iterated under the lock
    # update() returns a new float: one boxed float (a 32-byte GC block on this 64-bit VM,
    # 16 bytes on a 32-bit board), nothing else
    print("bytes per PID.update: C core %d, MicroPython %d" % (native_update, fallback_update))
    assert 0 < one_float <= 32
    assert native_update == one_float
    assert fallback_update > 10 * one_float


# --- MPC -------------------------------------------------------------------------------

_MPC_DRIVER = r"""
import json, sys
from array import array
sys.path.insert(0, sys.argv[2])
from tpfw import mpc as m
cases = json.loads(open(sys.argv[1]).read())
out = []
for blob_hex, steps in cases:
    res = []
    for cls in (m.MPCNative, m.MPCPy):
        s = cls(bytes.fromhex(blob_hex))
        rows = []
        for args in steps:
            st = s.solve(*[array('f', a) for a in args])
            rows.append([list(s.u0), st, s.iterations])
        res.append(rows)
    out.append(res)
print(json.dumps(out))
"""


@settings(vm_settings, max_examples=5)
@given(cases=st.lists(case_args, min_size=1, max_size=4))
def test_mpc_native_equals_cffi_and_fallback_is_within_tolerance(cases, tmp_path):
    payload, want = [], []
    for args in cases:
        blob, (x0, u_prev, d, x_ref, u_ref) = random_case(max_iter=20, **args)
        mpc = MPC(blob)
        steps, results = [], []
        for _ in range(2):  # the second step runs from the shifted warm start
            f32 = [np.float32(a).astype(float) for a in (x0, u_prev, d, x_ref, u_ref)]
            u = mpc.step(*f32)
            steps.append([a.tolist() for a in f32])
            results.append((u.tolist(), mpc.status_code, mpc.iterations))
            u_prev = u
        payload.append([blob.hex(), steps])
        want.append(results)
    got = run_board(_MPC_DRIVER, tmp_path, payload, heap="1M")
    for (native, fallback), case_want in zip(got, want, strict=True):
        for (u_n, st_n, it_n), (u_f, st_f, it_f), (u_c, st_c, it_c) in zip(
            native, fallback, case_want, strict=True
        ):
            assert (u_n, st_n, it_n) == (u_c, st_c, it_c)  # bit for bit
            assert (st_f, it_f) == (st_c, it_c)
            np.testing.assert_allclose(u_f, u_c, rtol=0, atol=2e-3 * (1.0 + np.max(np.abs(u_c))))


_OSQP_DRIVER = r"""
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
    got = run_board(_OSQP_DRIVER, tmp_path, payload, heap="2M", timeout=600)  # 60 blobs
    worst = 0.0
    for seed, ((blob, args), (u_vm, status, iterations)) in enumerate(
        zip(cases, got, strict=True)
    ):
        assert status in (0, 1), (seed, status, iterations)  # solved, or at the budget
        u_o = exact_first_move(blob, *args)
        err = float(np.max(np.abs(np.array(u_vm) - u_o)))
        assert err <= TOL_MOVE * (1.0 + np.max(np.abs(u_o))), (seed, u_vm, u_o)
        worst = max(worst, err / (1.0 + np.max(np.abs(u_o))))
    print("worst relative first-move difference, module on the VM vs the exact QP: %.2e" % worst)


# --- bad input -------------------------------------------------------------------------

_BAD_INPUT_DRIVER = r"""
import json, sys
from array import array
sys.path.insert(0, sys.argv[2])
from tpfw import mpc as m, pid as pm
import tpcore
blob, bad_model = [bytes.fromhex(h) for h in json.loads(open(sys.argv[1]).read())]
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
attempt(lambda: m.MPC(bad_model))
attempt(lambda: m.MPC(blob[:-4]))
attempt(lambda: tpcore.mpc_solve(bytearray(tpcore.MPC_WORKSPACE_BYTES), *ok, s.u0, s._info))
attempt(lambda: tpcore.mpc_load(bytearray(100), blob))
attempt(lambda: tpcore.pid_step(array('f', [0.0] * 22), array('f', [0.0] * 7)))
attempt(lambda: tpcore.pid_step(bytearray(92), array('f', [0.0] * 7)))
st = s.solve([float('nan')] * nx, *ok[1:])
out.append(st)
print(json.dumps(out))
"""


def test_wrong_sizes_and_types_raise_clear_errors(tmp_path):
    import zlib

    blob, _ = heat_pump_blob(water_k=1.0)
    bad = bytearray(blob)
    # break Aa's [0, I] rows (last float of Aa): the C core refuses the model itself
    nx, nu, ny = blob[6], blob[7], blob[9]
    nxa = nx + nu
    last = 20 + 4 * (nu + ny + nu) + 4 * (nxa * nxa - 1)
    bad[last : last + 4] = np.float32(0.5).tobytes()
    bad[16:20] = (zlib.crc32(bytes(bad[20:]), zlib.crc32(bytes(bad[:16]))) & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
    got = run_board(_BAD_INPUT_DRIVER, tmp_path, [blob.hex(), bytes(bad).hex()])
    assert got[0] == "ValueError: tpcore: x0 has %d floats, expected %d" % (nx - 1, nx)
    assert got[1] == "ValueError: tpcore: u_prev has %d values, expected %d" % (nu + 1, nu)
    assert got[2] == (
        "ValueError: tpcore: x_ref must be an array('f') or a list/tuple of %d numbers, "
        "got <class 'array'>" % nx
    )
    assert got[3].startswith("ValueError: tpcore: u_ref must be an array('f') or a list/tuple")
    assert got[3].endswith("got <class 'str'>")
    assert (
        got[4] == "ValueError: MPC blob refused by the C core: model not [[A, B], [0, I]], [B; I]"
    )
    assert got[5].startswith("ValueError: MPC blob length")
    assert got[6] == "ValueError: tpcore: no MPC model loaded in this workspace"
    assert got[7] == "ValueError: tpcore: mpc_workspace has 100 bytes, expected %d" % ffi.sizeof(
        "tp_mpc_t"
    )
    assert got[8] == "ValueError: tpcore: pid_state has 22 floats, expected 23"
    assert got[9].startswith("ValueError: tpcore: pid_state must be an array('f') of 23 floats")
    assert got[10] == 3  # non-finite state: the BAD_INPUT status, as the fallback returns


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
