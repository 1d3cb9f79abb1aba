"""The chip cooler controller on the MicroPython VM, without a plant: limits that cannot work
are refused with both values named, the power cap computed from the board's junction estimate
in every mode and in the safe state, the feed-forward duty from the measured power, and the
board's heap after boot."""

import json

import pytest
from board_vm import HEAP_DRIVER, run_driver

from thermopilot.hil import boardio, resources
from thermopilot.protocol import schema

BOARD = "virtual_chip"
F = schema.FAULTS


def board_with(tmp_path, defaults):
    b = resources.load_board(BOARD)
    b["loops"][0]["defaults"] = defaults
    path = tmp_path / "b.json"
    path.write_text(json.dumps(b))
    return path


def test_the_bundled_board_passes_the_firmware_checker():
    resources.check_board(BOARD)


@pytest.mark.parametrize(
    "defaults, expect",
    [
        ({"tj_lim": 383.15}, "chip.tj_lim = 383.15 and chip.tj_alarm = 378.15 break"),
        ({"cap_margin": 0.3}, "chip.cap_margin = 0.3 and chip.margin_sp = 0.25 break"),
        ({"case_lim": 370.15}, "chip.case_lim = 370.15 and chip.case_alarm = 363.15 break"),
    ],
)
def test_limits_that_cannot_work_are_refused_naming_both(tmp_path, defaults, expect):
    with pytest.raises(ValueError) as err:
        resources.check_board(board_with(tmp_path, defaults))
    assert expect in str(err.value), str(err.value)


# case, power, saturation temperature, flow (board channels 0-3); without a flow reading the
# model takes the pump as delivering what its duty asks (a fixed reading would disagree with
# every duty but one)
def raw(case_k, power_w, tsat_k=308.15, flow=None):
    b = resources.load_board(BOARD)
    vals = (case_k, power_w, tsat_k) + (() if flow is None else (flow,))
    return [boardio.encode(b["sensors"][i], v) for i, v in enumerate(vals)]


CAP_DRIVER = r"""
from tpfw import codec
p = json.load(open("payload.json"))
hal = a.hal
c = a.ctls[0]
res = {}
t = 0
def run(name, raw, n):
    global t
    hal.valid = (1 << len(raw)) - 1
    for i, r in enumerate(raw):
        hal.raw[i] = r
    for k in range(n):
        a.tick(t)
        t += 100
    res[name] = [a.out[0], a.out[1], a.out[2], c.measurement]
run("idle", p["idle"], 50)
run("load", p["load"], 50)
run("load_cap", p["load"], 200)
run("hot_case", p["hot_case"], 50)
c.mode = codec.MODE_OFF
run("off_hot", p["hot_case"], 20)
c.mode = codec.MODE_AUTO
a.sup.latch(codec.FAULT_PUMP_FAILURE, 0, 0.0, t)
run("safe_hot", p["hot_case"], 20)
res["faults"] = a.sup.faults
print(json.dumps(res))
"""


def test_the_power_cap_follows_the_junction_estimate_in_every_mode(tmp_path):
    payload = {
        "idle": raw(310.15, 90.0),
        # (the saturation temperature close to the case: a wet plate's resistance, no dry-out
        # signature while the lagged power catches up with the step)
        "load": raw(323.15, 750.0, tsat_k=318.15),
        # a hot lid at 750 W: the junction estimate 80 + 0.03 x 750 = 102.5 degC
        "hot_case": raw(353.15, 750.0, tsat_k=348.15),
    }
    got = run_driver(tmp_path, BOARD, CAP_DRIVER, payload)
    pump, cap, cond, tj = got["idle"]
    assert pump == pytest.approx(0.1)  # d_min at idle
    pump, cap, cond, tj = got["load"]
    # feed-forward: the critical-power term asks (750 / (0.75 x 1200))^(1/0.52) = 0.70
    assert pump == pytest.approx((750.0 / (0.75 * 1200.0)) ** (1 / 0.52), abs=0.02)
    assert tj == pytest.approx(323.15 + 0.03 * 750.0, abs=0.1)  # case + r_jc P
    # the cap: the least of the junction limit (95 degC) and the case slope to 87 degC
    expect = min((368.15 - 353.15) / 0.03, (360.15 - 353.15) * 100.0)
    for name in ("hot_case", "off_hot"):
        assert got[name][1] == pytest.approx(expect, abs=5.0), (name, got[name])
    # in the safe state never above the board's safe cap (300 W)
    assert got["safe_hot"][1] == pytest.approx(min(expect, 300.0), abs=1e-3), got["safe_hot"]
    # off: the pump at its off value (the board gives it none: its safe value, full), the cap
    # still on guard
    assert got["off_hot"][0] == 1.0
    assert got["safe_hot"][0] == 1.0 and got["safe_hot"][2] == 1.0  # safe: full pump, condenser
    # at a cool lid the cap is what the cooler carries at full pump with cap_margin left:
    # 1200 x (1 - 0.1)
    assert got["load_cap"][1] == pytest.approx(1080.0, abs=5.0)
    # nothing latched but what the test latched and the flow channel it does not feed
    assert got["faults"] == 1 << F["pump_failure"] | 1 << F["sensor_implausible"]


def test_the_board_boots_in_its_heap_with_room_left(tmp_path):
    got = run_driver(tmp_path, BOARD, HEAP_DRIVER, raw(323.15, 700.0, flow=0.0105))
    print("virtual_chip heap:", got)
    assert got["faults"] == 0
    assert got["free_after_boot"] > 30000
