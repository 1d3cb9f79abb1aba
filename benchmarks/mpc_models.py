"""Identified models of the bundled plants for the PID-vs-MPC comparison (docs/controllers.md).

A reference for ``thermopilot identify``, fitted on the plant models themselves rather than
through the board (the bundled models in hil/models/ are identify's; docs/controllers.md,
"PID vs MPC", compares the MPC with both): the scenario's plant is
driven at the board's tick by a pseudo-random binary sequence on the actuator around an
operating point and random steps of the measured disturbance, the measurement is sampled
with the scenario's sensor noise, and an ARX model (na output lags, nb input lags from a dead
time of nk samples, the disturbance through one lag) is fitted by least squares on the first
two thirds; the delay and orders with the best free-run NRMSE on the last third win. It is
written in the model file format (docs/tuning.md) as a non-minimal state-space model whose
state is the past outputs and inputs.

Run: ``python benchmarks/mpc_models.py`` (writes benchmarks/models/*_arx.json, about a minute).
"""

import datetime
import json
import pathlib

import numpy as np

from thermopilot.hil.plants import make_plant

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "models"

# name: plant, fixed inputs, actuator input, measured output, disturbance (plant input and
# the output a board sensor reads it from), operating point, ranges, sample time, board, loop
CASES = {
    "battery_cool": dict(
        plant="battery_loop",
        inputs={"ambient_k": 303.15},
        u="pump_duty",
        y="coolant_out_k",
        d="current_a",
        u0=0.5,
        u_range=(0.1, 1.0),
        u_amp=0.3,
        d0=150.0,
        d_amp=30.0,
        ts_s=2.0,
        settle_s=6000.0,
        n_samples=3000,
        noise=0.05,
        board="virtual_mpc",
        loop="cool",
        d_name="sensed.1",
        d_unit="A",
    ),
    "chip_case": dict(
        plant="chip_cooler",
        inputs={"facility_t_k": 303.15},
        u="pump_duty",
        y="case_k",
        d="chip_power_w",
        u0=0.6,
        u_range=(0.3, 1.0),
        u_amp=0.3,
        d0=400.0,
        d_amp=250.0,
        ts_s=1.0,
        noise=0.05,
        board="virtual_chip_mpc",
        loop="case",
        d_name="sensed.1",
        d_unit="W",
    ),
}


def record(c, n_samples, seed):
    """Sampled (u, d, y) of the plant under PRBS input and random disturbance steps."""
    rng = np.random.default_rng(seed)
    p = make_plant(c["plant"])
    dt = 0.1
    per = int(round(c["ts_s"] / dt))
    inp = dict(c["inputs"])
    inp[c["u"]] = c["u0"]
    inp[c["d"]] = c["d0"]
    for _ in range(int(c.get("settle_s", 1500.0) / dt)):  # settle at the operating point
        o = p.step(dt, inp)
    y0 = o[c["y"]]
    us, ds, ys = [], [], []
    u = c["u0"]
    d = c["d0"]
    for _ in range(n_samples):
        if rng.random() < 0.15:
            u = float(np.clip(c["u0"] + c["u_amp"] * rng.choice((-1.0, 1.0)), *c["u_range"]))
        if rng.random() < 0.03:
            d = float(c["d0"] + c["d_amp"] * rng.uniform(-1.0, 1.0))
        ys.append(o[c["y"]] + rng.normal(0.0, c["noise"]))
        us.append(u)
        ds.append(d)
        inp[c["u"]] = u
        inp[c["d"]] = d
        for _ in range(per):
            o = p.step(dt, inp)
    return np.array(us), np.array(ds), np.array(ys), y0


def fit_arx(u, d, y, na, nb, nk):
    """Least-squares ARX: y[k] = sum a_i y[k-i] + sum b_j u[k-nk-j] + e d[k-1]."""
    start = max(na, nk + nb, 1)
    rows = []
    for k in range(start, len(y)):
        rows.append(
            [y[k - i] for i in range(1, na + 1)]
            + [u[k - nk - j] for j in range(nb)]
            + [d[k - 1], 1.0]
        )
    # the intercept takes up what a linear model cannot (I^2 R heating averages above its
    # value at the operating point); the board's bias estimate does the same at run time
    theta, *_ = np.linalg.lstsq(np.array(rows), y[start:], rcond=None)
    return theta[:na], theta[na : na + nb], theta[na + nb], theta[na + nb + 1]


