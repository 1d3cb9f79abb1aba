"""Test and benchmark oracles for the MPC: the QP of one MPC step written out for general
solvers, and its exact solution. Not production code: the firmware and the host never
import this; tests and benchmarks/ do.

The QP is written from the blob's float32 values, so it is exactly the QP that the C core
is given. Variables z = [xa_1..xa_N, v_0..v_{N-1}, s] with xa = [x; u] (u the input applied
in the previous step), v the moves and s the slacks of the soft-limited outputs; outputs
with ``w_lin >= 1e30`` have hard limits and no slack.
"""

import numpy as np
from scipy import sparse

from thermopilot.host.control import blob as mpc_blob

_HARD = 1e29


def _vec(value, n, default=0.0):
    return np.full(n, default) if value is None else np.asarray(value, dtype=float).reshape(n)


def mpc_qp(blob, x, u_prev, d=None, x_ref=None, u_ref=None):
    """The QP of one MPC step in OSQP form: minimise 1/2 z'Pz + q'z, l <= A z <= u.

    Returns
    -------
    P, q, A, l, u, layout
        scipy.sparse CSC matrices and arrays; ``layout`` has the slices ``x``, ``v``, ``s``
        of z and ``nu``.
    """
    m = blob if isinstance(blob, dict) else mpc_blob.unpack(blob)
    nx, nu, nd, ny, n = m["nx"], m["nu"], m["nd"], m["ny"], m["n"]
    nxa = nx + nu
    x = _vec(x, nx)
    u_prev = _vec(u_prev, nu)
    d = _vec(d, nd)
    x_ref = _vec(x_ref, nx)
    u_ref = _vec(u_ref, nu)

    def inf(a):
        a = np.array(a, dtype=float)
        a[a >= _HARD] = np.inf
        a[a <= -_HARD] = -np.inf
        return a

    A, B, E, C = m["A"], m["B"], m["E"], m["C"]
    Aa = np.block([[A, B], [np.zeros((nu, nx)), np.eye(nu)]])
    Ba = np.vstack([B, np.eye(nu)])
    Qa = np.zeros((nxa, nxa))
    Qa[:nx, :nx] = m["Q"]
    Qa[nx:, nx:] = m["R"]
    soft = m["w_lin"] < _HARD
    ns = int(soft.sum())
    nzx, nzv, nzs = n * nxa, n * nu, n * ns
    xa_ref = np.concatenate([x_ref, u_ref])
    Px = sparse.block_diag([Qa] * (n - 1) + [m["PN"]])
    Pv = sparse.kron(sparse.eye(n), m["S"])
    Ps = sparse.diags(np.tile(m["w_quad"][soft], n)) if nzs else sparse.csc_matrix((0, 0))
    P = sparse.block_diag([Px, Pv, Ps], format="csc")
    q = np.concatenate(
        [-Qa @ xa_ref] * (n - 1) + [-m["PN"] @ xa_ref, np.zeros(nzv), np.tile(m["w_lin"][soft], n)]
    )
    c = np.concatenate([E @ d if nd else np.zeros(nx), np.zeros(nu)])
    xa0 = np.concatenate([x, u_prev])
    Ax = sparse.eye(nzx) - sparse.kron(sparse.eye(n, k=-1), Aa)
    Av = -sparse.kron(sparse.eye(n), Ba)
    rows = [sparse.hstack([Ax, Av, sparse.csc_matrix((nzx, nzs))])]
    bdyn = np.tile(c, n)
    bdyn[:nxa] += Aa @ xa0
    lo, hi = [bdyn], [bdyn]
    rows.append(
        sparse.hstack(
            [sparse.csc_matrix((nzv, nzx)), sparse.eye(nzv), sparse.csc_matrix((nzv, nzs))]
        )
    )
    lo.append(np.tile(inf(m["du_min"]), n))
    hi.append(np.tile(inf(m["du_max"]), n))
    sel_u = sparse.hstack([sparse.csc_matrix((nu, nx)), sparse.eye(nu)])
    rows.append(
        sparse.hstack([sparse.kron(sparse.eye(n), sel_u), sparse.csc_matrix((nzv, nzv + nzs))])
    )
    lo.append(np.tile(inf(m["u_min"]), n))
    hi.append(np.tile(inf(m["u_max"]), n))
    if ny:
        sel_y = sparse.hstack([sparse.csc_matrix(C), sparse.csc_matrix((ny, nu))])
        Cy = sparse.kron(sparse.eye(n), sel_y, format="csr")
        hard_rows = np.flatnonzero(np.tile(~soft, n))
        if hard_rows.size:
            rows.append(
                sparse.hstack([Cy[hard_rows], sparse.csc_matrix((hard_rows.size, nzv + nzs))])
            )
            lo.append(np.tile(inf(m["y_min"]), n)[hard_rows])
            hi.append(np.tile(inf(m["y_max"]), n)[hard_rows])
        if nzs:
            soft_rows = np.flatnonzero(np.tile(soft, n))
            Cs = Cy[soft_rows]
            Is = sparse.eye(nzs)
            rows += [
                sparse.hstack([Cs, sparse.csc_matrix((nzs, nzv)), -Is]),
                sparse.hstack([Cs, sparse.csc_matrix((nzs, nzv)), Is]),
                sparse.hstack([sparse.csc_matrix((nzs, nzx + nzv)), Is]),
            ]
            lo += [np.full(nzs, -np.inf), np.tile(inf(m["y_min"])[soft], n), np.zeros(nzs)]
            hi += [np.tile(inf(m["y_max"])[soft], n), np.full(nzs, np.inf), np.full(nzs, np.inf)]
    Aq = sparse.vstack(rows, format="csc")
    lo, hi = np.concatenate(lo), np.concatenate(hi)
    keep = np.isfinite(lo) | np.isfinite(hi)  # rows without any limit constrain nothing
    layout = {
        "x": slice(0, nzx),
        "v": slice(nzx, nzx + nzv),
        "s": slice(nzx + nzv, nzx + nzv + nzs),
        "nu": nu,
    }
    return P, q, Aq[keep], lo[keep], hi[keep], layout


