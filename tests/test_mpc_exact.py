"""The C MPC core against trusted solvers on the same QP (model, weights, horizon, terminal
cost, limits, soft-limit slacks; written out by tests/mpc_oracle.py from the blob's float32
data).

Stated accuracy: with the shipped defaults, |u0_C - u0_exact| <= 1e-3 * (1 + max|u0|) where
"exact" is the QP solved by Clarabel to 1e-11; checked over 60 seeded random stable plants,
most with active input, rate or soft output limits. At least 95 % of them end "solved"
(float32 may stop the iterations just short of the tolerance; the move is accurate then too).
OSQP solved to 1e-9 agrees with Clarabel on the same QPs (a check of the oracle).
"""

import numpy as np
import osqp
import pytest
from mpc_oracle import mpc_qp, solve_exact

from thermopilot.host.control.design import mpc_precompute
from thermopilot.host.control.mpc import MPC

N_CASES = 60
TOL_MOVE = 1e-3


def random_case(seed):
    rng = np.random.default_rng(seed)
    nx = int(rng.integers(1, 9))
    nu = int(rng.integers(1, 4))
    nd = int(rng.integers(0, 4))
    ny = int(rng.integers(0, nx + 1))
    horizon = int(rng.integers(2, 31))
    A = rng.normal(size=(nx, nx))
    A *= rng.uniform(0.3, 0.98) / max(1e-9, np.max(np.abs(np.linalg.eigvals(A))))
    B = rng.normal(size=(nx, nu))
    E = rng.normal(size=(nx, nd)) if nd else None
    C = rng.normal(size=(ny, nx)) if ny else None
    u_lim = rng.uniform(0.2, 2.0, nu)
    du_lim = rng.uniform(0.05, 1.0, nu)
    y_lim = rng.uniform(0.3, 2.0, ny)
    blob = mpc_precompute(
        A, B, E, np.diag(rng.uniform(0.1, 10.0, nx)), np.diag(rng.uniform(0.01, 1.0, nu)),
        horizon=horizon, C=C, R_du=np.diag(rng.uniform(0.01, 1.0, nu)),
        u_min=-u_lim, u_max=u_lim, du_min=-du_lim, du_max=du_lim, y_min=-y_lim, y_max=y_lim,
        slack_linear=rng.uniform(0.0, 100.0), slack_quadratic=rng.uniform(0.0, 100.0),
    )  # fmt: skip
    x0 = rng.normal(size=nx) * 2.0
    u_prev = rng.uniform(-u_lim, u_lim)
    d = rng.normal(size=nd)
    x_ref = rng.normal(size=nx) * 0.5
    u_ref = rng.uniform(-u_lim, u_lim) * 0.5
    return blob, (x0, u_prev, d, x_ref, u_ref)


@pytest.fixture(scope="module")
def results():
    out = []
    for seed in range(N_CASES):
        blob, args = random_case(seed)
        mpc = MPC(blob)
        u_c = mpc.step(*args)
        P, q, A, lo, hi, layout = mpc_qp(blob, *args)
        status, z = solve_exact(P, q, A, lo, hi)
        assert status == "Solved", (seed, status)
        nu = layout["nu"]
        u_ex = args[1] + z[layout["v"]][:nu]
        rows = A @ z
        ineq = lo != hi
        active = bool(
            np.any(ineq & np.isfinite(lo) & np.isclose(rows, lo, atol=1e-6))
            or np.any(ineq & np.isfinite(hi) & np.isclose(rows, hi, atol=1e-6))
            or (layout["s"].stop > layout["s"].start and np.max(z[layout["s"]]) > 1e-6)
        )
        solver = osqp.OSQP()
        solver.setup(
            P, q, A, lo, hi, eps_abs=1e-9, eps_rel=1e-9, max_iter=400000, polishing=True,
            verbose=False,
        )  # fmt: skip
        res = solver.solve(raise_error=False)
        u_osqp = args[1] + res.x[layout["v"]][:nu]
        out.append((seed, u_c, u_ex, u_osqp, active, mpc.status, mpc.iterations))
    return out


def test_c_core_converges(results):
    solved = sum(1 for r in results if r[5] == "solved")
    assert solved >= 0.95 * N_CASES, [(r[0], r[5], r[6]) for r in results if r[5] != "solved"]
    assert all(r[5] in ("solved", "iteration limit") for r in results)


def test_first_move_matches_the_exact_qp(results):
    worst = 0.0
    for seed, u_c, u_ex, _, _, _, _ in results:
        err = float(np.max(np.abs(u_c - u_ex)))
        worst = max(worst, err / (1.0 + np.max(np.abs(u_ex))))
        assert err <= TOL_MOVE * (1.0 + np.max(np.abs(u_ex))), (seed, u_c, u_ex)
    print("worst relative first-move difference vs the exact QP: %.2e" % worst)


def test_oracles_agree(results):
    for seed, _, u_ex, u_osqp, _, _, _ in results:
        assert np.max(np.abs(u_osqp - u_ex)) <= 1e-4 * (1.0 + np.max(np.abs(u_ex))), seed


def test_cases_exercise_active_limits(results):
    active = sum(1 for r in results if r[4])
    assert active >= N_CASES // 2, active
