"""Benchmark of the ThermoPilot control core (not a pass/fail test).

One representative problem: a linearised R290 heat pump (nx=4 states, nu=2 inputs, one
measured disturbance, horizon 20) driven through an ambient drop and a capacity step, so
that the compressor speed and EXV rate limits are active. On the same closed-loop state
sequence it compares, per control step:

- the C MPC core (cffi), TinyMPC (PyPI tinympc, same QP and rho) and OSQP (PyPI osqp,
  same QP, warm-started, default tolerances) - wall time per step and iterations, and the
  first move of each against OSQP solved to 1e-9 (the "same answer" check);
- instructions per MPC step of the C core under valgrind --tool=callgrind;
- PID steps per second: C core through cffi, firmware PID on the MicroPython VM, and the
  firmware PID under CPython.

Run: python benchmarks/bench_control.py [--steps 60] [--markdown]
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path

import numpy as np
from scipy.linalg import expm

from thermopilot.host.control import MPC, PID, mpc_precompute, mpc_qp, mpc_unpack

ROOT = Path(__file__).resolve().parent.parent
DT_S = 2.0


def heat_pump_model(dt_s=DT_S):
    """Linearised R290 air-to-water heat pump around a 6 K superheat operating point.

    States (deviations): superheat_k, evaporating pressure (bar), condensing temperature (K),
    water outlet temperature (K). Inputs (deviations, normalised): EXV opening, compressor
    speed. Disturbance: ambient air temperature (K).
    """
    # continuous-time rates in 1/s; time constants 15 s (superheat), 8 s (evaporator
    # pressure), 60 s (condenser), 240 s (water loop)
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
    n, m, k = 4, 2, 1
    big = np.zeros((n + m + k, n + m + k))
    big[:n, :n], big[:n, n : n + m], big[:n, n + m :] = Ac, Bc, Ec
    ed = expm(big * dt_s)
    return ed[:n, :n], ed[:n, n : n + m], ed[:n, n + m :]


def heat_pump_problem(
    max_iter=5000, tol=1e-3, rho=3.0, rho_scaling=False, rho_move_factor=1.0, water_k=5.0
):
    """(blob, (x0, u_prev, d, x_ref, u_ref)) of the benchmark problem.

    The water outlet target rises by ``water_k`` while the ambient drops by 5 K.
    """
    A, B, E = heat_pump_model()
    Q = np.diag([10.0, 0.0, 0.0, 2.0])  # hold superheat, reach the water target
    R = np.diag([0.1, 0.1])
    R_du = np.diag([1.0, 1.0])
    blob = mpc_precompute(
        A, B, E, Q, R, horizon=20,
        C=np.eye(4),  # every state may carry a soft limit (unlimited ones get +-inf)
        R_du=R_du,
        u_min=[-0.4, -0.3], u_max=[0.5, 0.4],  # EXV 10..100 %, compressor 30..100 %
        du_min=[-0.05, -0.02], du_max=[0.05, 0.02],  # per 2 s step: stepper / inverter ramps
        y_min=[-3.0, -np.inf, -np.inf, -np.inf],  # superheat >= 3 K absolute
        y_max=[np.inf, np.inf, 12.0, np.inf],  # condensing temperature margin
        slack_linear=1e3, slack_quadratic=1e3,
        rho=rho, rho_scaling=rho_scaling, rho_move_factor=rho_move_factor,
        max_iter=max_iter, tol_primal=tol, tol_dual=tol,
    )  # fmt: skip
    d = np.array([-5.0])  # ambient drops by 5 K
    # a steady state for the targets: solve (I - A) x = B u + E d for the tracked outputs
    x_ref, u_ref = steady_target(A, B, E, d, water_k=water_k)
    return blob, (np.zeros(4), np.zeros(2), d, x_ref, u_ref)


def steady_target(A, B, E, d, water_k):
    """Steady state with superheat 0 (deviation) and water outlet +water_k."""
    n = A.shape[0]
    # unknowns [x; u]; equations (A - I) x + B u = -E d, x0 = 0, x3 = water_k
    M = np.zeros((n + 2, n + 2))
    M[:n, :n] = A - np.eye(n)
    M[:n, n:] = B
    M[n, 0] = 1.0
    M[n + 1, 3] = 1.0
    rhs = np.concatenate([-E @ d, [0.0, water_k]])
    sol = np.linalg.solve(M, rhs)
    return sol[:n], sol[n:]
