"""HIL scenario files (TOML): plant, wiring, setpoints over time, faults and pass/fail criteria.

A scenario is checked completely when it is loaded, so that a typo fails in a second with a
message naming the key, the value and what was expected, not after minutes of simulation.
See ``hil/scenarios/*.toml`` and the README's "Writing a scenario" section.
"""

import math
import pathlib

import tomllib

C_TO_K = 273.15

FAULT_KINDS = {
    "sensor_open": "the sensor reads as an open circuit (very cold for an NTC)",
    "sensor_short": "the sensor reads as a short circuit (very hot for an NTC)",
    "sensor_stuck": "the sensor holds the value it had when the fault began",
    "sensor_drift": "the sensor drifts by rate_k_per_s",
    "sensor_delayed": "the sensor reports the value of delay_s ago",
    "link_noise": "random bytes written into the serial link (bytes_per_step per step)",
    "host_silence": "the rig sends nothing for duration_s of wall-clock time",
    "runaway": "extra heat of power_w in the plant (e.g. one cell group)",
}

CRITERIA = {
    "settles": "loop's measurement stays within band_k of the setpoint from within_s after "
    "the last setpoint change before after_s (default: the start)",
    "overshoot_max": "measurement never goes more than max_k past the setpoint (in the "
    "direction of approach) after after_s",
    "no_fault": "no fault is latched during the run",
    "fault_latched": "the named fault is latched by before_s (default: the end)",
    "actuator_safe_at_end": "actuator channel equals its safe value at the end",
    "measurement_between": "loop's measurement stays within [min_c, max_c] (or [min_k, max_k] "
    "for a temperature difference) between after_s and before_s",
    "actuator_below": "actuator channel stays at or below max between after_s and before_s",
}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the problem."""


def _need(table, key, kind, where, default=None, required=True):
    if key not in table:
        if required:
            raise ScenarioError("%s: missing %r (%s)" % (where, key, kind.__name__))
        return default
    v = table[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or (kind is float and not math.isfinite(v)):
        raise ScenarioError(
            "%s: %r = %r is not a %s"
            % (where, key, v, "number" if kind is float else kind.__name__)
        )
    return v


def _stored_profile(pr, where):
    from .profiles import PROFILES, load_profile

    name = _need(pr, "file", str, where)
    if name not in PROFILES:
        raise ScenarioError(
            "%s: file = %r; expected one of: %s" % (where, name, ", ".join(PROFILES))
        )
    t, columns = load_profile(name)
    column = _need(pr, "column", str, where)
    if column not in columns:
        raise ScenarioError(
            "%s: column = %r is not in profile %s; it has: %s"
            % (where, column, name, ", ".join(columns))
        )
    return list(t), list(columns[column])


def load(path):
    """Read and check a scenario file; returns a dict with defaults filled in."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ScenarioError("scenario file %s does not exist" % path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError("%s is not valid TOML: %s" % (path, exc)) from None
    return check(raw, str(path))


