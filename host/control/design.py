"""MPC design: a discrete linear model, weights and limits -> the model blob for the board.

The blob carries two formulations of the same controller:

- the **full QP** (every move over the horizon N, rate limits, hard input limits, soft
  output limits) that the C core (``tpcore``, the host's cffi build) solves to high accuracy
  with a structured interior-point method;
- a **move-blocked condensed QP** for boards without the C module: the input is held
  constant over ``nb`` blocks of steps (by default one block: a control horizon of one
  move held over the whole prediction horizon), the predictions are condensed into a dense
  QP in the ``nb * nu`` block inputs, with the soft output limits checked at the end of
  each block. The host precomputes its matrices, including the inverse that the board's
  ADMM iteration needs, so that the board only does small dense products within a fixed,
  warm-started iteration budget.

See :mod:`thermopilot.host.control.blob` for the layout.
"""

import math
import struct
import zlib

import numpy as np

from . import blob as _blob
from ._checks import NO_LIMIT, finite, matrix, sym_psd, vector
from .identify import MODEL_FORMAT, MODEL_VERSION, load_model  # noqa: F401 (re-exported)

# dimension limits of the C core (firmware/native/tp_config.h)
NX_MAX, NU_MAX, ND_MAX, NY_MAX, N_MAX = 8, 3, 3, 8, 30

__all__ = [
    "mpc_precompute",
    "lqr_terminal_cost",
    "block_lengths",
    "blocked_qp",
    "load_model",
    "design_from_model",
    "split_design",
]


def augmented(A, B):
    """(Aa, Ba) of the rate-limit augmentation xa = [x; u_prev], decision v = du."""
    nx, nu = B.shape
    Aa = np.block([[A, B], [np.zeros((nu, nx)), np.eye(nu)]])
    Ba = np.vstack([B, np.eye(nu)])
    return Aa, Ba


def lqr_terminal_cost(A, B, Q, R, R_du):
    """The unconstrained infinite-horizon cost-to-go on xa = [x; u]: with it as terminal
    cost, the MPC without active limits is the LQR.

    Raises
    ------
    ValueError
        When the Riccati equation has no stabilising solution.
    """
    from scipy import linalg

    nx, nu = B.shape
    Aa, Ba = augmented(A, B)
    Qa = np.zeros((nx + nu, nx + nu))
    Qa[:nx, :nx] = Q
    Qa[nx:, nx:] = R
    # a tiny regularisation keeps the equation solvable with a zero move weight
    reg = 1e-9 * max(1.0, float(np.trace(Qa)) / (nx + nu))
    try:
        P = linalg.solve_discrete_are(Aa, Ba, Qa + reg * np.eye(nx + nu), R_du + reg * np.eye(nu))
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ValueError(
            "the Riccati equation has no stabilising solution for this (A, B, Q, R): %s; "
            "check that every unstable or integrating mode is reachable from u" % exc
        ) from None
    P = 0.5 * (P + P.T)
    K = np.linalg.solve(R_du + reg * np.eye(nu) + Ba.T @ P @ Ba, Ba.T @ P @ Aa)
    radius = float(np.max(np.abs(np.linalg.eigvals(Aa - Ba @ K))))
    if not np.all(np.isfinite(P)) or radius >= 1.0:
        raise ValueError(
            "the LQR gain does not stabilise the model (closed-loop spectral radius %.6g >= 1)"
            % radius
        )
    return P


def block_lengths(horizon, blocks):
    """Lengths of ``blocks`` move blocks covering ``horizon`` steps: the first is one step
    long, the others grow geometrically (later moves matter less and are re-planned)."""
    nb = int(blocks)
    if not 1 <= nb <= horizon:
        raise ValueError("blocks=%r out of range [1, horizon=%d]" % (blocks, horizon))
    if nb == 1:
        return [horizon]
    rest = horizon - 1
    weights = 2.0 ** np.arange(nb - 1)
    lengths = np.maximum(1, np.floor(rest * weights / weights.sum())).astype(int)
    lengths[-1] += rest - int(lengths.sum())
    while lengths[-1] < 1:  # the rounding gave the early blocks too much
        i = int(np.argmax(lengths[:-1]))
        lengths[i] -= 1
        lengths[-1] += 1
    return [1] + [int(x) for x in lengths]


