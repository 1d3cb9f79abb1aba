"""Host side of the ThermoPilot control core: PID and MPC over the C core (cffi).

The C sources live in ``firmware/native/`` and are the same ones the board firmware
builds. This module adds what the board never does: argument checking with clear
errors, the MPC precomputation (Riccati cache, versioned blob), the same QP written out
for a general solver (OSQP) and a numpy float32 reference of the C iteration.

Public API
----------
PID
    PID step in C, the same interface as the firmware's ``tpfw.pid.PID``.
MPC
    MPC step in C over a blob made by :func:`mpc_precompute`.
mpc_precompute
    (A, B, E, Q, R, limits, horizon) -> versioned blob (bytes).
mpc_unpack
    blob -> dict of arrays (dimensions, cache, limits, settings).
mpc_qp
    the QP that the MPC solves, as (P, q, A, l, u) sparse matrices for OSQP.
mpc_reference_step
    numpy float32 re-implementation of the C iteration (for tests).
"""

import math
import struct
import zlib

import numpy as np

from thermopilot.host._tpcore import ffi, lib

__all__ = [
    "PID",
    "MPC",
    "MPC_STATUS",
    "mpc_precompute",
    "mpc_unpack",
    "mpc_qp",
    "mpc_reference_step",
    "BLOB_VERSION",
]

NX_MAX = int(lib.TP_MPC_NX_MAX)
NU_MAX = int(lib.TP_MPC_NU_MAX)
ND_MAX = int(lib.TP_MPC_ND_MAX)
NY_MAX = int(lib.TP_MPC_NY_MAX)
N_MAX = int(lib.TP_MPC_N_MAX)
BLOB_MAGIC = b"TPMC"
BLOB_VERSION = int(lib.TP_MPC_BLOB_VERSION)
_HEADER = struct.Struct("<4sHBBBBBBII")  # magic, version, nx, nu, nd, ny, n, 0, len, crc
_NO_LIMIT = 1e30  # "no limit" as float32 on the board

MPC_STATUS = {
    int(lib.TP_MPC_SOLVED): "solved",
    int(lib.TP_MPC_MAX_ITER): "iteration limit",
    int(lib.TP_MPC_INFEASIBLE): "infeasible",
    int(lib.TP_MPC_BAD_INPUT): "bad input",
    int(lib.TP_MPC_NUMERIC): "numeric failure",
}
_BLOB_ERRORS = {
    int(lib.TP_MPC_BLOB_BAD_LENGTH): "wrong length",
    int(lib.TP_MPC_BLOB_BAD_MAGIC): "not an MPC blob (bad magic)",
    int(lib.TP_MPC_BLOB_BAD_VERSION): "unsupported version",
    int(lib.TP_MPC_BLOB_BAD_DIMS): "dimensions exceed the C core's limits",
    int(lib.TP_MPC_BLOB_BAD_CRC): "CRC mismatch (corrupted)",
    int(lib.TP_MPC_BLOB_BAD_MODEL): "augmented model is not [[A, B], [0, I]], [B; I]",
}


def _finite(name, value):
    x = float(value)
    if not math.isfinite(x):
        raise ValueError("%s must be a finite number, got %r" % (name, value))
    return x


# --------------------------------------------------------------------------------------- PID


