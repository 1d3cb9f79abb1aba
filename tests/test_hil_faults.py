"""The fault registry: every kind's effect, first as pure transforms, then all of them injected
mid-run into one lockstep run on the real virtual board (sensor faults on a second channel, so
the loop keeps moving the pump while the actuator faults act on it)."""

import json

import numpy as np
import pytest

from thermopilot.hil import faults, resources, rig, scenario, signals
from thermopilot.hil.plants import PLANTS, make_plant
from thermopilot.hil.sensors import Sensor
from thermopilot.hil.vboard import VirtualBoard


def test_every_kind_has_a_doc_and_its_keys():
    assert set(faults.FAULTS) == {
        "sensor_open", "sensor_short", "sensor_stuck", "sensor_drift", "sensor_offset",
        "sensor_gain", "sensor_noise", "sensor_intermittent", "sensor_delayed", "sensor_garbage",
        "actuator_stuck", "actuator_slow", "actuator_lost_steps", "actuator_dead",
        "actuator_partial", "plant_change", "plant_input", "link_noise", "link_drop",
        "host_silence",
    }  # fmt: skip
    for kind, cls in faults.FAULTS.items():
        assert cls.KIND == kind and len(cls.DOC) > 20 and cls.GROUP
        assert {"t_s", "duration_s"} <= set(cls.keys())


def test_plant_output_table_matches_the_plants():
    # hil check knows every plant's outputs without building it: the table must stay in step
    for name in PLANTS:
        real = list(make_plant(name).outputs())
        assert signals.plant_outputs(name) == real, name
    assert signals.plant_outputs("battery_loop", {"n_groups": 3})[-1] == "cell_k_2"
    assert len(list(make_plant("battery_loop", n_groups=3).outputs())) == len(
        signals.plant_outputs("battery_loop", {"n_groups": 3})
    )


class FakeRig:
    def __init__(self, value, scale=1.0):
        self.value = value
        self.scale = scale

    def plant_input_now(self, ch):
        return self.value

    def actuator_cfg(self, ch):
        return {"scale": self.scale, "offset": 0.0}


def fault(kind, **cfg):
    cfg.setdefault("t_s", 0.0)
    cfg.setdefault("duration_s", float("inf"))
    cfg.setdefault("channel", 0)
    keys = faults.FAULTS[kind].keys()
    for k, key in keys.items():
        if k not in cfg and not key.required:
            cfg[k] = key.default
    cfg["kind"] = kind
    return faults.make(cfg, 0)


def test_actuator_transforms():
    f = fault("actuator_stuck")
    f.start(FakeRig(150.0), 0.0)
    assert [f.apply(v, 0.1 * k, 0.1) for k, v in enumerate([150, 200, 50])] == [150.0] * 3
    f = fault("actuator_slow", rate_per_s=0.1)  # 0.1 of the board's unit per s, scale 480
    f.start(FakeRig(100.0, scale=480.0), 0.0)
    got = [f.apply(200.0, 0.1 * k, 0.1) for k in range(3)]
    assert got == pytest.approx([104.8, 109.6, 114.4])  # 48 steps/s
    f = fault("actuator_dead")
    assert f.apply(0.7, 0.0, 0.1) == 0.0
    f = fault("actuator_partial", factor=0.4)
    assert f.apply(0.5, 0.0, 0.1) == pytest.approx(0.2)
    f = fault("actuator_lost_steps", steps_per_move=3.0)
    f.start(FakeRig(150.0), 0.0)
    # commanded 150 -> 160 -> 158 -> 158: moves of +10 and -2; 3 steps lost from each
    got = [f.apply(v, 0.1 * k, 0.1) for k, v in enumerate([150.0, 160.0, 158.0, 158.0])]
    assert got == pytest.approx([150.0, 157.0, 157.0, 157.0])
    f = fault("actuator_lost_steps", fraction=0.25)
    f.start(FakeRig(100.0), 0.0)
    got = [f.apply(v, 0.1 * k, 0.1) for k, v in enumerate([100.0, 140.0, 120.0])]
    assert got == pytest.approx([100.0, 130.0, 115.0])


def test_sensor_faults_in_the_sensor_layer():
    s = Sensor.ideal(0.0, 100.0, seed=3)
    s.read(50.0, 0.0)
    s.inject("offset", offset=2.5)
    assert s.read(50.0, 0.1) == 52.5
    s.inject("gain", gain=1.5, about=10.0)
    assert s.read(50.0, 0.2) == pytest.approx(70.0)
    s.inject("intermittent", dropout_s=0.25, period_s=1.0)
    got = [s.read(50.0, 1.0 + 0.1 * k) for k in range(20)]
    opens = [v == s.open_value for v in got]
    assert opens[:3] == [True, True, True] and opens[3:10] == [False] * 7 and opens[10]
    s.inject("garbage")
    got = [s.read(50.0, 3.0 + 0.1 * k) for k in range(500)]
    assert 0.0 <= min(got) < 10.0 and 90.0 < max(got) <= 100.0
    s.inject("noise", noise=2.0)
    got = np.array([s.read(50.0, 60.0 + 0.1 * k) for k in range(2000)])
    assert np.std(got) == pytest.approx(2.0, rel=0.1)
    assert s.open_value < 0.0 and s.short_value > 100.0  # an ideal channel's range check sees
    with pytest.raises(ValueError, match="intermittent needs 0 < dropout_s < period_s"):
        s.inject("intermittent", dropout_s=2.0, period_s=1.0)
    with pytest.raises(ValueError, match="needs noise"):
        s.inject("noise")