def blocked_qp(A, B, E, C, Q, R, S, PN, lengths):
    """The move-blocked condensed QP of the MPC, as dense matrices.

    Decision U = [U_1; ..; U_nb], the input held over each block. With
    theta = [x0; u_prev; d; x_ref; u_ref] the cost of the full QP restricted to blocked inputs
    is 1/2 U'HU + (F theta)'U + const, and the soft-limited outputs at the end of each block
    are Y = Gy U + Phi theta.

    Returns
    -------
    H, F, Gy, Phi : numpy.ndarray
        (nv, nv), (nv, nth), (nb ny, nv), (nb ny, nth) with nv = nb nu, nth = 2 nx + 2 nu + nd.
    """
    nx, nu = B.shape
    nd, ny, nb = E.shape[1], C.shape[0], len(lengths)
    n = int(sum(lengths))
    nv, nth = nb * nu, 2 * nx + 2 * nu + nd
    # affine maps of x_k and u_k: value = X[k] @ [U; theta]
    cols = nv + nth
    ix0, iup, id0, ixr, iur = (nv, nv + nx, nv + nx + nu, nv + nx + nu + nd, nv + 2 * nx + nu + nd)
    xk = np.zeros((nx, cols))
    xk[:, ix0 : ix0 + nx] = np.eye(nx)
    uprev = np.zeros((nu, cols))
    uprev[:, iup : iup + nu] = np.eye(nu)
    xref = np.zeros((nx, cols))
    xref[:, ixr : ixr + nx] = np.eye(nx)
    uref = np.zeros((nu, cols))
    uref[:, iur : iur + nu] = np.eye(nu)
    dmap = np.zeros((nd, cols))
    dmap[:, id0 : id0 + nd] = np.eye(nd)
    Hf = np.zeros((cols, cols))  # quadratic form over [U; theta]
    ends = np.cumsum(lengths)
    ymap = []
    k = 0
    for b, length in enumerate(lengths):
        ub = np.zeros((nu, cols))
        ub[:, b * nu : (b + 1) * nu] = np.eye(nu)
        for _ in range(length):
            move = ub - uprev
            Hf += move.T @ S @ move
            xk = A @ xk + B @ ub + E @ dmap
            k += 1
            ex, eu = xk - xref, ub - uref
            if k < n:
                Hf += ex.T @ Q @ ex + eu.T @ R @ eu
            else:
                ea = np.vstack([ex, eu])
                Hf += ea.T @ PN @ ea
            uprev = ub
            if k == ends[b]:
                ymap.append(C @ xk)
    H = Hf[:nv, :nv]
    F = Hf[:nv, nv:]
    Y = np.vstack(ymap) if ny else np.zeros((0, cols))
    return 0.5 * (H + H.T), F, Y[:, :nv], Y[:, nv:]


