"""Strict scenario loading (SCENARIO_V2.md): every validation gap of the old loader is a test here,
each failing at load time (no board started) with a message naming the key, the value and what
was expected; the old keys still load as aliases."""

import copy
import subprocess
import sys
import time

import pytest
import tomllib

from thermopilot.hil import resources, scenario
from thermopilot.hil.scenario import ScenarioError

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


def bundled_raw(name):
    return tomllib.loads((resources.scenarios_dir() / (name + ".toml")).read_text())


@pytest.fixture
def battery():
    return bundled_raw("battery_sensor_fault")


@pytest.fixture
def heatpump():
    return bundled_raw("heatpump_superheat")


def refused(raw, match):
    with pytest.raises(ScenarioError, match=match):
        scenario.check(raw, "test.toml")


# -- the gaps the issue lists ----------------------------------------------------------------


def test_misspelt_actuator_key_names_the_valid_keys(battery):
    battery["actuators"][0]["scael"] = 2.0
    refused(
        battery, r"\[\[actuators\]\]\[0\]: unknown key\(s\) scael \(did you mean scael -> scale"
    )
    with pytest.raises(ScenarioError, match="valid keys: channel, input, offset, scale"):
        scenario.check(battery, "test.toml")


def test_misspelt_setpoint_key_names_the_valid_keys(battery):
    battery["setpoints"][0]["valeu_c"] = 31.0
    refused(battery, r"\[\[setpoints\]\]\[0\]: unknown key\(s\) valeu_c.*value_c")


@pytest.mark.parametrize(
    "table, index",
    [
        ("sensors", 0),
        ("faults", 0),
        ("criteria", 0),
        ("plant", None),
        ("setpoints", 0),
        ("actuators", 0),
    ],
)
def test_every_table_checks_every_key(battery, table, index):
    t = battery[table] if index is None else battery[table][index]
    t["bogus_key"] = 1
    refused(battery, "unknown key\\(s\\) bogus_key")


def test_unknown_sensor_output_is_a_load_error_with_the_choices(battery):
    battery["sensors"][0]["output"] = "coolant_outlet_k"
    refused(
        battery,
        r"output = 'coolant_outlet_k' \(did you mean 'coolant_out_k'\?\); expected one of: "
        r"coolant_out_k",
    )


def test_criterion_window_past_the_end_fails_before_any_run(battery):
    battery["criteria"][1]["before_s"] = 500.0  # the run is 240 s
    refused(battery, r"before_s = 500 is after the end of the run \(duration_s = 240\)")
    battery["criteria"][1]["before_s"] = 119.0
    battery["criteria"][1]["after_s"] = 300.0
    refused(battery, r"after_s = 300 is not before the end of the run")


def test_sensor_channel_the_board_does_not_have(battery):
    battery["sensors"][0]["channel"] = 7
    refused(battery, r"channel = 7, but board virtual has sensor channels 0..0 \(coolant_out\)")


def test_fault_after_the_end(battery):
    battery["faults"][0]["t_s"] = 300.0
    refused(battery, r"t_s = 300 is not before the end of the run \(duration_s = 240\)")
    battery["faults"][0]["t_s"] = 220.0
    battery["faults"][0]["duration_s"] = 60.0
    refused(battery, r"the fault ends at t=280 s, after the end of the run")


def test_scenario_meant_for_another_board(heatpump, battery):
    heatpump["board"] = "virtual"  # an NTC coolant board wired to superheat
    refused(heatpump, r"plant output superheat_k is a temperature_difference but board virtual")
    battery["board"] = "virtual_hp"
    refused(battery, "is a temperature but board virtual_hp channel 0 .* measures a temperature")
    battery2 = bundled_raw("battery_hold")
    battery2["params"] = {"sh.kp": 0.1}  # another board's parameter
    refused(battery2, r"'sh.kp' is not a parameter of board virtual .*another board")


@pytest.mark.parametrize("name", ["../../x", "a/b", "", "x y", "é"])
def test_name_must_be_a_safe_file_name(battery, name):
    battery["name"] = name
    refused(battery, "name = .*letters, digits")


def test_runaway_on_the_chip_plant_is_refused_at_load():
    raw = bundled_raw("chip_gpu_trace")
    raw["faults"] = [{"kind": "runaway", "t_s": 100, "power_w": 500}]
    refused(raw, r"plant chip_cooler has no input 'runaway_w'")
    raw["faults"] = [{"kind": "plant_input", "t_s": 100, "input": "runaway_w", "value": 5}]
    refused(raw, r"plant chip_cooler has no input 'runaway_w'")


def test_runaway_alias_on_the_battery_becomes_plant_input(battery):
    battery["faults"] = [{"kind": "runaway", "t_s": 100, "power_w": 800}]
    sc = scenario.check(battery, "test.toml")
    assert sc["faults"][0]["kind"] == "plant_input"
    assert sc["faults"][0]["input"] == "runaway_w" and sc["faults"][0]["value"] == 800.0