class PID:
    """PID controller step in C (float32), the same maths as the board.

    Parameters
    ----------
    kp, ki, kd : float
        Gains: output per unit error, per unit error-second (1/s), per unit error/s (s).
    out_min, out_max : float
        Output limits, ``out_min <= out_max``.
    reverse : bool
        True when more output lowers the measurement (a cooling pump): the error is
        ``measurement - setpoint``.
    tf_s : float
        Derivative filter time constant in s (>= 0; 0 = unfiltered).
    beta, gamma : float
        Setpoint weights on P and D (classic: 1 and 0; gamma 0 is derivative on
        measurement).
    rate_max : float
        Output rate limit in output units per s (0 = none).
    tt_s : float
        Anti-windup tracking time constant in s (back-calculation; 0 = one step).

    Notes
    -----
    Anti-windup is back-calculation: after limiting, the integrator moves by
    ``min(dt_s/tt_s, 1) * (applied - unsaturated)`` where ``applied`` is the limited output
    or the ``track`` input of :meth:`update`. Components ``p, i, d, ff`` are exposed for
    telemetry.
    """

    _PARAMS = ("kp", "ki", "kd", "tf_s", "beta", "gamma", "rate_max", "tt_s")

    def __init__(
        self,
        kp,
        ki,
        kd,
        out_min=0.0,
        out_max=1.0,
        reverse=False,
        tf_s=0.0,
        beta=1.0,
        gamma=0.0,
        rate_max=0.0,
        tt_s=0.0,
    ):
        self._c = ffi.new("tp_pid_t *")
        out_min = _finite("out_min", out_min)
        out_max = _finite("out_max", out_max)
        if out_min > out_max:
            raise ValueError("out_min=%g must be <= out_max=%g" % (out_min, out_max))
        lib.tp_pid_init(self._c, 0.0, 0.0, 0.0, out_min, out_max)
        for name, value in zip(
            self._PARAMS, (kp, ki, kd, tf_s, beta, gamma, rate_max, tt_s), strict=True
        ):
            setattr(self, name, value)
        self.reverse = reverse

    def __setattr__(self, name, value):
        if name in self._PARAMS:
            value = _finite(name, value)
            if name in ("tf_s", "rate_max", "tt_s") and value < 0.0:
                raise ValueError("%s=%g out of range [0, inf)" % (name, value))
            setattr(self._c, name, value)
        elif name in ("out_min", "out_max"):
            value = _finite(name, value)
            lo = value if name == "out_min" else self._c.out_min
            hi = value if name == "out_max" else self._c.out_max
            if lo > hi:
                raise ValueError("out_min=%g must be <= out_max=%g" % (lo, hi))
            setattr(self._c, name, value)
        elif name == "reverse":
            self._c.reverse = 1.0 if value else 0.0
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        if name in self._PARAMS or name in ("out_min", "out_max", "p", "i", "d", "ff", "v"):
            return float(getattr(self._c, name))
        if name == "output":
            return float(self._c.output)
        if name == "reverse":
            return self._c.reverse != 0.0
        if name == "auto":
            return self._c.auto_mode != 0.0
        raise AttributeError(name)

    @property
    def components(self):
        """dict: the last step's ``p``, ``i``, ``d``, ``ff`` terms and ``output``."""
        c = self._c
        return {"p": c.p, "i": c.i, "d": c.d, "ff": c.ff, "output": c.output}

    def reset(self, output=None):
        """Clear the state; the output restarts at ``output`` (default ``out_min``)."""
        lib.tp_pid_reset(self._c, self._c.out_min if output is None else _finite("output", output))

    def set_auto(self, auto, output=None):
        """Switch auto (True) / manual (False); the output continues from ``output``."""
        if output is None:
            lib.tp_pid_set_auto(self._c, 1 if auto else 0, 0.0, 0)
        else:
            lib.tp_pid_set_auto(self._c, 1 if auto else 0, _finite("output", output), 1)

    def update(self, setpoint, measurement, dt_s, ff=0.0, track=None):
        """Run one step and return the output.

        Parameters
        ----------
        setpoint, measurement : float
            In the measurement's unit.
        dt_s : float
            Time since the previous step in s, > 0.
        ff : float
            Feed-forward added to the output before limiting.
        track : float or None
            The actuator's real command (after the safety supervisor), if it differs.
        """
        st = lib.tp_pid_step(
            self._c,
            setpoint,
            measurement,
            dt_s,
            ff,
            0.0 if track is None else track,
            0 if track is None else 1,
        )
        if st == lib.TP_PID_BAD_DT:
            raise ValueError("dt_s=%r out of range (0, inf)" % (dt_s,))
        if st == lib.TP_PID_BAD_INPUT:
            raise ValueError(
                "setpoint=%r, measurement=%r, ff=%r, track=%r: all must be finite"
                % (setpoint, measurement, ff, track)
            )
        return float(self._c.output)

    __call__ = update


# --------------------------------------------------------------------------- MPC precompute


def _matrix(name, value, shape):
    try:
        a = np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError("%s must be a numeric matrix: %s" % (name, exc)) from None
    if a.ndim == 0 and shape == (1, 1):
        a = a.reshape(1, 1)
    if a.ndim == 1 and shape[0] == 1 and a.shape[0] == shape[1]:
        a = a.reshape(1, -1)
    if a.shape != shape:
        raise ValueError("%s has shape %s, expected %s" % (name, a.shape, shape))
    if not np.all(np.isfinite(a)):
        raise ValueError("%s has non-finite entries" % name)
    if np.any(np.abs(a) >= _NO_LIMIT):
        raise ValueError("%s has entries beyond float32 range (|x| >= 1e30)" % name)
    return a


def _vector(name, value, n, default):
    if value is None:
        return np.full(n, float(default))
    a = np.array(value, dtype=float).reshape(-1)
    if a.size == 1 and n != 1:
        a = np.full(n, float(a[0]))
    if a.shape != (n,):
        raise ValueError("%s has %d entries, expected %d" % (name, a.size, n))
    if np.any(np.isnan(a)):
        raise ValueError("%s has NaN entries" % name)
    return np.clip(a, -_NO_LIMIT, _NO_LIMIT)


