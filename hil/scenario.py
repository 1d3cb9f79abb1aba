"""HIL scenario files (TOML, SCENARIO_V2.md): plant, wiring, setpoints, faults and criteria.

A scenario is checked completely when it is loaded, without building the plant or starting a
board, so that a mistake fails in well under a second with a message naming the file, the
table, the key, the value and what was expected: every key of every table (a misspelling names
the valid keys), every window against the duration, every channel against the board, the board
and the plant against each other (what a board channel measures against the plant output wired
to it), every signal a criterion names, and the name (a safe file name: the report goes to
``report/NAME/``). Faults and criteria come from the registries in :mod:`hil.faults` and
:mod:`hil.criteria`. Today's older keys still load as aliases (``kind``/``noise_k``/``quant_k``
in [[sensors]], ``value_k``/``value_c`` in [[setpoints]], the criteria ``overshoot_max``,
``measurement_between``, ``actuator_below`` with ``band_k``/``max_k``/``min_c``..., the fault
``runaway`` with ``power_w``).

``load(path)`` returns a plain dict (JSON-able) with defaults filled in; ``context(sc)`` the
:class:`Context` the rig, the criteria and the plots use.
"""

import copy
import math
import pathlib
import re

import tomllib

from . import criteria as criteria_mod
from . import faults as faults_mod
from . import resources, signals
from .sensors import PRESETS, default_preset
from .tables import REQUIRED, Key, ScenarioError, choice_message, read_table

__all__ = ["ScenarioError", "load", "check", "context", "Context", "bundled"]

C_TO_K = 273.15
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: sensor channels a HIL frame carries, actuator outputs an answer carries
N_SENSORS = 16
N_ACTUATORS = 8

TOP_KEYS = {
    "name": Key(str, REQUIRED, "[A-Za-z0-9_-]+; the report goes to report/NAME/"),
    "description": Key(str, "", "one line for hil list"),
    "duration_s": Key(float, REQUIRED, "simulated s", lo=0.0, hi=30 * 86400.0, lo_open=True),
    "board": Key(str, "virtual", "board definition name or .json path"),
    "params": Key(dict, {}, "board parameters set before the run"),
    "plant": Key(dict, REQUIRED, "model and params"),
    "inputs": Key(dict, {}, "constant plant inputs, SI"),
    "profile": Key(list, [], "piecewise-linear or stored plant inputs"),
    "sensors": Key(list, REQUIRED, "board sensor channel <- plant output"),
    "actuators": Key(list, REQUIRED, "board actuator channel -> plant input"),
    "setpoints": Key(list, [], "setpoint commands over time"),
    "faults": Key(list, [], "faults (hil.faults registry)"),
    "criteria": Key(list, REQUIRED, "pass/fail criteria (hil.criteria registry)"),
}
PLANT_KEYS = {
    "model": Key(str, REQUIRED, "plant model"),
    "params": Key(dict, {}, "plant PARAMS overrides"),
}
SENSOR_KEYS = {
    "channel": Key(int, REQUIRED, "board sensor channel", lo=0),
    "output": Key(str, REQUIRED, "plant output wired to it"),
    "preset": Key(str, None, "front end: %s (default: the board's)" % " | ".join(PRESETS)),
    "noise": Key(float, 0.0, "noise standard deviation, SI", lo=0.0),
    "quant": Key(float, 0.0, "quantisation step, SI", lo=0.0),
    "lag_s": Key(float, 0.0, "first-order lag", lo=0.0, unit="s"),
}
SENSOR_ALIASES = {"kind": "preset", "noise_k": "noise", "quant_k": "quant"}
ACTUATOR_KEYS = {
    "channel": Key(int, REQUIRED, "board actuator channel", lo=0),
    "input": Key(str, REQUIRED, "plant input it drives"),
    "scale": Key(float, 1.0, "plant input = output * scale + offset"),
    "offset": Key(float, 0.0, "plant input = output * scale + offset"),
}
SETPOINT_KEYS = {
    "t_s": Key(float, REQUIRED, "when, simulated s", lo=0.0),
    "loop": Key((str, int), 0, "loop name or index"),
    "value": Key(float, None, "in the loop's SI unit"),
    "value_c": Key(float, None, "degC (a temperature loop)"),
    "value_k": Key(float, None, "K"),
}
PROFILE_KEYS = {
    "input": Key(str, None, "plant input (default for a stored profile: the column name)"),
    "t_s": Key(list, None, "times, s"),
    "values": Key(list, None, "values, SI"),
    "file": Key(str, None, "stored profile name (hil/profiles)"),
    "column": Key(str, None, "column of the stored profile"),
    "scale": Key(float, 1.0, "multiplies the values"),
}


