"""A lockstep runner for the battery and chip scenario files (hil/scenarios/battery_*.toml,
chip_*.toml), written against the version-2 scenario format (criteria on plant outputs,
latch latency, energy, plant changes, actuator faults).

It interprets the subset of that format those files use, with the real plant, the real
sensor front ends (hil.sensors, hil.boardio) and the real board over a Session, and judges
their criteria on plant truth. Tests use it to prove the figures the scenarios claim; the HIL
rig (thermopilot hil run) runs the same files once it reads the version-2 format.
"""

import math
import pathlib

import tomllib

from thermopilot.hil import boardio, resources
from thermopilot.hil.plants import make_plant
from thermopilot.hil.profiles import load_profile
from thermopilot.hil.sensors import Sensor
from thermopilot.protocol import schema

N_SENSORS = schema.by_name("HIL_SENSORS").struct.values.subcon.count
FAULT_BITS = schema.FAULTS

_TOP = {
    "name", "description", "duration_s", "board", "params", "plant", "inputs", "profile",
    "sensors", "actuators", "setpoints", "faults", "criteria",
}  # fmt: skip
_KEYS = {
    "profile": {"input", "t_s", "values", "file", "column", "scale"},
    "sensors": {"channel", "output", "preset", "noise", "quant", "lag_s"},
    "actuators": {"channel", "input", "scale", "offset"},
    "setpoints": {"t_s", "loop", "value", "value_c", "value_k"},
    "faults": {
        "kind",
        "t_s",
        "duration_s",
        "channel",
        "param",
        "value",
        "ramp_s",
        "input",
        "offset",
        "rate_per_s",
        "factor",
    },  # fmt: skip
    "criteria": {
        "kind",
        "signal",
        "min",
        "max",
        "after_s",
        "before_s",
        "fault",
        "after_fault",
        "max_s",
        "signals",
        "max_j",
        "channel",
    },  # fmt: skip
}
SENSOR_FAULTS = {"sensor_open": "open", "sensor_short": "short", "sensor_stuck": "stuck"}


class ScenarioFileError(ValueError):
    pass


def load(name_or_path):
    """The scenario as a dict (TOML), its tables checked for keys this runner knows."""
    path = pathlib.Path(name_or_path)
    if not path.suffix:
        path = resources.scenarios_dir() / (str(name_or_path) + ".toml")
    sc = tomllib.loads(path.read_text())
    extra = set(sc) - _TOP
    if extra:
        raise ScenarioFileError("%s: unknown keys %s" % (path.name, sorted(extra)))
    for table, keys in _KEYS.items():
        for k, entry in enumerate(sc.get(table, [])):
            bad = set(entry) - keys
            if bad:
                raise ScenarioFileError(
                    "%s [[%s]] #%d: unknown keys %s" % (path.name, table, k + 1, sorted(bad))
                )
    return sc


def _sensor(cfg, seed):
    preset = cfg.get("preset", "ntc")
    noise = cfg.get("noise")
    quant = cfg.get("quant")
    lag = cfg.get("lag_s")
    if preset == "ntc":
        kw = {"seed": seed}
        if noise is not None:
            kw["noise_k"] = noise
        if quant is not None:
            kw["quant_k"] = quant
        if lag is not None:
            kw["lag_s"] = lag
        return Sensor.ntc(**kw)
    if preset == "flow":
        s = Sensor.flow(seed=seed)
    elif preset == "ideal":
        s = Sensor(seed=seed)
    else:
        raise ScenarioFileError("sensor preset %r not supported by this runner" % preset)
    if noise is not None:
        s.noise = float(noise)
    if quant is not None:
        s.quant = float(quant)
    if lag is not None:
        s.lag_s = float(lag)
    return s


def _interp(t, v, x):
    if x <= t[0]:
        return v[0]
    for k in range(1, len(t)):
        if x <= t[k]:
            span = t[k] - t[k - 1]
            a = 0.0 if span == 0 else (x - t[k - 1]) / span
            return v[k - 1] + a * (v[k] - v[k - 1])
    return v[-1]


class Result:
    def __init__(self, sc, rows, events, fault_t, loops, board):
        self.sc = sc
        self.rows = rows
        self.events = events
        self.fault_t = fault_t  # fault name -> first time (s) it showed latched
        self.loops = loops
        self.board = board
        self.verdicts = []

    def series(self, signal):
        """(t_s list, values list) of a signal name (plant.X, out.N/out.NAME,
        loop.NAME.FIELD, faults)."""
        return [r["t_s"] for r in self.rows], [value(r, signal, self) for r in self.rows]

    def energy_j(self, signal):
        t, v = self.series(signal)
        return sum(0.5 * (v[k] + v[k - 1]) * (t[k] - t[k - 1]) for k in range(1, len(t)))

    @property
    def passed(self):
        return all(v["passed"] for v in self.verdicts)


