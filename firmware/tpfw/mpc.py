# MPC step for the board. The host builds the model blob
# (thermopilot.host.control.design.mpc_precompute); the board only iterates.
#
# With the C core (the `tpcore` native module, see core.py), MPC runs the C core: the full
# QP (every move over the horizon) solved by an interior-point method on a preallocated
# workspace.
#
# Without it, MPCPy solves the move-blocked condensed QP that the host put in the same
# blob: the input is held over nb blocks (the first one step long), so the decision is
# nb * nu block inputs, and the soft output limits are checked at the end of each block.
# The host precomputed its matrices and the inverse that ADMM needs, so a step is a few
# small dense products per iteration within a fixed budget (fb_iter), warm-started from
# the previous step. It allocates its buffers once; layout: tpfw/mpc_blob.py (generated).

import struct
from array import array

import micropython
from micropython import const

from . import mpc_blob
from .core import tpcore

try:
    from binascii import crc32 as _crc32
except ImportError:
    _crc32 = None

SOLVED = const(0)
MAX_ITER = const(1)
INFEASIBLE = const(2)
BAD_INPUT = const(3)
NUMERIC = const(4)
_BIG = 1e30
_LIM = 1e29  # a limit at or beyond this is "no limit"
_TOL = 1e-6  # early exit: residuals below this (rows' units); the budget usually ends first


def _crc(data, crc=0):
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return ~crc & 0xFFFFFFFF


def _header(blob):
    if len(blob) < mpc_blob.HEADER_BYTES or blob[0:4] != mpc_blob.MAGIC:
        raise ValueError("not an MPC blob")
    version, nx, nu, nd, ny, n, nb, plen, crc = struct.unpack_from(mpc_blob.HEADER_FORMAT, blob, 4)
    if version != mpc_blob.VERSION:
        raise ValueError("MPC blob version %d, expected %d" % (version, mpc_blob.VERSION))
    if len(blob) != mpc_blob.HEADER_BYTES + plen:
        raise ValueError(
            "MPC blob length %d, expected %d" % (len(blob), mpc_blob.HEADER_BYTES + plen)
        )
    mv = memoryview(blob)
    if _crc(mv[mpc_blob.HEADER_BYTES :], _crc(mv[0:16])) != crc:
        raise ValueError("MPC blob CRC mismatch")
    if not (1 <= nx and 1 <= nu and 1 <= n and 1 <= nb <= n):
        raise ValueError("MPC blob dimensions invalid")
    count = len(mpc_blob.SETTINGS)
    for _, size in mpc_blob.model_fields(nx, nu, nd, ny, n, nb):
        count += size
    for _, size in mpc_blob.fallback_fields(nx, nu, nd, ny, n, nb):
        count += size
    if plen != 4 * count:
        raise ValueError("MPC blob payload %d bytes, expected %d" % (plen, 4 * count))
    return nx, nu, nd, ny, n, nb, mv[mpc_blob.HEADER_BYTES :]


def parse_blob(blob):
    """Check a model blob; return (nx, nu, nd, ny, n, payload memoryview)."""
    nx, nu, nd, ny, n, _, pay = _header(blob)
    return nx, nu, nd, ny, n, pay


def _fields(blob):
    # every field of the blob as array('f') (little-endian float32 on every target)
    nx, nu, nd, ny, n, nb, pay = _header(blob)
    f = array("f", bytes(pay))
    out = {}
    pos = 0
    for name, size in mpc_blob.model_fields(nx, nu, nd, ny, n, nb):
        out[name] = f[pos : pos + size]
        pos += size
    for name in mpc_blob.SETTINGS:
        out[name] = f[pos]
        pos += 1
    for name, size in mpc_blob.fallback_fields(nx, nu, nd, ny, n, nb):
        out[name] = f[pos : pos + size]
        pos += size
    return (nx, nu, nd, ny, n, nb), out


@micropython.native
def _clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


