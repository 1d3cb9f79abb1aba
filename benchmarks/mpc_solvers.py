"""The three MPC solvers of the benchmark behind one interface, each on the same QP.

Every solver is given the QP that ``tests/mpc_oracle.py:mpc_qp`` writes out from the blob:

- **ThermoPilot C core**: the blob itself (``tp_mpc_solve``).
- **OSQP**: that QP in OSQP's form, set up once; per step the vectors q, l, u (affine in
  x0, u_prev, d, x_ref, u_ref: maps computed once from ``mpc_qp``) are updated.
- **TinyMPC**: the augmented model, the stage weights, the move weight, the bounds, the
  affine dynamics term and the Riccati cache computed for this QP (``set_cache_terms``;
  TinyMPC's own ``setup`` cache is a different QP). Coordinates are shifted so that every
  reference is zero (TinyMPC's terminal linear term ignores the reference). TinyMPC bounds
  every knot point including x_0; the bounds of x_0 are set to +-1e17 so that, as in the QP,
  only x_1..x_N are constrained. :func:`tinympc_qp` writes TinyMPC's QP out from the data
  TinyMPC is given, so that the harness can check that it equals ``mpc_qp`` (to 1e-9).

Two call levels are timed for each solver:

- ``solve_compiled``: the solver's own compiled entry point on prepared data (cffi call of
  ``tp_mpc_solve``; OSQP's pybind ``update_data_vec`` + ``solve``; TinyMPC's pybind
  ``set_x0`` + ``solve``), plus reading the first move.
- ``solve_public``: the public Python API a user calls with numpy arrays (``MPC.step``;
  ``OSQP.update`` + ``OSQP.solve``; ``TinyMPC.set_x0`` + ``TinyMPC.solve``), plus what the
  user needs around it (OSQP: the QP vectors from the state; TinyMPC: the coordinate shift).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mpc_oracle import mpc_qp  # noqa: E402

from thermopilot.host._tpcore import ffi, lib  # noqa: E402
from thermopilot.host.control import blob as mpc_blob  # noqa: E402
from thermopilot.host.control.mpc import MPC  # noqa: E402

_BIG_TINY = 1e17  # TinyMPC's "no bound"


class QuietStdout:
    """TinyMPC's C++ core prints a line per solve to fd 1; keep the tables readable."""

    def __enter__(self):
        sys.stdout.flush()
        self._saved = os.dup(1)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        os.close(self._null)


def _theta(args):
    x0, u_prev, d, x_ref, u_ref = args
    return np.concatenate([x0, u_prev, d, x_ref, u_ref]).astype(float)


class CCore:
    name = "ThermoPilot C core"

    def __init__(self, blob, **settings):
        self.blob = blob
        self.info = mpc_blob.unpack(blob)
        self.mpc = MPC(blob)
        for key, value in settings.items():
            setattr(self.mpc, key, value)
        self.m = self.mpc._m

    def reset(self):
        self.mpc.reset()

    def prepare(self, args):
        return [ffi.new("tp_float[]", list(a) or [0.0]) for a in args]

    def solve_compiled(self, prepared, u_prev):
        m, nu = self.m, self.info["nu"]
        t0 = time.thread_time_ns()
        lib.tp_mpc_solve(m, *prepared)
        u0 = ffi.unpack(m.u0, nu)
        t1 = time.thread_time_ns()
        return t1 - t0, np.array(u0)

    def solve_public(self, args):
        t0 = time.thread_time_ns()
        u0 = self.mpc.step(*args)
        t1 = time.thread_time_ns()
        return t1 - t0, u0

    def iterations(self):
        return self.mpc.iterations

    def converged(self):
        return self.mpc.status == "solved"


