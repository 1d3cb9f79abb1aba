"""The fault registry: what a scenario can break, when, for how long, and how the rig does it.

One class per kind (``FAULTS``: kind -> class), each with its name (``KIND``), what it models
(``DOC``), its keys (``KEYS``: name -> tables.Key), a ``check(cfg, ctx, where)`` that refuses it
where it makes no sense for the scenario's plant and board, and the hooks the rig calls:

* sensor faults act in the sensor layer (hil.sensors) on one wired channel: the board receives
  the faulty signal through its own front end, as on a real bench;
* actuator faults act between a board output and the plant input it drives: the board believes
  it commands X, the plant receives something else (``out.<ch>`` records the command,
  ``input.<name>`` what the plant got);
* plant faults change a parameter the plant declares CHANGEABLE (a leak, fouling, a lost
  chiller) or override a plant input (ambient, a runaway cell), as a step or a ramp;
* link faults act on the serial link (noise, lost frames, a silent host).

Every fault has ``t_s`` (start, simulated s) and ``duration_s`` (default: to the end of the run);
at its end a sensor or actuator heals and a plant parameter returns to its value before the
fault (a repair). A fault the board latched stays latched until a reset: healing the cause does
not clear it.
"""

import math
import os
import random

from .tables import REQUIRED, Key, ScenarioError

INF = math.inf

COMMON_KEYS = {
    "t_s": Key(float, REQUIRED, "start, simulated s", lo=0.0, unit="s"),
    "duration_s": Key(
        float, INF, "how long; default: to the end of the run", lo=0.0, lo_open=True
    ),
}


class Fault:
    """Base class; ``cfg`` is the checked table (kind, t_s, duration_s and the class's keys),
    ``index`` its position among the scenario's [[faults]] (0-based)."""

    KIND = ""
    GROUP = ""
    DOC = ""
    KEYS = {}
    ALIASES = {}

    def __init__(self, cfg, index=0, seed=0):
        self.cfg = cfg
        self.index = index
        self.t_s = cfg["t_s"]
        self.t_end = cfg["t_s"] + cfg["duration_s"]
        self.rng = random.Random(seed * 1009 + index)
        self.active = False

    @classmethod
    def keys(cls):
        return dict(COMMON_KEYS, **cls.KEYS)

    @classmethod
    def check(cls, cfg, ctx, where):
        """Raise ScenarioError where the fault makes no sense for ``ctx`` (scenario.Context)."""

    # hooks (the rig calls what a fault defines; defaults do nothing)
    def start(self, rig, t_s):
        pass

    def stop(self, rig, t_s):
        pass

    def label(self):
        """Short text for plots and tables: 'sensor_open ch0'."""
        extra = ""
        if "channel" in self.cfg:
            extra = " ch%d" % self.cfg["channel"]
        elif "param" in self.cfg:
            extra = " %s=%g" % (self.cfg["param"], self.cfg["value"])
        elif "input" in self.cfg:
            extra = " %s=%g" % (self.cfg["input"], self.cfg["value"])
        return self.KIND + extra


# -- sensors ---------------------------------------------------------------------------------

CHANNEL = Key(int, 0, "board sensor channel (a [[sensors]] channel)", lo=0)


class SensorFault(Fault):
    GROUP = "sensor"
    #: hil.sensors fault name and the keys passed to Sensor.inject
    SENSOR_KIND = ""
    ARGS = ()

    @classmethod
    def check(cls, cfg, ctx, where):
        ch = cfg["channel"]
        if ch not in ctx.wired_sensors:
            raise ScenarioError(
                "%s: %s on channel %d, but the rig feeds sensor channel(s) %s ([[sensors]])"
                % (
                    where,
                    cls.KIND,
                    ch,
                    ", ".join(str(c) for c in sorted(ctx.wired_sensors)) or "none",
                )
            )

    def start(self, rig, t_s):
        rig.sensor(self.cfg["channel"]).inject(
            self.SENSOR_KIND, **{a: self.cfg[a] for a in self.ARGS}
        )

    def stop(self, rig, t_s):
        rig.sensor(self.cfg["channel"]).clear()