def solve_exact(P, q, A, lo, hi):
    """Solve the QP to about 1e-11 with Clarabel (interior point, double precision).

    Double precision cannot always certify 1e-11 on badly scaled problems (Clarabel then
    says "AlmostSolved" or "InsufficientProgress"); the QP is then solved again at 1e-10,
    1e-9 and 1e-8, still five orders of magnitude tighter than any accuracy the tests ask of
    the C core. Only "Solved" is an exact answer; any other final status is returned as it
    is.

    Returns
    -------
    (status, z)
        Clarabel's status as a string ("Solved", "PrimalInfeasible", ...) and the solution.
    """
    for tol in (1e-11, 1e-10, 1e-9, 1e-8):
        status, z = _clarabel(P, q, A, lo, hi, tol)
        if status == "Solved":
            break
    return status, z


def _clarabel(P, q, A, lo, hi, tol):
    import clarabel

    A = sparse.csr_matrix(A)
    eq = lo == hi
    lo_f = np.isfinite(lo) & ~eq
    hi_f = np.isfinite(hi) & ~eq
    Ac = sparse.vstack([A[eq], A[hi_f], -A[lo_f]], format="csc")
    b = np.concatenate([lo[eq], hi[hi_f], -lo[lo_f]])
    cones = [
        clarabel.ZeroConeT(int(eq.sum())),
        clarabel.NonnegativeConeT(int(hi_f.sum() + lo_f.sum())),
    ]
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = tol
    st.tol_ktratio = 100.0 * tol
    st.max_iter = 500
    st.presolve_enable = False
    solver = clarabel.DefaultSolver(sparse.triu(P).tocsc(), q, Ac, b, cones, st)
    res = solver.solve()
    return str(res.status), np.array(res.x)


