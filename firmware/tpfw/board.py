# The board definition (boards/NAME.json, deployed as /board.json): MCU, tick rate, sensors
# (kind, range, plausibility limits), actuators (unit, range, safe value), and loops (each
# names its controller and wires the controller's sensor and actuator roles to channels).
# check() validates a definition completely and says every problem at once; the board runs
# it at boot and `thermopilot deploy` runs the same code on the MicroPython VM before copying.
import json

from . import FW_VERSION  # noqa: F401  (the firmware version, shown by tools)

MAX_SENSORS = 16
MAX_ACTUATORS = 8
MAX_LOOPS = 8
_SENSOR_KINDS = ("ntc", "ratiometric", "linear")
_ACTUATOR_KINDS = ("pwm", "stepper", "speed", "digital", "analog")


def load(path="board.json"):
    with open(path) as f:
        board = json.load(f)
    return check(board)


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x


def check(board):
    """Validate and complete a board definition (defaults filled in); ValueError lists every
    problem found, each naming the key, the value and what was expected."""
    errs = []
    if not isinstance(board, dict):
        raise ValueError("board definition must be a JSON object")
    for key in ("name", "tick_hz", "sensors", "actuators", "loops"):
        if key not in board:
            errs.append("missing %r" % key)
    if errs:
        raise ValueError("board definition: " + "; ".join(errs))
    if not isinstance(board["name"], str) or not 0 < len(board["name"]) <= 16:
        errs.append("name %r: expected text of 1..16 characters" % (board["name"],))
    hz = board["tick_hz"]
    if not _num(hz) or not 0.1 <= hz <= 1000:
        errs.append("tick_hz = %r: expected a number in 0.1..1000" % (hz,))
    sensors = board["sensors"]
    actuators = board["actuators"]
    loops = board["loops"]
    if not isinstance(sensors, list) or len(sensors) > MAX_SENSORS:
        errs.append("sensors: expected a list of at most %d" % MAX_SENSORS)
        sensors = []
    if not isinstance(actuators, list) or not 0 < len(actuators) <= MAX_ACTUATORS:
        errs.append("actuators: expected a list of 1..%d" % MAX_ACTUATORS)
        actuators = []
    if not isinstance(loops, list) or not 0 < len(loops) <= MAX_LOOPS:
        errs.append("loops: expected a list of 1..%d" % MAX_LOOPS)
        loops = []
    for i, s in enumerate(sensors):
        _check_sensor(i, s, sensors, len(actuators), errs)
    for i, a in enumerate(actuators):
        _check_actuator(i, a, len(sensors), errs)
    owner = {}
    for k, lp in enumerate(loops):
        _check_loop(k, lp, board, owner, errs)
    if errs:
        raise ValueError("board definition %s: %s" % (board.get("name"), "; ".join(errs)))
    return board


def _check_sensor(i, s, sensors, n_act, errs):
    w = "sensors[%d]" % i
    if not isinstance(s, dict):
        errs.append(w + ": expected an object")
        return
    kind = s.get("kind", "ntc")
    s["kind"] = kind
    if kind not in _SENSOR_KINDS:
        errs.append("%s kind %r: expected one of %s" % (w, kind, ", ".join(_SENSOR_KINDS)))
        return
    s.setdefault("quantity", "temperature" if kind == "ntc" else "none")
    s.setdefault("unit", "K" if s["quantity"].startswith("temperature") else "")
    if kind == "ratiometric":
        for key in ("p_lo", "p_hi"):
            if not _num(s.get(key)):
                errs.append("%s: ratiometric needs %r (SI value at v_lo / v_hi)" % (w, key))
                return
        v_lo = s.get("v_lo", 0.5)
        v_hi = s.get("v_hi", 4.5)
        if not (_num(v_lo) and _num(v_hi) and v_lo < v_hi):
            errs.append("%s: v_lo %r must be below v_hi %r" % (w, v_lo, v_hi))
            return
        # outside its voltage window (with a small tolerance) the transducer is faulty
        tol = s.get("window_tol_v", 0.05)
        slope = (s["p_hi"] - s["p_lo"]) / (v_hi - v_lo)
        s.setdefault("min", s["p_lo"] - tol * slope)
        s.setdefault("max", s["p_hi"] + tol * slope)
    if "min_k" in s and "min" not in s:  # the earlier key names
        s["min"] = s["min_k"]
    if "max_k" in s and "max" not in s:
        s["max"] = s["max_k"]
    lo, hi = s.get("min"), s.get("max")
    if not (_num(lo) and _num(hi) and lo < hi):
        errs.append("%s: min %r must be a number below max %r" % (w, lo, hi))
    for key in ("noise", "rate_max", "stuck_s", "stuck_move"):
        if key in s and not (_num(s[key]) and s[key] >= 0):
            errs.append("%s %s = %r: expected a number >= 0" % (w, key, s[key]))
    for a in s.get("moved_by", ()):
        if not (isinstance(a, int) and 0 <= a < n_act):
            errs.append("%s moved_by: no actuator %r" % (w, a))
    mw = s.get("moves_with")
    if mw is not None and not (isinstance(mw, int) and 0 <= mw < len(sensors) and mw != i):
        errs.append("%s moves_with: sensor %r is not another sensor of this board" % (w, mw))
    r = s.get("redundant")
    if r is not None:
        j = r.get("sensor") if isinstance(r, dict) else None
        if not (isinstance(j, int) and 0 <= j < len(sensors) and j != i):
            errs.append("%s redundant: sensor %r is not another sensor of this board" % (w, j))
        elif not (_num(r.get("max_diff")) and r["max_diff"] > 0):
            errs.append("%s redundant: max_diff must be > 0" % w)