def mpc_precompute(
    A,
    B,
    E,
    Q,
    R,
    *,
    horizon,
    C=None,
    R_du=None,
    u_min=None,
    u_max=None,
    du_min=None,
    du_max=None,
    y_min=None,
    y_max=None,
    slack_linear=1e3,
    slack_quadratic=1e3,
    terminal_cost="lqr",
    max_iter=60,
    tol=1e-5,
    blocks=1,
    fallback_iter=10,
    fallback_rho=1.0,
    allow_unstable=False,
):
    """Turn a discrete linear model, weights and limits into the MPC blob for the board.

    Parameters
    ----------
    A : array (nx, nx)
        Discrete-time state matrix, x+ = A x + B u + E d. 1 <= nx <= 8.
    B : array (nx, nu)
        Input matrix, 1 <= nu <= 3.
    E : array (nx, nd) or None
        Measured-disturbance matrix (chip power, ambient), nd <= 3; None for nd = 0.
    Q : array (nx, nx)
        State weight (on x - x_ref), symmetric positive semidefinite.
    R : array (nu, nu)
        Input weight (on u - u_ref), symmetric positive semidefinite.
    horizon : int
        Number of moves N, 1 <= N <= 30.
    C : array (ny, nx) or None
        Outputs with soft limits (ny <= 8); None means no soft outputs.
    R_du : array (nu, nu) or None
        Weight on input moves u_k - u_{k-1}, symmetric PSD (default 0).
    u_min, u_max : array (nu,)
        Hard input limits (default unbounded).
    du_min, du_max : array (nu,)
        Hard limits on the move per control step (default unbounded); they must bracket 0.
    y_min, y_max : array (ny,)
        Soft output limits (default unbounded).
    slack_linear, slack_quadratic : float or array (ny,)
        Penalty w_lin * s + w_quad * s^2 / 2 on each output's limit violation s >= 0.
        ``slack_linear=inf`` makes that output's limits hard (the QP may then be infeasible:
        the step reports "iteration limit").
    terminal_cost : "lqr" or array (nx + nu, nx + nu)
        Cost on [x_N; u_N] - [x_ref; u_ref]. "lqr" (default): the unconstrained
        infinite-horizon cost-to-go, so that the MPC without active limits is the LQR.
    max_iter : int
        Interior-point iteration budget per step of the C core, 1..100000. The default, 60,
        is about twice the most any benchmark cold start needed (docs/benchmarks.md).
    tol : float
        Stopping tolerance of the C core: scaled primal and dual residuals and the
        complementarity below ``tol`` (> 0). The default 1e-5 is about as tight as float32
        allows and gives first moves within 1e-4 of the exact QP optimum in the benchmarks.
    blocks : int
        Move blocks of the MicroPython formulation (1 <= blocks <= horizon). The default, 1,
        is a control horizon of one move held over the prediction horizon: the smallest
        QP (nu variables), the one that fits a 10 Hz tick on a stock ESP32 or RP2040
        (docs/benchmarks.md); more blocks plan better and cost about blocks^2 more.
    fallback_iter : int
        ADMM iterations per step of the MicroPython formulation (1..1000), warm-started
        from the previous step; the default 10 is the board's time budget, not convergence
        (docs/benchmarks.md gives the resulting first-move error).
    fallback_rho : float
        ADMM penalty of the MicroPython formulation, relative to the cost curvature (> 0).
    allow_unstable : bool
        Accept an open-loop unstable A (spectral radius > 1). Off by default: ThermoPilot
        plants are stable, and an unstable identified model is almost always a mistake.

    Returns
    -------
    bytes
        Blob version ``thermopilot.host.control.blob.VERSION``.

    Raises
    ------
    ValueError
        Wrong shapes, sizes beyond the C core's ``#define`` limits, non-finite values,
        weights that are not symmetric PSD (a non-convex QP), inconsistent limits, an
        unstable A, or a model that the Riccati equation cannot stabilise.
    """
    A = np.array(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError("A has shape %s, expected a square (nx, nx) matrix" % (A.shape,))
    nx = A.shape[0]
    if not 1 <= nx <= NX_MAX:
        raise ValueError("nx=%d out of range [1, %d] (TP_MPC_NX_MAX)" % (nx, NX_MAX))
    A = matrix("A", A, (nx, nx))
    B = np.array(B, dtype=float)
    if B.ndim == 1:
        B = B.reshape(-1, 1)
    if B.ndim != 2 or B.shape[0] != nx:
        raise ValueError("B has shape %s, expected (%d, nu)" % (B.shape, nx))
    nu = B.shape[1]
    if not 1 <= nu <= NU_MAX:
        raise ValueError("nu=%d out of range [1, %d] (TP_MPC_NU_MAX)" % (nu, NU_MAX))
    B = matrix("B", B, (nx, nu))
    E = np.zeros((nx, 0)) if E is None else np.array(E, dtype=float)
    if E.ndim == 1:
        E = E.reshape(-1, 1)
    if E.ndim != 2 or E.shape[0] != nx:
        raise ValueError("E has shape %s, expected (%d, nd)" % (E.shape, nx))
    nd = E.shape[1]
    if nd > ND_MAX:
        raise ValueError("nd=%d out of range [0, %d] (TP_MPC_ND_MAX)" % (nd, ND_MAX))
    E = matrix("E", E, (nx, nd))
    C = np.zeros((0, nx)) if C is None else np.array(C, dtype=float)
    if C.ndim == 1:
        C = C.reshape(1, -1)
    if C.ndim != 2 or C.shape[1] != nx:
        raise ValueError("C has shape %s, expected (ny, %d)" % (C.shape, nx))
    ny = C.shape[0]
    if ny > NY_MAX:
        raise ValueError("ny=%d out of range [0, %d] (TP_MPC_NY_MAX)" % (ny, NY_MAX))
    C = matrix("C", C, (ny, nx))
    if int(horizon) != horizon or not 1 <= horizon <= N_MAX:
        raise ValueError("horizon=%r out of range [1, %d] (TP_MPC_N_MAX)" % (horizon, N_MAX))
    n = int(horizon)
    Q = matrix("Q", Q, (nx, nx))
    R = matrix("R", R, (nu, nu))
    R_du = np.zeros((nu, nu)) if R_du is None else matrix("R_du", R_du, (nu, nu))
    sym_psd("Q", Q)
    sym_psd("R", R)
    sym_psd("R_du", R_du)
    if int(max_iter) != max_iter or not 1 <= max_iter <= 100000:
        raise ValueError("max_iter=%r out of range [1, 100000]" % (max_iter,))
    tol = finite("tol", tol)
    if tol <= 0.0:
        raise ValueError("tol=%g out of range (0, inf)" % tol)
    if int(fallback_iter) != fallback_iter or not 1 <= fallback_iter <= 1000:
        raise ValueError("fallback_iter=%r out of range [1, 1000]" % (fallback_iter,))
    fallback_rho = finite("fallback_rho", fallback_rho)
    if fallback_rho <= 0.0:
        raise ValueError("fallback_rho=%g out of range (0, inf)" % fallback_rho)

    u_min = vector("u_min", u_min, nu, -np.inf)
    u_max = vector("u_max", u_max, nu, np.inf)
    du_min = vector("du_min", du_min, nu, -np.inf)
    du_max = vector("du_max", du_max, nu, np.inf)
    y_min = vector("y_min", y_min, ny, -np.inf)
    y_max = vector("y_max", y_max, ny, np.inf)
    w_lin = vector("slack_linear", slack_linear, ny, 0.0)
    w_quad = vector("slack_quadratic", slack_quadratic, ny, 0.0)
    for lo_name, lo, hi_name, hi in (
        ("u_min", u_min, "u_max", u_max),
        ("du_min", du_min, "du_max", du_max),
        ("y_min", y_min, "y_max", y_max),
    ):
        bad = np.nonzero(lo > hi)[0]
        if bad.size:
            i = bad[0]
            raise ValueError(
                "%s[%d]=%g must be <= %s[%d]=%g" % (lo_name, i, lo[i], hi_name, i, hi[i])
            )
    if np.any(du_min > 0.0) or np.any(du_max < 0.0):
        raise ValueError(
            "du_min=%s, du_max=%s must bracket 0 (holding the input must be allowed)"
            % (du_min, du_max)
        )
    if np.any(w_lin < 0.0) or np.any(w_quad < 0.0) or np.any(w_quad >= NO_LIMIT):
        raise ValueError(
            "slack weights must be >= 0 (slack_quadratic finite): %s, %s" % (w_lin, w_quad)
        )

    radius = float(np.max(np.abs(np.linalg.eigvals(A))))
    if radius > 1.0 + 1e-9 and not allow_unstable:
        raise ValueError(
            "A is open-loop unstable (spectral radius %.6g > 1); check the identified model "
            "or pass allow_unstable=True" % radius
        )
    nxa = nx + nu
    if isinstance(terminal_cost, str):
        if terminal_cost != "lqr":
            raise ValueError("terminal_cost=%r: expected 'lqr' or a matrix" % (terminal_cost,))
        PN = lqr_terminal_cost(A, B, Q, R, R_du)
    else:
        PN = matrix("terminal_cost", terminal_cost, (nxa, nxa))
        sym_psd("terminal_cost", PN)
    # the stage Hessian must be definite in the moves for the Newton systems to be solvable
    Aa, Ba = augmented(A, B)
    if np.linalg.eigvalsh(R_du + Ba.T @ PN @ Ba).min() <= 1e-12 * max(1.0, np.abs(PN).max()):
        raise ValueError(
            "R_du + Ba' PN Ba is singular: give the moves a weight (R_du > 0) or the inputs "
            "one (R > 0)"
        )

    lengths = block_lengths(n, blocks)
    nb = len(lengths)
    H, F, Gy, Phi = blocked_qp(A, B, E, C, Q, R, R_du, PN, lengths)
    # fallback ADMM penalties: rows scaled by the cost curvature along them
    h_scale = max(1e-9, float(np.mean(np.diag(H))))
    rho_u = np.full(nb * nu, fallback_rho * h_scale)
    rho_m = np.full(nb * nu, fallback_rho * h_scale)
    lim_u = (u_min > -NO_LIMIT) | (u_max < NO_LIMIT)
    lim_m = (du_min > -NO_LIMIT) | (du_max < NO_LIMIT)
    rho_u[~np.tile(lim_u, nb)] = 0.0
    rho_m[~np.tile(lim_m, nb)] = 0.0
    lim_y = np.tile((y_min > -NO_LIMIT) | (y_max < NO_LIMIT), nb)
    gy_norm = np.sum(Gy * Gy, axis=1) if ny else np.zeros(0)
    rho_y = np.where(lim_y, fallback_rho * h_scale / np.maximum(gy_norm, 1e-9 * h_scale), 0.0)
    rho_y = np.minimum(rho_y, 1e6 * h_scale)
    D = np.eye(nb * nu) - np.eye(nb * nu, k=-nu)
    M = np.vstack([np.eye(nb * nu), D, Gy])
    rho_rows = np.concatenate([rho_u, rho_m, rho_y])
    kinv = np.linalg.inv(H + M.T @ (rho_rows[:, None] * M))

    values = {
        "A": A,
        "B": B,
        "E": E,
        "C": C,
        "Q": Q,
        "R": R,
        "S": R_du,
        "PN": PN,
        "u_min": u_min,
        "u_max": u_max,
        "du_min": du_min,
        "du_max": du_max,
        "y_min": y_min,
        "y_max": y_max,
        "w_lin": w_lin,
        "w_quad": w_quad,
        "max_iter": [max_iter],
        "tol": [tol],
        "fb_len": lengths,
        "fb_kinv": kinv,
        "fb_f": F,
        "fb_gy": Gy,
        "fb_phi": Phi,
        "fb_rho": rho_rows,
        "fb_iter": [fallback_iter],
        "fb_alpha": [1.6],
    }
    return _blob.pack((nx, nu, nd, ny, n, nb), values)


# ------------------------------------------------------------------ from the identified model

# The identified model's file (docs/tuning.md, "The model file"): identify.py owns the format
# and its one reader, load_model, imported above for the callers of ``design.load_model``.

#: the loop binding that ``thermopilot mpc design`` appends to the blob: what the board's
#: ``mpc`` controller needs beyond the QP (firmware/tpfw/ctl_mpc.py reads it). Magic,
#: version, reserved, the model's sample time in seconds, CRC-32 of the first 12 bytes.
BINDING = struct.Struct("<4sHHfI")
BINDING_MAGIC = b"TPLB"
BINDING_VERSION = 1


def binding(ts_s):
    """The loop binding appended to a blob for the board's ``mpc`` controller."""
    head = BINDING.pack(BINDING_MAGIC, BINDING_VERSION, 0, float(ts_s), 0)[:12]
    return head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)


