# Controllers are plug-ins. A board definition's loop names its controller ("controller":
# "pid"); REGISTRY maps that name to the module that holds it, imported only when a board
# uses it. Adding a controller is one new module (a subclass of Controller, exported as
# CONTROLLER) and one line here; app.py does not change.
#
# A controller declares
#   SENSORS / ACTUATORS     roles it needs from the loop's "sensors" / "actuators" maps
#                           (OPT_SENSORS / OPT_ACTUATORS: roles it uses when wired)
#   rows(cfg, board)        its parameter rows: (suffix, unit, quantity, type, min, max,
#                           default), named "<loop>.<suffix>" on the board
#   RULES                   cross-parameter rules (suffix_a, suffix_b, gap):
#                           value_a + gap <= value_b
#   FIELDS                  up to 8 extra telemetry fields: (name, quantity)
#   QUANTITY / SP           what its setpoint and measurement measure; its setpoint's suffix
# and offers configure() (re-read parameters), sense() (derive the measurement every tick),
# step() (one tick in auto), hold() (track
# outputs set by someone else: manual, off, the supervisor's safe state, bumpless on return),
# safe() (its safe sequence), check() (its own fault detection, in auto) and watch()
# (protection that runs in every mode and in the safe state).
import math
from array import array

from micropython import const

from . import codec
from .supervisor import elapsed

REGISTRY = {
    "pid": "ctl_pid",
    "batt": "ctl_batt",
    "chip": "ctl_chip",
    "hp": "ctl_hp",
    "mpc": "ctl_mpc",
}

_NO_T = const(-1)
F32 = codec.PTYPE_F32


def controller_class(name):
    """The controller class registered as `name`; ValueError names the known ones."""
    mod = REGISTRY.get(name)
    if mod is None:
        raise ValueError(
            "unknown controller %r; known: %s" % (name, ", ".join(sorted(REGISTRY.keys())))
        )
    return __import__("tpfw." + mod, None, None, ("CONTROLLER",)).CONTROLLER


def quantity(name):
    """codec.Q_* code of a quantity name ("temperature", "pressure", ...)."""
    code = getattr(codec, "Q_" + name.upper(), None)
    if code is None:
        raise ValueError("unknown quantity %r" % name)
    return code