def _check_actuator(i, a, n_sens, errs):
    w = "actuators[%d]" % i
    if not isinstance(a, dict):
        errs.append(w + ": expected an object")
        return
    kind = a.get("kind", "pwm")
    a["kind"] = kind
    if kind not in _ACTUATOR_KINDS:
        errs.append("%s kind %r: expected one of %s" % (w, kind, ", ".join(_ACTUATOR_KINDS)))
        return
    if kind == "stepper" and "max" not in a:
        a["max"] = a.get("steps", 480)
    a.setdefault("min", 0.0)
    a.setdefault("max", 1.0)
    a.setdefault(
        "quantity",
        {"stepper": "steps", "speed": "speed", "digital": "state"}.get(kind, "fraction"),
    )
    lo, hi = a["min"], a["max"]
    if not (_num(lo) and _num(hi) and lo < hi):
        errs.append("%s: min %r must be a number below max %r" % (w, lo, hi))
        return
    for key in ("safe", "off"):
        v = a.get(key, lo if key == "off" else None)
        if key == "safe" and v is None:
            errs.append("%s: missing 'safe' (its value in the safe state)" % w)
        elif not (_num(v) and lo <= v <= hi):
            errs.append("%s %s = %r: expected a number in [%g, %g]" % (w, key, v, lo, hi))
    fb = a.get("feedback")
    if fb is not None:
        s = fb.get("sensor") if isinstance(fb, dict) else None
        pts = fb.get("points") if isinstance(fb, dict) else None
        if not (isinstance(s, int) and 0 <= s < n_sens):
            errs.append("%s feedback: no sensor %r" % (w, s))
        if not (isinstance(pts, list) and len(pts) >= 2):
            errs.append("%s feedback: points must list at least 2 [output, expected]" % w)


def _no_errors(cfg, board, values):
    return ()


def _check_loop(k, lp, board, owner, errs):
    from .loops import controller_class

    w = "loops[%d]" % k
    if not isinstance(lp, dict):
        errs.append(w + ": expected an object")
        return
    name = lp.get("name")
    if not (isinstance(name, str) and 0 < len(name) <= 5):
        errs.append("%s name %r: expected 1..5 characters" % (w, name))
        return
    w = "loop %s" % name
    if "sensor" in lp and "sensors" not in lp:  # the earlier one-sensor form
        lp["sensors"] = {"pv": lp["sensor"]}
    if "actuator" in lp and "actuators" not in lp:
        lp["actuators"] = {"out": lp["actuator"]}
    ctl = lp.get("controller", "pid")
    lp["controller"] = ctl
    try:
        cls = controller_class(ctl)
    except ValueError as e:
        errs.append("%s: %s" % (w, e))
        return
    for what, need, opt, n, table in (
        ("sensors", cls.SENSORS, cls.OPT_SENSORS, len(board["sensors"]), None),
        ("actuators", cls.ACTUATORS, cls.OPT_ACTUATORS, len(board["actuators"]), owner),
    ):
        m = lp.get(what, {})
        if not isinstance(m, dict):
            errs.append("%s %s: expected an object role -> channel" % (w, what))
            return
        for role in need:
            if role not in m:
                errs.append(
                    "%s: controller %s needs %s role %r (has: %s)"
                    % (w, ctl, what[:-1], role, ", ".join(m) or "none")
                )
        for role, ch in m.items():
            if role not in need and role not in opt:
                errs.append(
                    "%s %s: unknown role %r for controller %s; expected: %s"
                    % (w, what, role, ctl, ", ".join(need + opt))
                )
            elif not (isinstance(ch, int) and 0 <= ch < n):
                errs.append("%s %s %s = %r: no such channel (0..%d)" % (w, what, role, ch, n - 1))
            elif table is not None:
                if ch in table:
                    errs.append(
                        "%s: actuator %d is already driven by loop %s" % (w, ch, table[ch])
                    )
                table[ch] = name
    if errs:
        return
    try:
        rows = cls.rows(lp, board)
        names = [r[0] for r in rows]
        for a, b, _gap in cls.RULES:
            if a not in names or b not in names:
                errs.append("%s: rule on unknown parameter %s/%s" % (w, a, b))
        for r in rows:
            if len(name) + 1 + len(r[0]) > 16:
                errs.append("%s: parameter name %s.%s longer than 16" % (w, name, r[0]))
            if not (r[4] <= r[6] <= r[5]):
                errs.append(
                    "%s: default %s.%s = %r not in [%r, %r]" % (w, name, r[0], r[6], r[4], r[5])
                )
        d = dict((r[0], r[6]) for r in rows)
        for key in lp.get("defaults", {}):
            if key not in d:
                errs.append(
                    "%s defaults: unknown parameter %r; expected some of: %s"
                    % (w, key, ", ".join(names))
                )
        for a, b, gap in cls.RULES:
            if a in d and b in d and not (d[a] + gap <= d[b]):
                errs.append(
                    "%s defaults: %s.%s = %g and %s.%s = %g break %s + %g <= %s"
                    % (w, name, a, d[a], name, b, d[b], a, gap, b)
                )
        # what only the controller can judge (a threshold below its sensors' noise)
        for e in getattr(cls, "board_errors", _no_errors)(lp, board, d):
            errs.append("%s: %s" % (w, e))
    except (KeyError, TypeError, ValueError) as e:
        errs.append("%s: %s %r" % (w, type(e).__name__, e))
