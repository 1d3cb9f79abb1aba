# Generic PID loop: one measured quantity (sensor role "pv") held at its setpoint by one
# actuator (role "out"), with an upper alarm limit and the control-ineffective watch.
from . import codec
from .loops import F32, Controller
from .pid import PID

# (suffix, unit, quantity, type, min, max, default); sp and alarm_hi take the sensor's range
_ROWS = (
    ("kp", "1/u", "gain", F32, 0.0, 100.0, 0.1),
    ("ki", "1/us", "gain", F32, 0.0, 10.0, 0.001),
    ("kd", "s/u", "gain", F32, 0.0, 1000.0, 0.0),
    ("out_min", "", "", F32, 0.0, 0.0, 0.0),
    ("out_max", "", "", F32, 0.0, 0.0, 0.0),
    ("inef_s", "s", "time", F32, 0.0, 3600.0, 300.0),
)


class PidLoop(Controller):
    KIND = "pid"
    RULES = (("out_min", "out_max", 0.0), ("sp", "alarm_hi", 0.0))

    @classmethod
    def rows(cls, cfg, board):
        d = cfg.get("defaults", {})
        s = board["sensors"][cfg["sensors"]["pv"]]
        a = board["actuators"][cfg["actuators"]["out"]]
        q = s.get("quantity", "temperature")
        unit = s.get("unit", "K")
        lo, hi = s["min"], s["max"]
        alo, ahi = a.get("min", 0.0), a.get("max", 1.0)
        aq = a.get("quantity", "fraction")
        rows = [("sp", unit, q, F32, lo, hi, d.get("sp", (lo + hi) / 2))]
        for suffix, u, qq, t, mn, mx, default in _ROWS:
            if suffix == "out_min":
                rows.append((suffix, a.get("unit", ""), aq, t, alo, ahi, d.get(suffix, alo)))
            elif suffix == "out_max":
                rows.append((suffix, a.get("unit", ""), aq, t, alo, ahi, d.get(suffix, ahi)))
            else:
                rows.append((suffix, u, qq, t, mn, mx, d.get(suffix, default)))
        rows.append(("alarm_hi", unit, q, F32, lo, hi, d.get("alarm_hi", hi)))
        return rows

    def __init__(self, idx, cfg, board, params):
        super().__init__(idx, cfg, board, params)
        self.QUANTITY = board["sensors"][self.s["pv"]].get("quantity", "temperature")
        self.i_kp = self.pi("kp")
        self.i_ki = self.pi("ki")
        self.i_kd = self.pi("kd")
        self.i_lo = self.pi("out_min")
        self.i_hi = self.pi("out_max")
        self.i_inef = self.pi("inef_s")
        self.i_alarm = self.pi("alarm_hi")
        v = self.v
        self.pid = PID(v[self.i_kp], v[self.i_ki], v[self.i_kd], v[self.i_lo], v[self.i_hi])
        self.pid.reverse = self.reverse
        self.pv = self.s["pv"]
        self.configure()

    def configure(self):
        v = self.v
        pid = self.pid
        pid.kp = v[self.i_kp]
        pid.ki = v[self.i_ki]
        pid.kd = v[self.i_kd]
        pid.out_min = v[self.i_lo]
        pid.out_max = v[self.i_hi]
        self.out_min = v[self.i_lo]
        self.out_max = v[self.i_hi]

    def start(self):
        super().start()
        # a fresh run starts from the low output limit with an empty integrator
        self.pid.reset()
        self.pid.set_auto(True)
        self.output = self.pid.output

    def step(self, x, ok, dt_s, out, sup, t_ms):
        pid = self.pid
        m = self.measurement
        sp = self.setpoint
        if not ok & (1 << self.pv):
            # the sensor is not trusted (its fault is reported): hold the output
            out[self.main] = self.output
            return
        if not pid.auto:
            pid.set_auto(True)
        u = pid.update(sp, m, dt_s)
        out[self.main] = u
        self.output = u
        self.p = pid.p
        self.i = pid.i
        self.d = pid.d

    def hold(self, out):
        u = out[self.main]
        self.output = u
        # the PID follows the applied output (manual at u): bumpless on the return to auto
        self.pid.set_auto(False, u)

    def check(self, sup, x, ok, t_ms):
        m = x[self.pv]
        if ok & (1 << self.pv) and m > self.v[self.i_alarm]:
            sup.latch(codec.FAULT_OVER_TEMPERATURE, self.idx, m, t_ms)
        self.check_effective(sup, t_ms)


CONTROLLER = PidLoop