def to_state_space(a, b, e, nk):
    """x = [y_k .. y_{k-na+1}, u_{k-1} .. u_{k-m}] with m = nk + nb - 2 input lags."""
    na, nb = len(a), len(b)
    m = nk + nb - 2
    nx = na + m
    A = np.zeros((nx, nx))
    B = np.zeros((nx, 1))
    E = np.zeros((nx, 1))
    A[0, :na] = a
    for j in range(nb):
        lag = nk + j  # u[k+1-lag] with lag >= 1; u_k is the input now (B), u_{k-i} is x[na+i-1]
        if lag == 1:
            B[0, 0] += b[j]
        else:
            A[0, na + lag - 2] += b[j]
    E[0, 0] = e
    for i in range(1, na):
        A[i, i - 1] = 1.0
    if m:
        B[na, 0] = 1.0
        for i in range(1, m):
            A[na + i, na + i - 1] = 1.0
    C = np.zeros((1, nx))
    C[0, 0] = 1.0
    return A, B, E, C


def simulate(A, B, E, C, u, d):
    x = np.zeros(A.shape[0])
    out = []
    for k in range(len(u)):
        out.append(float(C[0] @ x))
        x = A @ x + B[:, 0] * u[k] + E[:, 0] * d[k]
    return np.array(out)


def nrmse(y, ym):
    return float(np.sqrt(np.mean((y - ym) ** 2)) / np.std(y))


def identify(name, c):
    u, d, y, y0 = record(c, c.get("n_samples", 1500), seed=7)
    du, dd, dy = u - c["u0"], d - c["d0"], y - y0
    n_fit = 2 * len(y) // 3
    best = None
    for na in (1, 2, 3):
        for nb in (1, 2):
            for nk in range(1, 6):
                if na + nk + nb - 2 > 8:
                    continue
                a, b, e, c0 = fit_arx(du[:n_fit], dd[:n_fit], dy[:n_fit], na, nb, nk)
                A, B, E, C = to_state_space(a, b, e, nk)
                if np.max(np.abs(np.linalg.eigvals(A))) >= 0.999:
                    continue
                # free run with the intercept as a constant offset (its steady-state effect)
                sim = simulate(A, B, E, C, du, dd) + c0 / (1.0 - np.sum(a))
                score = nrmse(dy[n_fit:], sim[n_fit:])
                if best is None or score < best[0]:
                    best = (score, na, nb, nk, A, B, E, C, nrmse(dy[:n_fit], sim[:n_fit]))
    score, na, nb, nk, A, B, E, C, train = best
    model = {
        "format": "thermopilot-model",
        "version": 1,
        "loop": c["loop"],
        "board": c["board"],
        "ts_s": c["ts_s"],
        "A": A.tolist(),
        "B": B.tolist(),
        "C": C.tolist(),
        "D": [[0.0]],
        "E": E.tolist(),
        "inputs": [{"name": "out.0", "unit": "1", "min": c["u_range"][0], "max": c["u_range"][1]}],
        "outputs": [{"name": "loop.%s.measurement" % c["loop"], "unit": "K"}],
        "disturbances": [{"name": c["d_name"], "unit": c["d_unit"]}],
        "x0": [0.0] * A.shape[0],
        "u0": [c["u0"]],
        "y0": [float(y0)],
        "d0": [c["d0"]],
        "fit": {
            "method": "arx-ls na=%d nb=%d nk=%d (benchmarks/mpc_models.py)" % (na, nb, nk),
            "nrmse_train": round(train, 4),
            "nrmse_validation": round(score, 4),
            "n_train": n_fit,
            "n_validation": len(y) - n_fit,
            "signal": "prbs",
        },
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / (name + "_arx.json")).write_text(json.dumps(model, indent=1) + "\n")
    print(
        "%s: na=%d nb=%d nk=%d, NRMSE train %.3f validation %.3f"
        % (name, na, nb, nk, train, score)
    )


if __name__ == "__main__":
    for name, c in CASES.items():
        identify(name, c)