# -- the context: board + plant as a scenario sees them --------------------------------------


class Context:
    """What the checks, the rig and the plots know about a scenario's board and plant."""

    def __init__(self, sc, board, plant_cls):
        self.name = sc.get("name", "?")
        self.duration_s = sc["duration_s"]
        self.board = board
        self.board_name = board.get("name", sc["board"])
        self.model = sc["plant"]["model"]
        self.plant_cls = plant_cls
        self.outputs = signals.plant_outputs(self.model, sc["plant"]["params"])
        self.inputs = dict(plant_cls.INPUTS)
        self.changeable = dict(plant_cls.CHANGEABLE)
        self.loops = signals.loop_info(board)
        self.loop_names = [lp["name"] for lp in self.loops]
        self.wired_sensors = {}
        self.wired_actuators = {}
        self.driven_inputs = {}
        self.faults = []
        self.dt_s = 1.0 / float(board.get("tick_hz", 10.0))

    def loop(self, ref):
        """Loop info by name, index or None (the first)."""
        if ref is None:
            ref = 0
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        if isinstance(ref, int):
            return self.loops[ref] if 0 <= ref < len(self.loops) else None
        for lp in self.loops:
            if lp["name"] == ref:
                return lp
        return None

    def judged_signal(self, info):
        """What loop criteria compare with the setpoint: the plant truth of the loop's pv
        sensor when the scenario wires it, else the board's measurement."""
        pv = info["sensors"].get("pv")
        if pv is not None and pv in self.wired_sensors:
            return "plant." + self.wired_sensors[pv]["output"]
        return "loop.%s.measurement" % info["name"]

    def board_actuator(self, ch):
        return self.board["actuators"][ch]

    def actuator_channel(self, ref):
        acts = self.board.get("actuators", [])
        if ref.isdigit():
            ch = int(ref)
            return ch if ch < len(acts) else None
        for k, a in enumerate(acts):
            if a.get("name") == ref:
                return k
        return None

    def actuator_names(self):
        return ["%d (%s)" % (k, a.get("name", "?")) for k, a in enumerate(self.board["actuators"])]

    def input_unit(self, name):
        return self.inputs.get(name, (0, 0, 0, "", ""))[4]


def context(sc):
    """The :class:`Context` of a loaded scenario dict."""
    from .plants import PLANTS

    ctx = Context(sc, resources.load_board(sc["board_path"]), PLANTS[sc["plant"]["model"]])
    ctx.wired_sensors = {s["channel"]: s for s in sc["sensors"]}
    ctx.wired_actuators = {a["channel"]: a for a in sc["actuators"]}
    ctx.driven_inputs = {a["input"]: a["channel"] for a in sc["actuators"]}
    ctx.faults = sc["faults"]
    return ctx


# -- loading ---------------------------------------------------------------------------------