def _sym_psd(name, a, definite=False):
    if not np.allclose(a, a.T, rtol=1e-9, atol=1e-12):
        raise ValueError("%s must be symmetric" % name)
    ev = np.linalg.eigvalsh(a)
    if definite and ev.min() <= 0.0:
        raise ValueError(
            "%s must be positive definite (smallest eigenvalue %g)" % (name, ev.min())
        )
    if ev.min() < -1e-9 * max(1.0, abs(ev.max())):
        raise ValueError(
            "%s must be positive semidefinite (smallest eigenvalue %g)" % (name, ev.min())
        )


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
    rho=3.0,
    rho_scaling=True,
    rho_move_factor=1.0,
    rho_rows=None,
    max_iter=100,
    tol_primal=1e-3,
    tol_dual=1e-3,
    alpha=1.6,
    allow_unstable=False,
):
    """Turn a discrete linear model, weights and limits into the MPC blob for the C core.

    Parameters
    ----------
    A : array (nx, nx)
        Discrete-time state matrix, x+ = A x + B u + E d. 1 <= nx <= 8.
    B : array (nx, nu)
        Input matrix, 1 <= nu <= 3.
    E : array (nx, nd) or None
        Measured-disturbance matrix (chip power, ambient), nd <= 3; None for nd = 0.
    Q : array (nx, nx)
        State weight, symmetric positive semidefinite.
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
        Hard limits on the move per control step (default unbounded).
    y_min, y_max : array (ny,)
        Soft output limits (default unbounded).
    slack_linear, slack_quadratic : float or array (ny,)
        Penalty w_lin * s + w_quad * s^2 / 2 on each output's limit violation s >= 0.
    rho : float
        ADMM penalty (> 0), folded into the cache. With ``rho_scaling`` it is relative: each
        constraint row gets ``rho`` times the cost curvature along it.
    rho_scaling : bool
        True (default): per-row penalties from the unconstrained LQR cost-to-go P0 —
        ``rho * diag(S + Ba'P0 Ba)`` for the moves and the input limits, ``rho *
        diag(C P0 C')`` for limited outputs, ``1e-3 * rho * max(diag(S + Ba'P0 Ba))`` for
        outputs without limits. False: ``rho`` on every row (as TinyMPC).
    rho_move_factor : float
        Extra factor on the penalty of the move (rate-limit) rows, > 0.
    rho_rows : tuple of arrays (nu,), (ny + nu,), optional
        Explicit penalties for the move rows and for the rows of G (soft outputs, then
        inputs), all > 0; overrides ``rho``, ``rho_scaling`` and ``rho_move_factor``.
    max_iter : int
        Iteration budget per control step, 1..100000.
    tol_primal, tol_dual : float
        Early exit once primal < tol_primal * max(1, |z|) and dual < tol_dual * max(1, |z|)
        (max-norms). primal = |Gx - z|, dual = |z - z_previous|: the usual ADMM dual
        residual rho * (z - z_previous) divided by each row's rho, so that rows with very
        different penalties compare in the constraint's own units; relative to |z| because
        float32 resolution is relative. 0 runs the full budget.
    alpha : float
        ADMM over-relaxation in (0, 2) (1 = plain ADMM; 1.6 as OSQP's default).
    allow_unstable : bool
        Accept an open-loop unstable A (spectral radius > 1). Off by default: ThermoPilot
        plants are stable, and an unstable identified model is almost always a mistake.

    Returns
    -------
    bytes
        Blob version ``BLOB_VERSION``: a 20-byte header (magic ``TPMC``, version, nx, nu,
        nd, ny, N, payload length, CRC-32) and little-endian float32 payload.

    Raises
    ------
    ValueError
        Wrong shapes, sizes beyond the C core's ``#define`` limits, non-finite values,
        weights that are not symmetric PSD, inconsistent limits, an unstable A, or a
        model that the Riccati equation cannot stabilise.
    """
    from scipy import linalg

    A = np.array(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError("A has shape %s, expected a square (nx, nx) matrix" % (A.shape,))
    nx = A.shape[0]
    if not 1 <= nx <= NX_MAX:
        raise ValueError("nx=%d out of range [1, %d] (TP_MPC_NX_MAX)" % (nx, NX_MAX))
    A = _matrix("A", A, (nx, nx))
    B = np.array(B, dtype=float)
    if B.ndim == 1:
        B = B.reshape(-1, 1)
    if B.ndim != 2 or B.shape[0] != nx:
        raise ValueError("B has shape %s, expected (%d, nu)" % (B.shape, nx))
    nu = B.shape[1]
    if not 1 <= nu <= NU_MAX:
        raise ValueError("nu=%d out of range [1, %d] (TP_MPC_NU_MAX)" % (nu, NU_MAX))
    B = _matrix("B", B, (nx, nu))
    if E is None:
        E = np.zeros((nx, 0))
    E = np.array(E, dtype=float)
    if E.ndim == 1:
        E = E.reshape(-1, 1)
    if E.ndim != 2 or E.shape[0] != nx:
        raise ValueError("E has shape %s, expected (%d, nd)" % (E.shape, nx))
    nd = E.shape[1]
    if nd > ND_MAX:
        raise ValueError("nd=%d out of range [0, %d] (TP_MPC_ND_MAX)" % (nd, ND_MAX))
    E = _matrix("E", E, (nx, nd))
    if C is None:
        C = np.zeros((0, nx))
    C = np.array(C, dtype=float)
    if C.ndim == 1:
        C = C.reshape(1, -1)
    if C.ndim != 2 or C.shape[1] != nx:
        raise ValueError("C has shape %s, expected (ny, %d)" % (C.shape, nx))
    ny = C.shape[0]
    if ny > NY_MAX:
        raise ValueError("ny=%d out of range [0, %d] (TP_MPC_NY_MAX)" % (ny, NY_MAX))
    C = _matrix("C", C, (ny, nx))
    if int(horizon) != horizon or not 1 <= horizon <= N_MAX:
        raise ValueError("horizon=%r out of range [1, %d] (TP_MPC_N_MAX)" % (horizon, N_MAX))
    n = int(horizon)
    Q = _matrix("Q", Q, (nx, nx))
    R = _matrix("R", R, (nu, nu))
    R_du = np.zeros((nu, nu)) if R_du is None else _matrix("R_du", R_du, (nu, nu))
    _sym_psd("Q", Q)
    _sym_psd("R", R)
    _sym_psd("R_du", R_du)
    rho = _finite("rho", rho)
    if rho <= 0.0:
        raise ValueError("rho=%g out of range (0, inf)" % rho)
    if int(max_iter) != max_iter or not 1 <= max_iter <= 100000:
        raise ValueError("max_iter=%r out of range [1, 100000]" % (max_iter,))
    tol_primal = _finite("tol_primal", tol_primal)
    tol_dual = _finite("tol_dual", tol_dual)
    alpha = _finite("alpha", alpha)
    if not 0.0 < alpha < 2.0:
        raise ValueError("alpha=%g out of range (0, 2)" % alpha)
    if tol_primal < 0.0 or tol_dual < 0.0:
        raise ValueError("tol_primal=%g, tol_dual=%g must be >= 0" % (tol_primal, tol_dual))

    u_min = _vector("u_min", u_min, nu, -np.inf)
    u_max = _vector("u_max", u_max, nu, np.inf)
    du_min = _vector("du_min", du_min, nu, -np.inf)
    du_max = _vector("du_max", du_max, nu, np.inf)
    y_min = _vector("y_min", y_min, ny, -np.inf)
    y_max = _vector("y_max", y_max, ny, np.inf)
    w_lin = _vector("slack_linear", slack_linear, ny, 0.0)
    w_quad = _vector("slack_quadratic", slack_quadratic, ny, 0.0)
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
    if np.any(w_lin < 0.0) or np.any(w_quad < 0.0) or np.any(w_quad >= _NO_LIMIT):
        raise ValueError("slack weights must be >= 0 and finite: %s, %s" % (w_lin, w_quad))

    radius = float(np.max(np.abs(np.linalg.eigvals(A))))
    if radius > 1.0 + 1e-9 and not allow_unstable:
        raise ValueError(
            "A is open-loop unstable (spectral radius %.6g > 1); check the identified model "
            "or pass allow_unstable=True" % radius
        )

    # augmented model xa = [x; u_prev], decision v = du
    nxa = nx + nu
    Aa = np.block([[A, B], [np.zeros((nu, nx)), np.eye(nu)]])
    Ba = np.vstack([B, np.eye(nu)])
    G = np.zeros((ny + nu, nxa))
    G[:ny, :nx] = C
    G[ny:, nx:] = np.eye(nu)
    Qa = np.zeros((nxa, nxa))
    Qa[:nx, :nx] = Q
    Qa[nx:, nx:] = R
    if rho_scaling:
        reg = 1e-6 * max(1.0, float(np.trace(Qa)) / nxa)
        try:
            P0 = linalg.solve_discrete_are(Aa, Ba, Qa + reg * np.eye(nxa), R_du + reg * np.eye(nu))
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise ValueError(
                "the Riccati equation has no stabilising solution for this (A, B, Q, R): %s; "
                "check that every unstable or integrating mode is reachable from u" % exc
            ) from None
        h_v = np.diag(R_du + Ba.T @ P0 @ Ba).copy()
        h_g = np.diag(G @ P0 @ G.T).copy()
        floor = 1e-6 * max(1.0, float(h_v.max()), float(h_g.max()) if h_g.size else 0.0)
        h_v = np.maximum(h_v, floor)
        rho_v = rho * h_v
        # input rows constrain the sum of the moves: the moves' curvature suits them
        rho_g = np.concatenate([rho * np.maximum(h_g[:ny], floor), rho * h_v])
        # rows without any finite limit constrain nothing: a small penalty keeps them from
        # holding up the dual residual (limits set later at run time still work, slower)
        free = (y_min <= -_NO_LIMIT) & (y_max >= _NO_LIMIT)
        rho_g[:ny][free] = 1e-3 * rho * float(h_v.max())
    else:
        rho_v = np.full(nu, rho)
        rho_g = np.full(ny + nu, rho)
    rho_move_factor = _finite("rho_move_factor", rho_move_factor)
    if rho_move_factor <= 0.0:
        raise ValueError("rho_move_factor=%g out of range (0, inf)" % rho_move_factor)
    rho_v = rho_v * rho_move_factor
    if rho_rows is not None:
        rho_v = _vector("rho_rows[0]", rho_rows[0], nu, 0.0)
        rho_g = _vector("rho_rows[1]", rho_rows[1], ny + nu, 0.0)
        if not (np.all(rho_v > 0.0) and np.all(rho_g > 0.0)):
            raise ValueError("rho_rows %r must all be > 0" % (rho_rows,))
    Q_rho = Qa + G.T @ np.diag(rho_g) @ G
    R_rho = R_du + np.diag(rho_v)
    try:
        P = linalg.solve_discrete_are(Aa, Ba, Q_rho, R_rho)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ValueError(
            "the Riccati equation has no stabilising solution for this (A, B, Q, R): %s; "
            "check that every unstable or integrating mode is reachable from u" % exc
        ) from None
    P = 0.5 * (P + P.T)
    Quu = R_rho + Ba.T @ P @ Ba
    Quu_inv = np.linalg.inv(Quu)
    K = Quu_inv @ (Ba.T @ P @ Aa)
    closed = Aa - Ba @ K
    cl_radius = float(np.max(np.abs(np.linalg.eigvals(closed))))
    if not np.all(np.isfinite(P)) or cl_radius >= 1.0:
        raise ValueError(
            "the LQR gain does not stabilise the model (closed-loop spectral radius %.6g >= 1)"
            % cl_radius
        )
    PN = P - G.T @ np.diag(rho_g) @ G

    payload = np.concatenate(
        [
            rho_v,
            rho_g,
            Aa.ravel(),
            Ba.ravel(),
            E.ravel(),
            K.ravel(),
            P.ravel(),
            Quu_inv.ravel(),
            closed.T.ravel(),
            Qa.ravel(),
            PN.ravel(),
            R_du.ravel(),
            C.ravel(),
            u_min,
            u_max,
            du_min,
            du_max,
            y_min,
            y_max,
            w_lin,
            w_quad,
            [float(max_iter), tol_primal, tol_dual, alpha],
        ]
    )
    data = payload.astype("<f4").tobytes()
    head = _HEADER.pack(BLOB_MAGIC, BLOB_VERSION, nx, nu, nd, ny, n, 0, len(data), 0)[:16]
    crc = zlib.crc32(data, zlib.crc32(head)) & 0xFFFFFFFF
    return head + struct.pack("<I", crc) + data


def mpc_unpack(blob):
    """Check a blob and return its content as a dict of float64 arrays (values as stored).

    Raises
    ------
    ValueError
        Wrong magic, version, length, dimensions or CRC.
    """
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise ValueError(
            "MPC blob is %d bytes, shorter than its %d-byte header" % (len(blob), _HEADER.size)
        )
    magic, version, nx, nu, nd, ny, n, _, plen, crc = _HEADER.unpack_from(blob)
    if magic != BLOB_MAGIC:
        raise ValueError("not an MPC blob: magic %r, expected %r" % (magic, BLOB_MAGIC))
    if version != BLOB_VERSION:
        raise ValueError(
            "MPC blob version %d, this build reads version %d" % (version, BLOB_VERSION)
        )
    if len(blob) != _HEADER.size + plen:
        raise ValueError("MPC blob is %d bytes, header says %d" % (len(blob), _HEADER.size + plen))
    if zlib.crc32(blob[_HEADER.size :], zlib.crc32(blob[:16])) & 0xFFFFFFFF != crc:
        raise ValueError("MPC blob CRC mismatch: the blob is corrupted")
    f = np.frombuffer(blob, dtype="<f4", offset=_HEADER.size).astype(float)
    nxa = nx + nu
    out = {"nx": nx, "nu": nu, "nd": nd, "ny": ny, "n": n, "nxa": nxa}
    pos = 0
    for name, shape in (
        ("rho_v", (nu,)),
        ("rho_g", (ny + nu,)),
        ("A", (nxa, nxa)),
        ("B", (nxa, nu)),
        ("E", (nx, nd)),
        ("K", (nu, nxa)),
        ("P", (nxa, nxa)),
        ("Quu_inv", (nu, nu)),
        ("AmBKt", (nxa, nxa)),
        ("Qa", (nxa, nxa)),
        ("PN", (nxa, nxa)),
        ("R_du", (nu, nu)),
        ("C", (ny, nx)),
        ("u_min", (nu,)),
        ("u_max", (nu,)),
        ("du_min", (nu,)),
        ("du_max", (nu,)),
        ("y_min", (ny,)),
        ("y_max", (ny,)),
        ("w_lin", (ny,)),
        ("w_quad", (ny,)),
        ("max_iter", ()),
        ("tol_primal", ()),
        ("tol_dual", ()),
        ("alpha", ()),
    ):
        size = int(np.prod(shape)) if shape else 1
        chunk = f[pos : pos + size]
        out[name] = float(chunk[0]) if not shape else chunk.reshape(shape)
        pos += size
    if pos != f.size:
        raise ValueError("MPC blob payload has %d floats, expected %d" % (f.size, pos))
    out["max_iter"] = int(out["max_iter"])
    return out


# -------------------------------------------------------------------------------------- MPC


def _vec_in(name, value, n, default=None):
    if value is None:
        if default is None:
            raise ValueError("%s is required (%d values)" % (name, n))
        return default
    a = np.asarray(value, dtype=float).reshape(-1)
    if a.shape != (n,):
        raise ValueError("%s has %d entries, expected %d" % (name, a.size, n))
    if not np.all(np.isfinite(a)):
        raise ValueError("%s must be finite, got %s" % (name, a))
    return a


class MPC:
    """MPC step in C over a blob from :func:`mpc_precompute`.

    Parameters
    ----------
    blob : bytes
        The versioned model blob; checked (magic, version, length, dims, CRC) on load.

    Attributes
    ----------
    nx, nu, nd, ny, horizon : int
        Dimensions of the loaded model.
    status : str
        ``"solved"``, ``"iteration limit"`` or ``"infeasible"`` (or ``"bad input"``,
        ``"numeric failure"``) for the last step; ``status_code`` is the C enum value.
    iterations : int
        ADMM iterations used by the last step.
    """

    def __init__(self, blob):
        self.info = mpc_unpack(blob)
        self._m = ffi.new("tp_mpc_t *")
        st = lib.tp_mpc_load(self._m, bytes(blob), len(blob))
        if st != lib.TP_MPC_BLOB_OK:
            raise ValueError("MPC blob refused by the C core: %s" % _BLOB_ERRORS.get(st, st))
        self.nx, self.nu, self.nd = self.info["nx"], self.info["nu"], self.info["nd"]
        self.ny, self.horizon = self.info["ny"], self.info["n"]
        self._x0 = ffi.new("tp_float[]", self.nx)
        self._up = ffi.new("tp_float[]", self.nu)
        self._d = ffi.new("tp_float[]", max(1, self.nd))
        self._xr = ffi.new("tp_float[]", self.nx)
        self._ur = ffi.new("tp_float[]", self.nu)
        self._zero_x = np.zeros(self.nx)
        self._zero_u = np.zeros(self.nu)
        self._zero_d = np.zeros(self.nd)

    def reset(self):
        """Forget the warm start: the next step starts cold."""
        lib.tp_mpc_reset(self._m)

    @property
    def max_iter(self):
        """int: iteration budget per step (>= 1)."""
        return int(self._m.max_iter)

    @max_iter.setter
    def max_iter(self, value):
        if int(value) != value or value < 1:
            raise ValueError("max_iter=%r out of range [1, inf)" % (value,))
        self._m.max_iter = int(value)

    @property
    def tolerances(self):
        """(tol_primal, tol_dual): early-exit tolerances (>= 0)."""
        return float(self._m.tol_primal), float(self._m.tol_dual)

    @tolerances.setter
    def tolerances(self, value):
        tp, td = (float(v) for v in value)
        if not (tp >= 0.0 and td >= 0.0):
            raise ValueError("tolerances %r must both be >= 0" % (value,))
        self._m.tol_primal, self._m.tol_dual = tp, td

    def step(self, x, u_prev, d=None, x_ref=None, u_ref=None):
        """Solve one MPC step and return the first move u_0.

        Parameters
        ----------
        x : array (nx,)
            Current (estimated) plant state.
        u_prev : array (nu,)
            Input applied in the previous step (the rate limits start from it).
        d : array (nd,), optional
            Measured disturbance, held over the horizon (default 0).
        x_ref, u_ref : array (nx,), (nu,), optional
            State and input targets (default 0).

        Returns
        -------
        numpy.ndarray (nu,)
            The input to apply now, inside the hard limits.
        """
        x = _vec_in("x", x, self.nx)
        u_prev = _vec_in("u_prev", u_prev, self.nu)
        d = _vec_in("d", d, self.nd, self._zero_d)
        x_ref = _vec_in("x_ref", x_ref, self.nx, self._zero_x)
        u_ref = _vec_in("u_ref", u_ref, self.nu, self._zero_u)
        self._x0[0 : self.nx] = x.tolist()
        self._up[0 : self.nu] = u_prev.tolist()
        if self.nd:
            self._d[0 : self.nd] = d.tolist()
        self._xr[0 : self.nx] = x_ref.tolist()
        self._ur[0 : self.nu] = u_ref.tolist()
        lib.tp_mpc_solve(self._m, self._x0, self._up, self._d, self._xr, self._ur)
        return np.array(ffi.unpack(self._m.u0, self.nu), dtype=float)

    @property
    def status_code(self):
        return int(self._m.status)

    @property
    def status(self):
        return MPC_STATUS.get(int(self._m.status), "unknown")

    @property
    def iterations(self):
        return int(self._m.iterations)

    @property
    def residuals(self):
        """(primal, dual) max-norm residuals of the last step."""
        return float(self._m.res_primal), float(self._m.res_dual)

    def predicted(self):
        """Predicted inputs u_0..u_{N-1} (N, nu) and states x_1..x_N (N, nx) of the last step."""
        nxa = self.nx + self.nu
        xs = np.array(ffi.unpack(self._m.x, (self.horizon + 1) * nxa)).reshape(-1, nxa)
        return xs[1:, self.nx :].copy(), xs[1:, : self.nx].copy()


def mpc_qp(blob, x, u_prev, d=None, x_ref=None, u_ref=None):
    """The QP of one MPC step, written out for a general solver (OSQP form).

    minimise 1/2 z'Pz + q'z subject to l <= A z <= u, with
    z = [xa_1..xa_N, v_0..v_{N-1}, s_1..s_N], xa = [x; u], v the moves, s the slacks.
    The data are the blob's float32 values, so this is the QP the C core solves.

    Returns
    -------
    P, q, A, l, u, layout
        scipy.sparse CSC matrices and arrays; ``layout`` gives the slices of z.
    """
    from scipy import sparse

    m = blob if isinstance(blob, dict) else mpc_unpack(blob)
    nx, nu, nd, ny, n, nxa = m["nx"], m["nu"], m["nd"], m["ny"], m["n"], m["nxa"]
    x = _vec_in("x", x, nx)
    u_prev = _vec_in("u_prev", u_prev, nu)
    d = _vec_in("d", d, nd, np.zeros(nd))
    x_ref = _vec_in("x_ref", x_ref, nx, np.zeros(nx))
    u_ref = _vec_in("u_ref", u_ref, nu, np.zeros(nu))

    def inf(a):
        a = np.array(a, dtype=float)
        a[a >= 1e29] = np.inf
        a[a <= -1e29] = -np.inf
        return a

    nzx, nzv, nzs = n * nxa, n * nu, n * ny
    nz = nzx + nzv + nzs
    xa_ref = np.concatenate([x_ref, u_ref])
    blocks = [m["Qa"]] * (n - 1) + [m["PN"]]
    Px = sparse.block_diag(blocks)
    Pv = sparse.kron(sparse.eye(n), m["R_du"])
    Ps = sparse.diags(np.tile(m["w_quad"], n)) if nzs else sparse.csc_matrix((0, 0))
    P = sparse.block_diag([Px, Pv, Ps], format="csc")
    q = np.concatenate(
        [-m["Qa"] @ xa_ref] * (n - 1)
        + [-m["PN"] @ xa_ref]
        + [np.zeros(nzv)]
        + [np.tile(m["w_lin"], n)]
    )
    c = np.concatenate([m["E"] @ d if nd else np.zeros(nx), np.zeros(nu)])
    xa0 = np.concatenate([x, u_prev])
    # dynamics: xa_{k+1} - Aa xa_k - Ba v_k = c
    Ax = sparse.eye(nzx) - sparse.kron(sparse.eye(n, k=-1), m["A"])
    Av = -sparse.kron(sparse.eye(n), m["B"])
    Adyn = sparse.hstack([Ax, Av, sparse.csc_matrix((nzx, nzs))])
    bdyn = np.tile(c, n)
    bdyn[:nxa] += m["A"] @ xa0
    # move limits, input limits
    Amove = sparse.hstack(
        [sparse.csc_matrix((nzv, nzx)), sparse.eye(nzv), sparse.csc_matrix((nzv, nzs))]
    )
    sel_u = sparse.hstack([sparse.csc_matrix((nu, nx)), sparse.eye(nu)])
    Ain = sparse.hstack([sparse.kron(sparse.eye(n), sel_u), sparse.csc_matrix((nzv, nzv + nzs))])
    rows = [Adyn, Amove, Ain]
    lo = [bdyn, np.tile(inf(m["du_min"]), n), np.tile(inf(m["u_min"]), n)]
    hi = [bdyn, np.tile(inf(m["du_max"]), n), np.tile(inf(m["u_max"]), n)]
    if ny:
        sel_y = sparse.hstack([sparse.csc_matrix(m["C"]), sparse.csc_matrix((ny, nu))])
        Cy = sparse.kron(sparse.eye(n), sel_y)
        Is = sparse.eye(nzs)
        rows += [
            sparse.hstack([Cy, sparse.csc_matrix((nzs, nzv)), -Is]),
            sparse.hstack([Cy, sparse.csc_matrix((nzs, nzv)), Is]),
            sparse.hstack([sparse.csc_matrix((nzs, nzx + nzv)), Is]),
        ]
        lo += [np.full(nzs, -np.inf), np.tile(inf(m["y_min"]), n), np.zeros(nzs)]
        hi += [np.tile(inf(m["y_max"]), n), np.full(nzs, np.inf), np.full(nzs, np.inf)]
    Aq = sparse.vstack(rows, format="csc")
    layout = {"x": slice(0, nzx), "v": slice(nzx, nzx + nzv), "s": slice(nzx + nzv, nz)}
    return P, q, Aq, np.concatenate(lo), np.concatenate(hi), layout


def mpc_reference_step(
    blob, x, u_prev, d=None, x_ref=None, u_ref=None, state=None, dtype=np.float32
):
    """numpy re-implementation of ``tp_mpc_solve``: the same algorithm in float32 (``dtype``
    may be set to float64 to tell rounding from algorithm in a check).

    ``state`` (a dict, updated in place) carries the warm start between calls; pass the
    same dict every step, or None for a cold start. Returns (u0, status, iterations).
    """
    f = dtype
    m = blob if isinstance(blob, dict) else mpc_unpack(blob)
    nx, nu, ny, n, nxa = m["nx"], m["nu"], m["ny"], m["n"], m["nxa"]
    ng = ny + nu
    g32 = {k: np.asarray(v, dtype=f) for k, v in m.items() if isinstance(v, np.ndarray)}
    A, B, K, Pc_mat = g32["A"], g32["B"], g32["K"], g32["P"]
    Quu_inv, AmBKt, Cm = g32["Quu_inv"], g32["AmBKt"], g32["C"]
    rho_v, rho_g = g32["rho_v"], g32["rho_g"]
    x = np.asarray(x, dtype=f)
    u_prev = np.asarray(u_prev, dtype=f)
    d = np.zeros(m["nd"], f) if d is None else np.asarray(d, dtype=f)
    x_ref = np.zeros(nx, f) if x_ref is None else np.asarray(x_ref, dtype=f)
    u_ref = np.zeros(nu, f) if u_ref is None else np.asarray(u_ref, dtype=f)
    u_min, u_max, du_min, du_max = g32["u_min"], g32["u_max"], g32["du_min"], g32["du_max"]
    if (
        np.any(u_min > u_max)
        or np.any(du_min > du_max)
        or np.any(u_prev + du_min > u_max)
        or np.any(u_prev + du_max < u_min)
    ):
        u0 = np.clip(np.clip(u_prev, u_min, u_max), u_prev + du_min, u_prev + du_max)
        return u0.astype(float), "infeasible", 0
    st = {} if state is None else state
    if st.get("warm"):
        for key in ("zv", "yv", "zg", "yg"):
            st[key][:-1] = st[key][1:].copy()
    else:
        st["zv"] = np.zeros((n, nu), f)
        st["yv"] = np.zeros((n, nu), f)
        st["zg"] = np.zeros((n, ng), f)
        st["yg"] = np.zeros((n, ng), f)
    zv, yv, zg, yg = st["zv"], st["yv"], st["zg"], st["yg"]
    c = np.zeros(nxa, f)
    if m["nd"]:
        c[:nx] = g32["E"] @ d
    xr = np.concatenate([x_ref, u_ref]).astype(f)
    Pc = Pc_mat @ c
    qref = -(g32["Qa"] @ xr)
    pref = -(g32["PN"] @ xr)
    xs = np.zeros((n + 1, nxa), f)
    xs[0, :nx] = x
    xs[0, nx:] = u_prev
    v = np.zeros((n, nu), f)
    dff = np.zeros((n, nu), f)
    p = np.zeros((n + 1, nxa), f)
    lo_y, hi_y = g32["y_min"], g32["y_max"]
    wl, wq = g32["w_lin"], g32["w_quad"]

    def gt_dual(base, yk, zk):
        out = base.copy()
        diff = rho_g * (yk - zk)
        out[:nx] += Cm.T @ diff[:ny]
        out[nx:] += diff[ny:]
        return out

    status, it = "iteration limit", 0
    for count in range(1, m["max_iter"] + 1):
        it = count
        p[n] = gt_dual(pref, yg[n - 1], zg[n - 1])
        for k in range(n - 1, -1, -1):
            t = p[k + 1] + Pc
            r = rho_v * (yv[k] - zv[k])
            dff[k] = Quu_inv @ (r + B.T @ t)
            if k >= 1:
                p[k] = gt_dual(qref, yg[k - 1], zg[k - 1]) + (AmBKt @ t - K.T @ r)
        for k in range(n):
            v[k] = -dff[k] - K @ xs[k]
            xs[k + 1] = c + A @ xs[k] + B @ v[k]
        alpha = f(m["alpha"])
        vh = alpha * v + (f(1.0) - alpha) * zv
        zv_new = np.clip(vh + yv, du_min, du_max)
        gx = np.concatenate([xs[1:, :nx] @ Cm.T, xs[1:, nx:]], axis=1)
        gh = alpha * gx + (f(1.0) - alpha) * zg
        w = gh + yg
        zg_new = np.empty_like(w)
        zg_new[:, ny:] = np.clip(w[:, ny:], u_min, u_max)
        wy = w[:, :ny]
        rho = rho_g[:ny]
        den = rho + wq
        up = np.maximum(hi_y, (rho * wy - wl + wq * hi_y) / den)
        dn = np.minimum(lo_y, (rho * wy + wl + wq * lo_y) / den)
        zg_new[:, :ny] = np.where(wy > hi_y, up, np.where(wy < lo_y, dn, wy))
        rp = max(float(np.max(np.abs(v - zv_new))), float(np.max(np.abs(gx - zg_new))))
        rd = max(float(np.max(np.abs(zv_new - zv))), float(np.max(np.abs(zg_new - zg))))
        st["residuals"] = (rp, rd)
        yv += vh - zv_new
        yg += gh - zg_new
        zv[:] = zv_new
        zg[:] = zg_new
        zmax = max(1.0, float(np.max(np.abs(zv))), float(np.max(np.abs(zg))) if zg.size else 0.0)
        if rp < m["tol_primal"] * zmax and rd < m["tol_dual"] * zmax:
            status = "solved"
            break
    st["warm"] = True
    u0 = np.clip(u_prev + zv[0], u_min, u_max)
    return u0.astype(float), status, it