class OSQPSolver:
    name = "OSQP"

    def __init__(self, blob, args0, eps=1e-3, polishing=False, max_iter=100000):
        import osqp

        self.blob = blob
        self.info = mpc_blob.unpack(blob)
        P, q, A, lo, hi, layout = mpc_qp(blob, *args0)
        self.layout = layout
        self.nu = layout["nu"]
        self.n = self.info["n"]
        # q, l, u are affine in theta = [x0; u_prev; d; x_ref; u_ref]: columns by differences
        th0 = _theta(args0)
        self.q0, self.l0, self.u0v = q, lo, hi
        cols_q, cols_l, cols_u = [], [], []
        sizes = [len(a) for a in args0]
        for j in range(th0.size):
            th = th0.copy()
            th[j] += 1.0
            parts = np.split(th, np.cumsum(sizes)[:-1])
            _, q1, _, l1, u1, _ = mpc_qp(blob, *parts)
            cols_q.append(q1 - q)
            with np.errstate(invalid="ignore"):  # inf - inf on rows without that limit
                cols_l.append(np.where(np.isfinite(l1), l1 - lo, 0.0))
                cols_u.append(np.where(np.isfinite(u1), u1 - hi, 0.0))
        self.th0 = th0
        self.Jq, self.Jl, self.Ju = (np.array(c).T for c in (cols_q, cols_l, cols_u))
        self.solver = osqp.OSQP()
        self.solver.setup(
            P, q, A, lo, hi, eps_abs=eps, eps_rel=eps, polishing=polishing, verbose=False,
            warm_starting=True, max_iter=max_iter, adaptive_rho_interval=25,
        )  # fmt: skip
        self._ext = self.solver._solver
        self._rho0 = float(self.solver.settings.rho)
        self.nz, self.m = P.shape[0], A.shape[0]
        self._infty = self.solver.constant("OSQP_INFTY")
        self.nxa = self.info["nxa"]

    def vectors(self, args):
        dth = _theta(args) - self.th0
        q = self.q0 + self.Jq @ dth
        lo = np.maximum(self.l0 + self.Jl @ dth, -self._infty)
        hi = np.minimum(self.u0v + self.Ju @ dth, self._infty)
        return q, lo, hi

    def reset(self):
        """A cold start: zero iterates and OSQP's initial rho (its adaptive rho would
        otherwise carry over from the previous problem)."""
        self.solver.warm_start(x=np.zeros(self.nz), y=np.zeros(self.m))
        self._ext.update_rho(self._rho0)

    def prepare(self, args):
        return self.vectors(args)

    def solve_compiled(self, prepared, u_prev):
        q, lo, hi = prepared
        ext, start = self._ext, self.layout["v"].start
        t0 = time.thread_time_ns()
        ext.update_data_vec(q=q, l=lo, u=hi)
        ext.solve()
        v0 = ext.solution.x[start : start + self.nu]
        t1 = time.thread_time_ns()
        return t1 - t0, u_prev + v0

    def solve_public(self, args):
        t0 = time.thread_time_ns()
        q, lo, hi = self.vectors(args)
        self.solver.update(q=q, l=lo, u=hi)
        res = self.solver.solve(raise_error=False)
        u0 = args[1] + res.x[self.layout["v"]][: self.nu]
        t1 = time.thread_time_ns()
        return t1 - t0, u0

    def iterations(self):
        return int(self._ext.info.iter)

    def converged(self):
        return self._ext.info.status_val == 1


