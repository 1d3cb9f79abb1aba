# EV battery thermal controller: coolant pump, chiller request, PTC heater and a current-derate
# request for a pack of up to 8 cell groups (docs/controllers.md, "EV battery thermal loop").
#
# Modes, chosen with hysteresis on the cell-group temperatures (never chiller and heater
# together; the PTC keeps minimum on and off times):
#   idle  the pump circulates gently (more only to even out the spread), chiller and PTC off
#   cool  cell max above cool_on until below cool_off: the chiller request holds the pack
#         inlet at tin_cool
#   heat  cell min below heat_on until above heat_off: the PTC holds the inlet at tin_heat
# The pump is chosen for the cells, not the outlet: feed-forward from the pack's heat (measured
# current, I^2 R) plus a PI on the spread of the cell groups.
#
# Protection, in watch() (every mode, also in the safe state), once a second from the mean of
# each group's readings over that second:
#   thermal-runaway ladder, each signal with a warning (notice runaway_warning, derate
#     der_warn, full cooling) and an alarm held 2 s (fault thermal_runaway: the safe sequence
#     runs full cooling and derates to der_alarm): a group's temperature rate above the
#     healthy groups' median rate, a group's temperature above their median temperature, the
#     pack's off-gas (optional sensor)
#   over_temperature (cell max above t_alarm); sensing_lost (fewer than 3 healthy groups)
#   pump_failure: flow below flow_tol of what the duty should give (flow sensor) or, without
#     one, the pack outlet running away from a plate model that assumes the pump works
#   cooling_lost: the chiller outlet not colder than its inlet by cl_frac of the drop the
#     requested chiller should give
#   coolant_leak: the expansion reservoir's level below lvl_low (level sensor)
# A cell-group sensor the supervisor finds faulty ("critical": false in the board definition),
# or whose reading scatters far beyond its stated noise (latched here as sensor_implausible,
# not tripping), is left out of every statistic until the board's sensor faults are reset, and
# reported (notice sensor_degraded); the ladder runs on the remaining groups.
import math
import sys
from array import array

from micropython import const

from . import codec
from .loops import Controller
from .supervisor import elapsed

# parameter offsets: the line of each in batt_rows.TABLE
_HEAT_ON = const(0)
_HEAT_OFF = const(1)
_COOL_OFF = const(2)
_COOL_ON = const(3)
_T_ALARM = const(4)
_TIN_COOL = const(5)
_TIN_HEAT = const(6)
_CH_KP = const(7)
_CH_KI = const(8)
_HT_KP = const(9)
_HT_KI = const(10)
_PTC_MIN_S = const(11)
_P_MIN = const(12)
_SPRD_SP = const(13)
_P_KP = const(14)
_P_KI = const(15)
_R_PACK = const(16)
_RATE_WARN = const(17)
_RATE_ALARM = const(18)
_DEV_WARN = const(19)
_DEV_ALARM = const(20)
_GAS_WARN = const(21)
_GAS_ALARM = const(22)
_DER_WARN = const(23)
_DER_FAULT = const(24)
_DER_ALARM = const(25)
_FLOW_FULL = const(26)
_FLOW_TOL = const(27)
_CH_UA = const(28)
_CH_REF = const(29)
_CH_CAP = const(30)
_LVL_LOW = const(31)