# -- every kind, mid-run, on the real virtual board -------------------------------------------


def two_sensor_board(tmp_path):
    b = resources.load_board("virtual")
    spare = dict(b["sensors"][0], name="coolant_in", critical=False, moved_by=[])
    b["sensors"].append(spare)
    b["name"] = "virtual"  # the firmware reports this name; the scenario is for it
    path = tmp_path / "virtual2.json"
    path.write_text(json.dumps(b))
    return path


FAULT_TABLE = [
    {"kind": "sensor_offset", "t_s": 10, "duration_s": 5, "channel": 1, "offset": 2.0},
    {"kind": "sensor_gain", "t_s": 15, "duration_s": 5, "channel": 1, "gain": 1.1},
    {"kind": "sensor_noise", "t_s": 20, "duration_s": 5, "channel": 1, "noise": 0.5},
    {"kind": "sensor_intermittent", "t_s": 25, "duration_s": 10, "channel": 1,
     "dropout_s": 0.5, "period_s": 2.0},
    {"kind": "sensor_delayed", "t_s": 35, "duration_s": 10, "channel": 1, "delay_s": 3.0},
    {"kind": "sensor_garbage", "t_s": 45, "duration_s": 5, "channel": 1},
    {"kind": "sensor_drift", "t_s": 50, "duration_s": 10, "channel": 1, "rate_per_s": 0.5},
    {"kind": "sensor_stuck", "t_s": 60, "duration_s": 10, "channel": 1},
    {"kind": "sensor_short", "t_s": 70, "duration_s": 1, "channel": 1},
    {"kind": "sensor_open", "t_s": 71, "duration_s": 1, "channel": 1},
    {"kind": "actuator_stuck", "t_s": 10, "duration_s": 10, "channel": 0},
    {"kind": "actuator_slow", "t_s": 20, "duration_s": 20, "channel": 0, "rate_per_s": 0.01},
    {"kind": "actuator_partial", "t_s": 40, "duration_s": 10, "channel": 0, "factor": 0.5},
    {"kind": "actuator_dead", "t_s": 50, "duration_s": 10, "channel": 0},
    {"kind": "plant_change", "t_s": 62, "duration_s": 28, "param": "pump_health",
     "value": 0.5, "ramp_s": 10},
    {"kind": "plant_input", "t_s": 80, "duration_s": 20, "input": "ambient_k", "value": 320.0,
     "ramp_s": 5},
    {"kind": "plant_change", "t_s": 92, "duration_s": 8, "param": "chiller_capacity_w",
     "value": 0.0},
    {"kind": "link_noise", "t_s": 100, "duration_s": 10, "bytes_per_step": 32},
    {"kind": "link_drop", "t_s": 110, "duration_s": 15, "fraction": 0.5},
]  # fmt: skip


