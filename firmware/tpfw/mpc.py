# MPC step for the board: the ADMM iteration of firmware/native/tp_mpc.c in MicroPython.
# The host builds the model blob (thermopilot.host.control.mpc_precompute); the board only
# iterates. When the board has the C core (the `tpcore` native module, see core.py), MPC
# runs the C solver on a preallocated workspace; otherwise it runs this MicroPython version.

import struct
from array import array

import micropython
from micropython import const

from .core import tpcore

try:
    from binascii import crc32 as _crc32
except ImportError:
    _crc32 = None

_MAGIC = b"TPMC"
_VERSION = const(1)
_HDR = const(20)
SOLVED = const(0)
MAX_ITER = const(1)
INFEASIBLE = const(2)
BAD_INPUT = const(3)
NUMERIC = const(4)
_BIG = 1e30


def _crc(data, crc=0):
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return ~crc & 0xFFFFFFFF


def parse_blob(blob):
    """Check a model blob; return (nx, nu, nd, ny, n, payload memoryview)."""
    if len(blob) < _HDR or blob[0:4] != _MAGIC:
        raise ValueError("not an MPC blob")
    version, nx, nu, nd, ny, n = struct.unpack_from("<HBBBBB", blob, 4)
    if version != _VERSION:
        raise ValueError("MPC blob version %d, expected %d" % (version, _VERSION))
    plen, crc = struct.unpack_from("<II", blob, 12)
    if len(blob) != _HDR + plen:
        raise ValueError("MPC blob length %d, expected %d" % (len(blob), _HDR + plen))
    mv = memoryview(blob)
    if _crc(mv[_HDR:], _crc(mv[0:16])) != crc:
        raise ValueError("MPC blob CRC mismatch")
    if not (1 <= nx and 1 <= nu and 1 <= n):
        raise ValueError("MPC blob dimensions invalid")
    return nx, nu, nd, ny, n, mv[_HDR:]


@micropython.native
def _clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


