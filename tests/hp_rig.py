"""Heat-pump closed loop for tests that need exact control over a run (a parameter changed
mid-run, a raw voltage out of a transducer's window, an actuator that stops on its own): the
real R290 plant, the real virtual board (firmware on the MicroPython VM, HIL frames over a real
Session) and the board's raw front ends (hil.boardio). ``Loop`` steps plant and board in
lockstep and records one row per tick (plant truth, what the board was sent, its outputs and
faults). The bundled scenarios run through the HIL rig itself (tests/test_hp_scenarios.py).
"""

from thermopilot.hil import boardio, resources
from thermopilot.hil.plants import make_plant
from thermopilot.hil.sensors import Sensor
from thermopilot.protocol import schema

N_SENSORS = schema.by_name("HIL_SENSORS").struct.values.subcon.count
FAULTS = schema.FAULTS
LATCHED = schema.EVENT_KINDS["latched"]
NOTICE_NAMES = {v: k for k, v in schema.NOTICES.items()}

#: the board's raw channels on virtual_hp and the plant outputs a real unit's sensors see
WIRING = {
    0: "suction_p_pa",
    1: "suction_pipe_k",
    2: "discharge_p_pa",
    3: "cond_sec_out_k",
    4: "compressor_hz",
    5: "discharge_t_k",
}


def front_end(preset, noise=None, quant=None, lag_s=None, seed=0):
    """A hil.sensors front end by its v2 preset name, with the scenario's overrides."""
    if preset == "ntc":
        s = Sensor.ntc(seed=seed)
    elif preset == "pressure":
        s = Sensor.pressure(seed=seed)
    elif preset == "flow":
        s = Sensor.flow(seed=seed)
    elif preset == "ideal":
        s = Sensor(seed=seed)
    else:
        raise ValueError("unknown sensor preset %r" % (preset,))
    if noise is not None:
        s.noise = float(noise)
    if quant is not None:
        s.quant = float(quant)
    if lag_s is not None:
        s.lag_s = float(lag_s)
    return s


def realistic_sensors(seed=1, probe_lag_s=8.0, probe_noise_k=0.15):
    """The issue's realistic probe (8 s lag, 0.15 K noise) on the suction pipe; 12-bit
    transducers with 2 kPa noise; a standard NTC in the leaving water; the inverter's speed."""
    return {
        0: front_end("pressure", 2000.0, 2e6 / 4096, 0.05, seed),
        1: front_end("ntc", probe_noise_k, 0.01, probe_lag_s, seed + 1),
        2: front_end("pressure", 2000.0, 3.5e6 / 4096, 0.05, seed + 2),
        3: front_end("ntc", 0.05, 0.01, 2.0, seed + 3),
        4: front_end("ideal", 0.1, 0.0, 0.0, seed + 4),
        5: front_end("ntc", 0.15, 0.01, 8.0, seed + 5),
    }


class Loop:
    """The plant and the board on ``session`` in lockstep (one HIL frame per 0.1 s tick)."""

    def __init__(self, session, board="virtual_hp", plant=None, inputs=None, sensors=None,
                 actuators=None, params=None, dt_s=0.1, seed=1):  # fmt: skip
        self.s = session
        self.board = resources.load_board(board)
        self.plant = make_plant("heatpump_r290", **(plant or {}))
        self.inputs = dict(inputs or {})
        self.sensors = sensors if sensors is not None else realistic_sensors(seed)
        self.wiring = dict(WIRING)
        # board actuator channel -> (plant input, scale, offset)
        self.actuators = actuators or {
            0: ("valve_steps_cmd", 1.0, 0.0),
            1: ("compressor_hz", 1.0, 0.0),
        }
        self.dt_s = dt_s
        self.t_ms = 0
        self.rows = []
        self.override = {}  # channel -> f(t_s, reading) -> what the board is sent
        self.raw_override = {}  # channel -> the raw signal sent instead (volts, ADC fraction)
        self.actuator_override = {}  # plant input -> f(t_s, value) -> what the plant gets
        self.po = self.plant.outputs()
        session.request("PARAM_DEFAULTS", flags=0)
        # lockstep: the board waits for each frame; a host stalled by a loaded machine must not
        # look like a lost host (1 s by default) to tests that are about the controller
        params = dict({"hil.timeout_s": 10.0}, **(params or {}))
        for name, value in params.items():
            session.param_set(name, value)
        session.command("hil_start")
        session.fault_reset()
        session.stream_rate("TELEMETRY", 1.0 / dt_s)
        session.telemetry.clear()
        session.events.clear()

    def step(self, n=1):
        for _ in range(n):
            t_s = self.t_ms / 1000.0
            raw = [0.0] * N_SENSORS
            sensed = {}
            valid = 0
            for ch, name in self.wiring.items():
                v = self.sensors[ch].read(self.po[name], t_s)
                if ch in self.override:
                    v = self.override[ch](t_s, v)
                sensed[ch] = v
                raw[ch] = boardio.encode(self.board["sensors"][ch], v)
                if ch in self.raw_override:
                    raw[ch] = self.raw_override[ch]
                valid |= 1 << ch
            ans = self.s.request(
                "HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=self.t_ms, valid=valid, values=raw
            )
            out = list(ans.outputs)
            self.rows.append(
                {"t_s": t_s, "plant": self.po, "out": out, "sensed": sensed, "faults": ans.faults}
            )
            u = dict(self.inputs)
            for ch, (name, scale, offset) in self.actuators.items():
                u[name] = out[ch] * scale + offset
            for name, f in self.actuator_override.items():
                u[name] = f(t_s, u.get(name, 0.0))
            self.po = self.plant.step(self.dt_s, u)
            self.t_ms += int(round(self.dt_s * 1000))
        return self.rows[-1]

    def run(self, seconds):
        return self.step(int(round(seconds / self.dt_s)))

    def telemetry(self):
        """The loop's telemetry frames, as (t_s, frame), in time order."""
        return [(f.t_ms / 1000.0, f) for f in self.s.telemetry]

    def events(self):
        return list(self.s.events)
