"""The MPC step: C core (cffi) vs a numpy float32 reference vs the MicroPython firmware on
the real MicroPython VM; blob and argument checks; status, warm start.

Tolerances (first move u_0, inputs of order 1):
- C vs numpy float32 reference, same fixed number of iterations: 1e-4 * (1 + max|u|);
  both are float32 with a different summation order.
- MicroPython (double scalars, float32 arrays) vs C, same fixed iterations: 2e-3 * (1 + max|u|).
"""

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vm_driver import run_micropython

from thermopilot.host.control import MPC, mpc_precompute, mpc_reference_step, mpc_unpack

ROOT = Path(__file__).resolve().parent.parent


def random_case(seed, nx, nu, nd, ny, horizon, radius, tight, max_iter=30, tol=0.0, rho=10.0):
    """A random stable plant with weights, limits (tight: likely active) and a start point."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(nx, nx))
    A *= radius / max(1e-9, np.max(np.abs(np.linalg.eigvals(A))))
    B = rng.normal(size=(nx, nu))
    E = rng.normal(size=(nx, nd)) if nd else None
    C = rng.normal(size=(ny, nx)) if ny else None
    Q = np.diag(rng.uniform(0.1, 10.0, nx))
    R = np.diag(rng.uniform(0.01, 1.0, nu))
    R_du = np.diag(rng.uniform(0.0, 1.0, nu))
    scale = 0.3 if tight else 5.0
    u_lim = rng.uniform(0.2, 2.0, nu) * scale
    du_lim = rng.uniform(0.05, 1.0, nu) * scale
    y_lim = rng.uniform(0.3, 2.0, ny) * scale
    blob = mpc_precompute(
        A, B, E, Q, R, horizon=horizon, C=C, R_du=R_du,
        u_min=-u_lim, u_max=u_lim, du_min=-du_lim, du_max=du_lim, y_min=-y_lim, y_max=y_lim,
        slack_linear=rng.uniform(0.0, 100.0), slack_quadratic=rng.uniform(0.0, 100.0),
        rho=rho, max_iter=max_iter, tol_primal=tol, tol_dual=tol,
    )  # fmt: skip
    x0 = rng.normal(size=nx) * 2.0
    u_prev = rng.uniform(-u_lim, u_lim)
    d = rng.normal(size=nd)
    x_ref = rng.normal(size=nx) * 0.5
    u_ref = rng.uniform(-u_lim, u_lim) * 0.5
    return blob, (x0, u_prev, d, x_ref, u_ref)


case_args = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "nx": st.integers(1, 8),
        "nu": st.integers(1, 3),
        "nd": st.integers(0, 3),
        "ny": st.integers(0, 8),
        "horizon": st.integers(1, 30),
        "radius": st.floats(0.1, 0.99),
        "tight": st.booleans(),
    }
).map(lambda a: dict(a, ny=min(a["ny"], a["nx"])))


@settings(max_examples=150, deadline=None)
@given(args=case_args, steps=st.integers(1, 3))
def test_c_matches_float32_reference(args, steps):
    blob, (x0, u_prev, d, x_ref, u_ref) = random_case(**args)
    mpc = MPC(blob)
    state = {}
    info = mpc_unpack(blob)
    for _ in range(steps):  # several steps exercise the shifted warm start too
        u_c = mpc.step(x0, u_prev, d, x_ref, u_ref)
        u_r, status, iters = mpc_reference_step(info, x0, u_prev, d, x_ref, u_ref, state=state)
        assert mpc.status == status
        assert mpc.iterations == iters
        np.testing.assert_allclose(u_c, u_r, rtol=0, atol=1e-4 * (1.0 + np.max(np.abs(u_r))))
        u_prev = u_c


_MP_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw.mpc import MPCPy
cases = json.loads(open(sys.argv[1]).read())
out = []
for blob_hex, steps in cases:
    m = MPCPy(bytes.fromhex(blob_hex))
    res = []
    for x0, u_prev, d, x_ref, u_ref in steps:
        st = m.solve(x0, u_prev, d, x_ref, u_ref)
        res.append([list(m.u0), st, m.iterations])
    out.append(res)
print(json.dumps(out))
"""


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cases=st.lists(case_args, min_size=1, max_size=4))
def test_micropython_matches_c(cases, tmp_path):
    payload, want = [], []
    for args in cases:
        blob, (x0, u_prev, d, x_ref, u_ref) = random_case(max_iter=20, **args)
        mpc = MPC(blob)
        steps, results = [], []
        for _ in range(2):
            u = mpc.step(x0, u_prev, d, x_ref, u_ref)
            steps.append(
                [x0.tolist(), u_prev.tolist(), d.tolist(), x_ref.tolist(), u_ref.tolist()]
            )
            results.append((u, mpc.status_code, mpc.iterations))
            u_prev = u
        payload.append([blob.hex(), steps])
        want.append(results)
    got = run_micropython(_MP_DRIVER, tmp_path, payload)
    for case_got, case_want in zip(got, want, strict=True):
        for (u_mp, st_mp, it_mp), (u_c, st_c, it_c) in zip(case_got, case_want, strict=True):
            assert (st_mp, it_mp) == (st_c, it_c)
            np.testing.assert_allclose(u_mp, u_c, rtol=0, atol=2e-3 * (1.0 + np.max(np.abs(u_c))))


