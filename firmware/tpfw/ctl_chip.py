# Two-phase chip cooler controller: evaporator pump, power-cap request to the chip and,
# optionally, the condenser's facility-water valve (docs/controllers.md, "Two-phase chip
# cooler").
#
# Pump: from the dry-out margin target with the measured chip power as feed-forward. The board
# keeps a model of the evaporator (project parameters, fitted to the cold plate): exit quality
# x_out = x_in + P / (m h_lv) with m = m_full duty eta, and the critical power
# p_chf (duty eta)^0.52 (critical heat flux ~ G^0.52, Wojtan, Revellin & Thome, Exp. Therm.
# Fluid Sci. 30 (2006) 765); the margin is min(1 - P / P_chf, 1 - x_out / x_lim), and the duty
# is the least that keeps it at margin_sp. eta is the pump's delivered fraction: measured
# flow over the flow the duty should give (flow sensor), else 1 lowered while the plate shows
# dry-out (case-to-saturation resistance above dry_fac r_wet at full duty). The duty rises at
# once and falls at most d_fall per second.
#
# Junction: estimated on the board, tj = case + r_jc P. Power cap (every tick, in every mode
# and in the safe state): the least of (tj_lim - case) / r_jc (the junction at its limit),
# a slope that reaches zero at case_lim, and what the cooler carries at full pump with
# cap_margin of dry-out margin; it falls at once and rises at most 100 W/s. So the junction
# stays below its limit with the pump dead or the power above the cooler's capacity.
#
# Faults: pump_failure (flow below flow_tol of the expected flow), dryout (the dry-out
# signature at full duty for dry_delay_s: a dead or failing pump without a flow sensor, or
# power the cooler cannot carry), junction_over_temperature (tj above tj_alarm),
# over_temperature (case above case_alarm), sensor_implausible (under load the case reads
# colder than the loop's saturation temperature). Their safe sequence: pump at full, condenser
# open, the power cap as computed but at most the board's safe cap (which it is when case or
# power is not measured, or one of them failed since the sensor faults were last reset).
import math
import sys
from array import array

from micropython import const

from . import codec
from .loops import Controller
from .supervisor import elapsed

# parameter offsets: the line of each in chip_rows.TABLE
_TJ_LIM = const(0)
_TJ_ALARM = const(1)
_CASE_LIM = const(2)
_CASE_ALARM = const(3)
_R_JC = const(4)
_TAU_J = const(5)
_MARGIN_SP = const(6)
_CAP_MARGIN = const(7)
_X_LIM = const(8)
_M_FULL = const(9)
_H_LV = const(10)
_X_IN = const(11)
_P_CHF = const(12)
_D_MIN = const(13)
_D_FALL = const(14)
_TSAT_SP = const(15)
_CD_KP = const(16)
_CD_KI = const(17)
_FLOW_TOL = const(18)
_PF_DELAY_S = const(19)
_R_WET = const(20)
_DRY_FAC = const(21)
_DRY_DELAY_S = const(22)

_CHF_EXP = 0.52  # critical heat flux ~ G^(1 - 0.48) (Wojtan et al. 2006, We^-0.24)
_CAP_RISE = 100.0  # W/s: the cap comes back slowly, the case must follow it
_CASE_SLOPE = 100.0  # W/K below case_lim
_P_SIG = 200.0  # W: below this the resistance says little (laminar liquid, small flux)
# s: the lid and cold plate lag a power step (their heat capacity over the conductance to the
# fluid, about 340 J/K x 0.025 K/W): after a drop they keep giving the fluid their stored heat,
# so the pump's feed-forward and the resistance use the power lagged as much
_P_TAU = 8.0
_ETA_MIN = 0.05
_ETA_FALL = 0.1  # 1/s while the plate dries out at full duty
_ETA_RISE = 0.005  # 1/s back toward 1 while it does not
_ETA_WORKS = 0.3  # below this the pump is not working: no dry-out cap, it cannot help
# the supervisor's sensor faults: open, short, implausible, stuck, rate, drift (bits 0-2, 8-10)
_SENSOR_BITS = const(0x707)
# Under load the lid is hotter than the fluid boiling under it (heat flows from the chip to the
# fluid; the evaporator's saturation is above the reservoir's by the pump's head): a case
# reading this far below the loop's saturation temperature for _LOW_MS while the chip
# dissipates more than _P_SIG is implausible (a probe drifting or reading low).
_CASE_BELOW_K = 3.0
_LOW_MS = const(2000)