class SensorOpen(SensorFault):
    KIND = "sensor_open"
    SENSOR_KIND = "open"
    DOC = "wire break: the front end reads its open-circuit value (an NTC reads far below range)"
    KEYS = {"channel": CHANNEL}


class SensorShort(SensorFault):
    KIND = "sensor_short"
    SENSOR_KIND = "short"
    DOC = "short circuit: the front end reads its short-circuit value (an NTC reads very hot)"
    KEYS = {"channel": CHANNEL}


class SensorStuck(SensorFault):
    KIND = "sensor_stuck"
    SENSOR_KIND = "stuck"
    DOC = "the reading holds the value it had when the fault began"
    KEYS = {"channel": CHANNEL}


class SensorDrift(SensorFault):
    KIND = "sensor_drift"
    SENSOR_KIND = "drift"
    DOC = "the reading drifts away from the truth at rate_per_s (SI unit of the output per s)"
    KEYS = {
        "channel": CHANNEL,
        "rate_per_s": Key(float, REQUIRED, "drift rate, SI unit per s (negative: downwards)"),
    }
    ALIASES = {"rate_k_per_s": "rate_per_s"}
    ARGS = ("rate_per_s",)


class SensorOffset(SensorFault):
    KIND = "sensor_offset"
    SENSOR_KIND = "offset"
    DOC = "a constant offset is added to the reading (calibration lost, a probe off its well)"
    KEYS = {"channel": CHANNEL, "offset": Key(float, REQUIRED, "offset, SI unit of the output")}
    ARGS = ("offset",)


class SensorGain(SensorFault):
    KIND = "sensor_gain"
    SENSOR_KIND = "gain"
    DOC = (
        "the reading is about + gain * (truth - about): a span error (about defaults to "
        "273.15 K for temperatures, 0 otherwise)"
    )
    KEYS = {
        "channel": CHANNEL,
        "gain": Key(float, REQUIRED, "span factor", lo=0.0),
        "about": Key(float, None, "the point the span turns about, SI"),
    }
    ARGS = ("gain", "about")

    def start(self, rig, t_s):
        about = self.cfg["about"]
        if about is None:
            about = 273.15 if rig.sensor_quantity(self.cfg["channel"]) == "temperature" else 0.0
        rig.sensor(self.cfg["channel"]).inject("gain", gain=self.cfg["gain"], about=about)


class SensorNoise(SensorFault):
    KIND = "sensor_noise"
    SENSOR_KIND = "noise"
    DOC = "a burst of extra Gaussian noise (noise: standard deviation, SI) on the reading"
    KEYS = {
        "channel": CHANNEL,
        "noise": Key(float, REQUIRED, "standard deviation, SI unit", lo=0.0, lo_open=True),
    }
    ARGS = ("noise",)


class SensorIntermittent(SensorFault):
    KIND = "sensor_intermittent"
    SENSOR_KIND = "intermittent"
    DOC = "a loose contact: the channel reads open for dropout_s every period_s"
    KEYS = {
        "channel": CHANNEL,
        "dropout_s": Key(float, REQUIRED, "length of each dropout", lo=0.0, lo_open=True),
        "period_s": Key(float, REQUIRED, "time between dropout starts", lo=0.0, lo_open=True),
    }
    ARGS = ("dropout_s", "period_s")

    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        if not cfg["dropout_s"] < cfg["period_s"]:
            raise ScenarioError(
                "%s: dropout_s = %g must be shorter than period_s = %g (or use sensor_open)"
                % (where, cfg["dropout_s"], cfg["period_s"])
            )


class SensorDelayed(SensorFault):
    KIND = "sensor_delayed"
    SENSOR_KIND = "delayed"
    DOC = "the reading is the healthy value of delay_s ago (a stale channel, a slow filter)"
    KEYS = {
        "channel": CHANNEL,
        "delay_s": Key(float, REQUIRED, "delay", lo=0.0, lo_open=True, unit="s"),
    }
    ARGS = ("delay_s",)