class MPCPy:
    """MPC step in MicroPython: the move-blocked condensed QP, ADMM with a fixed budget."""

    def __init__(self, blob):
        dims, f = _fields(blob)
        nx, nu, nd, ny, n, nb = dims
        nv = nb * nu
        nth = 2 * nx + 2 * nu + nd
        self.nx, self.nu, self.nd, self.ny, self.n, self.nb = nx, nu, nd, ny, n, nb
        self.nv, self.nth = nv, nth
        for name in ("u_min", "u_max", "du_min", "du_max", "y_min", "y_max", "w_lin", "w_quad"):
            setattr(self, name, f[name])
        self.kinv, self.F, self.gy, self.phi = f["fb_kinv"], f["fb_f"], f["fb_gy"], f["fb_phi"]
        self.rho = f["fb_rho"]
        self.max_iter = int(f["fb_iter"][0])
        self.alpha = f["fb_alpha"][0]
        # output rows that have a limit (the others take no part)
        rows = []
        for b in range(nb):
            for i in range(ny):
                if self.y_min[i] > -_LIM or self.y_max[i] < _LIM:
                    rows.append(b * ny + i)
        self.yrows = array("H", rows)
        nr = 2 * nv + len(rows)
        self.nr = nr
        # workspace, made once
        self.theta = array("f", bytes(4 * nth))
        self.q = array("f", bytes(4 * nv))
        self.yoff = array("f", bytes(4 * nb * ny))
        self.U = array("f", bytes(4 * nv))
        self.rhs = array("f", bytes(4 * nv))
        self.z = array("f", bytes(4 * nr))
        self.y = array("f", bytes(4 * nr))
        self.h = array("f", bytes(4 * nr))
        self.lo = array("f", bytes(4 * nr))
        self.hi = array("f", bytes(4 * nr))
        self.u0 = array("f", bytes(4 * nu))
        self.status = SOLVED
        self.iterations = 0
        self.res_primal = 0.0
        self.res_dual = 0.0

    def reset(self):
        """Forget the warm start."""
        for a in (self.z, self.y, self.U):
            for i in range(len(a)):
                a[i] = 0.0

    @micropython.native
    def _setup(self, u_prev):
        # q = F theta, output offsets, row limits of this step
        nv, nth, nu, ny = self.nv, self.nth, self.nu, self.ny
        F, phi, th, q, yoff = self.F, self.phi, self.theta, self.q, self.yoff
        lo, hi = self.lo, self.hi
        for i in range(nv):
            s = 0.0
            o = i * nth
            for j in range(nth):
                s += F[o + j] * th[j]
            q[i] = s
        for r in self.yrows:
            s = 0.0
            o = r * nth
            for j in range(nth):
                s += phi[o + j] * th[j]
            yoff[r] = s
        for i in range(nv):
            k = i % nu
            lo[i] = self.u_min[k]
            hi[i] = self.u_max[k]
            lo[nv + i] = self.du_min[k] + (u_prev[k] if i < nu else 0.0)
            hi[nv + i] = self.du_max[k] + (u_prev[k] if i < nu else 0.0)
        j = 2 * nv
        for r in self.yrows:
            lo[j] = self.y_min[r % ny]
            hi[j] = self.y_max[r % ny]
            j += 1

    @micropython.native
    def _iterate(self):
        nv, nu, nr = self.nv, self.nu, self.nr
        kinv, gy, rho, q = self.kinv, self.gy, self.rho, self.q
        U, rhs, z, y, h, lo, hi = self.U, self.rhs, self.z, self.y, self.h, self.lo, self.hi
        yoff, yrows, ny = self.yoff, self.yrows, self.ny
        alpha = self.alpha
        beta = 1.0 - alpha
        # rhs = M' diag(rho) (z - y - c) - q; rows: inputs U, moves D U, outputs Gy U + yoff
        for i in range(nv):
            rhs[i] = rho[i] * (z[i] - y[i]) - q[i]
        for i in range(nv):
            w = rho[nv + i] * (z[nv + i] - y[nv + i])
            rhs[i] += w
            if i >= nu:
                rhs[i - nu] -= w
        j = 2 * nv
        for r in yrows:
            w = rho[2 * nv + r] * (z[j] - y[j] - yoff[r])
            o = r * nv
            for i in range(nv):
                rhs[i] += gy[o + i] * w
            j += 1
        for i in range(nv):
            s = 0.0
            o = i * nv
            for k in range(nv):
                s += kinv[o + k] * rhs[k]
            U[i] = s
        # row values, relaxation, projection (soft outputs: prox of the slack penalty)
        for i in range(nv):
            h[i] = U[i]
            h[nv + i] = U[i] - (U[i - nu] if i >= nu else 0.0)
        j = 2 * nv
        for r in yrows:
            s = yoff[r]
            o = r * nv
            for i in range(nv):
                s += gy[o + i] * U[i]
            h[j] = s
            j += 1
        rp = 0.0
        rd = 0.0
        for j in range(nr):
            hj = alpha * h[j] + beta * z[j]
            w = hj + y[j]
            lo_j = lo[j]
            hi_j = hi[j]
            if j >= 2 * nv:
                r = yrows[j - 2 * nv]
                k = r % ny
                rj = rho[2 * nv + r]
                if rj <= 0.0:
                    zn = w
                else:
                    den = rj + self.w_quad[k]
                    if w > hi_j:
                        zn = (rj * w - self.w_lin[k] + self.w_quad[k] * hi_j) / den
                        if zn < hi_j:
                            zn = hi_j
                    elif w < lo_j:
                        zn = (rj * w + self.w_lin[k] + self.w_quad[k] * lo_j) / den
                        if zn > lo_j:
                            zn = lo_j
                    else:
                        zn = w
            else:
                zn = w
                if zn < lo_j:
                    zn = lo_j
                elif zn > hi_j:
                    zn = hi_j
            e = abs(h[j] - zn)
            if e > rp:
                rp = e
            e = abs(zn - z[j])
            if e > rd:
                rd = e
            y[j] = w - zn
            z[j] = zn
        self.res_primal = rp
        self.res_dual = rd

    def solve(self, x0, u_prev, d, x_ref, u_ref):
        """One MPC step; the move is in self.u0, the status is returned."""
        nu = self.nu
        th = self.theta
        k = 0
        for seq in (x0, u_prev, d, x_ref, u_ref):
            for val in seq:
                if not (-_BIG < val < _BIG):
                    self.status = BAD_INPUT
                    return BAD_INPUT
                th[k] = val
                k += 1
        u_min, u_max, du_min, du_max = self.u_min, self.u_max, self.du_min, self.du_max
        infeasible = False
        for i in range(nu):
            lo = u_prev[i] + du_min[i]
            hi = u_prev[i] + du_max[i]
            if u_min[i] > u_max[i] or du_min[i] > du_max[i] or lo > u_max[i] or hi < u_min[i]:
                infeasible = True
        if infeasible:
            for i in range(nu):
                target = _clamp(u_prev[i], u_min[i], u_max[i])
                self.u0[i] = _clamp(target, u_prev[i] + du_min[i], u_prev[i] + du_max[i])
            self.iterations = 0
            self.status = INFEASIBLE
            return INFEASIBLE
        self._setup(u_prev)
        self.status = MAX_ITER
        for it in range(1, self.max_iter + 1):
            self._iterate()
            self.iterations = it
            rp = self.res_primal
            rd = self.res_dual
            if not (-_BIG < rp < _BIG and -_BIG < rd < _BIG):
                self.reset()
                for i in range(nu):
                    self.u0[i] = _clamp(u_prev[i], u_min[i], u_max[i])
                self.status = NUMERIC
                return NUMERIC
            if rp < _TOL and rd < _TOL:
                self.status = SOLVED
                break
        for i in range(nu):
            u = _clamp(self.U[i], u_prev[i] + du_min[i], u_prev[i] + du_max[i])
            self.u0[i] = _clamp(u, u_min[i], u_max[i])
        return self.status