@pytest.fixture(scope="module")
def every_fault(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    raw = {
        "name": "every_fault",
        "duration_s": 130,
        "board": str(two_sensor_board(tmp)),
        "plant": {"model": "battery_loop", "params": {"initial_t_k": 304.15}},
        "inputs": {"current_a": 150.0, "ambient_k": 303.15},
        "sensors": [
            {"channel": 0, "output": "coolant_out_k"},
            {"channel": 1, "output": "coolant_in_k"},
        ],
        "actuators": [{"channel": 0, "input": "pump_duty"}],
        "setpoints": [  # steps that move the pump both ways under the actuator faults
            {"t_s": 0, "value_c": 31.0},
            {"t_s": 12, "value_c": 30.0},
            {"t_s": 20, "value_c": 29.0},
            {"t_s": 40, "value_c": 31.0},
        ],
        "faults": FAULT_TABLE,
        "criteria": [{"kind": "no_fault", "before_s": 9.0}],
    }
    sc = scenario.check(raw, "every_fault")
    r = rig.Rig(sc)
    with VirtualBoard(board=sc["board_path"]) as vb:
        from thermopilot.protocol.link import Session

        with Session(vb.port, timeout_s=0.1, retries=5) as s:
            res = r.run(s)
    res.evaluate()
    return res


def window(res, t0, t1):
    t = res.rows.t
    return (t >= t0 - 1e-9) & (t < t1 - 1e-9)


def test_every_injection_is_recorded(every_fault):
    inj = {i["index"]: i for i in every_fault.rows.injections}
    assert set(inj) == set(range(len(FAULT_TABLE)))
    for k, f in enumerate(FAULT_TABLE):
        assert inj[k]["t_s"] == pytest.approx(f["t_s"]) and inj[k]["kind"] == f["kind"]
        assert inj[k]["t_end"] == pytest.approx(f["t_s"] + f["duration_s"])
    assert every_fault.verdicts[0]["passed"]  # nothing latched before the first fault


def test_sensor_faults_reach_the_board_on_their_channel(every_fault):
    r = every_fault.rows
    truth, sensed, t = r["plant.coolant_in_k"], r["sensed.1"], r.t
    w = window(every_fault, 10, 15)
    assert np.allclose(sensed[w] - truth[w], 2.0)
    w = window(every_fault, 15, 20)
    assert np.allclose(sensed[w], 273.15 + 1.1 * (truth[w] - 273.15))
    w = window(every_fault, 20, 25)
    assert 0.3 < np.std(sensed[w] - truth[w]) < 0.7
    w = window(every_fault, 25, 35)
    open_k = 273.15 - 50.0
    assert np.mean(sensed[w] == open_k) == pytest.approx(0.25, abs=0.06)
    w = window(every_fault, 39, 45)  # the delay buffer filled from 35 s
    k = np.flatnonzero(w)
    assert np.allclose(sensed[k], truth[k - 30], atol=1e-9)
    w = window(every_fault, 45, 50)
    assert np.ptp(sensed[w]) > 100.0
    w = window(every_fault, 50, 60)
    assert np.allclose(sensed[w] - truth[w], 0.5 * (t[w] - 50.0))
    w = window(every_fault, 60, 70)
    assert np.ptp(sensed[w]) == 0.0 and np.ptp(truth[w]) > 0.0
    assert np.all(sensed[window(every_fault, 70, 71)] == 273.15 + 200.0)
    assert np.all(sensed[window(every_fault, 71, 72)] == open_k)
    w = window(every_fault, 72, 100)
    assert np.allclose(sensed[w], truth[w])  # healed
    # channel 0 (the loop's) was never touched
    assert np.allclose(r["sensed.0"], r["plant.coolant_out_k"])
    # the board saw them: garbage and the wire faults latched on the non-critical channel
    latched = {e["name"] for e in every_fault.events if e["kind"] == "latched"}
    assert {"sensor_open", "sensor_short"} <= latched


def test_actuator_faults_sit_between_board_and_plant(every_fault):
    r = every_fault.rows
    cmd, got = r["out.0"], r["input.pump_duty"]
    w = window(every_fault, 10, 20)
    assert np.ptp(got[w]) == 0.0 and np.ptp(cmd[w]) > 0.01
    w = window(every_fault, 20, 40)
    assert np.max(np.abs(np.diff(got[w]))) <= 0.01 * 0.1 + 1e-9
    assert np.max(np.abs(got[w] - cmd[w])) > 0.01
    w = window(every_fault, 40, 50)
    assert np.allclose(got[w], 0.5 * cmd[w])
    w = window(every_fault, 50, 60)
    assert np.all(got[w] == 0.0) and np.all(cmd[w] > 0.0)
    assert np.allclose(r["plant.flow_lpm"][window(every_fault, 51, 60)], 0.0, atol=0.5)
    w = window(every_fault, 60, 130)
    assert np.allclose(got[w], cmd[w])


def test_plant_faults_step_ramp_and_repair(every_fault):
    r = every_fault.rows
    amb = r["input.ambient_k"]
    t = r.t
    k = np.flatnonzero(np.isclose(t, 82.5))[0]
    assert amb[k] == pytest.approx(303.15 + 0.5 * (320.0 - 303.15))
    assert np.all(amb[window(every_fault, 85, 100)] == 320.0)
    assert np.all(amb[window(every_fault, 100, 130)] == 303.15)
    # pump health 0.5 from 72 s to 90 s: less flow for the same duty than after the repair
    flow, duty = r["plant.flow_lpm"], r["input.pump_duty"]
    before = window(every_fault, 75, 90)
    after = window(every_fault, 101, 110)
    ratio_b = np.mean(flow[before] / np.maximum(duty[before], 1e-3))
    ratio_a = np.mean(flow[after] / np.maximum(duty[after], 1e-3))
    assert ratio_b < 0.85 * ratio_a
    # the chiller lost from 92 to 100 s takes no heat then
    assert np.all(r["plant.chiller_heat_w"][window(every_fault, 93, 100)] < 1.0)
    assert np.mean(r["plant.chiller_heat_w"][window(every_fault, 101, 110)]) > 100.0


def test_link_faults(every_fault):
    st = every_fault.stats
    assert st["board_rx_bad_crc"] + st["board_rx_bad_cobs"] + st["board_rx_bad_len"] > 20
    assert 0.3 * 150 < every_fault.rig.frames_dropped < 0.7 * 150
    # the board still ran every tick: telemetry time kept up through the lost frames
    assert len(every_fault.rows) == 1301