_IDLE = const(0)
_COOL = const(1)
_HEAT = const(2)
_NG = const(8)
_NONE = const(255)  # an unwired group's channel
# telemetry state: the mode in bits 0-1, then what is active
_S_WARN = const(4)
_S_ALARM = const(8)
_S_PTC = const(16)
_S_DEGRADED = const(32)
# rate estimator: two first-order filters (time constants tau_f, tau_s) of each group's
# one-second means; their difference over (tau_s - tau_f) is the rate of a ramp
_TAU_F = 5.0
_TAU_S = 20.0
_WARM_S = const(40)  # a group's rate counts 2 tau_s after its sensor (re)appeared
_PERSIST_S = const(2)  # an alarm level must hold this long
_WARN_HOLD_S = const(30)  # a warning stays this long after its causes are gone
# 50 % ethylene glycol, 1070 kg/m^3 x 3300 J/(kg K) (ASHRAE Handbook Fundamentals ch. 31):
# heat-capacity flow of 1 L/min, W/K
_CP_LPM = 58.85
_P_HEAT = 0.4  # pump floor while the PTC heats: its heat must leave the heater
_PTC_MIN = 0.15  # the PTC's lowest power when on, fraction of its maximum
_CL_FRAC = 0.3  # chiller lost: drop below this fraction of the expected one
_PM_RES = 3.0  # pump model: outlet this far (K) above the model ...
_PM_DELAY_S = const(10)  # ... for this long
_LK_DELAY_S = const(5)  # level below lvl_low this long: leak
_PF_DELAY_MS = const(5000)  # flow below flow_tol of the expected this long: pump failure
_CL_DELAY_S = const(20)  # the chiller's outlet not colder this long: chiller lost
_MIN_GROUPS = const(3)  # fewer healthy cell groups than this: sensing_lost
# the pack's cells-to-coolant conductance (the pump model without a flow sensor); the
# bundled pack's 240 W/K (docs/plants.md)
_UA_PACK = 240.0
# the coolant's change across the pack the pump aims at, per kelvin of the cells' spread
# target: the spread is about half the coolant's change on the bundled plate
_DTC_PER_SPREAD = 1.5
_Q_TAU = 60.0  # s, averaging of the pack heat for the pump's feed-forward
_DTC_TAU = 30.0  # s, averaging of the coolant's change across the pack for the pump's PI
# A probe whose reading scatters back and forth (roughness: the sum of its changes' sizes over
# a second less the size of their sum; a real temperature, smoothed by the probe, only drifts)
# beyond what its stated noise can give: 0.7 K plus 3 noise bands per reading, filtered over
# 5 s (a pack walked at random by 0.4 K a tick with 0.3 K of scatter, far rougher than a
# real one, stays under 0.75). A cell group's rate estimate would otherwise read scatter as a
# runaway: 2 K of scatter is found in 4-6 s, before the alarm (its first seconds may raise the
# warning).
_ROUGH_K = 0.7
_ROUGH_N = 3.0
# the supervisor's sensor faults: while one is latched, a group whose probe failed stays out
_SENSOR_BITS = const(0x707)  # open, short, implausible, stuck, rate, drift (bits 0-2, 8-10)

# The state lives in three preallocated arrays (a few allocations at boot instead of dozens
# of attributes, which fragment a small heap, and floats stored unboxed).
# per-group float arrays in g: slot * 8 + group
_ACC = const(0)  # sum of this second's readings
_TF = const(8)  # fast filter (K)
_TS = const(16)  # slow filter (K)
_RATE = const(24)  # rate (K/s), NaN while warming up
# scalars in f
_CMAX = const(32)
_CMIN = const(33)
_SPREAD = const(34)
_TIN = const(35)
_FLOW = const(36)  # measured L/min, NaN without a healthy flow sensor
_GAS = const(37)
_HEAT_W = const(38)  # pack heat I^2 R, W
_RATE_MAX = const(39)  # highest group rate above the others' mean
_DEV_MAX = const(40)  # highest group temperature above the others' mean
_U_PUMP = const(41)  # outputs applied last tick
_U_CHILL = const(42)
_U_HEAT = const(43)
_DERATE = const(44)
_DER_TOLD = const(45)  # the derate request last reported
_TOUT_M = const(46)  # plate model of the pack outlet
_I_PUMP = const(47)  # PI integrals
_I_CHILL = const(48)  # (the chiller's PI keeps its last error here)
_I_HEAT = const(49)
_DTC = const(50)  # coolant temperature change across the pack, filtered
# per-group again: f slot + group
_PREV = const(51)  # last healthy reading (NaN: none)
_RA = const(59)  # this second: sum of |reading change|
_RS = const(67)  # this second: sum of reading changes
_RG = const(75)  # roughness (K per second), filtered
_SORT = const(83)  # scratch for the medians
_NF = const(91)
# per-group bytes in b: slot * 8 + group
_CH = const(0)  # channel (_NONE: not wired)
_CNT = const(8)  # healthy readings this second
_BAD = const(16)  # a reading this second was not healthy
_AGE = const(24)  # seconds since the sensor (re)appeared (saturates at 255)
_OUT = const(32)  # left out until the board's sensor faults are reset
_NB = const(40)
# integers in i
_MODE = const(0)
_HEALTHY = const(1)  # bitmask of the groups in the statistics
_REPORTED = const(2)  # healthy groups last reported (sensor_degraded)
_N = const(3)
_G_RATE = const(4)
_G_DEV = const(5)
_WARN = const(6)
_WARN_LEFT = const(7)
_ALARM_S = const(8)
_PTC = const(9)
_PTC_T = const(10)  # board time of the PTC's last switch (-1: long ago)
_PF_SINCE = const(11)
_PM_S = const(12)
_CL_S = const(13)
_LK_S = const(14)
_DRY = const(15)
_TICK_N = const(16)
_FRESH = const(17)  # the statistics were renewed this tick
_SECS = const(18)
_ROUGH = const(19)  # groups found rough this second (to latch)
_NI = const(20)

_ROWS = "tpfw.batt_rows"


def _rows_module():
    return __import__(_ROWS, None, None, ("TABLE",))


def _forget():
    # the table and checks are needed at boot only: give their RAM back
    sys.modules.pop(_ROWS, None)
    pkg = sys.modules.get("tpfw")
    if pkg is not None and hasattr(pkg, "batt_rows"):
        delattr(pkg, "batt_rows")


