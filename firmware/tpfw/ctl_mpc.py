# MPC loop: one measured quantity (sensor role "pv") held at its setpoint by one actuator (role
# "out") with the model-predictive controller the host designed (`thermopilot mpc design`) and
# uploaded into a slot (`thermopilot upload --slot N`). Measured disturbances (compressor
# speed, chip power, pack current: sensor roles "d0".."d2") enter the prediction and the
# steady-state target as feed-forward.
#
# It is the PID loop (same parameters, same alarms) with the MPC in front: whenever the MPC
# cannot run, the PID runs, bumplessly, and a `controller_fallback` notice says why (its value
# is one of the _WHY_* codes below). The MPC falls back when the slot is empty, when the blob is
# refused (CRC, version, length) or does not fit the loop (nu against the actuators, nd
# against the disturbance roles, ny >= 1 for the measured output, no steady-state gain), when a
# step fails (bad input, numeric failure, infeasible limits) and when its solve overruns the
# per-tick budget `mpc_bud_s` three ticks in a row. A new upload into its slot, a change of
# `mpc_slot` or `mpc_bud_s` and the start of a run try the MPC again.
#
# The model in the blob is the host's identified model in its own state coordinates, with the
# input and the disturbances in the board's SI units and row 0 of C the measured output (the
# design writes it so: docs/controllers.md, "The mpc controller"). The board estimates the
# state by running the model on the applied input and the measured disturbances, and corrects
# the prediction by the output bias b = y - C0 x (offset-free for a stable model, whatever
# the operating point), filtered over `mpc_tau_s`. Each tick the steady state that puts the
# output at the setpoint, x_ref = Gx u_ref + Gd d with C0 x_ref + b = sp, is the target.
import struct
import time
from array import array

from micropython import const

from . import codec, mpc, mpc_blob
from .ctl_pid import PidLoop
from .loops import F32

WHY_NO_BLOB = const(1)
WHY_REFUSED = const(2)
WHY_MISMATCH = const(3)
WHY_SOLVER = const(4)
WHY_OVERRUN = const(5)
WHY_MEMORY = const(6)
_OVERRUNS = const(3)  # consecutive overruns before the fallback (one can be a stray stall)
_D_ROLES = ("d0", "d1", "d2")
_BIG = 1e30


def _solve_linear(m, rhs, n, k):
    """Solve m x = rhs in place (m: n*n row-major array, rhs: n*k); Gaussian elimination with
    partial pivoting. Returns False when m is singular. Runs at load, never in the tick."""
    for c in range(n):
        p = c
        for r in range(c + 1, n):
            if abs(m[r * n + c]) > abs(m[p * n + c]):
                p = r
        if abs(m[p * n + c]) < 1e-9:
            return False
        if p != c:
            for j in range(n):
                m[c * n + j], m[p * n + j] = m[p * n + j], m[c * n + j]
            for j in range(k):
                rhs[c * k + j], rhs[p * k + j] = rhs[p * k + j], rhs[c * k + j]
        piv = m[c * n + c]
        for r in range(n):
            if r == c:
                continue
            f = m[r * n + c] / piv
            if f == 0.0:
                continue
            for j in range(n):
                m[r * n + j] -= f * m[c * n + j]
            for j in range(k):
                rhs[r * k + j] -= f * rhs[c * k + j]
    for c in range(n):
        piv = m[c * n + c]
        for j in range(k):
            rhs[c * k + j] /= piv
    return True


def _split(data):
    """(blob, ts_s) of a slot file: the MPC blob, then the 16-byte loop binding that
    `thermopilot mpc design` appends (magic TPLB, version, reserved, the model's sample time
    in s, CRC-32 of the first 12 bytes; host/control/design.py, BINDING); (None, 0) if the
    file is not one. The blob's own checks (CRC, version, dimensions) are mpc.py's."""
    if len(data) < mpc_blob.HEADER_BYTES + 16:
        return None, 0.0
    n = mpc_blob.HEADER_BYTES + struct.unpack_from("<I", data, 12)[0]
    if len(data) != n + 16:
        return None, 0.0
    magic, version, _, ts_s, crc = struct.unpack_from("<4sHHfI", data, n)
    if magic != b"TPLB" or version != 1 or mpc._crc(memoryview(data)[n : n + 12]) != crc:
        return None, 0.0
    if not (0.0 < ts_s < 1e6):
        return None, 0.0
    return data[:n], ts_s


class _Native(mpc.MPCNative):
    """mpc.MPCNative on a workspace the caller owns (reused from one blob to the next)."""

    def __init__(self, blob, ws):
        nx, nu, nd, ny, n, _ = mpc.parse_blob(blob)
        self.nx, self.nu, self.nd, self.ny, self.n = nx, nu, nd, ny, n
        self._ws = ws
        st = mpc.tpcore.mpc_load(ws, blob)
        if st:
            raise ValueError("MPC blob refused by the C core: code %d" % st)
        self.u0 = array("f", bytes(4 * nu))
        self._info = array("f", bytes(4 * 3))
        self.status = mpc.SOLVED