def tinympc_data(blob, args, rho):
    """What TinyMPC is given for one MPC step (shifted coordinates, cache for the QP)."""
    from scipy.linalg import solve_discrete_are

    m = mpc_blob.unpack(blob)
    nx, nu, nd = m["nx"], m["nu"], m["nd"]
    x0, u_prev, d, x_ref, u_ref = args
    A, B = m["A"], m["B"]
    Aa = np.block([[A, B], [np.zeros((nu, nx)), np.eye(nu)]])
    Ba = np.vstack([B, np.eye(nu)])
    Qa = np.zeros((nx + nu, nx + nu))
    Qa[:nx, :nx], Qa[nx:, nx:] = m["Q"], m["R"]
    if np.any(np.abs(Qa - np.diag(np.diag(Qa))) > 0) or np.any(
        np.abs(m["S"] - np.diag(np.diag(m["S"]))) > 0
    ):
        raise ValueError("TinyMPC needs diagonal weights")
    if m["C"].shape != (nx, nx) or not np.allclose(m["C"], np.eye(nx)):
        raise ValueError("TinyMPC bounds every state: the blob needs C = I")
    xar = np.concatenate([x_ref, u_ref])
    c = np.concatenate([m["E"] @ d if nd else np.zeros(nx), np.zeros(nu)])
    fdyn = (c + Aa @ xar - xar).reshape(-1, 1)
    n_knots = m["n"] + 1

    def lim(a):
        a = np.array(a, dtype=float)
        return np.clip(
            np.where(np.abs(a) >= 1e29, np.sign(a) * _BIG_TINY, a), -_BIG_TINY, _BIG_TINY
        )

    lo = lim(np.concatenate([m["y_min"], m["u_min"]]))
    hi = lim(np.concatenate([m["y_max"], m["u_max"]]))
    lo = np.where(lo > -_BIG_TINY, lo - xar, -_BIG_TINY)
    hi = np.where(hi < _BIG_TINY, hi - xar, _BIG_TINY)
    x_min = np.tile(lo[:, None], (1, n_knots))
    x_max = np.tile(hi[:, None], (1, n_knots))
    x_min[:, 0], x_max[:, 0] = -_BIG_TINY, _BIG_TINY  # x_0 is given, not constrained
    # cache: the terminal cost of the QP is PN, so P_inf = PN + rho I must be the Riccati
    # fixed point for (Qa + rho I, S + rho I); the blob's PN was made that way
    P = m["PN"] + rho * np.eye(nx + nu)
    Quu = m["S"] + rho * np.eye(nu) + Ba.T @ P @ Ba
    K = np.linalg.solve(Quu, Ba.T @ P @ Aa)
    P_next = Qa + rho * np.eye(nx + nu) + Aa.T @ P @ (Aa - Ba @ K)
    fixed_point_error = float(np.max(np.abs(P_next - P)) / max(1.0, np.max(np.abs(P))))
    _ = solve_discrete_are  # the blob's PN came from it (benchmarks/control_problems.py)
    return {
        "A": Aa, "B": Ba, "Q": Qa, "R": m["S"], "N": n_knots, "rho": rho, "fdyn": fdyn,
        "x_min": x_min, "x_max": x_max, "u_min": lim(m["du_min"]), "u_max": lim(m["du_max"]),
        "cache": (K, P, np.linalg.inv(Quu), (Aa - Ba @ K).T), "xar": xar,
        "fixed_point_error": fixed_point_error,
    }  # fmt: skip


def tinympc_qp(data, args):
    """TinyMPC's QP written out in ``mpc_qp``'s variables from the data TinyMPC is given:
    stage cost 1/2 xi'Q xi, move cost 1/2 v'R v, terminal cost xi_N'(P_inf - rho I)xi_N / 2
    (the cache's Riccati matrix less the ADMM penalty), dynamics xi+ = A xi + B v + fdyn,
    bounds on xi_1..xi_N and v, with xi = xa - xa_ref."""
    A, B, Q, R, fdyn = data["A"], data["B"], data["Q"], data["R"], data["fdyn"][:, 0]
    n = data["N"] - 1
    nxa, nu = B.shape
    xar = data["xar"]
    PN = data["cache"][1] - data["rho"] * np.eye(nxa)
    x0, u_prev = args[0], args[1]
    xi0 = np.concatenate([x0, u_prev]) - xar
    # in xa: 1/2 (xa - xar)' Q (xa - xar) -> P block Q, q = -Q xar
    P = sparse.block_diag(
        [sparse.block_diag([Q] * (n - 1) + [PN]), sparse.kron(sparse.eye(n), R)], format="csc"
    )
    q = np.concatenate([-Q @ xar] * (n - 1) + [-PN @ xar, np.zeros(n * nu)])
    # xi_{k+1} = A xi_k + B v + fdyn  <=>  xa_{k+1} - A xa_k - B v = fdyn + xar - A xar
    Ax = sparse.eye(n * nxa) - sparse.kron(sparse.eye(n, k=-1), A)
    Av = -sparse.kron(sparse.eye(n), B)
    b = np.tile(fdyn + xar - A @ xar, n)
    b[:nxa] += A @ (xi0 + xar)
    rows = [sparse.hstack([Ax, Av])]
    lo, hi = [b], [b]
    rows.append(sparse.hstack([sparse.csc_matrix((n * nu, n * nxa)), sparse.eye(n * nu)]))
    lo.append(np.tile(data["u_min"], n))
    hi.append(np.tile(data["u_max"], n))
    rows.append(sparse.hstack([sparse.eye(n * nxa), sparse.csc_matrix((n * nxa, n * nu))]))
    xl = data["x_min"][:, 1:].T.ravel() + np.tile(xar, n)
    xh = data["x_max"][:, 1:].T.ravel() + np.tile(xar, n)
    lo.append(np.where(data["x_min"][:, 1:].T.ravel() <= -_BIG_TINY, -np.inf, xl))
    hi.append(np.where(data["x_max"][:, 1:].T.ravel() >= _BIG_TINY, np.inf, xh))
    lo_all = np.concatenate(lo)
    hi_all = np.concatenate(hi)
    lo_all[lo_all <= -_BIG_TINY] = -np.inf
    hi_all[hi_all >= _BIG_TINY] = np.inf
    Aq = sparse.vstack(rows, format="csc")
    keep = np.isfinite(lo_all) | np.isfinite(hi_all)
    return P, q, Aq[keep], lo_all[keep], hi_all[keep]


