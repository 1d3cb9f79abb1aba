"""HIL scenarios on a fresh virtual board through the real CLI: pass, fault, fail."""

import csv
import json
import subprocess
import sys

import pytest

from thermopilot.hil import resources, scenario

THERMOPILOT = [sys.executable, "-m", "thermopilot.host.cli"]


def hil_run(name, tmp_path, timeout=300):
    path = resources.scenarios_dir() / (name + ".toml")
    res = subprocess.run(
        THERMOPILOT + ["hil", "run", str(path), "--report-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    summary_path = tmp_path / name / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return res, summary


def test_demo_scenario_passes_and_writes_report(tmp_path):
    res, summary = hil_run("battery_hold", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert summary["passed"] and "PASSED" in res.stdout
    out = tmp_path / "battery_hold"
    assert (out / "plot.png").stat().st_size > 10000
    rows = (out / "rows.csv").read_text().splitlines()
    assert len(rows) > 1000  # one row per 0.1 s tick


def test_sensor_fault_ends_in_safe_state_and_is_reported(tmp_path):
    res, summary = hil_run("battery_sensor_fault", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    latched = [e["event"] for e in summary["events"] if e["kind"] == "latched"]
    assert latched == ["sensor_open"]
    with open(tmp_path / "battery_sensor_fault" / "rows.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["out.0"]) == 1.0  # pump at its safe value
    assert int(last["faults"]) & 1  # sensor_open still latched: only an explicit reset clears it


def test_lost_host_drives_pump_safe(tmp_path):
    res, summary = hil_run("battery_host_lost", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "host_lost" in [e["event"] for e in summary["events"] if e["kind"] == "latched"]


def test_unmeetable_criterion_exits_non_zero(tmp_path):
    res, summary = hil_run("battery_impossible", tmp_path)
    assert res.returncode == 1
    assert summary["passed"] is False and "FAILED" in res.stdout


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name = 'x'\nduration_s = [", "is not valid TOML"),
        ("name = 'x'\nduration_s = 10\nbogus = 1", "unknown key(s) bogus"),
        ("name = 'x'\nduration_s = 'long'", "duration_s = 'long'; expected a number"),
        ("name = 'x'\nduration_s = -5", "duration_s = -5 out of range; expected a number > 0"),
    ],
)
def test_malformed_scenario_is_one_line_error(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(
        scenario.ScenarioError,
        match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\["),
    ):
        scenario.load(path)
    res = subprocess.run(
        THERMOPILOT + ["hil", "run", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_unknown_scenario_file_is_one_line_error():
    res = subprocess.run(
        THERMOPILOT + ["hil", "run", "no/such/scenario.toml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "scenario file no/such/scenario.toml does not exist" in res.stderr


def test_every_bundled_scenario_loads():
    for path in sorted(resources.scenarios_dir().glob("*.toml")):
        scenario.load(path)


def test_superheat_loop_on_the_r290_heat_pump(tmp_path):
    res, summary = hil_run("heatpump_superheat", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    header = (tmp_path / "heatpump_superheat" / "rows.csv").read_text().splitlines()[0]
    cols = header.split(",")
    # every plant output, every loop's telemetry, what the board got and commanded
    for c in ("t_s", "plant.superheat_k", "plant.liquid_at_compressor", "loop.sh.setpoint"):
        assert c in cols
    assert {"out.0", "sensed.0", "input.valve_steps_cmd", "faults"} <= set(cols)


def test_chip_cooler_under_a_stored_gpu_power_trace(tmp_path):
    res, summary = hil_run("chip_gpu_trace", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(summary["criteria"]) == 5 and summary["passed"]
    # energy of every plant power output in the summary
    assert summary["energy_j"]["pump_power_w"] > 0


def test_stored_profile_with_unknown_column_is_refused(tmp_path):
    path = resources.scenarios_dir() / "chip_gpu_trace.toml"
    text = path.read_text().replace('column = "chip_power_w"', 'column = "watts"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(scenario.ScenarioError, match="column = 'watts' is not in profile"):
        scenario.load(bad)
