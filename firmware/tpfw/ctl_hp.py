# R290 heat pump: electronic expansion valve (stepper) and compressor (speed) on one board.
# docs/controllers.md describes it with its defaults and their sources.
#
# Superheat is computed on the board from the raw channels, as an EXV driver does: suction
# pressure (ratiometric transducer) -> R290 saturation temperature (r290.py) -> superheat =
# suction-pipe temperature (NTC) - saturation temperature, the pipe temperature advanced by
# lead_s times its filtered slope (the probe and the pipe lag the refrigerant); condensing
# temperature likewise from the discharge transducer. A sensor fault on either input makes
# the superheat invalid (NaN): the unit stops in order (and the supervisor trips).
#
# Valve: the opening is a multiplier m (steps at 50 rev/s) times a compressor-speed
# feed-forward (hz/50)^0.7 (the steady opening's dependence on speed on the bundled unit) and
# a transient factor: a falling speed closes the valve like hz^1 at first (the compressor's
# flow drops with its speed before the suction pressure rises), a rising one opens it like
# hz^0.6 (never overfeeding before the suction pressure has fallen), both relaxing to hz^0.7.
# A PI in ln(m) holds the superheat; its gains are scheduled with the speed (the plant's gain
# falls and its time constant grows at low speed, reference systems.md s.1), it closes faster
# than it opens, and it rests inside a deadband near the setpoint (Danfoss's Kp-min damping
# near the reference) so the valve does not hunt. Protectors (Carel semantics, reference
# control.md s.4): integral actions on ln(m) separate from the PI, with priority over it,
# each with its threshold, integral time (0 = off, with its alarm) and alarm delay: LowSH and
# SH-close close the valve, MOP closes it, LOP opens it (never against LowSH) and unloads the
# compressor, HiTcond unloads the compressor and closes the valve; the low-pressure limit
# (LOP - 10 K for 5 s) and a valve open in vain (at 90 % with superheat 10 K over the setpoint
# for 60 s) stop the unit. The stepper driver (exv.py)
# limits the step rate, overdrives at each full close and keeps the valve still inside its
# deadband and reversal hysteresis.
#
# Compressor: a PI on leaving-water temperature (or a fixed demand, hz_fix), speed range,
# ramp limits, minimum on and off times. Start: valve overdrive close, compressor at hz_st
# with the valve at the start opening held st_s (Emerson: 50 % for 5 s; Carel: the capacity
# ratio; here the opening the last settled run needed), the speed held until superheat has
# settled, then bumpless control. Every stop, the safe state included, is ordered:
# compressor off -> pump-down delay pd_s (and, with the speed feedback wired, until the
# compressor has stopped) -> valve closed.
#
# Adaptive setpoint (adapt = 1, like Danfoss MSS): while superheat is steady the setpoint is
# lowered toward sp_min; when it hunts or LowSH acts it is raised and that level remembered.
# Loss of charge: the valve coefficient vk = valve * sqrt(p_dis - p_suc) / (hz * p_suc)
# (mass balance of valve and compressor) is nearly constant over the operating map while the
# liquid line is subcooled; when the charge is short the valve inlet flashes and vk rises.
import math
from array import array

from micropython import const

from . import codec
from .exv import Stepper
from .loops import Controller
from .r290 import tsat_k
from .supervisor import elapsed

# states (telemetry `state`)
OFF = const(0)  # loop mode off (or manual): stop sequence, then nothing
SYNC = const(1)  # power-up: valve overdrive close, compressor off
WAIT = const(2)  # compressor off, valve closed: waiting for demand and the minimum off time
START = const(3)  # compressor at the start speed, valve at the start opening
RUN = const(4)  # superheat and leaving-water control
STOP = const(5)  # ordered stop: compressor off, pump-down delay, valve closing
SAFE = const(6)  # the supervisor's safe state (a tripping fault is latched)

# protector bits (field "prot")
P_LOWSH = const(1)
P_SHCLS = const(2)
P_LOP = const(4)
P_MOP = const(8)
P_HITC = const(16)
P_LEAK = const(32)
P_DSH = const(64)

_HZ_REF = 50.0  # rev/s: speed at which kp, ti_s and the valve multiplier are stated
_FF_EXP = 0.7  # steady valve opening ~ speed^0.7 (bundled unit, -10..20 degC brine)
_LEAD_S = 20.0  # s: the suction pressure settles after a speed change in about this time
_KP_EXP = 0.6  # superheat per ln(valve) ~ speed^0.6: kp scheduled by speed^-0.6
_TI_EXP = 0.85  # superheat time constant ~ speed^-0.85
_P_TF_S = 2.0  # s: pressure filter for the valve-coefficient and condensing checks
_BAR = 1e5
_SH_TF_S = 3.0  # s: filter of the suction temperature and evaporating temperature
_OD_PC = 0.1  # overdrive: 10 % of the stroke past the closed stop
_MIN_PC = 0.02  # smallest opening in control: 2 % of the stroke (closing is the stop's job)
_LEAK_DLY_S = 60.0  # s: the valve coefficient stays high this long before charge_loss
_LWT_HYS_K = 2.0  # K: the water above its setpoint by this at minimum speed stops the unit
# hard low-pressure limit: evaporating this far below LOP for _LOP_HARD_S trips at once (a valve
# failed shut or the charge gone: the compressor pumps the evaporator down within seconds)
_LOP_HARD_K = 10.0
_LOP_HARD_S = 5.0
# valve ineffective: this far above the setpoint with the valve at 90 % of exv_max or more for
# _INEF_S (a valve blocked or too small for the load, the charge short): nothing it can do
_INEF_K = 10.0
_INEF_S = 60.0

_NaN = float("nan")

