"""Benchmark problems of the control core (not production code; tests use them too).

Two plants of different structure, each with its limits and two kinds of runs:

- **heat pump** (``heat_pump``): a linearised R290 air-to-water heat pump, nx = 4 (superheat,
  evaporating pressure, condensing temperature, water outlet), nu = 2 (EXV opening,
  compressor speed), one measured disturbance (ambient), horizon 20 at 2 s. Rate limits of
  the stepper valve and the inverter, input limits, superheat >= 3 K absolute and a
  condensing-temperature margin.
- **thermal chain** (``thermal_chain``): six thermal masses in a row (heater at one end,
  chiller at the other, a heat load in the middle), nx = 6, nu = 2, nd = 1, horizon 15 or
  30 at 10 s; the two middle masses must stay below +4 K.

Output limits are hard here (``slack_linear=inf``): TinyMPC has no slack variables, and
every solver must get the same QP. The terminal cost is the one TinyMPC's cache implies for
its penalty rho (Pinf(rho) - rho I over [x; u]), so that TinyMPC, OSQP and the C core solve
one QP.
"""

import numpy as np
from scipy.linalg import expm, solve_discrete_are

from thermopilot.host.control.design import augmented, mpc_precompute


def _c2d(Ac, Bc, Ec, dt_s):
    n, m, k = Ac.shape[0], Bc.shape[1], Ec.shape[1]
    big = np.zeros((n + m + k, n + m + k))
    big[:n, :n], big[:n, n : n + m], big[:n, n + m :] = Ac, Bc, Ec
    ed = expm(big * dt_s)
    return ed[:n, :n], ed[:n, n : n + m], ed[:n, n + m :]


def heat_pump_model(dt_s=2.0):
    """Linearised R290 air-to-water heat pump around a 6 K superheat operating point.

    States (deviations): superheat_k, evaporating pressure (bar), condensing temperature (K),
    water outlet temperature (K). Inputs (deviations, normalised): EXV opening, compressor
    speed. Disturbance: ambient air temperature (K).
    """
    # time constants 15 s (superheat), 8 s (evaporator pressure), 60 s (condenser), 240 s
    Ac = np.array(
        [
            [-1 / 15, -0.02, 0.0, 0.0],
            [0.0, -1 / 8, 0.0, 0.0],
            [0.0, 0.01, -1 / 60, 0.004],
            [0.0, 0.0, 1 / 240 * 0.8, -1 / 240],
        ]
    )
    Bc = np.array(
        [
            [-16 / 15, 6 / 15],  # more EXV opening lowers superheat; more speed raises it
            [2.5 / 8, -3.0 / 8],
            [0.0, 20 / 60],
            [0.0, 0.0],
        ]
    )
    Ec = np.array([[0.1 / 15], [0.06 / 8], [0.0], [-0.2 / 240]])
    return _c2d(Ac, Bc, Ec, dt_s)


def thermal_chain_model(dt_s=10.0):
    """Six thermal masses in a row: heater power into the first (normalised, 2 kW full
    scale), chiller power out of the last (3 kW), a measured heat load (kW) into the third
    and fourth. States: temperatures (K, deviations)."""
    cap_kj_k = np.array([4.0, 8.0, 12.0, 12.0, 8.0, 4.0])
    g_kw_k = np.array([0.2, 0.15, 0.1, 0.15, 0.2])
    loss_kw_k = np.array([0.02, 0.0, 0.0, 0.0, 0.0, 0.02])
    n = 6
    Ac = np.zeros((n, n))
    for i, g in enumerate(g_kw_k):
        Ac[i, i] -= g
        Ac[i + 1, i + 1] -= g
        Ac[i, i + 1] += g
        Ac[i + 1, i] += g
    Ac -= np.diag(loss_kw_k)
    Ac /= cap_kj_k[:, None]
    Bc = np.zeros((n, 2))
    Bc[0, 0] = 2.0 / cap_kj_k[0]
    Bc[5, 1] = -3.0 / cap_kj_k[5]
    Ec = np.zeros((n, 1))
    Ec[2, 0] = 1.0 / cap_kj_k[2]
    Ec[3, 0] = 0.5 / cap_kj_k[3]
    return _c2d(Ac, Bc, Ec, dt_s)


def steady_target(A, B, E, d, fixed):
    """Steady state (x, u) with the states in ``fixed`` ({index: value}) held there."""
    n, m = A.shape[0], B.shape[1]
    M = np.zeros((n + len(fixed), n + m))
    M[:n, :n] = A - np.eye(n)
    M[:n, n:] = B
    rhs = np.concatenate([-E @ d, list(fixed.values())])
    for j, i in enumerate(fixed):
        M[n + j, i] = 1.0
    sol = np.linalg.lstsq(M, rhs, rcond=None)[0]
    return sol[:n], sol[n:]