# --- statuses, warm start --------------------------------------------------------------------


def heat_pump_blob(**kw):
    """The benchmark's heat-pump model (superheat / capacity; EXV opening, compressor speed)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_control import heat_pump_problem
    finally:
        sys.path.pop(0)
    return heat_pump_problem(**kw)


def test_status_solved_iteration_limit_and_infeasible():
    blob, (x0, u_prev, d, x_ref, u_ref) = heat_pump_blob(water_k=1.0)
    mpc = MPC(blob)
    mpc.step(x0, u_prev, d, x_ref, u_ref)
    assert mpc.status == "solved"
    assert 1 <= mpc.iterations < mpc.max_iter
    mpc.reset()
    mpc.max_iter = 2
    mpc.step(x0, u_prev, d, x_ref, u_ref)
    assert (mpc.status, mpc.iterations) == ("iteration limit", 2)
    info = mpc_unpack(blob)
    far = info["u_max"] + 10.0 * (info["du_max"] + 1.0)  # cannot reach the box in one step
    u = mpc.step(x0, far, d, x_ref, u_ref)
    assert mpc.status == "infeasible" and mpc.iterations == 0
    assert np.all(u >= far + info["du_min"] - 1e-6)  # moved down as fast as allowed


def test_bad_input_status():
    blob, (x0, u_prev, d, x_ref, u_ref) = heat_pump_blob()
    mpc = MPC(blob)
    with pytest.raises(ValueError, match="x must be finite"):
        mpc.step(np.full_like(x0, np.nan), u_prev, d, x_ref, u_ref)
    with pytest.raises(ValueError, match="u_prev has 1 entries, expected 2"):
        mpc.step(x0, [0.0], d, x_ref, u_ref)


def test_warm_start_saves_iterations_in_closed_loop():
    blob, (x0, u_prev, d, x_ref, u_ref) = heat_pump_blob(water_k=1.0)
    info = mpc_unpack(blob)
    nx = info["nx"]
    plant_A, plant_B = info["A"][:nx, :nx], info["A"][:nx, nx:]  # Aa = [[A, B], [0, I]]
    iters = {}
    for warm in (True, False):
        mpc = MPC(blob)
        x, u, total = x0.copy(), u_prev.copy(), 0
        for _ in range(30):
            if not warm:
                mpc.reset()
            u = mpc.step(x, u, d, x_ref, u_ref)
            assert mpc.status == "solved"
            total += mpc.iterations
            x = plant_A @ x + plant_B @ u + info["E"] @ d
        iters[warm] = total
    assert iters[True] < 0.8 * iters[False], iters


# --- blob and argument checks --------------------------------------------------------------


def _ok_args():
    A = np.array([[0.9, 0.1], [0.0, 0.8]])
    B = np.array([[0.1], [0.05]])
    return (A, B, None, np.eye(2), np.eye(1)), {"horizon": 10, "u_min": [-1], "u_max": [1]}


def test_precompute_accepts_a_good_model():
    args, kw = _ok_args()
    info = mpc_unpack(mpc_precompute(*args, **kw))
    assert (info["nx"], info["nu"], info["nd"], info["ny"], info["n"]) == (2, 1, 0, 0, 10)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"A": np.array([[1.2, 0.0], [0.0, 0.5]])},
            r"A is open-loop unstable \(spectral radius 1.2",
        ),
        ({"A": np.eye(9) * 0.5}, r"nx=9 out of range \[1, 8\]"),
        ({"B": np.ones((2, 4)) * 0.1}, r"nu=4 out of range \[1, 3\]"),
        ({"B": np.ones((3, 1))}, r"B has shape \(3, 1\), expected \(2, nu\)"),
        ({"E": np.ones((2, 4))}, r"nd=4 out of range \[0, 3\]"),
        ({"Q": -np.eye(2)}, "Q must be positive semidefinite"),
        ({"Q": np.array([[1.0, 0.5], [0.0, 1.0]])}, "Q must be symmetric"),
        ({"R": np.eye(2)}, r"R has shape \(2, 2\), expected \(1, 1\)"),
        ({"A": np.array([[np.nan, 0.0], [0.0, 0.5]])}, "A has non-finite entries"),
        ({"horizon": 31}, r"horizon=31 out of range \[1, 30\]"),
        ({"horizon": 0}, r"horizon=0 out of range"),
        ({"u_min": [2.0]}, r"u_min\[0\]=2 must be <= u_max\[0\]=1"),
        ({"du_min": [0.1], "du_max": [0.2]}, "must bracket 0"),
        ({"rho": 0.0}, r"rho=0 out of range \(0, inf\)"),
        ({"alpha": 2.5}, r"alpha=2.5 out of range \(0, 2\)"),
        ({"C": np.ones((1, 3))}, r"C has shape \(1, 3\), expected \(ny, 2\)"),
    ],
)
def test_precompute_refuses_bad_input(change, message):
    (A, B, E, Q, R), kw = _ok_args()
    pos = {"A": A, "B": B, "E": E, "Q": Q, "R": R}
    for key, value in change.items():
        if key in pos:
            pos[key] = value
        else:
            kw[key] = value
    with pytest.raises(ValueError, match=message):
        mpc_precompute(pos["A"], pos["B"], pos["E"], pos["Q"], pos["R"], **kw)


def test_precompute_refuses_unstabilisable_model():
    A = np.diag([0.5, 0.9])
    B = np.array([[1.0], [0.0]])  # second mode unreachable, but stable: accepted
    mpc_precompute(A, B, None, np.eye(2), np.eye(1), horizon=5)
    A_int = np.diag([0.5, 1.0])  # an integrating mode no input reaches: refused
    with pytest.raises(ValueError, match="Riccati|stabilise"):
        mpc_precompute(A_int, B, None, np.eye(2), np.eye(1), horizon=5)


def test_corrupted_blob_is_refused_by_host_and_c():
    args, kw = _ok_args()
    blob = bytearray(mpc_precompute(*args, **kw))
    bad = bytearray(blob)
    bad[40] ^= 0x01
    with pytest.raises(ValueError, match="CRC"):
        mpc_unpack(bytes(bad))
    from thermopilot.host._tpcore import ffi, lib

    m = ffi.new("tp_mpc_t *")
    assert lib.tp_mpc_load(m, bytes(bad), len(bad)) == lib.TP_MPC_BLOB_BAD_CRC
    assert lib.tp_mpc_load(m, bytes(blob[:-4]), len(blob) - 4) == lib.TP_MPC_BLOB_BAD_LENGTH
    wrong = bytearray(blob)
    wrong[4] = 9  # version
    assert lib.tp_mpc_load(m, bytes(wrong), len(wrong)) == lib.TP_MPC_BLOB_BAD_VERSION
    with pytest.raises(ValueError, match="version 9"):
        mpc_unpack(bytes(wrong))
    big = bytearray(blob)
    big[6] = 12  # nx beyond TP_MPC_NX_MAX, CRC fixed up: the C side checks dims itself
    big[16:20] = (zlib.crc32(bytes(big[20:]), zlib.crc32(bytes(big[:16]))) & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
    assert lib.tp_mpc_load(m, bytes(big), len(big)) == lib.TP_MPC_BLOB_BAD_DIMS
    # the solver relies on Aa = [[A, B], [0, I]]: a blob breaking it is refused
    info = mpc_unpack(bytes(blob))
    nu = info["nu"]
    off = 20 + 4 * (nu + info["ny"] + nu)  # header, rho_v, rho_g, then Aa row-major
    last = off + 4 * (info["nxa"] * info["nxa"] - 1)  # Aa[-1, -1], must be 1.0
    odd = bytearray(blob)
    odd[last : last + 4] = np.float32(0.5).tobytes()
    odd[16:20] = (zlib.crc32(bytes(odd[20:]), zlib.crc32(bytes(odd[:16]))) & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
    assert lib.tp_mpc_load(m, bytes(odd), len(odd)) == lib.TP_MPC_BLOB_BAD_MODEL
    with pytest.raises(ValueError, match="augmented model"):
        MPC(bytes(odd))
    assert lib.tp_mpc_load(m, bytes(blob), len(blob)) == lib.TP_MPC_BLOB_OK
