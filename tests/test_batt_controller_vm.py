"""The battery thermal controller on the MicroPython VM, without a plant: thresholds that
cannot work are refused with both values named (board check and PARAM_SET), the safe sequence
each fault asks for, chiller and PTC never together and the PTC's minimum on/off times under
random readings, and the board's heap after boot."""

import json
import random

import pytest
from board_vm import HEAP_DRIVER, run_driver

from thermopilot.hil import boardio, resources
from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol import schema
from thermopilot.protocol.link import Nack, Session

BOARD = "virtual_batt"
F = schema.FAULTS


def board_with(tmp_path, defaults=None, noise=None):
    b = resources.load_board(BOARD)
    if defaults:
        b["loops"][0]["defaults"] = defaults
    if noise is not None:
        b["sensors"][3]["noise"] = noise
    path = tmp_path / "b.json"
    path.write_text(json.dumps(b))
    return path


def test_the_bundled_board_passes_the_firmware_checker():
    resources.check_board(BOARD)


def test_a_warning_above_its_alarm_is_refused_naming_both(tmp_path):
    with pytest.raises(ValueError) as err:
        resources.check_board(board_with(tmp_path, {"rate_warn": 0.03, "rate_alarm": 0.02}))
    msg = str(err.value)
    assert "batt.rate_warn = 0.03 and batt.rate_alarm = 0.02 break" in msg, msg


def test_a_deviation_level_below_the_cell_sensors_noise_is_refused_naming_both(tmp_path):
    # the default 5 K warning against one cell probe with 1 K of noise: noise alone crosses it
    with pytest.raises(ValueError) as err:
        resources.check_board(board_with(tmp_path, noise=1.0))
    msg = str(err.value)
    assert "batt.dev_warn = 5 is below 6 x the cell sensors' noise (1)" in msg, msg
    assert "batt.dev_alarm" not in msg  # 8 K is above the 6 K floor
    # the rate levels are judged against the rate estimate's noise, which that probe raises
    assert "batt.rate_warn = 0.01 is below 6 x the rate estimate's noise (0.0166667)" in msg
    with pytest.raises(ValueError) as err:
        resources.check_board(board_with(tmp_path, {"dev_warn": 0.2}))
    assert "batt.dev_warn = 0.2 is below 6 x the cell sensors' noise (0.05)" in str(err.value)


def test_a_tick_rate_the_statistics_cannot_use_is_refused(tmp_path):
    b = json.loads(board_with(tmp_path).read_text())
    b["tick_hz"] = 2.5
    path = tmp_path / "hz.json"
    path.write_text(json.dumps(b))
    with pytest.raises(ValueError, match="tick_hz = 2.5: the battery controller needs a whole"):
        resources.check_board(path)


@pytest.fixture(scope="module")
def session():
    vb = VirtualBoard(board=BOARD).start()
    s = Session(vb.port)
    s.hello()
    yield s
    s.request("PARAM_DEFAULTS", flags=0)
    s.close()
    vb.stop()


def test_param_set_refuses_a_warning_above_its_alarm(session):
    names = {k: p["name"] for k, p in enumerate(session.params())}
    with pytest.raises(Nack) as err:
        session.param_set("batt.rate_warn", 0.05)
    e = err.value
    assert e.code == "conflict" and names[e.other] == "batt.rate_alarm"
    assert e.value == pytest.approx(0.05) and e.max == pytest.approx(0.018 - 0.001)
    assert "the limit comes from batt.rate_alarm" in e.describe(names)
    with pytest.raises(Nack) as err:
        session.param_set("batt.gas_alarm", 40.0)  # below its 50 ppm warning
    assert err.value.code == "conflict" and names[err.value.other] == "batt.gas_warn"


def test_param_set_refuses_a_level_below_the_noise_floor(session):
    with pytest.raises(Nack) as err:
        session.param_set("batt.dev_warn", 0.1)
    # 6 x the cell probes' 0.05 K noise
    assert err.value.code == "out_of_range" and err.value.min == pytest.approx(0.3)


# The App on the VM with every reading set by the driver: cells, inlet, outlet, chiller outlet,
# flow, current, gas, level (board channels 0-14).
BASE = [303.15] * 8 + [298.15, 301.15, 297.15, 10.0, 100.0, 0.0, 1.0]

SAFE_DRIVER = r"""
from tpfw import codec
p = json.load(open("payload.json"))
sens = a.board["sensors"]
hal = a.hal
hal.valid = (1 << len(p["raw"])) - 1
for i, r in enumerate(p["raw"]):
    hal.raw[i] = r
for k in range(120):  # a minute at 2 Hz in auto
    a.tick(k * 500)
res = {}
t = 120
for name, bit in p["faults"]:
    a.sup.reset(t * 500)
    a.sup.faults = 0
    a.sup.trip = 0
    a.sup.latch(bit, 0, 0.0, t * 500)
    for k in range(4):
        a.tick(t * 500)
        t += 1
    res[name] = [a.out[j] for j in range(4)]
print(json.dumps(res))
"""


def raw(values):
    b = resources.load_board(BOARD)
    return [boardio.encode(b["sensors"][i], v) for i, v in enumerate(values)]