def load(path):
    """Read and check a scenario file; returns a dict with defaults filled in."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ScenarioError("scenario file %s does not exist" % path)
    if path.is_dir():
        raise ScenarioError("scenario file %s is a directory; expected a .toml file" % path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError("%s is not valid TOML: %s" % (path, exc)) from None
    return check(raw, str(path), base_dir=path.parent)


def bundled():
    """(name, path, description) of every bundled scenario (hil/scenarios)."""
    out = []
    for p in sorted(resources.scenarios_dir().glob("*.toml")):
        try:
            desc = tomllib.loads(p.read_text()).get("description", "")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            desc = "(not valid TOML)"
        out.append((p.stem, p, desc))
    return out


def _board_path(ref, where, base_dir):
    p = pathlib.Path(ref)
    if p.suffix == ".json" and not p.is_absolute() and base_dir is not None:
        q = pathlib.Path(base_dir) / p
        if q.exists():
            return q
    try:
        return resources.board_path(ref)
    except ValueError as exc:
        raise ScenarioError("%s: board = %r: %s" % (where, ref, exc)) from None


def check(raw, where="scenario", base_dir=None):
    """Check a scenario given as the dict TOML gives; returns the normalised dict."""
    top = read_table(raw, TOP_KEYS, where)
    if not NAME_RE.match(top["name"]):
        raise ScenarioError(
            "%s: name = %r; expected 1-64 letters, digits, '_' or '-' (it names the report "
            "directory report/NAME/)" % (where, top["name"])
        )
    sc = {
        "name": top["name"],
        "description": top["description"],
        "duration_s": top["duration_s"],
        "board": top["board"],
    }
    bpath = _board_path(top["board"], where, base_dir)
    sc["board_path"] = str(bpath)
    board = resources.load_board(bpath)
    sc["plant"] = _check_plant(top["plant"], where + " [plant]")
    from .plants import PLANTS

    ctx = Context(sc, board, PLANTS[sc["plant"]["model"]])
    dur = sc["duration_s"]

    # [[sensors]]
    sc["sensors"] = []
    n_board_s = len(board.get("sensors", []))
    for k, s in enumerate(top["sensors"]):
        w = "%s [[sensors]][%d]" % (where, k)
        cfg = read_table(s, SENSOR_KEYS, w, SENSOR_ALIASES)
        ch = cfg["channel"]
        if not ch < min(n_board_s, N_SENSORS):
            raise ScenarioError(
                "%s: channel = %d, but board %s has sensor channels 0..%d (%s)"
                % (
                    w,
                    ch,
                    ctx.board_name,
                    n_board_s - 1,
                    ", ".join(x.get("name", "?") for x in board.get("sensors", [])),
                )
            )
        if ch in ctx.wired_sensors:
            raise ScenarioError("%s: channel %d is wired twice" % (w, ch))
        bs = board["sensors"][ch]
        if cfg["output"] not in ctx.outputs:
            raise ScenarioError(
                choice_message(w, "output", cfg["output"], ctx.outputs) + " (plant %s)" % ctx.model
            )
        if cfg["preset"] is None:
            cfg["preset"] = default_preset(bs)
        if cfg["preset"] not in PRESETS:
            raise ScenarioError(choice_message(w, "preset", cfg["preset"], list(PRESETS)))
        if bs.get("kind", "ntc") not in PRESETS[cfg["preset"]]:
            raise ScenarioError(
                "%s: preset = %r does not fit board %s channel %d (%s, a %s front end); use "
                "preset = %r" % (
                    w, cfg["preset"], ctx.board_name, ch, bs.get("name", "?"),
                    bs.get("kind", "ntc"), default_preset(bs),
                )
            )  # fmt: skip
        q_out = signals.output_quantity(cfg["output"])
        q_board = signals.sensor_quantity(bs)
        if q_out != q_board:
            raise ScenarioError(
                "%s: plant output %s is a %s but board %s channel %d (%s) measures a %s; is "
                "this scenario meant for another board?"
                % (w, cfg["output"], q_out, ctx.board_name, ch, bs.get("name", "?"), q_board)
            )
        ctx.wired_sensors[ch] = cfg
        sc["sensors"].append(cfg)
    if not sc["sensors"]:
        raise ScenarioError("%s: [[sensors]] is empty; wire at least one channel" % where)

    # [[actuators]]
    sc["actuators"] = []
    n_board_a = len(board.get("actuators", []))
    for k, a in enumerate(top["actuators"]):
        w = "%s [[actuators]][%d]" % (where, k)
        cfg = read_table(a, ACTUATOR_KEYS, w)
        ch = cfg["channel"]
        if not ch < min(n_board_a, N_ACTUATORS):
            raise ScenarioError(
                "%s: channel = %d, but board %s has actuator channels 0..%d (%s)"
                % (w, ch, ctx.board_name, n_board_a - 1, ", ".join(ctx.actuator_names()))
            )
        if ch in ctx.wired_actuators:
            raise ScenarioError("%s: channel %d is wired twice" % (w, ch))
        if cfg["input"] not in ctx.inputs:
            raise ScenarioError(
                choice_message(w, "input", cfg["input"], list(ctx.inputs))
                + " (plant %s)" % ctx.model
            )
        if cfg["input"] in ctx.driven_inputs:
            raise ScenarioError(
                "%s: input %s is already driven by channel %d"
                % (w, cfg["input"], ctx.driven_inputs[cfg["input"]])
            )
        if cfg["scale"] == 0.0:
            raise ScenarioError("%s: scale = 0 would cut the actuator off the plant" % w)
        _check_actuator_range(cfg, board["actuators"][ch], ctx, w)
        ctx.wired_actuators[ch] = cfg
        ctx.driven_inputs[cfg["input"]] = ch
        sc["actuators"].append(cfg)
    if not sc["actuators"]:
        raise ScenarioError("%s: [[actuators]] is empty; wire at least one channel" % where)

    # [inputs] and [[profile]]
    sc["inputs"] = {}
    for name, v in top["inputs"].items():
        w = "%s [inputs]" % where
        _check_input(name, v, ctx, w, "[inputs]")
        sc["inputs"][name] = float(v)
    sc["profile"] = []
    for k, pr in enumerate(top["profile"]):
        w = "%s [[profile]][%d]" % (where, k)
        sc["profile"].append(_check_profile(pr, ctx, w))

    # [[setpoints]]
    sc["setpoints"] = []
    for k, s in enumerate(top["setpoints"]):
        w = "%s [[setpoints]][%d]" % (where, k)
        sc["setpoints"].append(_check_setpoint(s, ctx, w, dur))
    sc["setpoints"].sort(key=lambda s: s["t_s"])

    # [params]
    sc["params"] = {}
    globals_ = signals.global_param_names()
    allowed = sorted({g.split(".", 1)[0] for g in globals_ or ()}) + ctx.loop_names
    for name, v in top["params"].items():
        w = "%s [params]" % where
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ScenarioError("%s: %r = %r is not a finite number" % (w, name, v))
        if len(name.encode()) > 16:
            raise ScenarioError("%s: %r is longer than 16 bytes (a board name)" % (w, name))
        prefix = name.split(".", 1)[0]
        # a parameter is <loop>.<suffix> or board-wide; the board checks the rest before the run
        if globals_ is not None and name not in globals_ and prefix not in ctx.loop_names:
            raise ScenarioError(
                "%s: %r is not a parameter of board %s (its parameters start with %s); is this "
                "scenario meant for another board?"
                % (w, name, ctx.board_name, ", ".join(p + "." for p in allowed))
            )
        sc["params"][name] = float(v)

    # [[faults]]
    sc["faults"] = []
    ctx.faults = sc["faults"]
    for k, f in enumerate(top["faults"]):
        w = "%s [[faults]][%d]" % (where, k)
        sc["faults"].append(_check_fault(f, ctx, w, dur))
    _check_overlaps(sc["faults"], where)

    # [[criteria]]
    sc["criteria"] = []
    for k, c in enumerate(top["criteria"]):
        w = "%s [[criteria]][%d]" % (where, k)
        sc["criteria"].append(_check_criterion(c, ctx, w))
    if not sc["criteria"]:
        raise ScenarioError("%s: [[criteria]] is empty; a run needs something to judge" % where)
    return sc


def _check_plant(raw, where):
    from .plants import PLANTS

    cfg = read_table(raw, PLANT_KEYS, where)
    model = cfg["model"]
    if model not in PLANTS:
        raise ScenarioError(choice_message(where, "model", model, sorted(PLANTS)))
    cls = PLANTS[model]
    params = {}
    for name, v in cfg["params"].items():
        if name not in cls.PARAMS:
            raise ScenarioError(
                choice_message(where + " params", "parameter", name, sorted(cls.PARAMS))
            )
        default = cls.PARAMS[name][0]
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ScenarioError(
                    "%s params: %s = %r; expected a finite number (default %r %s)"
                    % (where, name, v, default, cls.PARAMS[name][1])
                )
        if name in cls.CHANGEABLE:
            unit, lo, hi, _doc = cls.CHANGEABLE[name]
            if not lo <= v <= hi:
                raise ScenarioError(
                    "%s params: %s = %r out of range; expected %g..%g %s"
                    % (where, name, v, lo, hi, unit)
                )
        params[name] = v
    return {"model": model, "params": params}


def _check_actuator_range(cfg, act, ctx, where):
    default, lo, hi, kind, unit = ctx.inputs[cfg["input"]]
    a_lo, a_hi = act.get("min", 0.0), act.get("max", 1.0)
    m = sorted((a_lo * cfg["scale"] + cfg["offset"], a_hi * cfg["scale"] + cfg["offset"]))
    span = hi - lo
    if m[1] < lo - 1e-9 * abs(span) or m[0] > hi + 1e-9 * abs(span):
        raise ScenarioError(
            "%s: board actuator %s (%g..%g) * scale %g + offset %g gives %g..%g, outside %s's "
            "range %g..%g %s; check scale and offset, or the board"
            % (
                where, act.get("name", "?"), a_lo, a_hi, cfg["scale"], cfg["offset"], m[0],
                m[1], cfg["input"], lo, hi, unit,
            )
        )  # fmt: skip


def _check_input(name, v, ctx, where, table):
    if name not in ctx.inputs:
        raise ScenarioError(
            choice_message(where, "input", name, list(ctx.inputs)) + " (plant %s)" % ctx.model
        )
    if name in ctx.driven_inputs:
        raise ScenarioError(
            "%s: %s is driven by board actuator channel %d; it cannot also be in %s"
            % (where, name, ctx.driven_inputs[name], table)
        )
    values = v if isinstance(v, list) else [v]
    for x in values:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ScenarioError("%s: %s = %r is not a finite number" % (where, name, x))
    _default, lo, hi, kind, unit = ctx.inputs[name]
    if kind == "check":
        bad = [x for x in values if not lo <= x <= hi]
        if bad:
            raise ScenarioError(
                "%s: %s = %g out of range; expected %g..%g %s"
                % (where, name, bad[0], lo, hi, unit)
            )


def _check_profile(pr, ctx, where):
    cfg = read_table(pr, PROFILE_KEYS, where)
    if cfg["file"] is not None:
        if cfg["t_s"] is not None or cfg["values"] is not None:
            raise ScenarioError("%s: give file and column, or t_s and values, not both" % where)
        from .profiles import PROFILES, load_profile

        if cfg["file"] not in PROFILES:
            raise ScenarioError(choice_message(where, "file", cfg["file"], list(PROFILES)))
        if cfg["column"] is None:
            raise ScenarioError("%s: a stored profile needs column" % where)
        t, columns = load_profile(cfg["file"])
        if cfg["column"] not in columns:
            raise ScenarioError(
                "%s: column = %r is not in profile %s; it has: %s"
                % (where, cfg["column"], cfg["file"], ", ".join(columns))
            )
        t = [float(x) for x in t]
        v = [float(x) for x in columns[cfg["column"]]]
        name = cfg["input"] or cfg["column"]
    else:
        if cfg["column"] is not None:
            raise ScenarioError("%s: column needs file (a stored profile)" % where)
        t, v = cfg["t_s"], cfg["values"]
        if t is None or v is None or cfg["input"] is None:
            raise ScenarioError(
                "%s: a profile needs input, t_s and values (or file and column)" % where
            )
        if not t or len(t) != len(v):
            raise ScenarioError(
                "%s: t_s and values must be lists of the same length (got %d and %d)"
                % (where, len(t), len(v))
            )
        for x in list(t) + list(v):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ScenarioError("%s: %r in t_s/values is not a finite number" % (where, x))
        if any(b < a for a, b in zip(t, t[1:], strict=False)):
            raise ScenarioError("%s: t_s must not decrease" % where)
        t = [float(x) for x in t]
        v = [float(x) for x in v]
        name = cfg["input"]
    v = [x * cfg["scale"] for x in v]
    _check_input(name, v, ctx, where, "[[profile]]")
    return {"input": name, "t_s": t, "values": v}


def _check_setpoint(s, ctx, where, dur):
    cfg = read_table(s, SETPOINT_KEYS, where)
    if cfg["t_s"] >= dur:
        raise ScenarioError(
            "%s: t_s = %g is not before the end of the run (duration_s = %g)"
            % (where, cfg["t_s"], dur)
        )
    info = ctx.loop(cfg["loop"])
    if info is None:
        raise ScenarioError(
            choice_message(where, "loop", cfg["loop"], ctx.loop_names)
            + " (board %s)" % ctx.board_name
        )
    given = [k for k in ("value", "value_c", "value_k") if cfg[k] is not None]
    if len(given) != 1:
        raise ScenarioError(
            "%s: give exactly one of value (the loop's SI unit), value_c (degC) or value_k (K)"
            "%s" % (where, "; got " + ", ".join(given) if given else "")
        )
    q = info["quantity"]
    if cfg["value_c"] is not None:
        if q is not None and q != "temperature":
            raise ScenarioError(
                "%s: value_c on loop %s, which holds a %s; give value (%s)"
                % (where, info["name"], q, signals.SI_UNITS.get(q, "SI"))
            )
        value = cfg["value_c"] + C_TO_K
    elif cfg["value_k"] is not None:
        if q is not None and q not in ("temperature", "temperature_difference"):
            raise ScenarioError(
                "%s: value_k on loop %s, which holds a %s; give value (%s)"
                % (where, info["name"], q, signals.SI_UNITS.get(q, "SI"))
            )
        value = cfg["value_k"]
    else:
        value = cfg["value"]
    if q == "temperature" and value <= 0.0:
        raise ScenarioError(
            "%s: %g K is below absolute zero; a temperature setpoint in degC is value_c"
            % (where, value)
        )
    pv = info["sensors"].get("pv")
    if info["controller"] == "pid" and pv is not None:
        # the PID's setpoint takes its sensor's range (ctl_pid.py); other controllers' ranges
        # are checked against the board before the run
        bs = ctx.board["sensors"][pv]
        lo, hi = bs.get("min", -math.inf), bs.get("max", math.inf)
        if not lo <= value <= hi:
            hint = "; a temperature in degC is value_c" if q == "temperature" else ""
            raise ScenarioError(
                "%s: setpoint %s out of range for loop %s; the board accepts %s..%s%s"
                % (
                    where,
                    signals.display(value, q),
                    info["name"],
                    signals.display(lo, q),
                    signals.display(hi, q),
                    hint,
                )
            )
    return {"t_s": cfg["t_s"], "loop": info["name"], "loop_index": info["index"], "value": value}


def _check_fault(f, ctx, where, dur):
    if not isinstance(f, dict):
        raise ScenarioError("%s: expected a table" % where)
    kind = f.get("kind")
    if kind is None:
        raise ScenarioError(
            "%s: missing kind; expected one of: %s" % (where, ", ".join(faults_mod.FAULTS))
        )
    alias = faults_mod.ALIAS_KINDS.get(kind)
    if alias is not None:
        cfg = read_table(f, dict(faults_mod.COMMON_KEYS, **alias.KEYS), where, fixed=("kind",))
        cfg = alias.normalise(cfg)
        kind = cfg["kind"]
        cls = faults_mod.FAULTS[kind]
    else:
        cls = faults_mod.FAULTS.get(kind)
        if cls is None:
            raise ScenarioError(choice_message(where, "kind", kind, list(faults_mod.FAULTS)))
        cfg = read_table(f, cls.keys(), where, cls.ALIASES, fixed=("kind",))
        cfg["kind"] = kind
    if cfg["t_s"] >= dur:
        raise ScenarioError(
            "%s: t_s = %g is not before the end of the run (duration_s = %g)"
            % (where, cfg["t_s"], dur)
        )
    if cls is not faults_mod.HostSilence and math.isfinite(cfg["duration_s"]):
        end = cfg["t_s"] + cfg["duration_s"]
        if end > dur + 1e-9:
            raise ScenarioError(
                "%s: the fault ends at t=%g s, after the end of the run (duration_s = %g); "
                "leave duration_s out for a fault that lasts to the end" % (where, end, dur)
            )
    cls.check(cfg, ctx, where)
    return cfg


def _check_overlaps(faults, where):
    def target(f):
        cls = faults_mod.FAULTS[f["kind"]]
        if cls.GROUP in ("sensor", "actuator"):
            return (cls.GROUP, f["channel"])
        if f["kind"] == "plant_change":
            return ("param", f["param"])
        if f["kind"] == "plant_input":
            return ("input", f["input"])
        return None

    for i, a in enumerate(faults):
        for j in range(i):
            b = faults[j]
            ta = target(a)
            if ta is None or ta != target(b):
                continue
            a0, a1 = a["t_s"], a["t_s"] + a["duration_s"]
            b0, b1 = b["t_s"], b["t_s"] + b["duration_s"]
            if a0 < b1 and b0 < a1:
                raise ScenarioError(
                    "%s [[faults]][%d] (%s) overlaps [[faults]][%d] (%s) on the same %s %s; "
                    "one fault at a time per target"
                    % (where, i, a["kind"], j, b["kind"], ta[0], ta[1])
                )


def _check_criterion(c, ctx, where):
    if not isinstance(c, dict):
        raise ScenarioError("%s: expected a table" % where)
    kind = c.get("kind")
    if kind is None:
        raise ScenarioError(
            "%s: missing kind; expected one of: %s" % (where, ", ".join(criteria_mod.CRITERIA))
        )
    kind = criteria_mod.ALIAS_KINDS.get(kind, kind)
    cls = criteria_mod.CRITERIA.get(kind)
    if cls is None:
        raise ScenarioError(
            choice_message(where, "kind", c.get("kind"), list(criteria_mod.CRITERIA))
        )
    raw = dict(c)
    celsius = getattr(cls, "CELSIUS", ())
    keys = cls.keys()
    for old, new in celsius:
        if old in raw:
            raw.pop(old)
            keys[new] = copy.copy(keys[new])
            keys[new].default = None  # given in degC instead
    cfg = read_table(raw, keys, where, cls.ALIASES, fixed=("kind",))
    criteria_mod._celsius_aliases(c, cfg, where, celsius)
    for _old, new in celsius:
        if cls.KEYS[new].required and cfg.get(new) is None:
            raise ScenarioError("%s: missing %s (%s)" % (where, new, cls.KEYS[new].describe()))
    cfg["kind"] = kind
    return cls.check(cfg, ctx, where)