def tinympc_terminal_cost(model, rho):
    """Pinf(rho) - rho I: the terminal cost of TinyMPC's QP when its cache is the
    infinite-horizon Riccati solution for (Qa + rho I, R_du + rho I)."""
    A, B, Q, R, R_du = model["A"], model["B"], model["Q"], model["R"], model["R_du"]
    Aa, Ba = augmented(A, B)
    nx, nu = B.shape
    Qa = np.zeros((nx + nu, nx + nu))
    Qa[:nx, :nx], Qa[nx:, nx:] = Q, R
    P = solve_discrete_are(Aa, Ba, Qa + rho * np.eye(nx + nu), R_du + rho * np.eye(nu))
    return 0.5 * (P + P.T) - rho * np.eye(nx + nu)


def heat_pump(horizon=20):
    A, B, E = heat_pump_model()
    return {
        "name": "heat pump (nx=4, nu=2, N=%d)" % horizon,
        "A": A,
        "B": B,
        "E": E,
        "C": np.eye(4),
        "Q": np.diag([10.0, 0.0, 0.0, 2.0]),  # hold superheat, reach the water target
        "R": np.diag([0.1, 0.1]),
        "R_du": np.diag([1.0, 1.0]),
        "horizon": horizon,
        "u_min": [-0.4, -0.3],  # EXV 10..100 %, compressor 30..100 %
        "u_max": [0.5, 0.4],
        "du_min": [-0.05, -0.02],  # per 2 s step: stepper / inverter ramps
        "du_max": [0.05, 0.02],
        "y_min": [-3.0, -np.inf, -np.inf, -np.inf],  # superheat >= 3 K absolute
        "y_max": [np.inf, np.inf, 12.0, np.inf],  # condensing temperature margin
        "tinympc_rho": 10.0,
    }


def thermal_chain(horizon=15):
    A, B, E = thermal_chain_model()
    return {
        "name": "thermal chain (nx=6, nu=2, N=%d)" % horizon,
        "A": A,
        "B": B,
        "E": E,
        "C": np.eye(6),
        "Q": np.diag([0.0, 0.0, 1.0, 0.0, 0.0, 5.0]),
        "R": np.diag([0.05, 0.05]),
        "R_du": np.diag([2.0, 2.0]),
        "horizon": horizon,
        "u_min": [-0.3, -0.5],
        "u_max": [0.7, 0.5],
        "du_min": [-0.1, -0.05],
        "du_max": [0.1, 0.05],
        "y_min": [-np.inf] * 6,
        "y_max": [np.inf, np.inf, 4.0, 4.0, np.inf, np.inf],
        "tinympc_rho": 10.0,
    }


def blob_for(model, **settings):
    """The model blob of a benchmark problem (hard output limits, TinyMPC's terminal cost)."""
    kw = {
        "terminal_cost": tinympc_terminal_cost(model, model["tinympc_rho"]),
        "slack_linear": np.inf,
        "slack_quadratic": 0.0,
    }
    kw.update(settings)
    return mpc_precompute(
        model["A"], model["B"], model["E"], model["Q"], model["R"],
        horizon=model["horizon"], C=model["C"], R_du=model["R_du"],
        u_min=model["u_min"], u_max=model["u_max"], du_min=model["du_min"],
        du_max=model["du_max"], y_min=model["y_min"], y_max=model["y_max"], **kw,
    )  # fmt: skip


def scenario(model):
    """The closed-loop run: (x0, u_prev, d, x_ref, u_ref) at the start, and the steps."""
    A, B, E = model["A"], model["B"], model["E"]
    nx, nu = B.shape
    if nx == 4:  # heat pump: ambient drops 5 K while the water target rises 5 K
        d = np.array([-5.0])
        x_ref, u_ref = steady_target(A, B, E, d, {0: 0.0, 3: 5.0})
    else:  # chain: a 0.8 kW load appears while the far end must drop by 2 K
        d = np.array([0.8])
        x_ref, u_ref = steady_target(A, B, E, d, {5: -2.0})
    return (np.zeros(nx), np.zeros(nu), d, x_ref, u_ref)


def cold_starts(model, count, seed=1):
    """``count`` random cold-start problems (x0, u_prev, d, x_ref, u_ref): states spread
    over the operating range, any input inside its limits, a random disturbance and a random
    reachable target. Some are infeasible with hard output limits; callers check."""
    rng = np.random.default_rng(seed)
    A, B, E = model["A"], model["B"], model["E"]
    nx = A.shape[0]
    u_lo, u_hi = np.array(model["u_min"]), np.array(model["u_max"])
    out = []
    for _ in range(count):
        u_prev = rng.uniform(u_lo, u_hi)
        if nx == 4:
            d = rng.uniform(-8.0, 8.0, 1)
            x0 = np.array(
                [
                    rng.uniform(-2.5, 6.0),
                    rng.uniform(-1.5, 1.5),
                    rng.uniform(-6, 10),
                    rng.uniform(-6, 6),
                ]
            )
            x_ref, u_ref = steady_target(A, B, E, d, {0: 0.0, 3: rng.uniform(-4.0, 6.0)})
        else:
            d = rng.uniform(-0.5, 1.0, 1)
            x0 = rng.uniform(-4.0, 3.5, nx)
            x_ref, u_ref = steady_target(A, B, E, d, {5: rng.uniform(-3.0, 2.0)})
        out.append((x0, u_prev, d, x_ref, u_ref))
    return out