def split_design(data):
    """(blob, ts_s) of a file ``thermopilot mpc design`` wrote; ValueError if it is not one."""
    data = bytes(data)
    if len(data) < _blob.HEADER_BYTES + BINDING.size:
        raise ValueError("%d bytes: too short for an MPC design (blob + loop binding)" % len(data))
    plen = struct.unpack_from("<I", data, 12)[0]
    n = _blob.HEADER_BYTES + plen
    tail = data[n:]
    if len(tail) != BINDING.size:
        raise ValueError(
            "%d bytes after the MPC blob, expected the %d-byte loop binding of "
            "'thermopilot mpc design'" % (len(tail), BINDING.size)
        )
    magic, version, _, ts_s, crc = BINDING.unpack(tail)
    if magic != BINDING_MAGIC or zlib.crc32(tail[:12]) & 0xFFFFFFFF != crc:
        raise ValueError("the loop binding after the MPC blob is corrupted")
    if version != BINDING_VERSION:
        raise ValueError("loop binding version %d, expected %d" % (version, BINDING_VERSION))
    _blob.unpack(data[:n])
    return data[:n], float(ts_s)


def design_from_model(
    model,
    *,
    board=None,
    horizon=20,
    q_y=1.0,
    r_u=0.0,
    r_du=1.0,
    u_min=None,
    u_max=None,
    du_max=None,
    y_min=None,
    y_max=None,
    slack_linear=1e3,
    slack_quadratic=1e3,
    blocks=1,
    fallback_iter=10,
):
    """The blob and loop binding for the board's ``mpc`` controller from an identified model.

    The model (:func:`load_model`) is in deviations around its operating point; the board
    works in the actuator's and sensors' SI units and removes the output offset by its own
    bias estimate, so the blob keeps A, B, E and C as identified, puts the loop's measurement
    in row 0 of C and shifts the soft output limits into the model's coordinates at the
    operating point (docs/controllers.md, "The mpc controller").

    Parameters
    ----------
    model : dict
        From :func:`load_model`.
    board : dict, optional
        The board definition; when given, the loop, its actuator, the disturbance roles and
        the sample time (a whole number of ticks) are checked against it.
    horizon : int
        Prediction horizon in model samples (``ts_s`` each), 1..30.
    q_y : float
        Weight on the squared error of the measurement (per unit of its SI unit), > 0.
    r_u, r_du : float
        Weights on (u - u_ref)^2 and on the move (u_k - u_{k-1})^2, >= 0; r_u + r_du > 0.
    u_min, u_max : float, optional
        Hard input limits (default: the range the identification used, ``inputs[0]``).
    du_max : float, optional
        Largest move per model sample (default: none).
    y_min, y_max : sequence of float or None, optional
        Soft limits per output (ny values, None for none), in the output's SI unit.
    slack_linear, slack_quadratic : float
        Penalty on the soft limits' violation (see :func:`mpc_precompute`).
    blocks, fallback_iter : int
        The MicroPython formulation (see :func:`mpc_precompute`).

    Returns
    -------
    bytes
        The blob followed by the loop binding: the file ``thermopilot upload`` sends.

    Raises
    ------
    ValueError
        A non-convex weight, limits that exclude the operating point, an unstable or
        integrating model, a direct feed-through, a model that does not fit the loop; the
        message names the value and the fix.
    """
    A, B, C, D, E = model["A"], model["B"], model["C"], model["D"], model["E"]
    nx, nu, ny, nd = model["nx"], model["nu"], model["ny"], model["nd"]
    loop = model["loop"]
    names = [o["name"] for o in model["outputs"]]
    meas = "loop.%s.measurement" % loop
    if meas not in names:
        raise ValueError(
            "the model has no output %r (its outputs: %s); the mpc controller holds the loop's "
            "measurement: identify the loop %s" % (meas, ", ".join(names), loop)
        )
    if nu != 1:
        raise ValueError(
            "the model has nu=%d inputs; the board's mpc controller drives one actuator "
            "(identify the loop with one input)" % nu
        )
    for name, w in (("q_y", q_y), ("r_u", r_u), ("r_du", r_du)):
        w = finite(name, w)
        if w < 0:
            raise ValueError(
                "%s=%g: a negative weight makes the QP non-convex; use a weight >= 0" % (name, w)
            )
    if not q_y > 0:
        raise ValueError("q_y=%g: the measurement's weight must be > 0" % q_y)
    if not r_u + r_du > 0:
        raise ValueError(
            "r_u=%g and r_du=%g: give the input or its moves a weight > 0" % (r_u, r_du)
        )
    order = [names.index(meas)] + [j for j in range(ny) if names[j] != meas]
    C = C[order]
    D = D[order]
    if np.any(np.abs(D) > 0):
        raise ValueError(
            "D=%s: the model feeds the input straight through to the output; the board's MPC "
            "needs a strictly proper model (D = 0): identify with at least one sample of delay"
            % D.tolist()
        )
    radius = float(np.max(np.abs(np.linalg.eigvals(A))))
    if radius >= 1.0 - 1e-6:
        raise ValueError(
            "the model is %s (spectral radius of A %.6g >= 1); the board's MPC needs a stable "
            "model: re-identify (longer record, less noise) or check the loop"
            % ("unstable" if radius > 1.0 + 1e-9 else "integrating", radius)
        )
    u0 = model["u0"]
    inp = model["inputs"][0]
    if u_min is None:
        u_min = inp.get("min", -np.inf)
    if u_max is None:
        u_max = inp.get("max", np.inf)
    u_min = _limit("u_min", u_min)
    u_max = _limit("u_max", u_max)
    if not u_min <= u0[0] <= u_max:
        raise ValueError(
            "u_min=%g, u_max=%g exclude the operating point u0=%g of the model; widen the "
            "limits or identify the plant inside them" % (u_min, u_max, u0[0])
        )
    if du_max is not None:
        du_max = finite("du_max", du_max)
        if du_max <= 0:
            raise ValueError("du_max=%g: the largest move per sample must be > 0" % du_max)
    # output offset at the operating point in the board's coordinates (absolute u and d):
    # y = C z + C (I - A)^-1 (-B u0 - E d0) + y0
    xs = np.linalg.solve(np.eye(nx) - A, -B @ u0 - E @ model["d0"])
    y0 = model["y0"][order]
    y_off = C @ xs + y0
    lims = []
    for lname, lim, sign in (("y_min", y_min, 1), ("y_max", y_max, -1)):
        v = np.full(ny, -sign * np.inf)
        if lim is not None:
            lim = list(lim)
            if len(lim) != ny:
                raise ValueError(
                    "%s has %d values, expected %d (one per output: %s)"
                    % (lname, len(lim), ny, ", ".join(names[j] for j in order))
                )
            for j, x in enumerate(lim):
                if x is None:
                    continue
                x = finite("%s[%d]" % (lname, j), x)
                if sign * (y0[j] - x) < 0:
                    raise ValueError(
                        "%s=%g for %s excludes the operating point y0=%g of the model; move "
                        "the limit or identify the plant inside it"
                        % (lname, x, names[order[j]], y0[j])
                    )
                v[j] = x - y_off[j]
        lims.append(v)
    ts_s = model["ts_s"]
    if board is not None:
        _check_board(model, board, ts_s)
    Q = q_y * np.outer(C[0], C[0])
    return mpc_precompute(
        A,
        B,
        E if nd else None,
        Q,
        np.array([[float(r_u)]]),
        horizon=horizon,
        C=C,
        R_du=np.array([[float(r_du)]]),
        u_min=[u_min],
        u_max=[u_max],
        du_min=None if du_max is None else [-du_max],
        du_max=None if du_max is None else [du_max],
        y_min=lims[0],
        y_max=lims[1],
        slack_linear=slack_linear,
        slack_quadratic=slack_quadratic,
        blocks=blocks,
        fallback_iter=fallback_iter,
    ) + binding(ts_s)