def value(row, signal, res):
    head, _, rest = signal.partition(".")
    if head == "plant":
        return row["plant"][rest]
    if head == "out":
        if rest.isdigit():
            return row["out"][int(rest)]
        names = [a.get("name") for a in res.board["actuators"]]
        return row["out"][names.index(rest)]
    if head == "loop":
        name, _, field = rest.partition(".")
        return row["loops"][name][field]
    if signal == "faults":
        return row["faults"]
    raise ScenarioFileError("unknown signal %r" % signal)


def run(sc, session, seed=1, dt_s=None):
    """Run scenario dict ``sc`` against the board on ``session``; a Result with one row per
    tick and the criteria's verdicts."""
    board = resources.load_board(sc["board"])
    ident = session.hello()
    dt = dt_s or 1.0 / ident.tick_hz
    pl = sc["plant"]
    plant = make_plant(pl["model"], **pl.get("params", {}))
    session.request("PARAM_DEFAULTS", flags=0)
    for name, v in sc.get("params", {}).items():
        session.param_set(name, float(v))
    loops = session.loops()
    session.command("hil_start")
    session.fault_reset()
    session.stream_rate("TELEMETRY", ident.tick_hz)
    try:
        return _run(sc, session, seed, dt, board, plant, loops)
    finally:
        session.command("hil_stop")


def _profiles(sc):
    out = []
    for p in sc.get("profile", []):
        if "file" in p:
            t, cols = load_profile(p["file"])
            v = cols[p["column"]]
            name = p.get("input", p["column"])
        else:
            t, v, name = p["t_s"], p["values"], p["input"]
        s = p.get("scale", 1.0)
        out.append((name, list(t), [float(x) * s for x in v]))
    return out


def _run(sc, session, seed, dt, board, plant, loops):
    sensors = []
    for k, cfg in enumerate(sc["sensors"]):
        s = _sensor(cfg, seed + k)
        s.cfg = cfg
        sensors.append(s)
    acts = sc["actuators"]
    profiles = _profiles(sc)
    faults = [dict(f, index=k) for k, f in enumerate(sc.get("faults", []))]
    for f in faults:
        f.setdefault("duration_s", math.inf)
    setpoints = sorted(sc.get("setpoints", []), key=lambda s: s["t_s"])
    loop_names = [lp["name"] for lp in loops]
    field_names = [[f[0] for f in lp["fields"]] for lp in loops]
    n = int(round(sc["duration_s"] / dt))
    rows = []
    fault_t = {}
    names = {v: k for k, v in FAULT_BITS.items()}
    out_now = plant.outputs()
    tlm = {lp: {} for lp in loop_names}
    session.telemetry.clear()
    session.events.clear()
    ramps = []  # (param, v0, v1, t0, t1)
    for k in range(n + 1):
        t = k * dt
        while setpoints and setpoints[0]["t_s"] <= t + 1e-9:
            sp = setpoints.pop(0)
            if "value_c" in sp:
                v = sp["value_c"] + 273.15
            else:
                v = sp.get("value_k", sp.get("value"))
            lp = sp.get("loop", 0)
            lp = loop_names.index(lp) if isinstance(lp, str) else lp
            session.command("setpoint", loop=lp, value=v)
        active = [f for f in faults if f["t_s"] <= t + 1e-9 < f["t_s"] + f["duration_s"]]
        for f in faults:
            starting = abs(f["t_s"] - t) < dt / 2
            ending = abs(f["t_s"] + f["duration_s"] - t) < dt / 2
            if starting and f["kind"] == "plant_change":
                r = f.get("ramp_s", 0.0)
                if r > 0:
                    ramps.append((f["param"], plant.param(f["param"]), f["value"], t, t + r))
                else:
                    plant.set_param(f["param"], f["value"])
            if f["kind"] in SENSOR_FAULTS or f["kind"] in ("sensor_drift", "sensor_offset"):
                for s in sensors:
                    if s.cfg["channel"] != f["channel"]:
                        continue
                    if starting:
                        if f["kind"] in SENSOR_FAULTS:
                            s.inject(SENSOR_FAULTS[f["kind"]])
                        elif f["kind"] == "sensor_drift":
                            s.inject("drift", rate_per_s=f["rate_per_s"])
                        s.offset = f.get("offset", 0.0) if f["kind"] == "sensor_offset" else 0.0
                    if ending:
                        s.clear()
                        s.offset = 0.0
        for param, v0, v1, t0, t1 in list(ramps):
            a = min(1.0, (t - t0) / (t1 - t0))
            plant.set_param(param, v0 + a * (v1 - v0))
            if a >= 1.0:
                ramps.remove((param, v0, v1, t0, t1))
        raw = [0.0] * N_SENSORS
        sensed = {}
        valid = 0
        for s in sensors:
            ch = s.cfg["channel"]
            v = s.read(out_now[s.cfg["output"]], t) + getattr(s, "offset", 0.0)
            sensed[ch] = v
            raw[ch] = boardio.encode(board["sensors"][ch], v)
            valid |= 1 << ch
        ans = session.request(
            "HIL_SENSORS",
            expect=("HIL_ACTUATORS",),
            t_ms=int(round(t * 1000)),
            valid=valid,
            values=raw,
        )
        while session.telemetry:
            c = session.telemetry.popleft()
            if c.loop < len(loop_names):
                d = {
                    "setpoint": c.setpoint,
                    "measurement": c.measurement,
                    "output": c.output,
                    "state": c.state,
                    "mode": c.mode,
                }
                for j, fname in enumerate(field_names[c.loop]):
                    d[fname] = c.fields[j]
                tlm[loop_names[c.loop]] = d
        for bit in range(32):
            nm = names.get(bit)
            if nm and ans.faults >> bit & 1 and nm not in fault_t:
                fault_t[nm] = t
        outs = list(ans.outputs)
        rows.append(
            {
                "t_s": t,
                "plant": out_now,
                "out": outs,
                "sensed": sensed,
                "faults": ans.faults,
                "loops": {lp: dict(v) for lp, v in tlm.items()},
            }
        )
        inputs = dict(sc.get("inputs", {}))
        for name, tt, vv in profiles:
            inputs[name] = _interp(tt, vv, t)
        for a in acts:
            u = outs[a["channel"]] * a.get("scale", 1.0) + a.get("offset", 0.0)
            for f in active:
                if f.get("channel") != a["channel"]:
                    continue
                if f["kind"] == "actuator_dead":
                    u = 0.0
                elif f["kind"] == "actuator_partial":
                    u *= f["factor"]
            inputs[a["input"]] = u
        for f in active:
            if f["kind"] == "plant_input":
                inputs[f["input"]] = f["value"]
        out_now = plant.step(dt, inputs)
    res = Result(sc, rows, list(session.events), fault_t, loops, board)
    res.verdicts = [judge(c, res) for c in sc.get("criteria", [])]
    return res