class Controller:
    KIND = ""
    SENSORS = ("pv",)
    OPT_SENSORS = ()
    ACTUATORS = ("out",)
    OPT_ACTUATORS = ()
    QUANTITY = "temperature"
    FIELDS = ()
    RULES = ()
    SP = "sp"

    @classmethod
    def rows(cls, cfg, board):
        return []

    def __init__(self, idx, cfg, board, params):
        self.idx = idx
        self.name = cfg["name"]
        self.cfg = cfg
        self.board = board
        self.params = params
        self.v = params.values
        sensors = cfg.get("sensors", {})
        actuators = cfg.get("actuators", {})
        # channel of each role, -1 for an optional role that is not wired
        self.s = {}
        for r in self.SENSORS + self.OPT_SENSORS:
            self.s[r] = sensors.get(r, -1)
        self.a = {}
        for r in self.ACTUATORS + self.OPT_ACTUATORS:
            self.a[r] = actuators.get(r, -1)
        self.acts = tuple(c for c in self.a.values() if c >= 0)
        self.main = self.a[self.ACTUATORS[0]]
        am = board["actuators"][self.main]
        self.out_min = am.get("min", 0.0)
        self.out_max = am.get("max", 1.0)
        self.i_sp = self.pi(self.SP)
        self.mode = codec.MODE_AUTO
        self.state = 0
        self.setpoint = math.nan
        self.measurement = math.nan
        self.output = 0.0
        self.p = 0.0
        self.i = 0.0
        self.d = 0.0
        self.fields = array("f", [0.0] * 8)
        self.manual_output = self.out_min
        self.reverse = bool(cfg.get("reverse", False))
        self.mode_t = 0  # board time of the last mode change
        # control-ineffective watch: time the output reached its limit, error then
        self._sat_t = _NO_T
        self._sat_e = 0.0

    def pi(self, suffix):
        """Index of this loop's parameter `suffix` (resolved once, at start)."""
        return self.params.index[self.name + "." + suffix]

    # ---- called by the app ----------------------------------------------------------------

    def configure(self):
        """Parameters changed (or the app started): re-read them into the maths."""

    def start(self):
        """A run begins (boot, or a HIL run starting on a fresh plant): forget the dynamic
        state of the last one."""
        self._sat_t = _NO_T

    def on_upload(self, slot):
        """A new blob was stored in upload slot `slot` (e.g. an MPC model)."""

    def sense(self, x, ok, dt_s, t_ms):
        """Every tick, whatever the mode: derive this loop's measurement (and fields) from the
        SI sensor values x[] (healthy bitmask ok). Default: the first sensor role."""
        self.measurement = x[self.s[self.SENSORS[0]]]
        self.setpoint = self.v[self.i_sp]

    def step(self, x, ok, dt_s, out, sup, t_ms):
        """One tick in auto: read SI sensor values x[] (healthy bitmask ok), write this
        loop's actuator outputs into out[]."""
        raise NotImplementedError

    def hold(self, out):
        """Outputs in out[] were set by someone else: track them, so that the return to auto
        is bumpless."""
        self.output = out[self.main]

    def manual(self, x, ok, dt_s, out, sup, t_ms):
        v = self.manual_output
        out[self.main] = (
            self.out_min if v < self.out_min else self.out_max if v > self.out_max else v
        )
        for c in self.acts:
            if c != self.main:
                out[c] = self.board["actuators"][c].get("safe", 0.0)
        self.hold(out)

    def off(self, out, t_since_s):
        """Mode off: every actuator of the loop to its "off" value (default: its safe one)."""
        acts = self.board["actuators"]
        for c in self.acts:
            out[c] = acts[c].get("off", acts[c].get("safe", 0.0))
        self.hold(out)

    def safe(self, faults, t_since_s, out):
        """The safe state, t_since_s after it began: an ordered sequence. By default each
        actuator goes to its board "safe" value once "safe_after_s" has passed (until then it
        holds its last output), so a board definition can order them; controllers with a
        plant-specific sequence (compressor off, pump-down, valve closed) override this."""
        acts = self.board["actuators"]
        for c in self.acts:
            if t_since_s >= acts[c].get("safe_after_s", 0.0):
                out[c] = acts[c].get("safe", 0.0)
        self.hold(out)

    def check(self, sup, x, ok, t_ms):
        """This controller's own fault detection, every tick in auto (default: control
        ineffective)."""
        self.check_effective(sup, t_ms)

    def watch(self, sup, x, ok, t_ms):
        """Protection that must run every tick in every mode, the safe state included (a
        thermal runaway or a junction over its limit must latch whatever else is latched, also
        while someone drives the loop by hand). Default: none."""

    # ---- shared checks ----------------------------------------------------------------------

    def check_effective(self, sup, t_ms, inef_s=None, margin=None):
        """Control ineffective: the output sits at the limit that should reduce the error for
        longer than inef_s while the error grew by more than margin since it got there."""
        if inef_s is None:
            inef_s = self.v[self.i_inef] if hasattr(self, "i_inef") else 0.0
        if margin is None:
            margin = self.v[self.i_inef_m] if hasattr(self, "i_inef_m") else 1.0
        if inef_s <= 0.0:
            return
        e = self.setpoint - self.measurement
        if self.reverse:
            e = -e
        # e > 0 asks for more output; the output cannot give more at its upper limit
        span = self.out_max - self.out_min
        at_hi = e > 0.0 and self.output >= self.out_max - 1e-3 * span
        at_lo = e < 0.0 and self.output <= self.out_min + 1e-3 * span
        if not (at_hi or at_lo) or e != e:
            self._sat_t = _NO_T
            return
        ae = abs(e)
        if self._sat_t == _NO_T:
            self._sat_t = t_ms
            self._sat_e = ae
            return
        if ae < self._sat_e:
            self._sat_e = ae  # judged against the smallest error seen at the limit
        if elapsed(t_ms, self._sat_t) >= inef_s * 1000.0 and ae > self._sat_e + margin:
            sup.latch(codec.FAULT_CONTROL_INEFFECTIVE, self.idx, e, t_ms)