class SensorGarbage(SensorFault):
    KIND = "sensor_garbage"
    SENSOR_KIND = "garbage"
    DOC = "random readings, uniform over the front end's range, a new one every tick"
    KEYS = {"channel": CHANNEL}


# -- actuators -------------------------------------------------------------------------------

ACT_CHANNEL = Key(int, 0, "board actuator channel (an [[actuators]] channel)", lo=0)


class ActuatorFault(Fault):
    """Acts on the plant input an [[actuators]] entry drives: ``apply(value, t_s, dt_s)``
    turns what the board commands (in the plant input's unit) into what the plant gets."""

    GROUP = "actuator"

    @classmethod
    def check(cls, cfg, ctx, where):
        ch = cfg["channel"]
        if ch not in ctx.wired_actuators:
            raise ScenarioError(
                "%s: %s on actuator channel %d, but the scenario wires actuator channel(s) %s "
                "([[actuators]])"
                % (
                    where,
                    cls.KIND,
                    ch,
                    ", ".join(str(c) for c in sorted(ctx.wired_actuators)) or "none",
                )
            )

    def apply(self, value, t_s, dt_s):
        return value


class ActuatorStuck(ActuatorFault):
    KIND = "actuator_stuck"
    DOC = "the actuator holds where it was when the fault began (a seized valve or damper)"
    KEYS = {"channel": ACT_CHANNEL}

    def start(self, rig, t_s):
        self.held = rig.plant_input_now(self.cfg["channel"])

    def apply(self, value, t_s, dt_s):
        return self.held


class ActuatorSlow(ActuatorFault):
    KIND = "actuator_slow"
    DOC = (
        "the actuator follows its command at most rate_per_s (board output unit per s): a "
        "sticky valve, a weak motor"
    )
    KEYS = {
        "channel": ACT_CHANNEL,
        "rate_per_s": Key(float, REQUIRED, "board output unit per s", lo=0.0, lo_open=True),
    }

    def start(self, rig, t_s):
        a = rig.actuator_cfg(self.cfg["channel"])
        # the rate is given in the board's output unit; the plant input is scaled
        self.rate = self.cfg["rate_per_s"] * abs(a["scale"])
        self.pos = rig.plant_input_now(self.cfg["channel"])

    def apply(self, value, t_s, dt_s):
        step = self.rate * dt_s
        self.pos += max(-step, min(step, value - self.pos))
        return self.pos


