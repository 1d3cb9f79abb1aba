"""The C MPC core against a trusted solver: on the same QP (model, weights, horizon, limits,
soft-limit slacks; built by thermopilot.host.control.mpc_qp from the blob's float32 data),
the first move agrees with OSQP solved to 1e-9.

Stated tolerance: |u0_C - u0_OSQP| <= 1e-3 * (1 + max|u0|), with the C core run to
max-norm residuals below 1e-5 (relative to |z|). Over 60 seeded random stable plants, most
with active input, rate or soft output limits; every case must converge within the budget.
"""

import numpy as np
import osqp
import pytest

from thermopilot.host.control import MPC, mpc_precompute, mpc_qp

N_CASES = 60
TOL_SOLVER = 1e-5
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
        horizon=horizon, C=C, R_du=np.diag(rng.uniform(0.0, 1.0, nu)),
        u_min=-u_lim, u_max=u_lim, du_min=-du_lim, du_max=du_lim, y_min=-y_lim, y_max=y_lim,
        slack_linear=rng.uniform(0.0, 100.0), slack_quadratic=rng.uniform(0.0, 100.0),
        max_iter=40000, tol_primal=TOL_SOLVER, tol_dual=TOL_SOLVER,
    )  # fmt: skip
    x0 = rng.normal(size=nx) * 2.0
    u_prev = rng.uniform(-u_lim, u_lim)
    d = rng.normal(size=nd)
    x_ref = rng.normal(size=nx) * 0.5
    u_ref = rng.uniform(-u_lim, u_lim) * 0.5
    return blob, (x0, u_prev, d, x_ref, u_ref)


def osqp_first_move(blob, args):
    P, q, A, lo, hi, layout = mpc_qp(blob, *args)
    solver = osqp.OSQP()
    solver.setup(
        P, q, A, lo, hi, eps_abs=1e-9, eps_rel=1e-9, max_iter=400000, polishing=True,
        verbose=False,
    )  # fmt: skip
    res = solver.solve(raise_error=False)
    assert res.info.status in ("solved", "solved inaccurate"), res.info.status
    nu = len(args[1])
    z = res.x
    v = z[layout["v"]].reshape(-1, nu)
    # active limits anywhere in the optimal plan: rate, input box, or soft-limit slack > 0
    act_rows = A @ z
    active = bool(
        np.any(np.isclose(act_rows, lo, atol=1e-6) & np.isfinite(lo) & (lo != hi))
        or np.any(np.isclose(act_rows, hi, atol=1e-6) & np.isfinite(hi) & (lo != hi))
    )
    return args[1] + v[0], active


@pytest.fixture(scope="module")
def results():
    out = []
    for seed in range(N_CASES):
        blob, args = random_case(seed)
        mpc = MPC(blob)
        u_c = mpc.step(*args)
        u_o, active = osqp_first_move(blob, args)
        out.append((seed, u_c, u_o, active, mpc.status, mpc.iterations))
    return out


def test_c_core_converges_on_every_case(results):
    bad = [(seed, status, it) for seed, _, _, _, status, it in results if status != "solved"]
    assert not bad, bad


def test_first_move_matches_osqp(results):
    worst = 0.0
    for seed, u_c, u_o, _, _, _ in results:
        err = float(np.max(np.abs(u_c - u_o)))
        worst = max(worst, err / (1.0 + np.max(np.abs(u_o))))
        assert err <= TOL_MOVE * (1.0 + np.max(np.abs(u_o))), (seed, u_c, u_o)
    print("worst relative first-move difference vs OSQP: %.2e" % worst)


def test_cases_exercise_active_limits(results):
    active = sum(1 for r in results if r[3])
    assert active >= N_CASES // 2, active