class MPCPy:
    """MPC step in MicroPython; same algorithm and results as tp_mpc_solve."""

    def __init__(self, blob):
        nx, nu, nd, ny, n, pay = parse_blob(blob)
        nxa = nx + nu
        ng = ny + nu
        self.nx, self.nu, self.nd, self.ny, self.n, self.nxa, self.ng = nx, nu, nd, ny, n, nxa, ng
        f = array("f", bytes(pay))  # little-endian float32 on every ThermoPilot target
        pos = 0
        sizes = (
            ("rho_v", nu),
            ("rho_g", ng),
            ("A", nxa * nxa),
            ("B", nxa * nu),
            ("E", nx * nd),
            ("K", nu * nxa),
            ("P", nxa * nxa),
            ("Quu_inv", nu * nu),
            ("AmBKt", nxa * nxa),
            ("Qa", nxa * nxa),
            ("PN", nxa * nxa),
            ("S", nu * nu),
            ("C", ny * nx),
            ("u_min", nu),
            ("u_max", nu),
            ("du_min", nu),
            ("du_max", nu),
            ("y_min", ny),
            ("y_max", ny),
            ("w_lin", ny),
            ("w_quad", ny),
        )
        for name, size in sizes:
            setattr(self, name, f[pos : pos + size])
            pos += size
        self.max_iter = int(f[pos])
        self.tol_primal = f[pos + 1]
        self.tol_dual = f[pos + 2]
        self.alpha = f[pos + 3]
        if pos + 4 != len(f):
            raise ValueError("MPC blob payload size mismatch")
        for i in range(nxa):
            for j in range(nu):
                want = self.A[i * nxa + nx + j] if i < nx else (1.0 if i - nx == j else 0.0)
                if self.B[i * nu + j] != want:
                    raise ValueError("MPC blob model is not [[A, B], [0, I]], [B; I]")
            for j in range(nxa if i >= nx else 0):
                if self.A[i * nxa + j] != (1.0 if i == j else 0.0):
                    raise ValueError("MPC blob model is not [[A, B], [0, I]], [B; I]")
        # workspace, made once
        self.x = array("f", bytes(4 * (n + 1) * nxa))
        self.v = array("f", bytes(4 * n * nu))
        self.dff = array("f", bytes(4 * n * nu))
        self.p = array("f", bytes(4 * (n + 1) * nxa))
        self.zv = array("f", bytes(4 * n * nu))
        self.yv = array("f", bytes(4 * n * nu))
        self.zg = array("f", bytes(4 * n * ng))
        self.yg = array("f", bytes(4 * n * ng))
        self.c = array("f", bytes(4 * nxa))
        self.Pc = array("f", bytes(4 * nxa))
        self.qref = array("f", bytes(4 * nxa))
        self.pref = array("f", bytes(4 * nxa))
        self._t = array("f", bytes(4 * nxa))
        self._r = array("f", bytes(4 * nu))
        self._w = array("f", bytes(4 * nu))
        self._g = array("f", bytes(4 * ng))
        self.u0 = array("f", bytes(4 * nu))
        self.status = SOLVED
        self.iterations = 0
        self.res_primal = 0.0
        self.res_dual = 0.0
        self.warm = False

    def reset(self):
        """Forget the warm start."""
        for a in (self.v, self.zv, self.yv, self.zg, self.yg):
            for i in range(len(a)):
                a[i] = 0.0
        self.warm = False

    def _gt_dual(self, base, yg, zg, off, out, out_off):
        # out[out_off:] = base + rho * G' (yg - zg) at constraint block `off`
        nx, ny, nu, C, rho = self.nx, self.ny, self.nu, self.C, self.rho_g
        for j in range(nx):
            s = 0.0
            for i in range(ny):
                s += C[i * nx + j] * (rho[i] * (yg[off + i] - zg[off + i]))
            out[out_off + j] = base[j] + s
        for i in range(nu):
            out[out_off + nx + i] = base[nx + i] + rho[ny + i] * (
                yg[off + ny + i] - zg[off + ny + i]
            )

    # the three passes run as native code: best of 8 runs on the unix VM, 1618 -> 1291 us
    # per ADMM iteration on the benchmark problem (floats stay boxed either way)
    @micropython.native
    def _backward(self):
        n, nu, nxa, ng = self.n, self.nu, self.nxa, self.ng
        p, Pc, t, r, g = self.p, self.Pc, self._t, self._r, self._g
        B, K, AmBKt, Quu_inv, dff = self.B, self.K, self.AmBKt, self.Quu_inv, self.dff
        yv, zv, rho_v = self.yv, self.zv, self.rho_v
        self._gt_dual(self.pref, self.yg, self.zg, (n - 1) * ng, p, n * nxa)
        for k in range(n - 1, -1, -1):
            o1 = (k + 1) * nxa
            for i in range(nxa):
                t[i] = p[o1 + i] + Pc[i]
            for i in range(nu):
                s = rho_v[i] * (yv[k * nu + i] - zv[k * nu + i])
                r[i] = s
                for j in range(nxa):
                    s += B[j * nu + i] * t[j]
                g[i] = s
            for i in range(nu):
                s = 0.0
                for j in range(nu):
                    s += Quu_inv[i * nu + j] * g[j]
                dff[k * nu + i] = s
            if k >= 1:
                ok = k * nxa
                self._gt_dual(self.qref, self.yg, self.zg, (k - 1) * ng, p, ok)
                for i in range(nxa):
                    s = 0.0
                    for j in range(nxa):
                        s += AmBKt[i * nxa + j] * t[j]
                    for j in range(nu):
                        s -= K[j * nxa + i] * r[j]
                    p[ok + i] += s

    @micropython.native
    def _forward(self):
        # Aa = [[A, B], [0, I]], Ba = [B; I] (checked in parse): the next input is u + v and
        # only the plant rows need a product
        n, nx, nu, nxa = self.n, self.nx, self.nu, self.nxa
        x, v, dff, K, A, c, w = self.x, self.v, self.dff, self.K, self.A, self.c, self._w
        for k in range(n):
            ox = k * nxa
            ov = k * nu
            o1 = ox + nxa
            for i in range(nu):
                s = -dff[ov + i]
                for j in range(nxa):
                    s -= K[i * nxa + j] * x[ox + j]
                v[ov + i] = s
                s += x[ox + nx + i]
                w[i] = s
                x[o1 + nx + i] = s
            for i in range(nx):
                s = c[i]
                for j in range(nx):
                    s += A[i * nxa + j] * x[ox + j]
                for j in range(nu):
                    s += A[i * nxa + nx + j] * w[j]
                x[o1 + i] = s

    @micropython.native
    def _project(self):
        n, nx, nu, ny, nxa, ng = self.n, self.nx, self.nu, self.ny, self.nxa, self.ng
        v, zv, yv, zg, yg, x, g, C = (
            self.v,
            self.zv,
            self.yv,
            self.zg,
            self.yg,
            self.x,
            self._g,
            self.C,
        )
        du_min, du_max, u_min, u_max = self.du_min, self.du_max, self.u_min, self.u_max
        y_min, y_max, w_lin, w_quad = self.y_min, self.y_max, self.w_lin, self.w_quad
        rho_g = self.rho_g
        alpha = self.alpha
        beta = 1.0 - alpha
        rp = 0.0
        rd = 0.0
        zmax = 1.0
        for k in range(n):
            for i in range(nu):
                a = k * nu + i
                vi = v[a]
                vh = alpha * vi + beta * zv[a]
                zn = _clamp(vh + yv[a], du_min[i], du_max[i])
                e = abs(vi - zn)
                if e > rp:
                    rp = e
                e = abs(zn - zv[a])
                if e > rd:
                    rd = e
                yv[a] += vh - zn
                zv[a] = zn
                e = abs(zn)
                if e > zmax:
                    zmax = e
            ox = (k + 1) * nxa
            for i in range(ny):
                s = 0.0
                for j in range(nx):
                    s += C[i * nx + j] * x[ox + j]
                g[i] = s
            for i in range(nu):
                g[ny + i] = x[ox + nx + i]
            for i in range(ng):
                a = k * ng + i
                gh = alpha * g[i] + beta * zg[a]
                w = gh + yg[a]
                if i < ny:
                    lo = y_min[i]
                    hi = y_max[i]
                    rho = rho_g[i]
                    den = rho + w_quad[i]
                    if w > hi:
                        zn = (rho * w - w_lin[i] + w_quad[i] * hi) / den
                        if zn < hi:
                            zn = hi
                    elif w < lo:
                        zn = (rho * w + w_lin[i] + w_quad[i] * lo) / den
                        if zn > lo:
                            zn = lo
                    else:
                        zn = w
                else:
                    zn = _clamp(w, u_min[i - ny], u_max[i - ny])
                e = abs(g[i] - zn)
                if e > rp:
                    rp = e
                e = abs(zn - zg[a])
                if e > rd:
                    rd = e
                yg[a] += gh - zn
                zg[a] = zn
                e = abs(zn)
                if e > zmax:
                    zmax = e
        self.res_primal = rp
        self.res_dual = rd
        self._zmax = zmax

    def solve(self, x0, u_prev, d, x_ref, u_ref):
        """One MPC step; the move is in self.u0, the status is returned."""
        nx, nu, nd, nxa, ng, n = self.nx, self.nu, self.nd, self.nxa, self.ng, self.n
        for seq in (x0, u_prev, d, x_ref, u_ref):
            for val in seq:
                if not (-_BIG < val < _BIG):
                    self.status = BAD_INPUT
                    return BAD_INPUT
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
        if self.warm:
            for a, w in ((self.zv, nu), (self.yv, nu), (self.zg, ng), (self.yg, ng)):
                for i in range((n - 1) * w):
                    a[i] = a[i + w]
        c, E, P, Qa, PN = self.c, self.E, self.P, self.Qa, self.PN
        xr = self._t
        for i in range(nxa):
            s = 0.0
            if i < nx:
                for j in range(nd):
                    s += E[i * nd + j] * d[j]
            c[i] = s
            xr[i] = x_ref[i] if i < nx else u_ref[i - nx]
        for i in range(nxa):
            s = 0.0
            sq = 0.0
            sp = 0.0
            for j in range(nxa):
                s += P[i * nxa + j] * c[j]
                sq += Qa[i * nxa + j] * xr[j]
                sp += PN[i * nxa + j] * xr[j]
            self.Pc[i] = s
            self.qref[i] = -sq
            self.pref[i] = -sp
        x = self.x
        for i in range(nx):
            x[i] = x0[i]
        for i in range(nu):
            x[nx + i] = u_prev[i]
        self.status = MAX_ITER
        self.iterations = 0
        for it in range(1, self.max_iter + 1):
            self._backward()
            self._forward()
            self._project()
            self.iterations = it
            rp = self.res_primal
            rd = self.res_dual
            if not (-_BIG < rp < _BIG and -_BIG < rd < _BIG):
                self.reset()
                for i in range(nu):
                    self.u0[i] = _clamp(u_prev[i], u_min[i], u_max[i])
                self.status = NUMERIC
                return NUMERIC
            if rp < self.tol_primal * self._zmax and rd < self.tol_dual * self._zmax:
                self.status = SOLVED
                break
        for i in range(nu):
            self.u0[i] = _clamp(u_prev[i] + self.zv[i], u_min[i], u_max[i])
        self.warm = True
        return self.status


# tp_mpc_blob_status_t (firmware/native/tp_mpc.h), index = code
_BLOB_ERRORS = ("ok", "bad length", "bad magic", "bad version", "bad dimensions", "bad CRC",
                "model not [[A, B], [0, I]], [B; I]")  # fmt: skip


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