def _limit(name, value):
    """A limit as a float (infinities allowed, NaN and text refused)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s=%r: expected a number" % (name, value)) from None
    if math.isnan(x):
        raise ValueError("%s is NaN: expected a number" % name)
    return x


def _check_board(model, board, ts_s):
    """The model against the board definition's loop: actuator, disturbances, sample time."""
    loops = {lp["name"]: lp for lp in board.get("loops", [])}
    loop = model["loop"]
    bname = board.get("name", "?")
    if loop not in loops:
        raise ValueError(
            "board %s has no loop %r (its loops: %s)" % (bname, loop, ", ".join(loops))
        )
    lp = loops[loop]
    out_ch = lp.get("actuators", {}).get("out")
    name = model["inputs"][0]["name"]
    if name != "out.%s" % out_ch:
        raise ValueError(
            "the model's input is %r, but loop %s drives actuator channel %s (out.%s); identify "
            "that loop" % (name, loop, out_ch, out_ch)
        )
    period = 1.0 / board["tick_hz"]
    every = ts_s / period
    if abs(every - round(every)) > 1e-6 * max(1.0, every) or round(every) < 1:
        raise ValueError(
            "ts_s=%g is not a whole number of board %s's ticks (%g s); identify with a sample "
            "time that is" % (ts_s, bname, period)
        )
    if lp.get("controller") == "mpc":
        roles = [r for r in ("d0", "d1", "d2") if r in lp.get("sensors", {})]
        if len(roles) != model["nd"]:
            raise ValueError(
                "the model has nd=%d measured disturbances (%s), loop %s wires %d (%s); make "
                "the two agree"
                % (
                    model["nd"],
                    ", ".join(d["name"] for d in model["disturbances"]) or "none",
                    loop,
                    len(roles),
                    ", ".join(roles) or "none",
                )
            )