# parameter indices, in the order of the rows in hp_params.py
_P_SP = const(0)
_P_SP_MIN = const(1)
_P_ADAPT = const(2)
_P_KP = const(3)
_P_TI_S = const(4)
_P_LEAD_S = const(5)
_P_DB_K = const(6)
_P_LOWSH = const(7)
_P_LOWSH_TI = const(8)
_P_SHCLS = const(9)
_P_LOWSH_DLY = const(10)
_P_LOP = const(11)
_P_LOP_TI = const(12)
_P_LOP_DLY = const(13)
_P_MOP = const(14)
_P_MOP_TI = const(15)
_P_MOP_DLY = const(16)
_P_HITC = const(17)
_P_HITC_TI = const(18)
_P_HITC_DLY = const(19)
_P_P_MAX = const(20)
_P_LEAK_X = const(21)
_P_VK_REF = const(22)
_P_EXV_RATE = const(23)
_P_EXV_MAX = const(24)
_P_EXV_NOM = const(25)
_P_EXV_HYS = const(26)
_P_ST_PC = const(27)
_P_ST_S = const(28)
_P_LWT_SP = const(29)
_P_C_KP = const(30)
_P_C_TI_S = const(31)
_P_HZ_FIX = const(32)
_P_HZ_MIN = const(33)
_P_HZ_MAX = const(34)
_P_HZ_ST = const(35)
_P_HZ_UP = const(36)
_P_HZ_DN = const(37)
_P_ON_S = const(38)
_P_OFF_S = const(39)
_P_PD_S = const(40)
_P_DSH_MIN = const(41)
_N_P = const(42)

# controller state, kept in two arrays rather than ~30 attributes (a large instance dict
# costs RAM on the board): floats in self.f, board times (ms) in self.t
_F_SH_RAW = const(0)
_F_SH_F = const(1)
_F_TS_F = const(2)
_F_TE_F = const(3)
_F_TS_D = const(4)
_F_TE = const(5)
_F_TC = const(6)
_F_PS_F = const(7)
_F_PD_F = const(8)
_F_LWT_F = const(9)
_F_HZ = const(10)
_F_HZ_LP = const(11)
_F_CAP = const(12)
_F_LWT_I = const(13)
_F_LNM = const(14)
_F_TGT = const(15)
_F_SP_EFF = const(16)
_F_MSS_VAR = const(17)
_F_MSS_MEAN = const(18)
_F_MSS_FLOOR = const(19)
_F_VK = const(20)
_F_VK_F = const(21)
_F_VK_REF = const(22)
_F_M_RUN = const(23)
_F_P_RUN = const(24)
_F_P_SS = const(25)
_F_TD_F = const(26)
_F_DSH = const(27)
_F_TD_D = const(28)
_N_F = const(29)
_T_STATE = const(0)
_T_ON = const(1)
_T_OFF = const(2)
_T_SETTLE = const(3)
_T_MSS_HOLD = const(4)
_T_MSS_FLOOR_T = const(5)
_T_STABLE = const(6)
_T_NOW = const(7)
_T_DSH_ARM = const(8)
_T_DSH_LOW = const(9)
_T_DSH_EV = const(10)
_N_T = const(11)


