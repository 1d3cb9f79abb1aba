"""The HIL rig: steps a plant model in lockstep with a board over the ThermoPilot protocol.

Every board tick the rig sends the sensor values at simulated time ``t`` (HIL_SENSORS), the
board runs the ticks that are due and answers with its actuator outputs (HIL_ACTUATORS); the
rig then advances the plant by one tick. Against the virtual board this runs much faster than
real time; against a real board (``realtime=True``) the rig paces itself by the wall clock.
"""

import bisect
import math
import os
import time

from thermopilot.protocol import schema
from thermopilot.protocol.link import Session

from . import boardio, resources
from .plants import make_plant
from .sensors import Sensor

N_SENSORS = schema.by_name("HIL_SENSORS").struct.values.subcon.count

FAULT_BITS = schema.FAULTS
#: scenario fault kind -> (hil.sensors fault, scenario keys passed as its arguments)
SENSOR_FAULTS = {
    "sensor_open": ("open", {}),
    "sensor_short": ("short", {}),
    "sensor_stuck": ("stuck", {}),
    "sensor_drift": ("drift", {"rate_k_per_s": "rate_per_s"}),
    "sensor_delayed": ("delayed", {"delay_s": "delay_s"}),
}


def profile_value(profile, t_s):
    """Piecewise-linear value of a [[profile]] entry at t_s (held flat outside its range)."""
    t, v = profile["t_s"], profile["values"]
    if t_s <= t[0]:
        return v[0]
    k = bisect.bisect_left(t, t_s)
    if k >= len(t):
        return v[-1]
    span = t[k] - t[k - 1]
    a = 0.0 if span == 0 else (t_s - t[k - 1]) / span
    return v[k - 1] + a * (v[k] - v[k - 1])


def make_sensor(cfg, seed):
    """The sensor front end a [[sensors]] entry describes (hil.sensors presets)."""
    if cfg["kind"] == "ntc":
        return Sensor.ntc(
            noise_k=cfg["noise_k"], quant_k=cfg["quant_k"], lag_s=cfg["lag_s"], seed=seed
        )
    return Sensor(noise=cfg["noise_k"], quant=cfg["quant_k"], lag_s=cfg["lag_s"], seed=seed)


class RigResult:
    def __init__(self, scenario, rows, telemetry, events, stats, board):
        self.scenario = scenario
        self.rows = rows
        self.telemetry = telemetry
        self.events = events
        self.stats = stats
        self.board = board
        self.verdicts = []

    @property
    def passed(self):
        return all(v["passed"] for v in self.verdicts)


def run(scenario, port=None, session=None, realtime=None, progress=None, seed=1):
    """Run ``scenario`` (a dict from scenario.load) against the board on ``port``/``session``.

    Returns a RigResult with one row per tick: t_s, setpoint_k, measurement_k (true plant
    value), sensed_k (what the board saw), output per actuator, faults.
    """
    own = session is None
    if own:
        session = Session(port)
    try:
        return _run(scenario, session, bool(realtime), progress, seed)
    finally:
        if own:
            session.close()


def _run(sc, session, realtime, progress, seed):
    ident = session.hello()
    tick_hz = ident.tick_hz
    dt_s = 1.0 / tick_hz
    board = resources.load_board(sc["board"])
    plant = make_plant(sc["plant"]["model"], **sc["plant"]["params"])
    session.request("PARAM_DEFAULTS", flags=0)
    for name, value in sc["params"].items():
        session.param_set(name, value)
    # a new run on a fresh plant: the board takes its sensors from the rig and restarts its
    # simulated clock; then the faults of an earlier run can be cleared
    session.command("hil_start")
    session.fault_reset()
    session.stream_rate("TELEMETRY", tick_hz)
    try:
        return _steps(sc, session, realtime, progress, seed, ident, board, plant, dt_s)
    finally:
        try:
            session.command("hil_stop")
        except Exception:  # noqa: BLE001 - the board may be gone; the run's result stands
            pass


def _steps(sc, session, realtime, progress, seed, ident, board, plant, dt_s):
    tick_hz = ident.tick_hz
    sensors = [make_sensor(s, seed + k) for k, s in enumerate(sc["sensors"])]
    for sensor, cfg in zip(sensors, sc["sensors"], strict=True):
        sensor.cfg = cfg
    n_steps = int(round(sc["duration_s"] * tick_hz))
    setpoints = list(sc["setpoints"])
    faults = sorted(sc["faults"], key=lambda f: f["t_s"])
    active = []
    rows = []
    outputs = [0.0] * 8
    setpoint_k = {}
    session.telemetry.clear()
    session.events.clear()
    plant_outputs = plant.outputs()
    wall0 = time.monotonic()
    for k in range(n_steps + 1):
        t_s = k * dt_s
        while setpoints and setpoints[0]["t_s"] <= t_s + 1e-9:
            sp = setpoints.pop(0)
            session.command("setpoint", loop=sp["loop"], value=sp["value_k"])
            setpoint_k[sp["loop"]] = sp["value_k"]
        while faults and faults[0]["t_s"] <= t_s + 1e-9:
            f = dict(faults.pop(0))
            f["t_end"] = f["t_s"] + f["duration_s"]
            active.append(f)
            if f["kind"] in SENSOR_FAULTS:
                kind, keys = SENSOR_FAULTS[f["kind"]]
                for s in sensors:
                    if s.cfg["channel"] == f["channel"]:
                        s.inject(kind, **{keys[k]: f[k] for k in keys if k in f})
                        s.scenario_fault = f
            if f["kind"] == "host_silence":
                time.sleep(f["duration_s"])
        for f in [f for f in active if f["t_end"] <= t_s + 1e-9]:
            active.remove(f)
            for s in sensors:
                if getattr(s, "scenario_fault", None) is f:
                    s.clear()
                    s.scenario_fault = None
        values = [0.0] * N_SENSORS
        raw = [0.0] * N_SENSORS
        valid = 0
        for s in sensors:
            ch = s.cfg["channel"]
            values[ch] = s.read(plant_outputs[s.cfg["output"]], t_s)
            raw[ch] = boardio.encode(board["sensors"][ch], values[ch])
            valid |= 1 << ch
        for f in active:
            if f["kind"] == "link_noise":
                session.ser.write(os.urandom(int(f.get("bytes_per_step", 16))))
        if realtime:
            delay = wall0 + t_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ans = session.request(
            "HIL_SENSORS",
            expect=("HIL_ACTUATORS",),
            t_ms=int(round(t_s * 1000)),
            valid=valid,
            values=raw,
        )
        outputs = list(ans.outputs)
        rows.append(
            {
                "t_s": t_s,
                "setpoint_k": setpoint_k.get(0, math.nan),
                "measurement_k": plant_outputs[sc["sensors"][0]["output"]],
                "sensed_k": values[sc["sensors"][0]["channel"]],
                "outputs": outputs,
                "faults": ans.faults,
                "plant": dict(plant_outputs),
            }
        )
        inputs = dict(sc["inputs"])
        for p in sc["profile"]:
            inputs[p["input"]] = profile_value(p, t_s)
        for a in sc["actuators"]:
            inputs[a["input"]] = outputs[a["channel"]] * a["scale"]
        for f in active:
            if f["kind"] == "runaway":
                inputs["runaway_w"] = f.get("power_w", 500.0)
        plant_outputs = plant.step(dt_s, inputs)
        if progress is not None:
            progress(k, n_steps)
    stats = session.stats()
    return RigResult(sc, rows, list(session.telemetry), list(session.events), stats, ident)