def qp_difference(qp_a, qp_b):
    """Largest entry difference between two QPs (P, q, A, l, u), relative to the largest
    entry of each part; rows are matched after sorting (both list the same constraints)."""

    def rows(A, lo, hi):
        A = sparse.csr_matrix(A).toarray()
        keys = [tuple(np.round(r, 12)) + (a, b) for r, a, b in zip(A, lo, hi, strict=True)]
        order = sorted(range(len(keys)), key=lambda i: keys[i][:-2])
        return A[order], lo[order], hi[order]

    Pa, qa, Aa, la, ua = qp_a
    Pb, qb, Ab, lb, ub = qp_b
    out = {}
    dP = sparse.csr_matrix(Pa - Pb)
    out["P"] = float(abs(dP).max()) / max(1.0, float(abs(sparse.csr_matrix(Pa)).max()))
    out["q"] = float(np.max(np.abs(qa - qb))) / max(1.0, float(np.max(np.abs(qa))))
    if Aa.shape != Ab.shape:
        out["A"] = np.inf
        return out
    A1, l1, u1 = rows(Aa, la, ua)
    A2, l2, u2 = rows(Ab, lb, ub)
    out["A"] = float(np.max(np.abs(A1 - A2))) / max(1.0, float(np.max(np.abs(A1))))

    def bound_diff(x, y):
        same_inf = (np.isinf(x) & np.isinf(y) & (np.sign(x) == np.sign(y))) | (x == y)
        fin = np.isfinite(x) & np.isfinite(y)
        if np.any(~same_inf & ~fin):
            return np.inf
        return float(np.max(np.abs(x[fin] - y[fin]), initial=0.0)) / max(
            1.0, float(np.max(np.abs(x[fin]), initial=0.0))
        )

    out["bounds"] = max(bound_diff(l1, l2), bound_diff(u1, u2))
    return out


class TinyMPCSolver:
    name = "TinyMPC"

    def __init__(self, blob, args, rho, tol=1e-3, max_iter=20000):
        import tinympc

        self.blob, self.rho, self.tol, self.max_iter = blob, rho, tol, max_iter
        self.data = tinympc_data(blob, args, rho)
        d = self.data
        self.prob = tinympc.TinyMPC()
        with QuietStdout():
            self.prob.setup(
                d["A"], d["B"], d["Q"], d["R"], d["N"], rho=rho, fdyn=d["fdyn"],
                x_min=d["x_min"], x_max=d["x_max"], u_min=d["u_min"], u_max=d["u_max"],
                abs_pri_tol=tol, abs_dua_tol=tol, max_iter=max_iter, check_termination=1,
            )  # fmt: skip
            K, P, Quu_inv, AmBKt = d["cache"]
            self.prob._solver.set_cache_terms(
                np.asfortranarray(K), np.asfortranarray(P), np.asfortranarray(Quu_inv),
                np.asfortranarray(AmBKt), False,
            )  # fmt: skip
        self._ext = self.prob._solver
        self.xar = d["xar"]

    def prepare(self, args):
        return np.concatenate([args[0], args[1]]) - self.xar

    def solve_compiled(self, prepared, u_prev):
        ext = self._ext
        t0 = time.thread_time_ns()
        ext.set_x0(prepared)
        ext.solve()
        v0 = ext.solution.u[:, 0]
        t1 = time.thread_time_ns()
        return t1 - t0, u_prev + v0

    def solve_public(self, args):
        t0 = time.thread_time_ns()
        self.prob.set_x0(np.concatenate([args[0], args[1]]) - self.xar)
        sol = self.prob.solve()
        u0 = args[1] + np.asarray(sol["controls"])
        t1 = time.thread_time_ns()
        return t1 - t0, u0

    def iterations(self):
        return int(self._ext.solution.iter)

    def converged(self):
        return bool(self._ext.solution.solved)