class BatteryLoop(Controller):
    KIND = "batt"
    SENSORS = ("c0", "c1", "tin")
    OPT_SENSORS = ("c2", "c3", "c4", "c5", "c6", "c7", "tout", "chout", "flow", "cur", "gas")
    OPT_SENSORS += ("level",)
    ACTUATORS = ("pump",)
    OPT_ACTUATORS = ("chill", "heat", "derate")
    QUANTITY = "temperature"
    SP = "cool_on"
    FIELDS = (
        ("spread", "temperature_difference"),
        ("cell_min", "temperature"),
        ("tin", "temperature"),
        ("rate_max", "rate"),
        ("dev_max", "temperature_difference"),
        ("gas", "concentration"),
        ("derate", "fraction"),
        ("flow", "flow"),
    )
    RULES = (
        ("heat_on", "heat_off", 1.0),
        ("heat_off", "cool_off", 2.0),
        ("cool_off", "cool_on", 1.0),
        ("cool_on", "t_alarm", 5.0),
        ("tin_cool", "tin_heat", 5.0),
        ("rate_warn", "rate_alarm", 0.001),
        ("dev_warn", "dev_alarm", 0.5),
        ("gas_warn", "gas_alarm", 10.0),
        ("der_alarm", "der_fault", 0.0),
        ("der_fault", "der_warn", 0.0),
    )

    # rows() and board_errors() run at boot (the board check, then the parameter table);
    # the module that holds them stays imported until the controller is built
    @classmethod
    def rows(cls, cfg, board):
        m = _rows_module()
        return m.rows(cfg, board, m.floors(cfg, board, _TAU_F, _TAU_S, 1.0 / board["tick_hz"]))

    @classmethod
    def board_errors(cls, cfg, board, values):
        """Detection levels the sensors' noise would cross on its own, named with the noise."""
        m = _rows_module()
        fl = m.floors(cfg, board, _TAU_F, _TAU_S, 1.0 / board["tick_hz"])
        return m.board_errors(cfg, board, values, fl)

    def __init__(self, idx, cfg, board, params):
        _forget()
        super().__init__(idx, cfg, board, params)
        self.f = array("f", [0.0] * _NF)
        self.b = bytearray(_NB)
        self.iv = array("i", [0] * _NI)
        self.p0 = self.pi("heat_on")  # the first row: the others follow in table order
        self.i_sp = self.p0 + _COOL_ON
        a = self.a
        self.heat_ch = a["heat"]
        self.chill_ch = a["chill"]
        self.der_ch = a["derate"]
        self.heat_max = board["actuators"][a["heat"]].get("max", 0.0) if a["heat"] >= 0 else 0.0
        b = self.b
        self.wired = 0
        for g in range(_NG):
            c = self.s["c%d" % g]
            b[_CH + g] = _NONE if c < 0 else c
            if c >= 0:
                self.wired |= 1 << g
        self.per_s = max(1, int(board["tick_hz"]))  # ticks per statistics second
        nc = 0.0
        for g in range(_NG):
            c = b[_CH + g]
            if c != _NONE:
                nc = max(nc, board["sensors"][c].get("noise", 0.0))
        self.rough_lim = _ROUGH_K + _ROUGH_N * nc * self.per_s
        self.start()

    def configure(self):
        self.setpoint = self.v[self.i_sp]

    def start(self):
        super().start()
        f = self.f
        for j in range(_NF):
            f[j] = 0.0
        for j in (_CMAX, _CMIN, _TIN, _FLOW, _TOUT_M):
            f[j] = math.nan
        for g in range(_NG):
            f[_PREV + g] = math.nan
        f[_DERATE] = 1.0
        f[_DER_TOLD] = 1.0
        b = self.b
        for j in range(_CNT, _NB):
            b[j] = 0
        i = self.iv
        for j in range(_NI):
            i[j] = 0
        i[_REPORTED] = self.wired
        i[_G_RATE] = -1
        i[_G_DEV] = -1
        i[_PTC_T] = -1
        i[_PF_SINCE] = -1

    # ---- measurement ------------------------------------------------------------------------

    def sense(self, x, ok, dt_s, t_ms):
        s = self.s
        f = self.f
        b = self.b
        i = self.iv
        for g in range(_NG):
            c = b[_CH + g]
            if c != _NONE:
                if ok & (1 << c):
                    v = x[c]
                    f[_ACC + g] += v
                    b[_CNT + g] += 1
                    d = v - f[_PREV + g]
                    if d == d:
                        f[_RS + g] += d
                        f[_RA + g] += d if d > 0.0 else -d
                    f[_PREV + g] = v
                else:
                    b[_BAD + g] = 1
                    f[_PREV + g] = math.nan
        i[_TICK_N] += 1
        i[_FRESH] = i[_TICK_N] >= self.per_s
        if i[_FRESH]:
            i[_TICK_N] = 0
            self._stats()
        # pack inlet: its own sensor, else the chiller outlet (close to it with the PTC off)
        c = s["tin"]
        if ok & (1 << c):
            f[_TIN] = x[c]
        else:
            c = s["chout"]
            ok_c = c >= 0 and ok & (1 << c) and f[_U_HEAT] <= 0.0
            f[_TIN] = x[c] if ok_c else math.nan
        c = s["flow"]
        if c >= 0 and ok & (1 << c):
            q = f[_FLOW]
            f[_FLOW] = x[c] if q != q else q + (x[c] - q) * 0.3
        else:
            f[_FLOW] = math.nan
        c = s["gas"]
        if c >= 0 and ok & (1 << c):
            f[_GAS] += (x[c] - f[_GAS]) * dt_s
        # the pack's heat, I^2 R averaged over a minute: the cells answer over tens of minutes,
        # the pump need not follow every current peak
        c = s["cur"]
        q = x[c] * x[c] * self.v[self.p0 + _R_PACK] if c >= 0 and ok & (1 << c) else 0.0
        f[_HEAT_W] += (q - f[_HEAT_W]) * dt_s / _Q_TAU
        self.measurement = f[_CMAX]
        self.setpoint = self.v[self.i_sp]
        t = self.fields
        t[0] = f[_SPREAD]
        t[1] = f[_CMIN]
        t[2] = f[_TIN]
        t[3] = f[_RATE_MAX]
        t[4] = f[_DEV_MAX]
        t[5] = f[_GAS]
        t[6] = f[_DERATE]
        q = f[_FLOW]
        t[7] = q if q == q else self._flow_exp(f[_U_PUMP])
        st = i[_MODE]
        if i[_WARN]:
            st |= _S_WARN
        if i[_ALARM_S]:
            st |= _S_ALARM
        if i[_PTC]:
            st |= _S_PTC
        if i[_HEALTHY] != self.wired:
            st |= _S_DEGRADED
        self.state = st

    def _stats(self):
        """Once a second: filters, rates and deviations of the healthy groups."""
        f = self.f
        b = self.b
        i = self.iv
        i[_SECS] += 1
        healthy = 0
        rated = 0
        n = 0
        n_r = 0
        cmax = -1e9
        cmin = 1e9
        lim = self.rough_lim
        for g in range(_NG):
            c = b[_CNT + g]
            r = f[_RS + g]
            r = f[_RA + g] - (r if r > 0.0 else -r)
            f[_RG + g] += (r - f[_RG + g]) * 0.2
            f[_RA + g] = 0.0
            f[_RS + g] = 0.0
            if f[_RG + g] > lim and b[_CH + g] != _NONE and not b[_OUT + g]:
                b[_OUT + g] = 1
                i[_ROUGH] |= 1 << g
            if b[_BAD + g]:
                b[_OUT + g] = 1
            if b[_CH + g] == _NONE or b[_OUT + g] or not c:
                b[_AGE + g] = 0
                f[_RATE + g] = math.nan
            else:
                t = f[_ACC + g] / c
                if b[_AGE + g] == 0:
                    f[_TF + g] = t
                    f[_TS + g] = t
                else:
                    f[_TF + g] += (t - f[_TF + g]) / _TAU_F
                    f[_TS + g] += (t - f[_TS + g]) / _TAU_S
                if b[_AGE + g] < 255:
                    b[_AGE + g] += 1
                healthy |= 1 << g
                n += 1
                t = f[_TF + g]
                if t > cmax:
                    cmax = t
                if t < cmin:
                    cmin = t
                if b[_AGE + g] > _WARM_S:
                    f[_RATE + g] = (t - f[_TS + g]) / (_TAU_S - _TAU_F)
                    rated |= 1 << g
                    n_r += 1
                else:
                    f[_RATE + g] = math.nan
            f[_ACC + g] = 0.0
            b[_CNT + g] = 0
            b[_BAD + g] = 0
        i[_HEALTHY] = healthy
        i[_N] = n
        dmax = 0.0
        rmax = 0.0
        i[_G_DEV] = -1
        i[_G_RATE] = -1
        # each group against the median of the healthy groups: what they all share (a current
        # peak, the PTC, the ambient) cancels, and one group reading far off (a runaway, a
        # drifting probe) does not move the reference the others are judged against
        if n >= 2:
            t_med = self._median(_TF, healthy, n)
            r_med = self._median(_RATE, rated, n_r) if n_r >= 2 else 0.0
            for g in range(_NG):
                if healthy & (1 << g):
                    d = f[_TF + g] - t_med
                    if d > dmax:
                        dmax = d
                        i[_G_DEV] = g
                    if rated & (1 << g):
                        d = f[_RATE + g] - r_med
                        if d > rmax:
                            rmax = d
                            i[_G_RATE] = g
        f[_DEV_MAX] = dmax
        f[_RATE_MAX] = rmax
        if n:
            f[_CMAX] = cmax
            f[_CMIN] = cmin
            f[_SPREAD] = cmax - cmin
        else:
            f[_CMAX] = math.nan
            f[_CMIN] = math.nan
            f[_SPREAD] = 0.0

    def _median(self, base, mask, n):
        """Median of f[base + g] over the n groups in mask (sorted in the scratch slots)."""
        f = self.f
        k = 0
        for g in range(_NG):
            if mask & (1 << g):
                v = f[base + g]
                j = k
                while j > 0 and f[_SORT + j - 1] > v:
                    f[_SORT + j] = f[_SORT + j - 1]
                    j -= 1
                f[_SORT + j] = v
                k += 1
        h = n >> 1
        if n & 1:
            return f[_SORT + h]
        return 0.5 * (f[_SORT + h - 1] + f[_SORT + h])

    def _flow_exp(self, duty):
        """Flow (L/min) the pump gives at this duty when it works (0 below half p_min)."""
        v = self.v
        if duty < 0.5 * v[self.p0 + _P_MIN]:
            return 0.0
        return v[self.p0 + _FLOW_FULL] * duty

    # ---- protection -------------------------------------------------------------------------

    def watch(self, sup, x, ok, t_ms):
        f = self.f
        i = self.iv
        idx = self.idx
        if f[_DERATE] < f[_DER_TOLD]:
            sup.notice(codec.NOTICE_DERATE_REQUEST, idx, f[_DERATE], t_ms, True)
        f[_DER_TOLD] = f[_DERATE]
        self._pump_flow(sup, t_ms)
        b = self.b
        if i[_ROUGH]:
            for g in range(_NG):
                if i[_ROUGH] & (1 << g):
                    sup.latch(codec.FAULT_SENSOR_IMPLAUSIBLE, idx, b[_CH + g], t_ms, False)
            i[_ROUGH] = 0
        lim = self.rough_lim
        for g in range(_NG):
            if b[_OUT + g] and f[_RG + g] > lim:
                sup.cause(codec.FAULT_SENSOR_IMPLAUSIBLE)
        if not sup.faults & _SENSOR_BITS:
            # the sensor faults were reset (or none latched): every probe may come back
            for g in range(_NG):
                b[_OUT + g] = 0
        if not i[_FRESH]:
            return
        v = self.v
        p = self.p0
        lost = i[_REPORTED] & ~i[_HEALTHY]
        if lost:
            for g in range(_NG):
                if lost & (1 << g):
                    sup.notice(codec.NOTICE_SENSOR_DEGRADED, idx, self.b[_CH + g], t_ms, True)
        i[_REPORTED] = i[_HEALTHY]
        if i[_N] < _MIN_GROUPS:
            sup.latch(codec.FAULT_SENSING_LOST, idx, i[_N], t_ms)
        elif f[_CMAX] > v[p + _T_ALARM]:
            sup.latch(codec.FAULT_OVER_TEMPERATURE, idx, f[_CMAX], t_ms)
        self._ladder(sup, t_ms)
        self._chiller(sup, x, ok, t_ms)
        self._pump_model(sup, x, ok, t_ms)
        c = self.s["level"]
        if c >= 0 and ok & (1 << c) and x[c] < v[p + _LVL_LOW]:
            i[_LK_S] += 1
            if i[_LK_S] >= _LK_DELAY_S:
                sup.latch(codec.FAULT_COOLANT_LEAK, idx, x[c], t_ms)
        else:
            i[_LK_S] = 0

    def _rung(self, rate, dev, gas, rate_max, dev_max, gas_max):
        # what crossed a rung of the runaway ladder, first by rate, then deviation, then gas:
        # the group (rate, deviation) or the gas reading; -1 when nothing did
        if rate >= rate_max:
            return self.iv[_G_RATE]
        if dev >= dev_max:
            return self.iv[_G_DEV]
        if gas >= gas_max:
            return gas
        return -1.0

    def _ladder(self, sup, t_ms):
        v = self.v
        p = self.p0
        f = self.f
        i = self.iv
        gas = f[_GAS] if self.s["gas"] >= 0 else 0.0
        # a deviation counts once every group had its sensor for the warm-up
        dev = f[_DEV_MAX] if i[_SECS] > _WARM_S else 0.0
        rate = f[_RATE_MAX]
        alarm = self._rung(
            rate, dev, gas, v[p + _RATE_ALARM], v[p + _DEV_ALARM], v[p + _GAS_ALARM]
        )
        if alarm >= 0.0:
            i[_ALARM_S] += 1
            if i[_ALARM_S] > _PERSIST_S:
                sup.latch(codec.FAULT_THERMAL_RUNAWAY, self.idx, alarm, t_ms)
        else:
            i[_ALARM_S] = 0
        warn = self._rung(rate, dev, gas, v[p + _RATE_WARN], v[p + _DEV_WARN], v[p + _GAS_WARN])
        if warn >= 0.0:
            if not i[_WARN]:
                sup.notice(codec.NOTICE_RUNAWAY_WARNING, self.idx, warn, t_ms, True)
            i[_WARN] = 1
            i[_WARN_LEFT] = _WARN_HOLD_S
        elif i[_WARN_LEFT]:
            i[_WARN_LEFT] -= 1
            if not i[_WARN_LEFT]:
                i[_WARN] = 0

    def _pump_flow(self, sup, t_ms):
        """Flow sensor: measured flow against the flow the duty should give."""
        q = self.f[_FLOW]
        i = self.iv
        if q != q:
            i[_PF_SINCE] = -1
            return
        v = self.v
        exp = self._flow_exp(self.f[_U_PUMP])
        if exp > 0.0 and q < v[self.p0 + _FLOW_TOL] * exp:
            if i[_PF_SINCE] < 0:
                i[_PF_SINCE] = t_ms
            if elapsed(t_ms, i[_PF_SINCE]) >= _PF_DELAY_MS:
                sup.latch(codec.FAULT_PUMP_FAILURE, self.idx, q, t_ms)
        else:
            i[_PF_SINCE] = -1

    def _pump_model(self, sup, x, ok, t_ms):
        """No flow sensor: the pack outlet against a plate model that assumes the pump gives
        the flow its duty should. Coolant leaves the plate at tin + eps (cell mean - tin),
        eps = 1 - exp(-UA / (m cp)), reached with the lag of the plate and coolant (about
        14 kJ/K over m cp + UA); a stopped flow lets the outlet climb to the cells instead."""
        f = self.f
        i = self.iv
        c = self.s["tout"]
        exp = self._flow_exp(f[_U_PUMP])
        tin = f[_TIN]
        if f[_FLOW] == f[_FLOW] or c < 0 or not ok & (1 << c) or not i[_N] or exp <= 0.0:
            f[_TOUT_M] = math.nan
            i[_PM_S] = 0
            return
        if tin != tin:
            i[_PM_S] = 0
            return
        ua = _UA_PACK
        t_out = x[c]
        mean = f[_CMIN] + 0.5 * f[_SPREAD]
        mcp = exp * _CP_LPM
        eps = 1.0 - math.exp(-ua / mcp)
        if f[_TOUT_M] != f[_TOUT_M]:
            f[_TOUT_M] = t_out
        a = (mcp + ua) / 14000.0
        f[_TOUT_M] += (tin + eps * (mean - tin) - f[_TOUT_M]) * (a if a < 1.0 else 1.0)
        res = t_out - f[_TOUT_M]
        gap = mean - tin
        # observable only while the cells are well away from the inlet
        if gap > 2.0 * _PM_RES and res > _PM_RES and res > 0.3 * gap * (1.0 - eps):
            i[_PM_S] += 1
            if i[_PM_S] >= _PM_DELAY_S:
                sup.latch(codec.FAULT_PUMP_FAILURE, self.idx, res, t_ms)
        else:
            i[_PM_S] = 0

    def _chiller(self, sup, x, ok, t_ms):
        """The chiller's outlet must be colder than its inlet (the pack outlet) by a part of
        the drop the requested chiller gives, ch_ua (t_in - ch_ref) over the coolant's
        heat-capacity flow."""
        s = self.s
        f = self.f
        i = self.iv
        c_out = s["chout"]
        c_in = s["tout"]
        q = f[_FLOW]
        flow = q if q == q else self._flow_exp(f[_U_PUMP])
        if (
            c_out < 0
            or c_in < 0
            or not ok & (1 << c_out)
            or not ok & (1 << c_in)
            or f[_U_CHILL] < 0.2
            or f[_U_HEAT] > 0.0
            or flow < 1.0
        ):
            i[_CL_S] = 0
            return
        v = self.v
        t_in = x[c_in]
        drop_exp = v[self.p0 + _CH_UA] * (t_in - v[self.p0 + _CH_REF]) / (flow * _CP_LPM)
        if drop_exp >= 1.0 and t_in - x[c_out] < _CL_FRAC * drop_exp:
            i[_CL_S] += 1
            if i[_CL_S] >= _CL_DELAY_S:
                sup.latch(codec.FAULT_COOLING_LOST, self.idx, t_in - x[c_out], t_ms)
        else:
            i[_CL_S] = 0

    def check(self, sup, x, ok, t_ms):
        pass  # everything runs in watch(), in every mode

    # ---- control ----------------------------------------------------------------------------

    def _mode(self):
        v = self.v
        p = self.p0
        f = self.f
        m = self.iv[_MODE]
        if self.iv[_N]:
            cmax = f[_CMAX]
            if m == _IDLE:
                if cmax > v[p + _COOL_ON]:
                    m = _COOL
                elif f[_CMIN] < v[p + _HEAT_ON] and cmax < v[p + _COOL_OFF]:
                    m = _HEAT
            elif m == _COOL:
                if cmax < v[p + _COOL_OFF]:
                    m = _IDLE
            elif f[_CMIN] > v[p + _HEAT_OFF] or cmax > v[p + _COOL_OFF]:
                m = _IDLE
        self.iv[_MODE] = m
        return m

    def _pi(self, j, e, kp, ki, dt_s, lo, hi):
        """PI with conditional integration (integral in f[j]): the integral stops where the
        output saturates in the direction of the error."""
        f = self.f
        it = f[j] + ki * e * dt_s
        u = kp * e + it
        if u > hi:
            u = hi
            if e > 0.0:
                it = f[j]
        elif u < lo:
            u = lo
            if e < 0.0:
                it = f[j]
        f[j] = it
        return u

    def step(self, x, ok, dt_s, out, sup, t_ms):
        v = self.v
        p = self.p0
        f = self.f
        m = self._mode()
        warn = self.iv[_WARN]
        if warn:
            m = _COOL  # a runaway warning: full cooling
        # pump, for the cells: the coolant's temperature change across the pack is what makes
        # their spread and what flow can change. Feed-forward: the flow that carries the
        # pack's heat (and the PTC's) with a change of 1.5 sprd_sp; a PI on the measured change
        # (pack outlet - inlet) trims it. A cell spread above sprd_sp asks for a smaller change
        # (down to half). Without an outlet sensor the PI works on the cell spread itself.
        lo = v[p + _P_MIN]
        if (m == _HEAT or self.iv[_PTC]) and lo < _P_HEAT:
            lo = _P_HEAT
        spread = f[_SPREAD]
        dtc = _DTC_PER_SPREAD * v[p + _SPRD_SP]
        if spread > v[p + _SPRD_SP]:
            r = v[p + _SPRD_SP] / spread
            dtc *= r if r > 0.5 else 0.5
        ff = (f[_HEAT_W] + f[_U_HEAT]) / (_CP_LPM * v[p + _FLOW_FULL] * dtc)
        if ff > 1.0:
            ff = 1.0
        c = self.s["tout"]
        if c >= 0 and ok & (1 << c) and f[_TIN] == f[_TIN]:
            # the change across the pack over half a minute: the cells answer over minutes,
            # and the pump must not chase the chiller's and the hoses' faster swings
            d = f[_DTC]
            f[_DTC] = d + (abs(x[c] - f[_TIN]) - d) * dt_s / _DTC_TAU
            e = f[_DTC] - dtc
        else:
            e = spread - v[p + _SPRD_SP]
        u = ff + self._pi(_I_PUMP, e, v[p + _P_KP], v[p + _P_KI], dt_s, lo - ff, 1.0 - ff)
        if warn:
            u = 1.0
        # chiller: holds the inlet at tin_cool (a warmer inlet asks for more); the full
        # request when no inlet temperature is left to hold
        chill = 0.0
        tin = f[_TIN]
        if m == _COOL and not self.iv[_PTC] and self.chill_ch >= 0:
            if warn or tin != tin:
                chill = 1.0
            else:
                # PI in velocity form on the inlet: each step moves the request by the drop
                # across the chiller it asks for (K) times the coolant's heat-capacity flow over
                # the chiller's capacity, so the loop gain does not change with flow, and a
                # request held at a limit does not wind up
                q = f[_FLOW]
                mcp = (q if q == q else self._flow_exp(f[_U_PUMP])) * _CP_LPM
                if mcp < _CP_LPM:
                    mcp = _CP_LPM
                e = tin - v[p + _TIN_COOL]
                e0 = f[_I_CHILL]  # the last error
                if e0 != e0:
                    e0 = e
                du = v[p + _CH_KP] * (e - e0) + v[p + _CH_KI] * e * dt_s
                chill = f[_U_CHILL] + du * mcp / v[p + _CH_CAP]
                chill = 0.0 if chill < 0.0 else 1.0 if chill > 1.0 else chill
                f[_I_CHILL] = e
        else:
            f[_I_CHILL] = 0.0  # entering cooling, the whole error is new: a proportional kick
        heat = self._ptc(m, tin, chill, dt_s, t_ms)
        f[_DERATE] = v[p + _DER_WARN] if warn else 1.0
        out[self.main] = u
        if self.chill_ch >= 0:
            out[self.chill_ch] = chill
        if self.heat_ch >= 0:
            out[self.heat_ch] = heat
        if self.der_ch >= 0:
            out[self.der_ch] = f[_DERATE]
        f[_U_PUMP] = u
        f[_U_CHILL] = chill
        f[_U_HEAT] = heat
        self.output = u

    def _ptc(self, m, tin, chill, dt_s, t_ms):
        """PTC power: holds the inlet at tin_heat in heat mode; on and off states last at
        least ptc_min_s, except that hot cells or a runaway warning switch it off
        at once, and it never starts while the chiller runs."""
        if self.heat_ch < 0:
            return 0.0
        v = self.v
        p = self.p0
        i = self.iv
        want = 0.0
        if m == _HEAT and tin == tin and not i[_WARN]:
            e = v[p + _TIN_HEAT] - tin
            want = self._pi(_I_HEAT, e, v[p + _HT_KP], v[p + _HT_KI], dt_s, 0.0, self.heat_max)
        else:
            self.f[_I_HEAT] = 0.0
        since = elapsed(t_ms, i[_PTC_T]) / 1000.0 if i[_PTC_T] >= 0 else 1e9
        stop = i[_WARN] or (i[_N] and self.f[_CMAX] > v[p + _COOL_ON])
        lo = _PTC_MIN * self.heat_max
        if i[_PTC]:
            if stop or (want <= 0.0 and since >= v[p + _PTC_MIN_S]):
                i[_PTC] = 0
                i[_PTC_T] = t_ms
                return 0.0
            return want if want > lo else lo
        if want > 0.0 and chill <= 0.0 and not stop and since >= v[p + _PTC_MIN_S]:
            i[_PTC] = 1
            i[_PTC_T] = t_ms
            return want if want > lo else lo
        return 0.0

    def hold(self, out):
        f = self.f
        u = out[self.main]
        self.output = u
        f[_U_PUMP] = u
        f[_I_PUMP] = 0.0  # the spread PI starts again from the feed-forward
        f[_U_CHILL] = out[self.chill_ch] if self.chill_ch >= 0 else 0.0
        f[_I_CHILL] = math.nan  # the inlet PI goes on from the request it finds
        f[_U_HEAT] = out[self.heat_ch] if self.heat_ch >= 0 else 0.0
        f[_I_HEAT] = f[_U_HEAT]
        if f[_U_HEAT] <= 0.0:
            self.iv[_PTC] = 0
        if self.der_ch >= 0:
            f[_DERATE] = out[self.der_ch]

    def safe(self, faults, t_since_s, out):
        """Safe sequence by fault: a runaway or an over-temperature gets full cooling and the
        derate; a dead pump is stopped (it has no flow to give) with the chiller off (nothing
        flows through it) and the current derated; a lost chiller or a leak keeps the pump
        circulating while flow is seen, and derates. The PTC is off in every case. Any other
        tripping fault: the board's safe values."""
        v = self.v
        p = self.p0
        acts = self.board["actuators"]
        pump = acts[self.main].get("safe", 1.0)
        chill = acts[self.chill_ch].get("safe", 0.0) if self.chill_ch >= 0 else 0.0
        der = acts[self.der_ch].get("safe", 0.0) if self.der_ch >= 0 else 0.0
        if faults & (1 << codec.FAULT_THERMAL_RUNAWAY | 1 << codec.FAULT_OVER_TEMPERATURE):
            pump = 1.0
            chill = 1.0
        cooling = (
            1 << codec.FAULT_COOLING_LOST
            | 1 << codec.FAULT_COOLANT_LEAK
            | 1 << codec.FAULT_PUMP_FAILURE
            | 1 << codec.FAULT_SENSING_LOST
            | 1 << codec.FAULT_OVER_TEMPERATURE
        )
        if faults & cooling and v[p + _DER_FAULT] < der:
            der = v[p + _DER_FAULT]
        if faults & (1 << codec.FAULT_THERMAL_RUNAWAY) and v[p + _DER_ALARM] < der:
            der = v[p + _DER_ALARM]
        if faults & (1 << codec.FAULT_COOLANT_LEAK):
            q = self.f[_FLOW]
            if q == q and q < v[p + _FLOW_TOL] * self._flow_exp(pump):
                self.iv[_DRY] = 1
            if self.iv[_DRY]:
                pump = 0.0  # the loop has run dry: stop the pump before it is damaged
        if faults & (1 << codec.FAULT_PUMP_FAILURE):
            pump = 0.0
            chill = 0.0
        out[self.main] = pump
        if self.chill_ch >= 0:
            out[self.chill_ch] = chill
        if self.heat_ch >= 0:
            out[self.heat_ch] = 0.0
        if self.der_ch >= 0:
            out[self.der_ch] = der
        self.hold(out)


CONTROLLER = BatteryLoop