def test_each_fault_gets_its_own_safe_sequence(tmp_path):
    names = [
        "thermal_runaway",
        "pump_failure",
        "cooling_lost",
        "coolant_leak",
        "over_temperature",
        "host_lost",
    ]
    got = run_driver(
        tmp_path, BOARD, SAFE_DRIVER, {"raw": raw(BASE), "faults": [(n, F[n]) for n in names]}
    )
    # pump, chiller, PTC, derate
    assert got["thermal_runaway"] == [1.0, 1.0, 0.0, 0.0]  # full cooling, no current
    assert got["pump_failure"] == [0.0, 0.0, 0.0, pytest.approx(0.3)]  # no duty on a dead pump
    assert got["cooling_lost"] == [1.0, 1.0, 0.0, pytest.approx(0.3)]
    assert got["coolant_leak"] == [1.0, 1.0, 0.0, pytest.approx(0.3)]  # flow still measured
    assert got["over_temperature"] == [1.0, 1.0, 0.0, pytest.approx(0.3)]
    assert got["host_lost"] == [1.0, 1.0, 0.0, 0.5]  # the board's safe values


RANDOM_DRIVER = r"""
import random
p = json.load(open("payload.json"))
random.seed(p["seed"])
hal = a.hal
enc = p["enc"]  # per channel: NTC (beta, r0, t0, rs) or None for a linear SI channel
import math
def ntc(i, t):
    beta, r0, t0, rs = enc[i]
    r = r0 * math.exp(beta * (1.0 / t - 1.0 / t0))
    return r / (r + rs)
hal.valid = (1 << 15) - 1
# the walk's chiller outlet is not a chiller's: the chiller-loss check would judge it lost
a.params.set(a.params.index["batt.ch_ua"], 1.0)
c = a.ctls[0]
log = []
both = 0
state = False
cells = 283.15
tin = 293.15
for k in range(p["n"]):
    # a random walk through cold, mild and hot packs, random inlet temperatures and currents;
    # it is pulled along a 12.5-minute swing from -5 to 35 degC so that every seed crosses the
    # PTC's and the chiller's thresholds several times (a free walk can stay hot for 50 minutes)
    cells += random.uniform(-0.4, 0.4)
    cells += 0.02 * (288.15 + 20.0 * math.sin(6.283185 * k / 1500) - cells)
    cells = min(max(cells, 253.15), 323.15)
    # around tin_heat, the heat PI asks on and off; steps within the probe's rate_max
    tin += random.uniform(-1.5, 1.5) + 0.05 * (308.15 - tin)
    for g in range(8):
        hal.raw[g] = ntc(g, cells + random.uniform(-0.3, 0.3))
    hal.raw[8] = ntc(8, tin)
    hal.raw[9] = ntc(9, cells)
    hal.raw[10] = ntc(10, tin)
    hal.raw[11] = 20.0 * a.out[0]
    hal.raw[12] = random.uniform(-200.0, 400.0)
    hal.raw[13] = 0.0
    hal.raw[14] = 1.0
    a.tick(k * 500)
    if a.out[1] > 0.0 and a.out[2] > 0.0:
        both += 1
    on = a.out[2] > 0.0
    if on != state:  # the PTC switched: when, which way, cell max, runaway warning
        log.append((k, on, c.f[32], c.iv[6]))
        state = on
print(json.dumps({"log": log, "both": both, "faults": a.sup.faults}))
"""


def test_chiller_and_ptc_never_together_and_the_ptc_keeps_its_minimum_times(tmp_path):
    b = resources.load_board(BOARD)
    enc = [
        (
            s.get("beta", 3950.0),
            s.get("r0_ohm", 1e4),
            s.get("t0_k", 298.15),
            s.get("r_series_ohm", 1e4),
        )
        if s["kind"] == "ntc"
        else None
        for s in b["sensors"]
    ]
    n = 6000  # 50 minutes at 2 Hz
    payload = {"seed": random.randrange(1 << 30), "n": n, "enc": enc}
    # the log of the switches is the test's, not the board's: the VM gets 1 MB for it
    got = run_driver(tmp_path, BOARD, RANDOM_DRIVER, payload, heap="1M")
    assert got["faults"] == 0 and got["both"] == 0
    # the PTC switches on no sooner than 30 s after it went off, and off no sooner than 30 s
    # after it went on unless the cells passed cool_on (32 degC) or a runaway warning stands
    last = -1e9
    for k, on, cmax, warn in got["log"]:
        t = k * 0.5
        forced = not on and (cmax > 305.15 or warn)
        if not forced:
            assert t - last >= 30.0 - 1e-6, (k, t, last, on)
        last = t
    # the walk did switch it both ways, more than once
    assert len(got["log"]) >= 4, (payload["seed"], got["log"])


def test_the_board_boots_in_its_heap_with_room_left(tmp_path):
    got = run_driver(tmp_path, BOARD, HEAP_DRIVER, raw(BASE))
    print("virtual_batt heap:", got)
    assert got["faults"] == 0
    # the application's own statistics on the running virtual board are in docs/controllers.md;
    # here: it boots in 160K and keeps a working margin for the tick's garbage
    assert got["free_after_boot"] > 30000