def check(raw, where="scenario"):
    known = {
        "name",
        "description",
        "duration_s",
        "board",
        "plant",
        "inputs",
        "profile",
        "sensors",
        "actuators",
        "setpoints",
        "faults",
        "criteria",
        "params",
    }
    unknown = set(raw) - known
    if unknown:
        raise ScenarioError(
            "%s: unknown key(s) %s; expected some of: %s"
            % (where, ", ".join(sorted(unknown)), ", ".join(sorted(known)))
        )
    sc = {
        "name": _need(raw, "name", str, where),
        "description": _need(raw, "description", str, where, "", required=False),
        "duration_s": _need(raw, "duration_s", float, where),
        "board": _need(raw, "board", str, where, "virtual", required=False),
    }
    if sc["duration_s"] <= 0:
        raise ScenarioError("%s: duration_s = %g must be > 0" % (where, sc["duration_s"]))
    plant = _need(raw, "plant", dict, where)
    sc["plant"] = {
        "model": _need(plant, "model", str, where + " [plant]"),
        "params": _need(plant, "params", dict, where + " [plant]", {}, required=False),
    }
    inputs = _need(raw, "inputs", dict, where, {}, required=False)
    sc["inputs"] = {k: _need(inputs, k, float, where + " [inputs]") for k in inputs}
    params = _need(raw, "params", dict, where, {}, required=False)
    sc["params"] = {k: _need(params, k, float, where + " [params]") for k in params}
    sc["profile"] = []
    for k, pr in enumerate(raw.get("profile", [])):
        w = "%s [[profile]] #%d" % (where, k + 1)
        if "file" in pr:  # a stored profile: hil/profiles/NAME.csv, one of its columns
            t, v = _stored_profile(pr, w)
        else:
            t = pr.get("t_s")
            v = pr.get("values")
        if not (isinstance(t, list) and isinstance(v, list) and len(t) == len(v) and t):
            raise ScenarioError("%s: t_s and values must be lists of the same length" % w)
        if any(b < a for a, b in zip(t, t[1:], strict=False)):
            raise ScenarioError("%s: t_s must not decrease" % w)
        scale = _need(pr, "scale", float, w, 1.0, required=False)
        sc["profile"].append(
            {
                "input": _need(pr, "input", str, w, pr.get("column"), required="file" not in pr),
                "t_s": [float(x) for x in t],
                "values": [float(x) * scale for x in v],
            }
        )
    sc["sensors"] = []
    for k, s in enumerate(_need(raw, "sensors", list, where)):
        w = "%s [[sensors]] #%d" % (where, k + 1)
        ch = _need(s, "channel", int, w)
        if not 0 <= ch < 8:
            raise ScenarioError("%s: channel = %d not in 0..7" % (w, ch))
        kind = _need(s, "kind", str, w, "ntc", required=False)
        if kind not in ("ntc", "ideal"):
            raise ScenarioError("%s: kind = %r; expected ntc or ideal" % (w, kind))
        sc["sensors"].append(
            {
                "kind": kind,
                "channel": ch,
                "output": _need(s, "output", str, w),
                "noise_k": _need(s, "noise_k", float, w, 0.0, required=False),
                "quant_k": _need(s, "quant_k", float, w, 0.0, required=False),
                "lag_s": _need(s, "lag_s", float, w, 0.0, required=False),
            }
        )
    sc["actuators"] = []
    for k, a in enumerate(_need(raw, "actuators", list, where)):
        w = "%s [[actuators]] #%d" % (where, k + 1)
        ch = _need(a, "channel", int, w)
        if not 0 <= ch < 4:
            raise ScenarioError("%s: channel = %d not in 0..3" % (w, ch))
        sc["actuators"].append(
            {
                "channel": ch,
                "input": _need(a, "input", str, w),
                "scale": _need(a, "scale", float, w, 1.0, required=False),
            }
        )
    sc["setpoints"] = []
    for k, s in enumerate(raw.get("setpoints", [])):
        w = "%s [[setpoints]] #%d" % (where, k + 1)
        if "value_k" in s:  # a temperature difference (superheat) or an absolute K value
            value_k = _need(s, "value_k", float, w)
        else:
            value_k = _need(s, "value_c", float, w) + C_TO_K
        sc["setpoints"].append(
            {
                "t_s": _need(s, "t_s", float, w),
                "loop": _need(s, "loop", int, w, 0, required=False),
                "value_k": value_k,
            }
        )
    sc["setpoints"].sort(key=lambda s: s["t_s"])
    # reports show degC for temperatures, K when the setpoints are temperature differences
    sc["celsius"] = not any("value_k" in s for s in raw.get("setpoints", []))
    sc["faults"] = []
    for k, f in enumerate(raw.get("faults", [])):
        w = "%s [[faults]] #%d" % (where, k + 1)
        kind = _need(f, "kind", str, w)
        if kind not in FAULT_KINDS:
            raise ScenarioError(
                "%s: kind = %r; expected one of: %s" % (w, kind, ", ".join(FAULT_KINDS))
            )
        fault = {
            "kind": kind,
            "t_s": _need(f, "t_s", float, w),
            "duration_s": _need(f, "duration_s", float, w, math.inf, required=False),
            "channel": _need(f, "channel", int, w, 0, required=False),
        }
        for opt in ("rate_k_per_s", "delay_s", "bytes_per_step", "power_w"):
            if opt in f:
                fault[opt] = _need(f, opt, float, w)
        if kind == "host_silence" and not math.isfinite(fault["duration_s"]):
            raise ScenarioError("%s: host_silence needs a finite duration_s" % w)
        sc["faults"].append(fault)
    sc["criteria"] = []
    for k, c in enumerate(_need(raw, "criteria", list, where)):
        w = "%s [[criteria]] #%d" % (where, k + 1)
        kind = _need(c, "kind", str, w)
        if kind not in CRITERIA:
            raise ScenarioError(
                "%s: kind = %r; expected one of: %s" % (w, kind, ", ".join(CRITERIA))
            )
        crit = {"kind": kind}
        for key in c:
            if key == "kind":
                continue
            if key in ("loop", "channel"):
                crit[key] = _need(c, key, int, w)
            elif key == "fault":
                crit[key] = _need(c, key, str, w)
            else:
                crit[key] = _need(c, key, float, w)
        required = {
            "settles": ("within_s", "band_k"),
            "overshoot_max": ("max_k",),
            "fault_latched": ("fault",),
            "measurement_between": ("min_k", "max_k") if "min_k" in crit else ("min_c", "max_c"),
            "actuator_below": ("max",),
        }.get(kind, ())
        for key in required:
            if key not in crit:
                raise ScenarioError("%s: %s needs %r" % (w, kind, key))
        sc["criteria"].append(crit)
    return sc
