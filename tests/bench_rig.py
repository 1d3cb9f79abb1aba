"""A small lockstep bench for tests that need exact control of what the board senses: the real
battery plant, the board's sensor front ends (hil.boardio), HIL frames over a real Session,
and per-channel overrides that stand in for a failing sensor."""

import json

from thermopilot.hil import boardio, resources
from thermopilot.hil.plants import make_plant
from thermopilot.protocol import schema

N_SENSORS = schema.by_name("HIL_SENSORS").struct.values.subcon.count


def supervised_board(tmp_path):
    """The virtual board plus a redundant coolant sensor and a flow meter that checks the
    pump; written to tmp_path and returned as (path, definition)."""
    b = resources.load_board("virtual")
    plant = make_plant("battery_loop")
    s0 = b["sensors"][0]
    s0.update(
        {
            "stuck_s": 20,
            "moves_with": 1,
            "redundant": {"sensor": 1, "max_diff": 2.0, "delay_s": 5},
        }
    )
    s1 = dict(s0, name="coolant_out_b")
    s1.pop("redundant")
    s1.pop("moves_with")
    s1["stuck_s"] = 0
    b["sensors"].append(s1)
    b["sensors"].append(
        {
            "name": "flow",
            "kind": "linear",
            "quantity": "flow",
            "unit": "L/min",
            "min": -1.0,
            "max": 40.0,
            "noise": 0.1,
        }
    )
    duties = [0.0, 0.05, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    b["actuators"][0]["feedback"] = {
        "sensor": 2,
        "points": [[d, plant.pump_flow_lpm(d)] for d in duties],
        "tol": 0.3,
        "abs_tol": 1.0,
        "delay_s": 3,
    }
    b["loops"][0]["defaults"]["inef_s"] = 30.0
    b["loops"][0]["defaults"]["sp"] = 306.15  # 33 degC: the pump works mid-range
    b["name"] = "supervised"
    path = tmp_path / "supervised.json"
    path.write_text(json.dumps(b, indent=1))
    return path, b


class Bench:
    """Steps the battery plant in lockstep with the board on ``session``."""

    def __init__(self, session, board, wiring, inputs=None, dt_s=0.1, **plant_params):
        self.s = session
        self.board = board
        self.wiring = wiring  # channel -> plant output name
        self.plant = make_plant("battery_loop", **plant_params)
        self.inputs = dict(inputs or {"current_a": 150.0, "ambient_k": 303.15})
        self.out = self.plant.outputs()
        self.t_ms = 0
        self.dt_s = dt_s
        self.override = {}  # channel -> f(t_s, true_value) -> SI value the sensor reports
        self.last = None
        session.command("hil_start")
        session.fault_reset()

    def step(self, n=1):
        for _ in range(n):
            raw = [0.0] * N_SENSORS
            valid = 0
            t_s = self.t_ms / 1000.0
            for ch, name in self.wiring.items():
                v = self.out[name]
                if ch in self.override:
                    v = self.override[ch](t_s, v)
                raw[ch] = boardio.encode(self.board["sensors"][ch], v)
                valid |= 1 << ch
            ans = self.s.request(
                "HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=self.t_ms, valid=valid, values=raw
            )
            self.last = ans
            self.out = self.plant.step(self.dt_s, dict(self.inputs, pump_duty=ans.outputs[0]))
            self.t_ms += int(round(self.dt_s * 1000))
        return self.last

    def run_until(self, bit, max_s):
        """Step until fault ``bit`` shows in the actuator frame; the board time it latched."""
        end = self.t_ms + int(max_s * 1000)
        while self.t_ms <= end:
            ans = self.step()
            if ans.faults >> bit & 1:
                info = self.s.request("FAULT_INFO_REQ", expect=("FAULT_INFO",), bit=bit)
                return info.t_ms / 1000.0
        return None