# tp_mpc_blob_status_t (firmware/native/tp_mpc.h), index = code
_BLOB_ERRORS = ("ok", "bad length", "bad magic", "bad version", "bad dimensions", "bad CRC",
                "non-finite values or settings out of range")  # fmt: skip


class MPCNative:
    """MPC step in the C core `tpcore`; the workspace is one preallocated bytearray.

    solve() takes array('f') inputs in place (then it allocates nothing) or lists/tuples of
    numbers; a wrong length raises ValueError naming the argument."""

    def __init__(self, blob):
        nx, nu, nd, ny, n, _ = parse_blob(blob)
        self.nx, self.nu, self.nd, self.ny, self.n = nx, nu, nd, ny, n
        # sized by sizeof(tp_mpc_t) in the module that runs it, so it follows the C struct
        self._ws = bytearray(tpcore.MPC_WORKSPACE_BYTES)
        st = tpcore.mpc_load(self._ws, blob)
        if st:
            why = _BLOB_ERRORS[st] if st < len(_BLOB_ERRORS) else "code %d" % st
            raise ValueError("MPC blob refused by the C core: %s" % why)
        self.u0 = array("f", bytes(4 * nu))
        self._info = array("f", bytes(4 * 3))  # iterations, res_primal, res_dual
        self.status = SOLVED

    def reset(self):
        tpcore.mpc_reset(self._ws)

    @property
    def iterations(self):
        return int(self._info[0])

    @property
    def res_primal(self):
        return self._info[1]

    @property
    def res_dual(self):
        return self._info[2]

    def solve(self, x0, u_prev, d, x_ref, u_ref):
        self.status = tpcore.mpc_solve(self._ws, x0, u_prev, d, x_ref, u_ref, self.u0, self._info)
        return self.status


MPC = MPCPy if tpcore is None else MPCNative