def _window(c, res):
    a = c.get("after_s", 0.0)
    b = c.get("before_s", math.inf)
    return [r for r in res.rows if a - 1e-9 <= r["t_s"] <= b + 1e-9]


def judge(c, res):
    """One criterion's verdict: dict kind, passed, value, detail."""
    kind = c["kind"]
    if kind in ("between", "at_most", "at_least"):
        rows = _window(c, res)
        vals = [value(r, c["signal"], res) for r in rows]
        lo, hi = min(vals), max(vals)
        ok = True
        if kind in ("between", "at_least"):
            ok = ok and lo >= c["min"]
        if kind in ("between", "at_most"):
            ok = ok and hi <= c["max"]
        v = hi if kind == "at_most" else lo if kind == "at_least" else (lo, hi)
        return {"kind": kind, "signal": c["signal"], "passed": ok, "value": v}
    if kind == "no_fault":
        bad = sorted(res.fault_t)
        return {"kind": kind, "passed": not bad, "value": bad}
    if kind == "fault_latched":
        t = res.fault_t.get(c["fault"])
        ok = t is not None and t <= c.get("before_s", math.inf)
        return {"kind": kind, "fault": c["fault"], "passed": ok, "value": t}
    if kind == "latch_latency":
        ref = c["after_fault"]
        faults = res.sc.get("faults", [])
        f = faults[ref] if isinstance(ref, int) else next(x for x in faults if x["kind"] == ref)
        t = res.fault_t.get(c["fault"])
        lat = None if t is None else t - f["t_s"]
        ok = lat is not None and 0 <= lat <= c["max_s"]
        return {"kind": kind, "fault": c["fault"], "passed": ok, "value": lat}
    if kind == "energy":
        e = {s: res.energy_j(s) for s in c["signals"]}
        ok = "max_j" not in c or sum(e.values()) <= c["max_j"]
        return {"kind": kind, "passed": ok, "value": e}
    raise ScenarioFileError("criterion kind %r not supported by this runner" % kind)