class HeatPump(Controller):
    KIND = "hp"
    SENSORS = ("p_suc", "t_suc", "p_dis", "t_lw")
    OPT_SENSORS = ("hz_fb", "t_dis")
    ACTUATORS = ("exv", "comp")
    QUANTITY = "temperature_difference"
    FIELDS = (
        ("te_k", "temperature"),
        ("tc_k", "temperature"),
        ("comp_hz", "speed"),
        ("lwt_k", "temperature"),
        ("vk", "gain"),
        ("prot", "state"),
        ("sh_raw", "temperature_difference"),
        ("exv_tgt", "steps"),
    )
    # value_a + gap <= value_b: SH min > SH-close + 0.5 K (Danfoss EKE), LowSH below the
    # setpoint and the adaptive floor, LOP below MOP, speed range, valve range
    RULES = (
        ("shcls", "lowsh", 0.5),
        ("lowsh", "sp", 0.5),
        ("lowsh", "sp_min", 0.5),
        ("sp_min", "sp", 0.0),
        ("lop", "mop", 2.0),
        ("mop", "hitc", 10.0),
        ("hz_min", "hz_st", 0.0),
        ("hz_st", "hz_max", 0.0),
        ("exv_nom", "exv_max", 0.0),
    )

    @classmethod
    def rows(cls, cfg, board):
        # the table lives in its own module, imported for this call only (see hp_params.py)
        import sys

        try:
            return __import__("tpfw.hp_params", None, None, ("rows",)).rows(cfg, board)
        finally:
            sys.modules.pop("tpfw.hp_params", None)
            pkg = sys.modules.get("tpfw")
            if pkg is not None and "hp_params" in pkg.__dict__:
                delattr(pkg, "hp_params")

    def __init__(self, idx, cfg, board, params):
        super().__init__(idx, cfg, board, params)
        s = self.s
        self.c_ps = s["p_suc"]
        self.c_ts = s["t_suc"]
        self.c_pd = s["p_dis"]
        self.c_lw = s["t_lw"]
        self.c_fb = s["hz_fb"]
        self.c_td = s["t_dis"]
        self.c_exv = self.a["exv"]
        self.c_cmp = self.a["comp"]
        # sensors the superheat and the protectors need
        self.need = 1 << self.c_ps | 1 << self.c_ts | 1 << self.c_pd | 1 << self.c_lw
        self.stp = Stepper(self.out_max)
        self._dt = 1.0 / board["tick_hz"]
        self.f = array("f", [0.0] * _N_F)
        self.t = array("i", [0] * _N_T)
        # the rows are this loop's parameters in hp_params order, from the index of the first
        self.pb = self.pi("sp")
        self.q = array("f", [0.0] * _N_P)
        self.configure()
        self.start()

    # ---- parameters ------------------------------------------------------------------------

    def configure(self):
        v = self.v
        q = self.q
        b = self.pb
        for k in range(_N_P):
            q[k] = v[b + k]
        stp = self.stp
        stp.rate = q[_P_EXV_RATE]
        stp.hys = q[_P_EXV_HYS]
        stp.od = _OD_PC * stp.full

    # ---- run --------------------------------------------------------------------------------

    def start(self):
        super().start()
        self.stp.resync()
        self.state = SYNC
        self.t[_T_STATE] = -1  # set at the first tick
        self.f[_F_HZ] = 0.0  # compressor command, rev/s
        self.f[_F_HZ_LP] = 0.0
        self.f[_F_CAP] = self.q[_P_HZ_MAX]
        self.f[_F_LWT_I] = self.q[_P_HZ_ST]
        self.f[_F_LNM] = math.log(max(self.q[_P_EXV_NOM], 1.0))
        self.f[_F_M_RUN] = self.q[_P_EXV_NOM]  # the valve multiplier the last settled run found
        self.f[_F_P_RUN] = _NaN  # standstill suction pressure before that run
        self.f[_F_P_SS] = _NaN  # standstill suction pressure before this run
        self.st_hold = False
        self.t[_T_SETTLE] = -1
        self.f[_F_TGT] = 0.0
        self.t[_T_ON] = -1  # when the compressor started
        self.t[_T_OFF] = -1  # when it stopped (-1: no minimum off time pending)
        self.f[_F_SH_RAW] = _NaN
        self.f[_F_SH_F] = _NaN
        self.f[_F_TS_F] = _NaN
        self.f[_F_TE_F] = _NaN
        self.f[_F_TS_D] = 0.0
        self.f[_F_TE] = _NaN
        self.f[_F_TC] = _NaN
        self.f[_F_PS_F] = _NaN
        self.f[_F_PD_F] = _NaN
        self.f[_F_LWT_F] = _NaN
        self.f[_F_TD_F] = _NaN
        self.f[_F_DSH] = _NaN
        self.t[_T_DSH_ARM] = -1
        self.t[_T_DSH_LOW] = -1
        self.t[_T_DSH_EV] = -1
        self.dsh_armed = False
        self.dsh_events = 0
        self.valid = False
        self.prot = 0
        self.prot_prev = 0
        # alarm timers: low SH, LOP, MOP, HiTcond, leak, hard LOP, valve ineffective
        self.t_al = array("i", [-1] * 7)
        self.t_rel = array("i", [-1] * 7)  # when each protector last released
        self.f[_F_SP_EFF] = self.q[_P_SP]
        self.f[_F_MSS_VAR] = 0.0
        self.f[_F_MSS_MEAN] = 0.0
        self.t[_T_MSS_HOLD] = -1
        self.f[_F_MSS_FLOOR] = 0.0
        self.t[_T_MSS_FLOOR_T] = 0
        self.f[_F_VK] = 0.0
        self.f[_F_VK_F] = 0.0
        self.f[_F_VK_REF] = self.q[_P_VK_REF]
        self.t[_T_STABLE] = -1
        self._adapted = False
        self.fb_run = True
        self.setpoint = self.f[_F_SP_EFF]
        self.output = 0.0

    def _enter(self, st, t_ms):
        self.state = st
        self.t[_T_STATE] = t_ms

    # ---- sensing ----------------------------------------------------------------------------

    def sense(self, x, ok, dt_s, t_ms):
        """Superheat, evaporating and condensing temperatures from the raw channels; the
        protector conditions."""
        g = self.q
        self.t[_T_NOW] = t_ms
        # the compressor's own speed feedback (when wired): is it really turning?
        self.fb_run = True
        if self.c_fb >= 0 and ok >> self.c_fb & 1:
            self.fb_run = x[self.c_fb] >= 0.5 * g[_P_HZ_MIN]
        ps_ok = ok >> self.c_ps & 1
        ts_ok = ok >> self.c_ts & 1
        pd_ok = ok >> self.c_pd & 1
        lw_ok = ok >> self.c_lw & 1
        self.valid = (ok & self.need) == self.need
        a = dt_s / (_P_TF_S + dt_s)
        if ps_ok:
            ps = x[self.c_ps]
            self.f[_F_PS_F] = (
                ps
                if self.f[_F_PS_F] != self.f[_F_PS_F]
                else self.f[_F_PS_F] + a * (ps - self.f[_F_PS_F])
            )
            self.f[_F_TE] = tsat_k(ps)
        else:
            self.f[_F_TE] = _NaN
            self.f[_F_PS_F] = _NaN
        if ps_ok and ts_ok:
            ts = x[self.c_ts]
            self.f[_F_SH_RAW] = ts - self.f[_F_TE]
            # suction temperature: filtered (sh_tf_s), and advanced by lead_s times its
            # filtered slope, which undoes most of the probe's and pipe's lag (the pressure
            # is fast); the evaporating temperature filtered alike
            b = dt_s / (_SH_TF_S + dt_s)
            if self.f[_F_TS_F] != self.f[_F_TS_F]:
                self.f[_F_TS_F] = ts
                self.f[_F_TE_F] = self.f[_F_TE]
                self.f[_F_TS_D] = 0.0
            prev = self.f[_F_TS_F]
            self.f[_F_TS_F] += b * (ts - self.f[_F_TS_F])
            self.f[_F_TE_F] += b * (self.f[_F_TE] - self.f[_F_TE_F])
            self.f[_F_TS_D] += b * ((self.f[_F_TS_F] - prev) / dt_s - self.f[_F_TS_D])
            self.f[_F_SH_F] = self.f[_F_TS_F] + g[_P_LEAD_S] * self.f[_F_TS_D] - self.f[_F_TE_F]
        else:
            # a fault on either input is a superheat fault: no superheat, never a stale one
            self.f[_F_SH_RAW] = _NaN
            self.f[_F_SH_F] = _NaN
            self.f[_F_TS_F] = _NaN
        if pd_ok:
            pd = x[self.c_pd]
            self.f[_F_PD_F] = (
                pd
                if self.f[_F_PD_F] != self.f[_F_PD_F]
                else self.f[_F_PD_F] + a * (pd - self.f[_F_PD_F])
            )
            self.f[_F_TC] = tsat_k(self.f[_F_PD_F])
        else:
            self.f[_F_TC] = _NaN
            self.f[_F_PD_F] = _NaN
        if lw_ok:
            lw = x[self.c_lw]
            c = dt_s / (5.0 + dt_s)
            self.f[_F_LWT_F] = (
                lw
                if self.f[_F_LWT_F] != self.f[_F_LWT_F]
                else self.f[_F_LWT_F] + c * (lw - self.f[_F_LWT_F])
            )
        else:
            self.f[_F_LWT_F] = _NaN
        # discharge superheat (optional discharge-line NTC): liquid reaching the compressor
        # takes it to ~0 within seconds, whatever the suction probe says
        if self.c_td >= 0 and ok >> self.c_td & 1 and pd_ok:
            # filtered and advanced by lead_s like the suction temperature (same kind of
            # probe on the same kind of pipe)
            td = x[self.c_td]
            b = dt_s / (_SH_TF_S + dt_s)
            tf = self.f[_F_TD_F]
            if tf != tf:
                tf = td
                self.f[_F_TD_D] = 0.0
            nf = tf + b * (td - tf)
            self.f[_F_TD_D] += b * ((nf - tf) / dt_s - self.f[_F_TD_D])
            self.f[_F_TD_F] = nf
            self.f[_F_DSH] = nf + g[_P_LEAD_S] * self.f[_F_TD_D] - self.f[_F_TC]
        else:
            self.f[_F_TD_F] = _NaN
            self.f[_F_DSH] = _NaN
        self._protectors()
        self.measurement = self.f[_F_SH_F]
        self.setpoint = self.f[_F_SP_EFF]
        f = self.fields
        f[0] = self.f[_F_TE]
        f[1] = self.f[_F_TC]
        f[2] = self.f[_F_HZ]
        f[3] = self.f[_F_LWT_F]
        f[4] = self.f[_F_VK_F]
        f[5] = self.prot
        f[6] = self.f[_F_SH_RAW]
        f[7] = self.f[_F_TGT]

    def _protectors(self):
        """Which protectors are active (with a release hysteresis), in every state in which
        the compressor runs."""
        g = self.q
        prot = 0
        old = self.prot
        if self.state == RUN:
            sh = self.f[_F_SH_F]
            te = self.f[_F_TE]
            tc = self.f[_F_TC]
            # LowSH, SH-close and LOP wait 20 s after the start opening: the evaporator is
            # pulling down and the suction probe still catches up; MOP and HiTcond act at
            # once (they close and unload, and read pressures, which are fast)
            settled = elapsed(self.t[_T_NOW], self.t[_T_STATE]) >= 20000
            if g[_P_LOWSH_TI] > 0.0 and settled:
                if sh < g[_P_LOWSH] or (old & P_LOWSH and sh < g[_P_LOWSH] + 0.5):
                    prot |= P_LOWSH
                if sh < g[_P_SHCLS] or (old & P_SHCLS and sh < g[_P_SHCLS] + 0.5):
                    prot |= P_SHCLS
            lop = g[_P_LOP]
            if g[_P_LOP_TI] > 0.0 and settled and (te < lop or (old & P_LOP and te < lop + 1.0)):
                prot |= P_LOP
            if g[_P_MOP_TI] > 0.0 and (te > g[_P_MOP] or (old & P_MOP and te > g[_P_MOP] - 1.0)):
                prot |= P_MOP
            if g[_P_HITC_TI] > 0.0 and (
                tc > g[_P_HITC] or (old & P_HITC and tc > g[_P_HITC] - 1.0)
            ):
                prot |= P_HITC
            # floodback by the discharge: armed once the discharge superheat has been 5 K
            # above dsh_min for 10 s (after a start the compressor shell is cold and the
            # discharge line reads low for minutes), then below dsh_min means liquid
            dsh = self.f[_F_DSH]
            dmin = g[_P_DSH_MIN]
            if dmin > 0.0 and dsh == dsh:
                if not self.dsh_armed:
                    if dsh <= dmin + 5.0:
                        self.t[_T_DSH_ARM] = -1
                    elif self.t[_T_DSH_ARM] < 0:
                        self.t[_T_DSH_ARM] = self.t[_T_NOW]
                    elif elapsed(self.t[_T_NOW], self.t[_T_DSH_ARM]) >= 10000:
                        self.dsh_armed = True
                elif dsh < dmin or (old & P_DSH and dsh < dmin + 2.0):
                    prot |= P_DSH
        self.prot = prot | (old & P_LEAK)

    # ---- fault detection ----------------------------------------------------------------------

    def check(self, sup, x, ok, t_ms):
        g = self.q
        idx = self.idx
        # over-pressure: acts at once, below the unit's high-pressure switch
        if ok >> self.c_pd & 1 and x[self.c_pd] > g[_P_P_MAX]:
            sup.latch(codec.FAULT_OVER_PRESSURE, idx, x[self.c_pd], t_ms)
        run = self.state == RUN
        sh = self.f[_F_SH_F]
        te = self.f[_F_TE]
        tc = self.f[_F_TC]
        prot = self.prot
        # each alarm: its protector has acted and its limit is still crossed after the delay
        # (a protector that holds its limit raises no alarm). LowSH: below SH-close for
        # lowsh_dly (Emerson: cut out after 1 min)
        self._alarm(
            sup, 0, run and (prot & P_SHCLS and sh < g[_P_SHCLS] or prot & P_DSH),
            g[_P_LOWSH_DLY], codec.FAULT_LOW_SUPERHEAT, sh, True, t_ms,
        )  # fmt: skip
        # the discharge says liquid while the suction probe says dry (2 K above LowSH) for
        # longer than the probe's lag could explain, or twice within 10 minutes: the suction
        # probe is not believed (offset, drift, detached from the pipe); the unit trips on it
        if run and prot & P_DSH and sh > g[_P_LOWSH] + 2.0:
            if self.t[_T_DSH_LOW] < 0:
                self.t[_T_DSH_LOW] = t_ms
                ev = self.t[_T_DSH_EV]
                self.dsh_events = (
                    1 if ev < 0 or elapsed(t_ms, ev) > 600000 else self.dsh_events + 1
                )
                self.t[_T_DSH_EV] = t_ms
            if self.dsh_events >= 2 or elapsed(t_ms, self.t[_T_DSH_LOW]) >= 30000:
                sup.latch(codec.FAULT_SENSOR_DRIFT, idx, sh, t_ms)
        else:
            self.t[_T_DSH_LOW] = -1
        self._alarm(
            sup, 1, run and prot & P_LOP and te < g[_P_LOP], g[_P_LOP_DLY], codec.FAULT_LOP, te,
            True, t_ms,
        )  # fmt: skip
        # MOP: the protector holds the pressure; the alarm is reported, the unit runs on
        self._alarm(
            sup, 2, run and prot & P_MOP and te > g[_P_MOP], g[_P_MOP_DLY], codec.FAULT_MOP, te,
            False, t_ms,
        )  # fmt: skip
        self._alarm(
            sup, 3, run and prot & P_HITC and tc > g[_P_HITC], g[_P_HITC_DLY],
            codec.FAULT_HIGH_CONDENSING, tc, True, t_ms,
        )  # fmt: skip
        self._alarm(
            sup, 4, run and prot & P_LEAK, _LEAK_DLY_S, codec.FAULT_CHARGE_LOSS, self.f[_F_VK_F],
            True, t_ms,
        )  # fmt: skip
        # the compressor turns (start or run) and the evaporating temperature is far below LOP:
        # no protector delay, the low-pressure cut-out of the unit
        turning = run or self.state == START
        self._alarm(
            sup, 5, turning and te < g[_P_LOP] - _LOP_HARD_K, _LOP_HARD_S, codec.FAULT_LOP, te,
            True, t_ms,
        )  # fmt: skip
        self._alarm(
            sup, 6, run and self.f[_F_TGT] >= 0.9 * g[_P_EXV_MAX]
            and sh > self.f[_F_SP_EFF] + _INEF_K, _INEF_S, codec.FAULT_CONTROL_INEFFECTIVE, sh,
            True, t_ms,
        )  # fmt: skip

    def _alarm(self, sup, k, cond, delay_s, bit, value, trip, t_ms):
        al = self.t_al
        if not cond:
            al[k] = -1
            return
        if al[k] < 0:
            al[k] = t_ms
        if elapsed(t_ms, al[k]) >= delay_s * 1000.0:
            sup.latch(bit, self.idx, value, t_ms, trip)

    # ---- control ------------------------------------------------------------------------------

    def step(self, x, ok, dt_s, out, sup, t_ms):
        st = self.state
        if self.t[_T_STATE] < 0:
            self.t[_T_STATE] = t_ms
        if st == SAFE or st == OFF:
            # back from the safe state or mode off: the unit restarts from WAIT
            self._enter(WAIT, t_ms)
            st = WAIT
        hz_fb_run = self.fb_run
        if st == SYNC:
            self.f[_F_HZ] = 0.0
            self.f[_F_TGT] = 0.0
            if self.stp.synced():
                self._enter(WAIT, t_ms)
        elif st == WAIT:
            self.f[_F_HZ] = 0.0
            self.f[_F_TGT] = 0.0
            if self._demand() and self.valid and self._off_done(t_ms) and self.stp.synced():
                self._start(t_ms)
        elif st == START:
            self._run_start(dt_s, t_ms)
        elif st == RUN:
            if not self.valid:
                self._stop(t_ms)  # no superheat: the compressor must not run
            else:
                self._run(dt_s, t_ms, sup, hz_fb_run)
        elif st == STOP:
            self._run_stop(t_ms, hz_fb_run)
        out[self.c_cmp] = self.f[_F_HZ]
        pos = self.stp.step(self.f[_F_TGT], dt_s)
        out[self.c_exv] = pos
        self.output = pos
        self._notices(sup, t_ms)

    def _demand(self):
        g = self.q
        if g[_P_HZ_FIX] > 0.0:
            return True
        lw = self.f[_F_LWT_F]
        return lw == lw and lw < g[_P_LWT_SP]

    def _off_done(self, t_ms):
        return self.t[_T_OFF] < 0 or elapsed(t_ms, self.t[_T_OFF]) >= self.q[_P_OFF_S] * 1000.0

    def _start(self, t_ms):
        g = self.q
        self._enter(START, t_ms)
        self.t[_T_ON] = t_ms
        self.f[_F_HZ] = g[_P_HZ_ST]
        self.f[_F_HZ_LP] = self.f[_F_HZ]
        self.f[_F_LWT_I] = self.f[_F_HZ]
        self.f[_F_CAP] = g[_P_HZ_MAX]
        self.f[_F_SP_EFF] = g[_P_SP]
        # start opening: st_pc % of the opening the valve needs at the start speed, as the
        # last settled run found it (exv_nom before the first one): Carel's capacity ratio
        # scaled by the standstill suction pressure (the source temperature) against the one
        # before that run: a colder source needs less (^1.5), a warmer one more (^0.8); both
        # exponents are the low ends seen over -10..20 degC brine, so the start errs small
        m = self.f[_F_M_RUN]
        self.f[_F_P_SS] = self.f[_F_PS_F]
        if self.f[_F_P_RUN] == self.f[_F_P_RUN] and self.f[_F_PS_F] == self.f[_F_PS_F]:
            r = self.f[_F_PS_F] / self.f[_F_P_RUN]
            m *= math.pow(r, 1.5 if r < 1.0 else 0.8)
        self.f[_F_TGT] = g[_P_ST_PC] * 0.01 * m * math.pow(self.f[_F_HZ] / _HZ_REF, _FF_EXP)
        self.st_hold = True
        self.t[_T_SETTLE] = -1
        self.t[_T_MSS_HOLD] = t_ms
        self.dsh_armed = False  # the shell cooled while the compressor stood
        self.t[_T_DSH_ARM] = -1
        self.t[_T_STABLE] = -1
        for k in range(7):
            self.t_al[k] = -1

    def _run_start(self, dt_s, t_ms):
        g = self.q
        # the start opening is held st_s, and on until the suction probe has left the
        # standstill (superheat above LowSH: the pipe probe lags the refrigerant by seconds
        # and reads the standstill's saturation at first), st_s + 30 s at most
        held = elapsed(t_ms, self.t[_T_STATE])
        if held >= g[_P_ST_S] * 1000.0 and (
            self.f[_F_SH_F] > g[_P_LOWSH] or held >= g[_P_ST_S] * 1000.0 + 30000
        ):
            # bumpless: the multiplier continues from the valve's position
            ff = self._ff(dt_s)
            pos = self.stp.pos if self.stp.pos > 1.0 else 1.0
            self.f[_F_LNM] = math.log(pos / ff)
            self._enter(RUN, t_ms)

    def _learn_m(self, t_ms):
        # a run that settled teaches the start opening of the next one
        if self.state == RUN and not self.st_hold and elapsed(t_ms, self.t[_T_ON]) > 120000:
            self.f[_F_M_RUN] = math.exp(self.f[_F_LNM])
            self.f[_F_P_RUN] = self.f[_F_P_SS]

    def _stop(self, t_ms):
        # an ordered stop: compressor off now, the valve closes after the pump-down delay
        self._learn_m(t_ms)
        self.f[_F_HZ] = 0.0
        self.t[_T_OFF] = t_ms
        self._enter(STOP, t_ms)

    def _run_stop(self, t_ms, hz_fb_run):
        self.f[_F_HZ] = 0.0
        if elapsed(t_ms, self.t[_T_STATE]) >= self.q[_P_PD_S] * 1000.0 and not (
            self.c_fb >= 0 and hz_fb_run
        ):
            self.f[_F_TGT] = 0.0
            if self.stp.pos == 0.0:
                self._enter(WAIT, t_ms)
        else:
            self.f[_F_TGT] = self.stp.pos  # hold until the compressor has stopped

    def _ff(self, dt_s):
        """Speed feed-forward: (hz/50)^0.7 (the steady opening), times a transient factor
        (hz/hz_lp)^k that decays as hz_lp follows hz: k = 0.3 when the speed falls (the
        compressor's flow drops with its speed before the suction pressure rises, so the
        valve follows hz^1 at first), k = -0.1 when it rises (the valve lags, hz^0.6, so it
        never overfeeds before the suction pressure has fallen)."""
        hz = self.f[_F_HZ]
        if hz <= 0.0:
            return 1e-3
        self.f[_F_HZ_LP] += (hz - self.f[_F_HZ_LP]) * dt_s / (_LEAD_S + dt_s)
        lp = self.f[_F_HZ_LP] if self.f[_F_HZ_LP] > 1.0 else 1.0
        r = hz / lp
        return math.pow(hz / _HZ_REF, _FF_EXP) * math.pow(r, 0.3 if r < 1.0 else -0.1)

    def _run(self, dt_s, t_ms, sup, hz_fb_run):
        g = self.q
        # -- compressor ----------------------------------------------------------------------
        self._compressor(dt_s, t_ms)
        if self.state != RUN:
            return
        # -- valve ---------------------------------------------------------------------------
        ff = self._ff(dt_s) if hz_fb_run else 1e-3
        sh = self.f[_F_SH_F]
        sp = self._adapt(dt_s, t_ms)
        e = sh - sp  # > 0: too much superheat, open
        db = g[_P_DB_K]
        hzs = self.f[_F_HZ] if self.f[_F_HZ] > 1.0 else 1.0
        sched = _HZ_REF / hzs
        kp = g[_P_KP] * math.pow(sched, _KP_EXP)
        ti = g[_P_TI_S] * math.pow(sched, _TI_EXP)
        # beyond 8 K the error says nothing more about how far the valve is off (the
        # superheated zone is most of the evaporator): larger errors act as 8 K
        if e > 8.0:
            e = 8.0
        elif e < -8.0:
            e = -8.0
        ae = e if e > 0.0 else -e
        # proportional: quadratic inside the deadband (damping near the reference)
        ep = e * ae / db if ae < db else e
        # integral: none inside the deadband; closing twice as fast as opening
        ei = 0.0
        if ae > db:
            ei = e - db if e > 0.0 else 2.0 * (e + db)
        di = kp / ti * ei * dt_s
        if elapsed(t_ms, self.t[_T_STATE]) < 20000:
            # the suction probe still shows the standstill for some 20 s after the start
            # opening: the valve may close on its reading, not open
            if di > 0.0:
                di = 0.0
            if ep > 0.0:
                ep = 0.0
        prot = self.prot
        kr = g[_P_KP]
        # protectors: integral actions with priority over the PI
        if prot & (P_LOWSH | P_SHCLS | P_MOP | P_HITC | P_DSH) and di > 0.0:
            di = 0.0  # no opening while a closing protector acts
        if prot & P_LOWSH:
            di -= kr * (g[_P_LOWSH] - sh) / g[_P_LOWSH_TI] * dt_s
        if prot & P_DSH:
            # liquid at the compressor by its discharge: close like SH-close, whatever the
            # suction probe reads (it lags, or it lies)
            di -= (0.05 + 0.01 * (g[_P_DSH_MIN] - self.f[_F_DSH])) * dt_s
        if prot & P_SHCLS:
            # fast closing: 5 %/s plus 5 %/s per K below SH-close (Danfoss SH close)
            di -= (0.05 + 0.05 * (g[_P_SHCLS] - sh)) * dt_s
        if prot & P_MOP:
            di -= kr * (self.f[_F_TE] - g[_P_MOP]) / g[_P_MOP_TI] * dt_s
        if prot & P_HITC:
            di -= kr * (self.f[_F_TC] - g[_P_HITC]) / g[_P_HITC_TI] * dt_s
        if prot & P_LOP and sh > g[_P_LOWSH] + 1.0 and not prot & (P_LOWSH | P_SHCLS):
            # LOP opens the valve, trading superheat for suction pressure, but only while
            # the superheat keeps 1 K above LowSH (LowSH has priority)
            if di < 0.0:
                di = 0.0
            di += kr * (g[_P_LOP] - self.f[_F_TE]) / g[_P_LOP_TI] * dt_s
        self.f[_F_LNM] += di
        pt = kp * ep
        tgt = math.exp(self.f[_F_LNM] + pt) * ff
        lo = _MIN_PC * self.out_max
        hi = g[_P_EXV_MAX]
        if tgt > hi:
            tgt = hi
            self.f[_F_LNM] = math.log(hi / ff) - pt  # anti-windup at the valve's limits
        elif tgt < lo:
            tgt = lo
            self.f[_F_LNM] = math.log(lo / ff) - pt
        self.f[_F_TGT] = tgt
        self.p = pt
        self.i = math.exp(self.f[_F_LNM])
        self.d = ff
        self._leak(dt_s, t_ms, ae)

    def _compressor(self, dt_s, t_ms):
        g = self.q
        lw = self.f[_F_LWT_F]
        hmin = g[_P_HZ_MIN]
        hmax = g[_P_HZ_MAX]
        # protector cap: LOP and HiTcond unload at the down ramp, release at half the up ramp
        if self.prot & (P_LOP | P_HITC):
            self.f[_F_CAP] -= g[_P_HZ_DN] * dt_s
        else:
            self.f[_F_CAP] += 0.5 * g[_P_HZ_UP] * dt_s
        self.f[_F_CAP] = (
            hmin if self.f[_F_CAP] < hmin else hmax if self.f[_F_CAP] > hmax else self.f[_F_CAP]
        )
        fix = g[_P_HZ_FIX] > 0.0
        if self.st_hold:
            # the start speed is held until the superheat has settled (the valve finds its
            # opening at one speed before the speed moves), at most 120 s
            e = self.f[_F_SH_F] - self.f[_F_SP_EFF]
            if -1.5 < e < 1.5:
                if self.t[_T_SETTLE] < 0:
                    self.t[_T_SETTLE] = t_ms
            else:
                self.t[_T_SETTLE] = -1
            if (self.t[_T_SETTLE] >= 0 and elapsed(t_ms, self.t[_T_SETTLE]) >= 20000) or elapsed(
                t_ms, self.t[_T_ON]
            ) >= 120000:
                self.st_hold = False
            else:
                self.f[_F_LWT_I] = self.f[_F_HZ]
                return
        if fix:
            raw = g[_P_HZ_FIX]
        else:
            e = g[_P_LWT_SP] - lw
            kp = g[_P_C_KP]
            p = kp * e
            i = self.f[_F_LWT_I] + kp / g[_P_C_TI_S] * e * dt_s
            raw = p + i
        dem = hmin if raw < hmin else hmax if raw > hmax else raw
        if dem > self.f[_F_CAP]:
            dem = self.f[_F_CAP]
        hz = self.f[_F_HZ]
        up = g[_P_HZ_UP] * dt_s
        dn = g[_P_HZ_DN] * dt_s
        if dem > hz + up:
            dem = hz + up
        elif dem < hz - dn:
            dem = hz - dn
        self.f[_F_HZ] = dem
        if fix:
            return
        # back-calculation: the integrator stays within 0.5 rev/s of what is applied, so
        # range, ramp and protector cap never wind it up
        if raw > dem + 0.5:
            i = dem + 0.5 - p
        elif raw < dem - 0.5:
            i = dem - 0.5 - p
        self.f[_F_LWT_I] = i
        # thermostat: the loop wants less than the minimum speed and the water is above its
        # band: stop (after the minimum on time)
        if (
            raw < hmin
            and lw > g[_P_LWT_SP] + _LWT_HYS_K
            and elapsed(t_ms, self.t[_T_ON]) >= g[_P_ON_S] * 1000.0
        ):
            self._stop(t_ms)

    def _adapt(self, dt_s, t_ms):
        """The effective superheat setpoint: fixed (adapt = 0) or the minimum stable one.
        Judged in steady running (start hold over, speed steady, no pressure protector) after
        20 s of it: while the superheat's spread (30 s window) stays below 0.3 K and its mean
        within 1 K of the setpoint, the setpoint falls 2 K per minute toward sp_min; when the
        spread exceeds 0.6 K (hunting) or LowSH has to act, it rises 1 K (at most every 20 s)
        and that level becomes the floor of the search for 30 min (then the search
        tries again)."""
        g = self.q
        f = self.f
        sp = g[_P_SP]
        if g[_P_ADAPT] < 0.5:
            f[_F_SP_EFF] = sp
            return sp
        if f[_F_MSS_FLOOR] > 0.0 and elapsed(t_ms, self.t[_T_MSS_FLOOR_T]) > 1800000:
            f[_F_MSS_FLOOR] = 0.0
        lo = g[_P_SP_MIN]
        if f[_F_MSS_FLOOR] > lo:
            lo = f[_F_MSS_FLOOR]
        e = f[_F_SH_F] - f[_F_SP_EFF]
        a = dt_s / (30.0 + dt_s)
        f[_F_MSS_MEAN] += a * (e - f[_F_MSS_MEAN])
        d = e - f[_F_MSS_MEAN]
        f[_F_MSS_VAR] += a * (d * d - f[_F_MSS_VAR])
        held = elapsed(t_ms, self.t[_T_MSS_HOLD])
        low = self.prot & (P_LOWSH | P_SHCLS | P_DSH)
        steady = (
            not self.st_hold
            and not self.prot & (P_LOP | P_MOP | P_HITC | P_LEAK)
            and -5.0 < f[_F_HZ] - f[_F_HZ_LP] < 5.0
        )
        if not steady:
            self.t[_T_MSS_HOLD] = t_ms  # statistics start afresh once running is steady
            f[_F_MSS_VAR] = 0.0
            f[_F_MSS_MEAN] = e
        elif held >= 20000 and (f[_F_MSS_VAR] > 0.36 or low) and f[_F_SP_EFF] < sp:
            # hunting: back up 1 K, remember the level as the floor of the search
            f[_F_SP_EFF] += 1.0
            if f[_F_SP_EFF] > sp:
                f[_F_SP_EFF] = sp
            f[_F_MSS_FLOOR] = f[_F_SP_EFF]
            self.t[_T_MSS_FLOOR_T] = t_ms
            self.t[_T_MSS_HOLD] = t_ms  # 20 s before the next judgement
            f[_F_MSS_VAR] = 0.0
            self._adapted = True
        elif (
            held >= 20000
            and not low
            and f[_F_MSS_VAR] < 0.09
            and -1.0 < f[_F_MSS_MEAN] < 1.0
            and f[_F_SP_EFF] > lo
        ):
            f[_F_SP_EFF] -= 0.0333 * dt_s
            if f[_F_SP_EFF] <= lo:
                f[_F_SP_EFF] = lo
                self._adapted = True  # the search reached its floor
        if self.f[_F_SP_EFF] > sp:
            self.f[_F_SP_EFF] = sp
        return self.f[_F_SP_EFF]

    def _leak(self, dt_s, t_ms, ae):
        g = self.q
        ps = self.f[_F_PS_F]
        pd = self.f[_F_PD_F]
        dp = (pd - ps) / _BAR
        if dp < 0.5:
            dp = 0.5
        hz = self.f[_F_HZ]
        self.f[_F_VK] = self.stp.pos * math.sqrt(dp) / (hz * ps / _BAR) if hz > 1.0 else 0.0
        # steady: running for 2 min, superheat near the setpoint, speed within 2 rev/s of its
        # 20 s average
        steady = (
            elapsed(t_ms, self.t[_T_ON]) > 120000
            and ae < 1.5
            and -2.0 < hz - self.f[_F_HZ_LP] < 2.0
        )
        a = dt_s / (30.0 + dt_s)
        self.f[_F_VK_F] += a * (self.f[_F_VK] - self.f[_F_VK_F])
        if not steady:
            # judged only in steady running: a transient neither raises nor holds the flag
            self.t[_T_STABLE] = -1
            self.prot &= ~P_LEAK
            return
        if self.t[_T_STABLE] < 0:
            self.t[_T_STABLE] = t_ms
        if elapsed(t_ms, self.t[_T_STABLE]) < 60000:
            return
        if self.f[_F_VK_REF] <= 0.0:
            self.f[_F_VK_REF] = self.f[_F_VK_F]  # learned at the first steady minute
        elif self.f[_F_VK_F] < self.f[_F_VK_REF]:
            self.f[_F_VK_REF] += (self.f[_F_VK_F] - self.f[_F_VK_REF]) * dt_s / 600.0
        x = g[_P_LEAK_X]
        if x > 0.0 and self.f[_F_VK_F] > x * self.f[_F_VK_REF]:
            self.prot |= P_LEAK
        else:
            self.prot &= ~P_LEAK

    def _notices(self, sup, t_ms):
        # a protector that engages is noticed once, not again while it chatters at its
        # threshold (within 60 s of its last release)
        new = self.prot & ~self.prot_prev
        gone = self.prot_prev & ~self.prot
        rel = self.t_rel
        for k in range(7):
            if new >> k & 1 and (rel[k] < 0 or elapsed(t_ms, rel[k]) > 60000):
                sup.notice(codec.NOTICE_PROTECTOR_ACTIVE, self.idx, k + 1, t_ms, True)
            if gone >> k & 1:
                rel[k] = t_ms
        self.prot_prev = self.prot
        if self._adapted:
            self._adapted = False
            sup.notice(codec.NOTICE_SETPOINT_ADAPTED, self.idx, self.f[_F_SP_EFF], t_ms)

    # ---- other modes ----------------------------------------------------------------------------

    def safe(self, faults, t_since_s, out):
        self._safe_seq(out, t_since_s, SAFE)

    def off(self, out, t_since_s):
        self._safe_seq(out, t_since_s, OFF)

    def _safe_seq(self, out, t_since_s, st):
        """Compressor off -> pump-down delay -> valve closed, timed from the trip (or the mode
        change); the valve never closes before the compressor's speed feedback, when wired,
        shows it has stopped."""
        if self.state != st:
            if self.state == START or self.state == RUN:
                self.t[_T_OFF] = self.t[_T_NOW]  # the compressor stops now: min off time from here
                self._learn_m(self.t[_T_NOW])
            self.state = st
        self.f[_F_HZ] = 0.0
        self.prot = 0
        out[self.c_cmp] = 0.0
        if t_since_s >= self.q[_P_PD_S] and not (self.c_fb >= 0 and self.fb_run):
            self.f[_F_TGT] = 0.0
        else:
            self.f[_F_TGT] = self.stp.pos
        pos = self.stp.step(self.f[_F_TGT], self._dt)
        out[self.c_exv] = pos
        self.output = pos

    def hold(self, out):
        """Outputs set by someone else (manual): the driver tracks the valve; a compressor
        stopped meanwhile restarts through the start sequence."""
        self.output = out[self.c_exv]
        self.stp.set_position(out[self.c_exv])
        self.f[_F_HZ] = out[self.c_cmp]
        if self.f[_F_HZ] <= 0.0 and (self.state == START or self.state == RUN):
            self.t[_T_OFF] = self.t[_T_NOW]
            self.state = WAIT


CONTROLLER = HeatPump