# float state (f)
_P = const(0)  # measured power, W
_PF = const(1)  # power lagged like the plate
_CASE = const(2)
_TJ = const(3)
_TSAT = const(4)
_FLOW = const(5)  # measured kg/s (NaN: no healthy flow sensor)
_ETA = const(6)  # delivered fraction used by the model
_ETA_A = const(7)  # the same, adapted from the dry-out signature (no flow sensor)
_MARGIN = const(8)  # model margin at the applied duty
_X_OUT = const(9)
_CAP = const(10)  # the power cap computed this tick
_R_CS = const(11)  # case-to-saturation resistance, K/W
_U_PUMP = const(12)
_U_COND = const(13)
_I_COND = const(14)
_QEXP = const(15)  # expected flow, filtered like the measured one
_PJ = const(16)  # power lagged like the die
_NF = const(17)
# integer state (iv)
_PF_SINCE = const(0)
_DRY_SINCE = const(1)
_TJ_SINCE = const(2)
_CAPPING = const(3)
_SIG = const(4)  # dry-out signature present
_OUT = const(5)  # case (1) or power (2) reading failed since the sensor faults were reset
_LOW_SINCE = const(6)  # the case read colder than the boiling fluid under it since
_NI = const(7)

_ROWS = "tpfw.chip_rows"