def test_hil_run_reports_a_missing_file_before_starting_a_board():
    t0 = time.monotonic()
    res = subprocess.run(
        THERMOPILOT + ["hil", "run", "no/such.toml"], capture_output=True, text=True, timeout=60
    )
    wall = time.monotonic() - t0
    assert res.returncode == 2
    assert res.stderr.strip() == "thermopilot: error: scenario file no/such.toml does not exist"
    assert "virtual board" not in res.stdout
    print("hil run on a missing file answered in %.2f s" % wall)


def test_cli_load_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    text = (resources.scenarios_dir() / "battery_sensor_fault.toml").read_text()
    bad.write_text(text.replace('output = "coolant_out_k"', 'output = "nope_k"'))
    for cmd in (["hil", "run", str(bad)], ["hil", "check", str(bad)]):
        res = subprocess.run(THERMOPILOT + cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, res.stderr
        assert "Traceback" not in res.stderr
        assert "output = 'nope_k'" in res.stderr and str(bad) in res.stderr


# -- more checks -----------------------------------------------------------------------------


def test_overlapping_faults_on_one_channel_are_refused(battery):
    battery["faults"].append({"kind": "sensor_stuck", "t_s": 130, "duration_s": 10})
    refused(battery, r"overlaps \[\[faults\]\]\[0\] \(sensor_open\) on the same sensor 0")


def test_fault_on_an_unwired_channel_and_nonsense_faults(battery, heatpump):
    b = copy.deepcopy(battery)
    b["faults"] = [{"kind": "actuator_dead", "t_s": 10, "channel": 3}]
    refused(b, "actuator_dead on actuator channel 3, but the scenario wires actuator channel")
    b["faults"] = [{"kind": "actuator_lost_steps", "t_s": 10, "fraction": 0.5}]
    refused(b, "not a stepper; only a stepper loses steps")
    heatpump["faults"] = [{"kind": "actuator_lost_steps", "t_s": 10, "fraction": 0.5}]
    scenario.check(heatpump, "hp.toml")  # the EXV is one
    b["faults"] = [{"kind": "plant_change", "t_s": 10, "param": "charge_kg", "value": 0.1}]
    refused(b, "plant battery_loop cannot change 'charge_kg' while running; changeable: ")
    b["faults"] = [{"kind": "plant_change", "t_s": 10, "param": "pump_health", "value": 2.0}]
    refused(b, r"pump_health = 2 out of range; expected 0..1")
    b["faults"] = [{"kind": "plant_input", "t_s": 10, "input": "pump_duty", "value": 0.0}]
    refused(b, "driven by board actuator channel 0; use an actuator_\\* fault")
    b["faults"] = [{"kind": "plant_input", "t_s": 10, "input": "ambient_k", "value": 900.0}]
    refused(b, r"ambient_k = 900 out of range; expected 200..360 K")
    b["faults"] = [{"kind": "sensor_intermittent", "t_s": 10, "dropout_s": 2, "period_s": 1}]
    refused(b, "dropout_s = 2 must be shorter than period_s = 1")
    b["faults"] = [{"kind": "host_silence", "t_s": 10}]
    refused(b, r"missing duration_s")
    b["faults"] = [{"kind": "sensor_meltdown", "t_s": 10}]
    refused(b, "kind = 'sensor_meltdown' .*; expected one of: sensor_open")


def test_presets_are_checked_against_the_board_front_end(battery, heatpump):
    battery["sensors"][0]["preset"] = "pressure"
    refused(battery, r"preset = 'pressure' does not fit board virtual channel 0 .*ntc.*use")
    battery["sensors"][0]["preset"] = "ideal"
    scenario.check(battery, "ok.toml")
    heatpump["sensors"][0]["preset"] = "ntc"
    refused(heatpump, "does not fit board virtual_hp channel 0")


def test_setpoint_units_follow_the_loop(heatpump, battery):
    heatpump["setpoints"][0] = {"t_s": 0, "loop": "sh", "value_c": 10.0}
    refused(heatpump, "value_c on loop sh, which holds a temperature_difference")
    battery["setpoints"][0] = {"t_s": 0, "value": 31.0}
    refused(battery, r"setpoint -242.15 °C out of range for loop cool; the board accepts "
            r"-40.00 °C..125.00 °C; a temperature in degC is value_c")  # fmt: skip
    battery["setpoints"][0] = {"t_s": 0, "value": -31.0}
    refused(battery, "below absolute zero")
    battery["setpoints"][0] = {"t_s": 0, "loop": "sh", "value_c": 31.0}
    refused(battery, r"loop = 'sh'; expected one of: cool")
    battery["setpoints"][0] = {"t_s": 0, "value_c": 31.0, "value_k": 304.15}
    refused(battery, "give exactly one of value")


def test_criteria_signals_are_resolved_at_load(battery):
    battery["criteria"] = [{"kind": "at_most", "signal": "plant.junction_k", "max": 1.0}]
    refused(battery, "plant battery_loop has no output 'junction_k'")
    battery["criteria"] = [{"kind": "at_most", "signal": "loop.sh.output", "max": 1.0}]
    refused(battery, "board virtual has no loop 'sh'")
    battery["criteria"] = [{"kind": "at_most", "signal": "loop.cool.bogus", "max": 1.0}]
    refused(battery, "loop cool reports setpoint, measurement, output")
    battery["criteria"] = [{"kind": "energy", "signals": ["plant.coolant_out_k"]}]
    refused(battery, "is not a power in W")
    battery["criteria"] = [{"kind": "fault_latched", "fault": "sensor_opn"}]
    refused(battery, "fault = 'sensor_opn' \\(did you mean 'sensor_open'")
    battery["criteria"] = [{"kind": "latch_latency", "fault": "sensor_open", "after_fault": 3,
                            "max_s": 1}]  # fmt: skip
    refused(battery, "after_fault = 3, but the scenario has 1 \\[\\[faults\\]\\] entries")
    battery["criteria"] = [{"kind": "settles", "loop": "cool", "within_s": 5}]
    refused(battery, "missing band")


def test_old_keys_still_load_as_aliases():
    text = """
name = "old"
duration_s = 60
board = "virtual"
[plant]
model = "battery_loop"
[[sensors]]
kind = "ntc"
channel = 0
output = "coolant_out_k"
noise_k = 0.05
quant_k = 0.01
[[actuators]]
channel = 0
input = "pump_duty"
[[setpoints]]
t_s = 0
value_c = 30.0
[[faults]]
kind = "sensor_drift"
t_s = 10
rate_k_per_s = 0.1
[[criteria]]
kind = "settles"
within_s = 30
band_k = 0.5
[[criteria]]
kind = "overshoot_max"
max_k = 1.0
[[criteria]]
kind = "measurement_between"
min_c = 25
max_c = 35
[[criteria]]
kind = "actuator_below"
channel = 0
max = 0.9
"""
    sc = scenario.check(tomllib.loads(text), "old.toml")
    s = sc["sensors"][0]
    assert (s["preset"], s["noise"], s["quant"]) == ("ntc", 0.05, 0.01)
    assert sc["faults"][0]["rate_per_s"] == 0.1
    kinds = [c["kind"] for c in sc["criteria"]]
    assert kinds == ["settles", "overshoot", "between", "at_most"]
    assert sc["criteria"][0]["band"] == 0.5 and sc["criteria"][0]["loop"] == "cool"
    assert sc["criteria"][2]["min"] == pytest.approx(298.15)
    assert sc["criteria"][2]["signal"] == "plant.coolant_out_k"  # plant truth of the loop
    assert sc["criteria"][3]["signal"] == "out.0"
    assert sc["setpoints"][0]["value"] == pytest.approx(303.15)


def test_a_key_and_its_alias_together_are_refused(battery):
    battery["sensors"][0]["noise_k"] = 0.1  # the file gives noise too
    battery["sensors"][0]["noise"] = 0.2
    refused(battery, "noise and noise_k are the same key")


def test_every_bundled_scenario_uses_the_new_keys():
    old = {"noise_k", "quant_k", "band_k", "max_k", "min_k", "min_c", "max_c", 'kind = "ideal"'}
    for path in resources.scenarios_dir().glob("*.toml"):
        raw = tomllib.loads(path.read_text())
        for table in ("sensors", "criteria", "faults"):
            for t in raw.get(table, []):
                assert not (set(t) & old), (path.name, t)
                if table == "criteria":
                    assert t["kind"] not in ("overshoot_max", "measurement_between")
        scenario.load(path)


def test_hil_check_and_list(tmp_path):
    paths = [str(p) for p in sorted(resources.scenarios_dir().glob("*.toml"))]
    t0 = time.monotonic()
    res = subprocess.run(THERMOPILOT + ["hil", "check"] + paths, capture_output=True, text=True)
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert sum(line.startswith("ok ") for line in res.stdout.splitlines()) == len(paths)
    print("hil check of %d bundled scenarios: %.2f s (whole process)" % (len(paths), wall))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n")
    res = subprocess.run(
        THERMOPILOT + ["hil", "check", paths[0], str(bad)], capture_output=True, text=True
    )
    assert res.returncode == 2 and "1 of 2 scenario(s) invalid" in res.stderr
    res = subprocess.run(THERMOPILOT + ["hil", "list"], capture_output=True, text=True)
    assert res.returncode == 0
    for name, _p, _desc in scenario.bundled():
        assert name in res.stdout
    assert "Coolant outlet temperature held" in res.stdout
    res = subprocess.run(THERMOPILOT + ["hil", "list", "--kinds"], capture_output=True, text=True)
    assert "actuator_lost_steps" in res.stdout and "latch_latency" in res.stdout