class ActuatorLostSteps(ActuatorFault):
    KIND = "actuator_lost_steps"
    DOC = (
        "a stepper loses steps: of every move it makes only part (fraction lost, or "
        "steps_per_move lost per move), so its real position drifts from the count; the plant "
        "sees the real position"
    )
    KEYS = {
        "channel": ACT_CHANNEL,
        "fraction": Key(float, None, "part of each move lost", lo=0.0, hi=1.0, lo_open=True),
        "steps_per_move": Key(float, None, "steps lost per move", lo=0.0, lo_open=True),
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        super().check(cfg, ctx, where)
        if (cfg["fraction"] is None) == (cfg["steps_per_move"] is None):
            raise ScenarioError(
                "%s: actuator_lost_steps needs one of fraction or steps_per_move" % where
            )
        ch = cfg["channel"]
        board_act = ctx.board_actuator(ch)
        inp = ctx.wired_actuators[ch]["input"]
        stepper = (
            board_act.get("kind") == "stepper"
            or "steps" in board_act
            or ctx.input_unit(inp) == "steps"
        )
        if not stepper:
            raise ScenarioError(
                "%s: actuator_lost_steps on channel %d (%s -> %s): that actuator is not a "
                "stepper; only a stepper loses steps (try actuator_partial or actuator_slow)"
                % (where, ch, board_act.get("name", "?"), inp)
            )

    def start(self, rig, t_s):
        self.pos = rig.plant_input_now(self.cfg["channel"])
        self.last_cmd = None

    def apply(self, value, t_s, dt_s):
        if self.last_cmd is None:
            self.last_cmd = value
        move = value - self.last_cmd
        self.last_cmd = value
        if move:
            if self.cfg["fraction"] is not None:
                move *= 1.0 - self.cfg["fraction"]
            else:
                lost = min(abs(move), self.cfg["steps_per_move"])
                move -= math.copysign(lost, move)
            self.pos += move
        return self.pos


class ActuatorDead(ActuatorFault):
    KIND = "actuator_dead"
    DOC = "the plant input reads 0 whatever the board commands (a dead pump, a cut wire)"
    KEYS = {"channel": ACT_CHANNEL}

    def apply(self, value, t_s, dt_s):
        return 0.0


class ActuatorPartial(ActuatorFault):
    KIND = "actuator_partial"
    DOC = "the plant gets factor times the command (pump wear, a partly blocked valve)"
    KEYS = {
        "channel": ACT_CHANNEL,
        "factor": Key(float, REQUIRED, "fraction of the command delivered", lo=0.0, hi=1.0),
    }

    def apply(self, value, t_s, dt_s):
        return value * self.cfg["factor"]


# -- plant -----------------------------------------------------------------------------------

RAMP = Key(float, 0.0, "reach the value over this time (0: a step)", lo=0.0, unit="s")


def _check_range(where, name, value, lo, hi, unit):
    if not lo <= value <= hi:
        raise ScenarioError(
            "%s: %s = %g out of range; expected %g..%g %s" % (where, name, value, lo, hi, unit)
        )


def _ramped(fault, t_s):
    """The value a plant fault applies at t_s: `value` at once, or over ramp_s from `old`."""
    ramp = fault.cfg["ramp_s"]
    a = 1.0 if ramp <= 0.0 else min(1.0, (t_s - fault.t_s) / ramp)
    return fault.old + a * (fault.cfg["value"] - fault.old)


class PlantChange(Fault):
    KIND = "plant_change"
    GROUP = "plant"
    DOC = (
        "a plant parameter the plant declares CHANGEABLE goes to value (a leak: charge_kg, "
        "fouling: *_ua_*, a lost chiller: chiller_capacity_w, a worn pump: pump_health), "
        "as a step or a ramp; back to its old value at the end of duration_s"
    )
    KEYS = {
        "param": Key(str, REQUIRED, "a CHANGEABLE parameter of the plant (docs/plants.md)"),
        "value": Key(float, REQUIRED, "new value, the parameter's unit"),
        "ramp_s": RAMP,
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        name = cfg["param"]
        if name not in ctx.changeable:
            raise ScenarioError(
                "%s: plant %s cannot change %r while running; changeable: %s"
                % (where, ctx.model, name, ", ".join(sorted(ctx.changeable)) or "none")
            )
        unit, lo, hi, _doc = ctx.changeable[name]
        _check_range(where, name, cfg["value"], lo, hi, unit)

    def start(self, rig, t_s):
        self.old = rig.plant.param(self.cfg["param"])
        if self.cfg["ramp_s"] <= 0.0:
            rig.plant.set_param(self.cfg["param"], self.cfg["value"])

    def tick(self, rig, t_s):
        if self.cfg["ramp_s"] > 0.0:
            rig.plant.set_param(self.cfg["param"], _ramped(self, t_s))

    def stop(self, rig, t_s):
        rig.plant.set_param(self.cfg["param"], self.old)


class PlantInput(Fault):
    KIND = "plant_input"
    GROUP = "plant"
    DOC = (
        "a plant input is overridden with value (ambient, a runaway cell's heat runaway_w), "
        "as a step or a ramp from its value at the start"
    )
    KEYS = {
        "input": Key(str, REQUIRED, "a plant input that no board actuator drives"),
        "value": Key(float, REQUIRED, "value, the input's unit"),
        "ramp_s": RAMP,
    }

    @classmethod
    def check(cls, cfg, ctx, where):
        name = cfg["input"]
        if name not in ctx.inputs:
            raise ScenarioError(
                "%s: plant %s has no input %r; its inputs: %s"
                % (where, ctx.model, name, ", ".join(ctx.inputs))
            )
        if name in ctx.driven_inputs:
            raise ScenarioError(
                "%s: input %r is driven by board actuator channel %d; use an actuator_* fault "
                "(actuator_stuck, actuator_dead, actuator_partial) for it"
                % (where, name, ctx.driven_inputs[name])
            )
        _default, lo, hi, kind, unit = ctx.inputs[name]
        if kind == "check":
            _check_range(where, name, cfg["value"], lo, hi, unit)

    def start(self, rig, t_s):
        self.old = rig.base_input(self.cfg["input"], t_s)

    def override(self, inputs, t_s):
        inputs[self.cfg["input"]] = _ramped(self, t_s)


class Runaway(PlantInput):
    """The old ``runaway`` kind (``power_w``): plant_input runaway_w. Kept as an alias."""

    KIND = "runaway"
    DOC = "alias of plant_input with input = runaway_w, value = power_w (battery_loop only)"
    KEYS = {"power_w": Key(float, 500.0, "heat into the runaway cell group", lo=0.0, unit="W")}

    @classmethod
    def normalise(cls, cfg):
        return {
            "kind": "plant_input",
            "t_s": cfg["t_s"],
            "duration_s": cfg["duration_s"],
            "input": "runaway_w",
            "value": cfg["power_w"],
            "ramp_s": 0.0,
        }


# -- link ------------------------------------------------------------------------------------


class LinkNoise(Fault):
    KIND = "link_noise"
    GROUP = "link"
    DOC = "random bytes written into the serial link before every HIL frame"
    KEYS = {
        "bytes_per_step": Key(int, 16, "random bytes per tick", lo=1, hi=4096),
    }

    def before_frame(self, rig):
        rig.write_raw(os.urandom(self.cfg["bytes_per_step"]))
        return True


class LinkDrop(Fault):
    KIND = "link_drop"
    GROUP = "link"
    DOC = (
        "HIL frames lost on the way to the board (seeded): the board sees a gap in simulated "
        "time and runs the missed ticks with the next frame; the plant meanwhile gets the last "
        "outputs. In lockstep a lost frame costs no wall time (host_silence is the lost host)"
    )
    KEYS = {"fraction": Key(float, REQUIRED, "part of the frames lost", lo=0.0, hi=1.0)}

    def start(self, rig, t_s):
        self.run = 0

    def before_frame(self, rig):
        # never let the gap reach the board's max time jump: it would refuse the next frame
        if self.run + 2 >= rig.max_gap_ticks or self.rng.random() >= self.cfg["fraction"]:
            self.run = 0
            return True
        self.run += 1
        return False


class HostSilence(Fault):
    KIND = "host_silence"
    GROUP = "link"
    DOC = (
        "the rig sends nothing for duration_s of wall-clock time (a hung or unplugged host); "
        "simulated time stands still meanwhile"
    )
    KEYS = {
        "duration_s": Key(float, REQUIRED, "wall-clock silence", lo=0.0, hi=600.0, lo_open=True)
    }

    def __init__(self, cfg, index=0, seed=0):
        super().__init__(cfg, index, seed)
        self.t_end = self.t_s  # an instant in simulated time

    def start(self, rig, t_s):
        rig.silence(self.cfg["duration_s"])


FAULTS = {
    cls.KIND: cls
    for cls in (
        SensorOpen,
        SensorShort,
        SensorStuck,
        SensorDrift,
        SensorOffset,
        SensorGain,
        SensorNoise,
        SensorIntermittent,
        SensorDelayed,
        SensorGarbage,
        ActuatorStuck,
        ActuatorSlow,
        ActuatorLostSteps,
        ActuatorDead,
        ActuatorPartial,
        PlantChange,
        PlantInput,
        LinkNoise,
        LinkDrop,
        HostSilence,
    )
}
#: old kinds that still load: kind -> class that turns them into a registry kind
ALIAS_KINDS = {"runaway": Runaway}


def make(cfg, index, seed=0):
    """The fault object for a checked [[faults]] table."""
    return FAULTS[cfg["kind"]](cfg, index, seed)
