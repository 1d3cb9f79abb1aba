"""MPC step in C (float32) through cffi over a model blob: the code the board runs in ``tpcore``.

The blob comes from :func:`thermopilot.host.control.design.mpc_precompute`; the solver is a
structured interior-point method (``firmware/native/tp_mpc.h`` describes it).
"""

import numpy as np

from thermopilot.host._tpcore import ffi, lib

from . import blob as _blob

__all__ = ["MPC", "MPC_STATUS"]

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
    int(lib.TP_MPC_BLOB_BAD_MODEL): "non-finite values or settings out of range",
}


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
    """MPC step in C over a blob from :func:`~thermopilot.host.control.design.mpc_precompute`.

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
        Interior-point iterations used by the last step.
    """

    def __init__(self, blob):
        self.info = _blob.unpack(blob)
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
        """Clear the state kept between steps (the C core starts every step from the held
        input, so the result does not change; kept for the firmware's API)."""
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
    def tol(self):
        """float: stopping tolerance (> 0) on the scaled residuals and complementarity."""
        return float(self._m.tol)

    @tol.setter
    def tol(self, value):
        value = float(value)
        if not value > 0.0:
            raise ValueError("tol=%r out of range (0, inf)" % (value,))
        self._m.tol = value

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
        """(primal, dual) max-norm residuals of the last iterate of the last step (unscaled;
        the move is the best iterate's, which is the last one when the step is solved)."""
        return float(self._m.res_primal), float(self._m.res_dual)

    def predicted(self):
        """Predicted inputs u_0..u_{N-1} (N, nu) and states x_1..x_N (N, nx) of the last step."""
        nxa = self.nx + self.nu
        xs = np.array(ffi.unpack(self._m.x, (self.horizon + 1) * nxa)).reshape(-1, nxa)
        return xs[1:, self.nx :].copy(), xs[1:, : self.nx].copy()