class MpcLoop(PidLoop):
    KIND = "mpc"
    OPT_SENSORS = ("d0", "d1", "d2")
    # mpc: 1 while the MPC drives the output, 0 on the PID; why: the last fallback code;
    # solve_s: time of the last MPC solve; iters: its iterations
    FIELDS = (("mpc", "state"), ("why", "state"), ("solve_s", "time"), ("iters", "count"))

    @classmethod
    def rows(cls, cfg, board):
        rows = PidLoop.rows(cfg, board)
        d = cfg.get("defaults", {})
        period_s = 1.0 / board["tick_hz"]
        rows.append(("mpc_slot", "", "count", codec.PTYPE_I32, 0, 7, d.get("mpc_slot", 0)))
        rows.append(
            ("mpc_bud_s", "s", "time", F32, 1e-5, 10.0, d.get("mpc_bud_s", 0.5 * period_s))
        )
        rows.append(("mpc_tau_s", "s", "time", F32, 0.0, 3600.0, d.get("mpc_tau_s", 0.0)))
        rows.append(("mpc_dtau_s", "s", "time", F32, 0.0, 3600.0, d.get("mpc_dtau_s", 0.0)))
        return rows

    def __init__(self, idx, cfg, board, params):
        self.ctl = None  # the MPC solver (mpc.MPCPy or mpc.MPCNative), None: the PID runs
        super().__init__(idx, cfg, board, params)
        self.i_slot = self.pi("mpc_slot")
        self.i_bud = self.pi("mpc_bud_s")
        self.i_tau = self.pi("mpc_tau_s")
        self.i_dtau = self.pi("mpc_dtau_s")
        # disturbance channels in role order; they must be wired d0, d1, ... without gaps
        dch = []
        for r in _D_ROLES:
            if self.s[r] >= 0:
                dch.append(self.s[r])
        self.gap = len(dch) and self.s[_D_ROLES[len(dch) - 1]] < 0
        self.dch = bytes(dch)
        self.nd = len(dch)
        p = self.params.path
        self.dir = p[: p.rfind("/") + 1]
        self.why = 0  # the reason of the fallback in force (0: none)
        self.notify = 0  # a fallback still to be announced (sup is reachable only in a tick)
        self.slot = -1
        self.budget_us = 0
        self.overruns = 0
        self.fresh = True
        self.fallbacks = 0
        self.every = 1  # ticks per model sample (ts_s of the binding)
        # the C core's workspace, reserved once at boot: later, in a heap fragmented by
        # requests and uploads, one free block of its size (34 KB) may not be found
        self.ws = None
        if mpc.tpcore is not None:
            try:
                self.ws = bytearray(mpc.tpcore.MPC_WORKSPACE_BYTES)
            except MemoryError:
                pass
        self.count = 0  # ticks until the next MPC step
        self.load()

    # ---- the blob ---------------------------------------------------------------------------

    def solver(self, blob):
        """The C core on the workspace reserved at boot, else the MicroPython MPC (no C core,
        or its workspace did not fit)."""
        if self.ws is not None:
            return _Native(blob, self.ws)
        return mpc.MPCPy(blob)

    def fall_back(self, why):
        """The PID takes over from the output the MPC left, and a notice says why."""
        self.ctl = None
        self.why = why
        self.notify = why
        self.fallbacks += 1
        self.fields[0] = 0.0
        self.fields[1] = why
        self.pid.set_auto(False, self.output)

    def load(self):
        """Read, check and load the blob in slot mpc_slot; fall back when it will not do.
        Never raises: it runs at boot and on an upload, and neither may stop the board."""
        try:
            self._load()
        except MemoryError:
            self.fall_back(WHY_MEMORY)
        except Exception:  # noqa: BLE001 - a blob that trips the loader is a refused blob
            self.fall_back(WHY_REFUSED)

    def _load(self):
        import gc

        self.ctl = None
        self.slot = int(self.v[self.i_slot])
        self.budget_us = int(self.v[self.i_bud] * 1e6)
        self.overruns = 0
        gc.collect()
        try:
            with open(self.dir + "slot%d.bin" % self.slot, "rb") as f:
                data = f.read()
        except OSError:
            self.fall_back(WHY_NO_BLOB)
            return
        blob, ts_s = _split(data)
        data = None
        if blob is None:
            self.fall_back(WHY_REFUSED)
            return
        every = int(ts_s * self.board["tick_hz"] + 0.5)
        if every < 1 or abs(every - ts_s * self.board["tick_hz"]) > 1e-3:
            self.fall_back(WHY_MISMATCH)  # the model's sample time is not a whole number of ticks
            return
        self.every = every
        try:
            ctl = self.solver(blob)
        except ValueError:
            self.fall_back(WHY_REFUSED)
            return
        except MemoryError:
            self.fall_back(WHY_MEMORY)
            return
        ok = self.bind(ctl, blob)
        blob = None
        if not ok:
            self.fall_back(WHY_MISMATCH)
            return
        self.ctl = ctl
        self.why = 0
        self.notify = 0  # a fallback not yet announced is over before any tick saw it
        self.fields[0] = 1.0
        self.fields[1] = 0.0
        self.fresh = True
        gc.collect()

    def bind(self, ctl, blob):
        """Check the model's dimensions against the loop and precompute what the tick needs;
        False when it does not fit."""
        nx, nu, nd, ny = ctl.nx, ctl.nu, ctl.nd, ctl.ny
        if nu != 1 or nd != self.nd or ny < 1 or self.gap:
            return False
        # the model's matrices, read once from the blob's fields (float32, row-major)
        _, f = mpc._fields(blob)
        a, b, e, c = f["A"], f["B"], f["E"], f["C"]
        self.A, self.B, self.E = a, b, e
        self.C0 = c[0:nx]
        self.u_lo = f["u_min"][0]
        self.u_hi = f["u_max"][0]
        # steady state per unit input and disturbance: (I - A) [gx gd] = [B E]
        m = array("f", bytes(4 * nx * nx))
        for i in range(nx):
            for j in range(nx):
                m[i * nx + j] = (1.0 if i == j else 0.0) - a[i * nx + j]
        k = 1 + nd
        g = array("f", bytes(4 * nx * k))
        for i in range(nx):
            g[i * k] = b[i]
            for j in range(nd):
                g[i * k + 1 + j] = e[i * nd + j]
        if not _solve_linear(m, g, nx, k):
            return False
        self.gx = array("f", [g[i * k] for i in range(nx)])
        self.gd = array("f", bytes(4 * max(1, nx * nd)))
        for i in range(nx):
            for j in range(nd):
                self.gd[i * nd + j] = g[i * k + 1 + j]
        gy = 0.0
        for i in range(nx):
            gy += self.C0[i] * self.gx[i]
        if not (abs(gy) > 1e-9 and gy == gy):
            return False  # the input does not move the measured output at steady state
        self.gyu = gy
        self.gyd = array("f", bytes(4 * max(1, nd)))
        for j in range(nd):
            s = 0.0
            for i in range(nx):
                s += self.C0[i] * self.gd[i * nd + j]
            self.gyd[j] = s
        # workspace of the tick, made once
        self.xh = array("f", bytes(4 * nx))  # state estimate for this tick
        self.xn = array("f", bytes(4 * nx))
        self.xr = array("f", bytes(4 * nx))
        self.ur = array("f", bytes(4))
        self.up = array("f", bytes(4))
        self.dv = array("f", bytes(4 * nd))  # each over the last model interval
        self.df = array("f", bytes(4 * nd))  # as the prediction holds them
        self.dsum = array("f", bytes(4 * nd))
        self.dcnt = array("f", bytes(4 * nd))
        self.bias = 0.0
        return True

    def on_upload(self, slot):
        if slot == int(self.v[self.i_slot]):
            self.load()

    def configure(self):
        super().configure()
        if not hasattr(self, "i_slot"):
            return  # still in PidLoop.__init__: load() runs once the MPC's rows are known
        slot = int(self.v[self.i_slot])
        bud = int(self.v[self.i_bud] * 1e6)
        if slot != self.slot or (bud != self.budget_us and self.ctl is None):
            self.load()
        self.budget_us = bud

    def start(self):
        super().start()
        if self.ctl is None and self.why in (WHY_SOLVER, WHY_OVERRUN):
            self.load()  # a new run: the MPC gets another chance
        if self.ctl is not None:
            self.ctl.reset()
            self.pid.set_auto(False, self.output)
        self.fresh = True
        self.overruns = 0

    def hold(self, out):
        super().hold(out)
        self.fresh = True  # manual, off or safe: the estimate restarts from the applied output

    # ---- the tick ---------------------------------------------------------------------------

    def step(self, x, ok, dt_s, out, sup, t_ms):
        if self.notify:
            sup.notice(codec.NOTICE_CONTROLLER_FALLBACK, self.idx, self.notify, t_ms, True)
            self.notify = 0
        ctl = self.ctl
        if ctl is None:
            super().step(x, ok, dt_s, out, sup, t_ms)
            return
        # the disturbances summed every tick: the model (and identify, which fitted it) takes
        # each as its mean over the model interval, not as the sample at its start (a pack
        # current pulses faster than the model samples)
        nd = self.nd
        dsum, dcnt = self.dsum, self.dcnt
        for j in range(nd):
            ch = self.dch[j]
            if ok & (1 << ch):  # an untrusted disturbance is left out of the mean
                dsum[j] += x[ch]
                dcnt[j] += 1.0
        if not ok & (1 << self.pv):
            out[self.main] = self.output  # the sensor is not trusted: hold, as the PID does
            self.fresh = True
            return
        if self.count > 0 and not self.fresh:
            # between model samples the input is held (the model's zero-order hold)
            self.count -= 1
            out[self.main] = self.output
            return
        self.count = self.every - 1
        dt_s *= self.every
        nx = ctl.nx
        xh, xn, dv, df = self.xh, self.xn, self.dv, self.df
        for j in range(nd):
            ch = self.dch[j]
            if self.fresh and ok & (1 << ch):
                dv[j] = x[ch]  # a fresh start (or restart) takes the disturbances as they are
            elif dcnt[j] > 0.0:
                dv[j] = dsum[j] / dcnt[j]
            # else: no trusted sample in the interval: the last mean holds
            dsum[j] = 0.0
            dcnt[j] = 0.0
        dtau = self.v[self.i_dtau]
        for j in range(nd):
            # the prediction holds the disturbance over the horizon: mpc_dtau_s low-passes
            # what it holds (a drive cycle's current pulses are not a new level)
            if self.fresh or dtau <= dt_s:
                df[j] = dv[j]
            else:
                df[j] += (dv[j] - df[j]) * dt_s / dtau
        u_prev = self.output
        lo = self.out_min if self.out_min > self.u_lo else self.u_lo
        hi = self.out_max if self.out_max < self.u_hi else self.u_hi
        if u_prev < lo:
            u_prev = lo
        elif u_prev > hi:
            u_prev = hi
        y = self.measurement
        gx, gd = self.gx, self.gd
        if self.fresh:
            # start at the steady state of the applied output and the disturbances now
            for i in range(nx):
                s = gx[i] * u_prev
                for j in range(nd):
                    s += gd[i * nd + j] * dv[j]
                xh[i] = s
        else:
            # the estimate: the model over the interval just ended, on the output applied in
            # it and the disturbances' means over it
            a, b, e = self.A, self.B, self.E
            u_was = self.output
            for i in range(nx):
                s = b[i] * u_was
                o = i * nx
                for k in range(nx):
                    s += a[o + k] * xh[k]
                for j in range(nd):
                    s += e[i * nd + j] * dv[j]
                xn[i] = s
            for i in range(nx):
                xh[i] = xn[i]
        c0 = self.C0
        yh = 0.0
        for i in range(nx):
            yh += c0[i] * xh[i]
        raw = y - yh
        tau = self.v[self.i_tau]
        if self.fresh or tau <= dt_s:
            self.bias = raw
        else:
            self.bias += (raw - self.bias) * dt_s / tau
        self.fresh = False
        # the target: the steady state whose output, corrected by the bias, is the setpoint
        r = self.setpoint - self.bias
        for j in range(nd):
            r -= self.gyd[j] * df[j]
        ur = r / self.gyu
        if ur < lo:
            ur = lo
        elif ur > hi:
            ur = hi
        xr = self.xr
        for i in range(nx):
            s = gx[i] * ur
            for j in range(nd):
                s += gd[i * nd + j] * df[j]
            xr[i] = s
        self.ur[0] = ur
        self.up[0] = u_prev
        t0 = time.ticks_us()
        st = ctl.solve(xh, self.up, df, xr, self.ur)
        us = time.ticks_diff(time.ticks_us(), t0)
        self.fields[2] = us * 1e-6
        self.fields[3] = ctl.iterations
        if st != mpc.SOLVED and st != mpc.MAX_ITER:
            self.fall_back(WHY_SOLVER)
            super().step(x, ok, dt_s, out, sup, t_ms)
            return
        u = ctl.u0[0]
        if not (-_BIG < u < _BIG):
            self.fall_back(WHY_SOLVER)
            super().step(x, ok, dt_s, out, sup, t_ms)
            return
        if u < lo:
            u = lo
        elif u > hi:
            u = hi
        out[self.main] = u
        self.output = u
        # the PID follows, so that a fallback continues from this output
        self.pid.set_auto(False, u)
        self.p = ur
        self.i = self.bias
        self.d = 0.0
        if us > self.budget_us:
            self.overruns += 1
            if self.overruns >= _OVERRUNS:
                self.fall_back(WHY_OVERRUN)
        else:
            self.overruns = 0


CONTROLLER = MpcLoop