class ChipLoop(Controller):
    KIND = "chip"
    SENSORS = ("case", "power")
    OPT_SENSORS = ("tsat", "flow")
    ACTUATORS = ("pump",)
    OPT_ACTUATORS = ("cap", "cond")
    QUANTITY = "temperature"
    SP = "tj_lim"
    FIELDS = (
        ("margin", "fraction"),
        ("cap", "power"),
        ("power", "power"),
        ("x_out", "fraction"),
        ("eta", "fraction"),
        ("r_cs", "none"),
        ("tsat", "temperature"),
        ("case", "temperature"),
    )
    RULES = (
        ("tj_lim", "tj_alarm", 2.0),
        ("case_lim", "case_alarm", 1.0),
        ("case_lim", "tj_lim", 0.0),
        ("cap_margin", "margin_sp", 0.05),
        ("x_in", "x_lim", 0.1),
    )

    # rows() runs at boot (the board check, then the parameter table); the module that
    # holds the table stays imported until the controller is built
    @classmethod
    def rows(cls, cfg, board):
        return __import__(_ROWS, None, None, ("TABLE",)).rows(cfg)

    def __init__(self, idx, cfg, board, params):
        # the table is needed at boot only: give its RAM back
        sys.modules.pop(_ROWS, None)
        pkg = sys.modules.get("tpfw")
        if pkg is not None and hasattr(pkg, "chip_rows"):
            delattr(pkg, "chip_rows")
        super().__init__(idx, cfg, board, params)
        self.f = array("f", [0.0] * _NF)
        self.iv = array("i", [0] * _NI)
        self.p0 = self.pi("tj_lim")
        self.i_sp = self.p0 + _TJ_LIM
        a = self.a
        acts = board["actuators"]
        self.cap_ch = a["cap"]
        self.cond_ch = a["cond"]
        self.cap_max = acts[a["cap"]].get("max", 1e4) if a["cap"] >= 0 else 1e4
        self.cap_safe = acts[a["cap"]].get("safe", 0.0) if a["cap"] >= 0 else 0.0
        self.dt_s = 1.0 / board["tick_hz"]
        self.configure()
        self.start()

    def configure(self):
        """Parameter combinations the tick uses, computed once (a float attribute is read
        without allocating; an array element is boxed at every read)."""
        v = self.v
        p = self.p0
        self.setpoint = v[self.i_sp]
        self.tj_lim = v[p + _TJ_LIM]
        self.r_jc = v[p + _R_JC]
        tau = v[p + _TAU_J]
        self.a_j = 1.0 if tau <= self.dt_s else self.dt_s / tau
        self.case_lim = v[p + _CASE_LIM]
        self.d_min = v[p + _D_MIN]
        self.d_fall = v[p + _D_FALL]
        self.m_full = v[p + _M_FULL]
        m = v[p + _MARGIN_SP]
        xq = v[p + _X_LIM] * (1.0 - m) - v[p + _X_IN]
        # duty for the margin target: P k_q / eta (quality), (P k_c)^(1/0.52) / eta (CHF)
        self.k_q = 1.0 / (v[p + _M_FULL] * v[p + _H_LV] * xq)
        self.k_c = 1.0 / ((1.0 - m) * v[p + _P_CHF])
        # what the cooler carries at full pump with cap_margin left: min(eta c_q, eta^0.52 c_c)
        m = v[p + _CAP_MARGIN]
        self.c_q = v[p + _M_FULL] * v[p + _H_LV] * (v[p + _X_LIM] * (1.0 - m) - v[p + _X_IN])
        self.c_c = v[p + _P_CHF] * (1.0 - m)
        self.r_dry = v[p + _DRY_FAC] * v[p + _R_WET]

    def start(self):
        super().start()
        f = self.f
        for j in range(_NF):
            f[j] = 0.0
        for j in (_CASE, _TJ, _TSAT, _FLOW, _R_CS):
            f[j] = math.nan
        f[_ETA] = 1.0
        f[_ETA_A] = 1.0
        f[_MARGIN] = 1.0
        f[_CAP] = self.cap_max
        iv = self.iv
        for j in range(_NI):
            iv[j] = -1
        iv[_CAPPING] = 0
        iv[_SIG] = 0
        iv[_OUT] = 0
        self.n_tick = 0

    # ---- measurement and the power cap (every tick, every mode) --------------------------

    def sense(self, x, ok, dt_s, t_ms):
        f = self.f
        s = self.s
        iv = self.iv
        c = s["case"]
        if ok & (1 << c):
            case = x[c]
        else:
            case = math.nan
            iv[_OUT] |= 1
        c = s["power"]
        if not ok & (1 << c):
            iv[_OUT] |= 2
        if ok & (1 << c):
            pw = x[c]
            if pw < 0.0:
                pw = 0.0
            f[_P] = pw
            pf = f[_PF]
            pf += (pw - pf) * dt_s / _P_TAU
            f[_PF] = pf
        else:
            pw = f[_P]
            pf = f[_PF]
        f[_CASE] = case
        # the die lags a power step (its heat capacity over r_jc): after a drop the junction
        # cools over tau_j; after a rise the estimate leads (the cap acts at once)
        pj = f[_PJ]
        pj = pw if pw > pj else pj + (pw - pj) * self.a_j
        f[_PJ] = pj
        tj = case + self.r_jc * pj
        f[_TJ] = tj
        c = s["tsat"]
        tsat = x[c] if c >= 0 and ok & (1 << c) else math.nan
        f[_TSAT] = tsat
        c = s["flow"]
        if c >= 0 and ok & (1 << c):
            # measured and expected flow through the same filter: their ratio holds through
            # duty steps
            q = f[_FLOW]
            qe = self.m_full * f[_U_PUMP]
            if q != q:
                q = x[c]
                f[_QEXP] = qe
            else:
                q += (x[c] - q) * 0.3
                f[_QEXP] += (qe - f[_QEXP]) * 0.3
            f[_FLOW] = q
            qe = f[_QEXP]
            if qe >= 0.5 * self.d_min * self.m_full:
                eta = q / qe
                f[_ETA] = _ETA_MIN if eta < _ETA_MIN else 1.0 if eta > 1.0 else eta
        else:
            f[_FLOW] = math.nan
            f[_ETA] = f[_ETA_A]
        # resistance from the case to the loop's saturation temperature on lagged power
        r = (case - tsat) / pf if pf > _P_SIG else math.nan
        f[_R_CS] = r
        # a case or power reading that failed once is not trusted with the cap again until the
        # sensor faults are reset: a loose contact, a noisy lid probe
        self._cap(math.nan if iv[_OUT] else case, pw, dt_s)
        self.measurement = tj
        self.n_tick += 1
        if self.n_tick >= 5:  # the telemetry fields twice a second at 10 Hz
            self.n_tick = 0
            t = self.fields
            t[0] = self._margin(pw, f[_U_PUMP])
            t[1] = f[_CAP]
            t[2] = pw
            t[3] = f[_X_OUT]
            t[4] = f[_ETA]
            t[5] = r
            t[6] = tsat
            t[7] = case
        self.state = (1 if self.iv[_CAPPING] else 0) | (2 if self.iv[_SIG] else 0)

    def _margin(self, pw, duty):
        """The model's dry-out margin at power pw and duty (also sets the exit quality)."""
        v = self.v
        p = self.p0
        f = self.f
        g = duty * f[_ETA]
        if g <= 0.0:
            f[_X_OUT] = 1.0 if pw > 0.0 else 0.0
            return -1.0 if pw > 0.0 else 1.0
        x_out = v[p + _X_IN] + pw / (v[p + _M_FULL] * g * v[p + _H_LV])
        f[_X_OUT] = x_out
        mq = 1.0 - x_out / v[p + _X_LIM]
        mc = 1.0 - pw / (v[p + _P_CHF] * g**_CHF_EXP)
        return mq if mq < mc else mc

    def _cap(self, case, pw, dt_s):
        f = self.f
        if case != case or pw != pw:
            target = self.cap_safe  # no junction estimate: the board's safe cap
        else:
            target = (self.tj_lim - case) / self.r_jc
            c = (self.case_lim - case) * _CASE_SLOPE
            if c < target:
                target = c
            eta = f[_ETA]
            if eta >= _ETA_WORKS:
                c = self.c_q * eta
                if c < target:
                    target = c
                c = self.c_c * eta**_CHF_EXP
                if c < target:
                    target = c
        if target > self.cap_max:
            target = self.cap_max
        elif target < 0.0:
            target = 0.0
        up = f[_CAP] + _CAP_RISE * dt_s
        f[_CAP] = target if target < up else up

    # ---- protection ------------------------------------------------------------------------

    def watch(self, sup, x, ok, t_ms):
        v = self.v
        p = self.p0
        f = self.f
        iv = self.iv
        idx = self.idx
        if not sup.faults & _SENSOR_BITS:
            iv[_OUT] = 0  # reset (or none latched): the readings are trusted again
        # the cap limits the chip: it dissipates what the cap allows (until it falls well below)
        cap = f[_CAP]
        if iv[_CAPPING]:
            if f[_P] < 0.9 * cap or cap >= self.cap_max:
                iv[_CAPPING] = 0
        elif f[_P] >= 0.99 * cap and cap < self.cap_max:
            iv[_CAPPING] = 1
            sup.notice(codec.NOTICE_POWER_CAP, idx, cap, t_ms, True)
        if f[_TJ] > v[p + _TJ_ALARM]:
            if iv[_TJ_SINCE] < 0:
                iv[_TJ_SINCE] = t_ms
            if elapsed(t_ms, iv[_TJ_SINCE]) >= 1000:
                sup.latch(codec.FAULT_JUNCTION_OVER_TEMPERATURE, idx, f[_TJ], t_ms)
        else:
            iv[_TJ_SINCE] = -1
        if f[_CASE] > v[p + _CASE_ALARM]:
            sup.latch(codec.FAULT_OVER_TEMPERATURE, idx, f[_CASE], t_ms)
        case = f[_CASE]
        tsat = f[_TSAT]
        if case == case and tsat == tsat and f[_P] > _P_SIG and case < tsat - _CASE_BELOW_K:
            if iv[_LOW_SINCE] < 0:
                iv[_LOW_SINCE] = t_ms
            if elapsed(t_ms, iv[_LOW_SINCE]) >= _LOW_MS:
                sup.latch(codec.FAULT_SENSOR_IMPLAUSIBLE, idx, case, t_ms)
        else:
            iv[_LOW_SINCE] = -1
        # pump: measured flow against the flow the duty should give
        u = f[_U_PUMP]
        q = f[_FLOW]
        qe = f[_QEXP]
        if q == q and qe >= 0.5 * self.d_min * self.m_full and q < v[p + _FLOW_TOL] * qe:
            if iv[_PF_SINCE] < 0:
                iv[_PF_SINCE] = t_ms
            if elapsed(t_ms, iv[_PF_SINCE]) >= v[p + _PF_DELAY_S] * 1000.0:
                sup.latch(codec.FAULT_PUMP_FAILURE, idx, q, t_ms)
        else:
            iv[_PF_SINCE] = -1
        # dry-out signature: the plate no longer takes the heat at the expected resistance
        r = f[_R_CS]
        dt_s = self.dt_s
        sig = r == r and r > self.r_dry
        iv[_SIG] = 1 if sig else 0
        if sig:
            if q != q:
                e = f[_ETA_A] - _ETA_FALL * dt_s
                f[_ETA_A] = e if e > _ETA_MIN else _ETA_MIN
            # with the flow measured and the model wet, the resistance rose for another reason
            # (the lid's interface): the cap guards the junction, it is not a dry-out
            wet = q == q and self._margin(f[_P], u) > 0.0
            if u >= 0.99 and not wet:
                if iv[_DRY_SINCE] < 0:
                    iv[_DRY_SINCE] = t_ms
                if elapsed(t_ms, iv[_DRY_SINCE]) >= v[p + _DRY_DELAY_S] * 1000.0:
                    sup.latch(codec.FAULT_DRYOUT, idx, r, t_ms)
            else:
                iv[_DRY_SINCE] = -1
        else:
            iv[_DRY_SINCE] = -1
            if r == r:  # judged wet: the pump gives back its trust slowly
                e = f[_ETA_A] + _ETA_RISE * dt_s
                f[_ETA_A] = e if e < 1.0 else 1.0

    def check(self, sup, x, ok, t_ms):
        pass  # everything runs in watch(), in every mode

    # ---- control ---------------------------------------------------------------------------

    def step(self, x, ok, dt_s, out, sup, t_ms):
        f = self.f
        pw = f[_P]
        pf = f[_PF]
        if pf > pw:
            pw = pf  # the plate still gives the heat of a moment ago
        eta = f[_ETA]
        # the least duty that holds the margin target: quality and critical-power terms
        u = self.d_min
        if pw > 0.0:
            d = pw * self.k_q / eta
            if d > u:
                u = d
            d = (pw * self.k_c) ** (1.0 / _CHF_EXP) / eta
            if d > u:
                u = d
            if u > 1.0:
                u = 1.0
        fall = f[_U_PUMP] - self.d_fall * dt_s
        if u < fall:
            u = fall
        out[self.main] = u
        f[_U_PUMP] = u
        self.output = u
        if self.cap_ch >= 0:
            out[self.cap_ch] = f[_CAP]
        if self.cond_ch >= 0:
            out[self.cond_ch] = self._cond(dt_s)

    def _cond(self, dt_s):
        """Facility valve holding the loop's saturation temperature at tsat_sp (a warmer
        loop opens it); fully open without a saturation temperature to hold."""
        v = self.v
        p = self.p0
        f = self.f
        t = f[_TSAT]
        if t != t:
            f[_U_COND] = 1.0
            return 1.0
        e = t - v[p + _TSAT_SP]
        it = f[_I_COND] + v[p + _CD_KI] * e * dt_s
        u = v[p + _CD_KP] * e + it
        if u > 1.0:
            u = 1.0
            if e > 0.0:
                it = f[_I_COND]
        elif u < 0.05:
            u = 0.05  # a little water always flows: the loop's temperature stays measured
            if e < 0.0:
                it = f[_I_COND]
        f[_I_COND] = it
        f[_U_COND] = u
        return u

    def _protect_cap(self, out):
        # the power cap protects the chip in every mode
        if self.cap_ch >= 0:
            out[self.cap_ch] = self.f[_CAP]

    def manual(self, x, ok, dt_s, out, sup, t_ms):
        super().manual(x, ok, dt_s, out, sup, t_ms)
        self._protect_cap(out)

    def off(self, out, t_since_s):
        super().off(out, t_since_s)
        self._protect_cap(out)

    def hold(self, out):
        f = self.f
        u = out[self.main]
        self.output = u
        f[_U_PUMP] = u
        if self.cond_ch >= 0:
            f[_U_COND] = out[self.cond_ch]
            f[_I_COND] = out[self.cond_ch]

    def safe(self, faults, t_since_s, out):
        """Any tripping fault: the pump at full (a failing pump may still give some flow and
        full flow is the most a dry plate can get), the condenser open, and the power cap as
        computed every tick (junction and case limits, the cooler's capacity) but never above
        the board's safe cap, which it is when case or power is not measured. It comes back
        from there at the cap's own pace after a reset."""
        out[self.main] = 1.0
        if self.cond_ch >= 0:
            out[self.cond_ch] = 1.0
        f = self.f
        if f[_CAP] > self.cap_safe:
            f[_CAP] = self.cap_safe
        self._protect_cap(out)
        self.hold(out)


CONTROLLER = ChipLoop
