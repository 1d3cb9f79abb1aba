"""The firmware's MicroPython MPC (tpfw.mpc.MPCPy, boards without the C module) on the real
MicroPython VM.

It solves the move-blocked condensed QP of the blob (tests/mpc_oracle.py:
blocked_exact_first_move gives its exact optimum) by warm-started ADMM within a fixed
budget. Stated tolerances (docs/benchmarks.md):
- given enough iterations (300) it converges to that QP's optimum: first move within
  2e-3 * (1 + max|u0|);
- with the shipped budget (10 iterations per step) in closed loop on the benchmark
  problems, after the first 5 steps every first move is within 5e-2 of that optimum;
- whatever the budget, the move respects the hard input and rate limits.
The C core is the accurate path (test_native_mpc.py); how far the blocked QP's move lies
from the full QP's is a property of the formulation, reported in docs/benchmarks.md.
"""

import sys
from pathlib import Path

import numpy as np
from mpc_oracle import blocked_exact_first_move
from test_native_mpc import random_case
from vm_driver import run_micropython

from thermopilot.host.control import blob as mpc_blob

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import control_problems as cp  # noqa: E402

_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tpfw.mpc import MPCPy
cases = json.loads(open(sys.argv[1]).read())
out = []
for blob_hex, budget, steps in cases:
    m = MPCPy(bytes.fromhex(blob_hex))
    if budget:
        m.max_iter = budget
    res = []
    for x0, u_prev, d, x_ref, u_ref in steps:
        st = m.solve(x0, u_prev, d, x_ref, u_ref)
        res.append([list(m.u0), st, m.iterations])
    out.append(res)
print(json.dumps(out))
"""


def _lists(args):
    return [list(map(float, a)) for a in args]


def test_converges_to_the_blocked_qp_optimum(tmp_path):
    payload, want = [], []
    for seed in range(12):
        args = dict(
            seed=seed, nx=1 + seed % 6, nu=1 + seed % 3, nd=seed % 3, ny=seed % 4,
            horizon=5 + 2 * seed, radius=0.5 + 0.04 * seed, tight=bool(seed % 2),
        )  # fmt: skip
        args["ny"] = min(args["ny"], args["nx"])
        blob, case = random_case(**args, blocks=1 + seed % 2)
        status, u_ex = blocked_exact_first_move(blob, *case)
        assert status == "Solved"
        payload.append([blob.hex(), 3000, [_lists(case)]])
        want.append((u_ex, blob, case))
    got = run_micropython(_DRIVER, tmp_path, payload, heap="512K")
    for (u_ex, blob, case), res in zip(want, got, strict=True):
        u_mp = np.array(res[0][0])
        assert np.max(np.abs(u_mp - u_ex)) <= 2e-3 * (1.0 + np.max(np.abs(u_ex))), (u_mp, u_ex)
        info = mpc_blob.unpack(blob)
        u_prev = case[1]
        assert np.all(u_mp >= np.maximum(info["u_min"], u_prev + info["du_min"]) - 1e-5)
        assert np.all(u_mp <= np.minimum(info["u_max"], u_prev + info["du_max"]) + 1e-5)


def test_shipped_budget_in_closed_loop(tmp_path):
    payload, want = [], []
    for model in (cp.heat_pump(), cp.thermal_chain(15)):
        # soft output limits, as shipped (a held input cannot meet hard ones from anywhere)
        blob = cp.blob_for(model, slack_linear=1e3, slack_quadratic=1e3)
        x0, u_prev, d, x_ref, u_ref = cp.scenario(model)
        # the plant driven by the exact blocked-QP controller: the states the board sees
        steps, exact = [], []
        x, u = x0.copy(), u_prev.copy()
        for _ in range(25):
            args = (x.copy(), u.copy(), d, x_ref, u_ref)
            status, u_ex = blocked_exact_first_move(blob, *args)
            assert status == "Solved"
            steps.append(_lists(args))
            exact.append(u_ex)
            u = u_ex
            x = model["A"] @ x + model["B"] @ u + model["E"] @ d
        payload.append([blob.hex(), 0, steps])
        want.append(exact)
    got = run_micropython(_DRIVER, tmp_path, payload, heap="512K")
    for exact, res in zip(want, got, strict=True):
        errs = [float(np.max(np.abs(np.array(r[0]) - e))) for r, e in zip(res, exact, strict=True)]
        assert all(r[2] <= 10 for r in res)
        assert max(errs[5:]) <= 5e-2, errs