def exact_first_move(blob, x, u_prev, d=None, x_ref=None, u_ref=None):
    """(status, u0) of the exact QP optimum: the input the MPC should apply now."""
    P, q, A, lo, hi, layout = mpc_qp(blob, x, u_prev, d, x_ref, u_ref)
    status, z = solve_exact(P, q, A, lo, hi)
    nu = layout["nu"]
    return status, np.asarray(u_prev, dtype=float) + z[layout["v"]][:nu]


def blocked_exact_first_move(blob, x, u_prev, d=None, x_ref=None, u_ref=None):
    """(status, u0) of the exact optimum of the move-blocked condensed QP that the
    MicroPython firmware solves (thermopilot.host.control.design.blocked_qp), with the
    soft output limits as slack variables (hard where w_lin >= 1e30)."""
    from thermopilot.host.control.design import blocked_qp

    m = blob if isinstance(blob, dict) else mpc_blob.unpack(blob)
    nx, nu, nd, nb = m["nx"], m["nu"], m["nd"], m["nb"]
    nv = nb * nu
    theta = np.concatenate(
        [_vec(x, nx), _vec(u_prev, nu), _vec(d, nd), _vec(x_ref, nx), _vec(u_ref, nu)]
    )
    lengths = [int(round(v)) for v in m["fb_len"]]
    H, F, Gy, Phi = blocked_qp(
        m["A"], m["B"], m["E"], m["C"], m["Q"], m["R"], m["S"], m["PN"], lengths
    )
    q = F @ theta
    yoff = Phi @ theta
    y_lo = np.tile(m["y_min"], nb)
    y_hi = np.tile(m["y_max"], nb)
    w_lin = np.tile(m["w_lin"], nb)
    w_quad = np.tile(m["w_quad"], nb)
    limited = (y_lo > -_HARD) | (y_hi < _HARD)
    soft = limited & (w_lin < _HARD)
    hard = limited & ~soft
    ns = int(soft.sum())
    nz = nv + ns
    P = np.zeros((nz, nz))
    P[:nv, :nv] = H
    P[nv:, nv:] = np.diag(w_quad[soft])
    qq = np.concatenate([q, w_lin[soft]])
    D = np.eye(nv) - np.eye(nv, k=-nu)
    mlo = np.tile(m["du_min"], nb)
    mhi = np.tile(m["du_max"], nb)
    mlo[:nu] += u_prev
    mhi[:nu] += u_prev
    rows = [np.hstack([np.eye(nv), np.zeros((nv, ns))]), np.hstack([D, np.zeros((nv, ns))])]
    lo = [np.tile(m["u_min"], nb), mlo]
    hi = [np.tile(m["u_max"], nb), mhi]
    if hard.any():
        rows.append(np.hstack([Gy[hard], np.zeros((int(hard.sum()), ns))]))
        lo.append(y_lo[hard] - yoff[hard])
        hi.append(y_hi[hard] - yoff[hard])
    if ns:
        Is = np.eye(ns)
        rows += [
            np.hstack([Gy[soft], -Is]),
            np.hstack([Gy[soft], Is]),
            np.hstack([0 * Gy[soft], Is]),
        ]
        lo += [np.full(ns, -np.inf), y_lo[soft] - yoff[soft], np.zeros(ns)]
        hi += [y_hi[soft] - yoff[soft], np.full(ns, np.inf), np.full(ns, np.inf)]
    lo = np.concatenate(lo)
    hi = np.concatenate(hi)
    lo[lo <= -_HARD] = -np.inf
    hi[hi >= _HARD] = np.inf
    keep = np.isfinite(lo) | np.isfinite(hi)
    A = sparse.csc_matrix(np.vstack(rows)[keep])
    status, z = solve_exact(sparse.csc_matrix(P), qq, A, lo[keep], hi[keep])
    return status, z[:nu]
