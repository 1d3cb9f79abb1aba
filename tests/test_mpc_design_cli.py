"""`thermopilot mpc design MODEL -o BLOB`: the identified model file (docs/tuning.md) -> the blob
and loop binding for the board's mpc controller; refusals named with their value and fix; the
blob uploaded into a virtual board that then runs an MPC-controlled scenario; `hil compare`."""

import copy
import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from thermopilot.hil import resources
from thermopilot.host.control import blob as blob_mod
from thermopilot.host.control import design

ROOT = pathlib.Path(__file__).resolve().parent.parent
# a one-state chip model (the ARX fit on the plant, benchmarks/mpc_models.py): the refusals
# below edit its 1x1 matrices; the bundled models (identify's) are designed and run below too
CHIP_MODEL = ROOT / "benchmarks" / "models" / "chip_case_arx.json"
CHIP_IDENTIFIED = ROOT / "hil" / "models" / "chip_case.json"
BAT_MODEL = ROOT / "hil" / "models" / "battery_cool.json"


def cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "thermopilot.host.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_model(tmp_path, **change):
    m = json.loads(CHIP_MODEL.read_text())
    m.update(change)
    p = tmp_path / "model.json"
    p.write_text(json.dumps(m))
    return p


def test_design_writes_the_blob_and_binding_the_board_reads(tmp_path):
    out = tmp_path / "chip.bin"
    r = cli("mpc", "design", CHIP_MODEL, "-o", out, "--horizon", 15, "--r-du", 3)
    assert r.returncode == 0, r.stderr
    assert "checked against board virtual_chip_mpc" in r.stdout
    blob, ts_s = design.split_design(out.read_bytes())
    info = blob_mod.unpack(blob)
    model = design.load_model(CHIP_MODEL)
    assert ts_s == pytest.approx(model["ts_s"], rel=1e-7)  # the binding holds it as float32
    dims = (info["nx"], info["nu"], info["nd"], info["ny"], info["n"])
    assert dims == (model["nx"], 1, 1, 1, 15)
    # the model as identified; row 0 of C is the loop's measurement; the weight on it
    assert np.allclose(info["A"], model["A"], rtol=1e-6)
    assert np.allclose(info["E"], model["E"], rtol=1e-6)
    assert np.allclose(info["Q"], np.outer(model["C"][0], model["C"][0]), rtol=1e-6)
    assert info["S"][0, 0] == 3.0
    # the input limits default to the range the identification used
    assert (info["u_min"][0], info["u_max"][0]) == pytest.approx((0.3, 1.0))


def test_soft_output_limits_are_shifted_to_the_models_coordinates(tmp_path):
    m = design.load_model(CHIP_MODEL)
    data = design.design_from_model(m, y_max=[m["y0"][0] + 5.0])
    info = blob_mod.unpack(design.split_design(data)[0])
    # y = C z + y_off with y_off = C (I - A)^-1 (-B u0 - E d0) + y0 (the board's coordinates)
    a, b, e, c = m["A"], m["B"], m["E"], m["C"]
    xs = np.linalg.solve(np.eye(1) - a, -b @ m["u0"] - e @ m["d0"])
    y_off = float((c @ xs + m["y0"])[0])
    assert info["y_max"][0] == pytest.approx(m["y0"][0] + 5.0 - y_off, rel=1e-6)
    assert info["y_min"][0] <= -1e29


@pytest.mark.parametrize(
    "change, args, words",
    [
        ({}, ("--r-du", "-1"), ("r_du=-1", "non-convex")),
        ({}, ("--q", "0"), ("q_y=0", "> 0")),
        ({}, ("--u-min", "0.7"), ("u_min=0.7", "operating point u0=0.6")),
        ({}, ("--y-max", "300"), ("y_max=300", "operating point y0=315.5")),
        ({"A": [[1.02]]}, (), ("unstable", "1.02")),
        ({"A": [[1.0]]}, (), ("integrating",)),
        ({"D": [[0.1]]}, (), ("D=[[0.1]]", "strictly proper")),
        ({"B": [[0.1], [0.2]]}, (), ("B has shape 2x1", "expected 1x")),
        ({"E": [[0.1, 0.2]], "disturbances": [{"name": "a"}]}, (), ("disturbances has 1",)),
        ({"version": 2}, (), ("version 2", "upgrade")),
        ({"format": "other"}, (), ("format 'other'",)),
        ({"ts_s": 0.25}, (), ("ts_s=0.25", "whole number", "0.1 s")),
        ({"inputs": [{"name": "out.1", "unit": "1"}]}, (), ("'out.1'", "channel 0")),
        ({"E": None, "disturbances": [], "d0": []}, (), ("nd=0", "d0")),
        ({"outputs": [{"name": "sensed.0", "unit": "K"}]}, (), ("loop.case.measurement",)),
    ],
)
def test_bad_models_and_settings_are_refused_with_the_value_and_the_fix(
    tmp_path, change, args, words
):
    path = write_model(tmp_path, **change)
    out = tmp_path / "x.bin"
    r = cli("mpc", "design", path, "-o", out, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert not out.exists()  # nothing half-written


def _short(tmp_path, name, duration_s):
    src = (resources.scenarios_dir() / (name + ".toml")).read_text()
    src = src.replace("duration_s = 600", "duration_s = %d" % duration_s)
    src = src.replace("duration_s = 1800", "duration_s = %d" % duration_s)
    src = src.replace("t_s = 900", "t_s = %d" % (duration_s // 2))
    p = tmp_path / (name + ".toml")
    p.write_text(src)
    return p


def test_design_upload_and_an_mpc_controlled_run_on_the_virtual_board(tmp_path):
    blob = tmp_path / "chip.bin"
    assert cli("mpc", "design", CHIP_IDENTIFIED, "-o", blob, "--r-du", 3).returncode == 0
    sc = _short(tmp_path, "chip_gpu_mpc", 60)
    r = cli("hil", "run", sc, "--upload", "0=%s" % blob, "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "controller_fallback" not in r.stdout
    with open(tmp_path / "rep" / "chip_gpu_mpc" / "rows.csv") as f:
        rows = list(csv.DictReader(f))
    # the MPC drove the pump on every tick the board reported, on the blob it was sent
    mpc = [row["loop.case.mpc"] for row in rows if row["loop.case.mpc"] not in ("", "nan")]
    assert len(mpc) > 500 and set(mpc) == {"1"}
    # without the upload the same board runs its PID and says why (no blob: code 1)
    r = cli("hil", "run", sc, "--report-dir", tmp_path / "rep2", "--no-plot")
    assert "controller_fallback" in r.stdout
    summary = json.loads((tmp_path / "rep2" / "chip_gpu_mpc" / "summary.json").read_text())
    assert [e["value"] for e in summary["events"] if e["name"] == "controller_fallback"] == [1.0]


def test_compare_runs_pid_and_mpc_on_the_same_plant(tmp_path):
    blob = tmp_path / "bat.bin"
    assert cli("mpc", "design", BAT_MODEL, "-o", blob).returncode == 0
    sc = _short(tmp_path, "battery_drive_mpc", 120)
    # the scenario's [params] set cool.mpc_dtau_s, a row only the mpc loop has: the pid run
    # must leave it out rather than refuse the scenario
    assert '"cool.mpc_dtau_s"' in sc.read_text()
    r = cli("hil", "compare", sc, "--blob", blob, "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "rep" / "battery_drive_mpc-compare"
    table = json.loads((out / "compare.json").read_text())
    pid, mpc = table["controllers"]["pid"], table["controllers"]["mpc"]
    assert pid["mpc_share"] == 0.0 and mpc["mpc_share"] > 0.99
    assert pid["fallbacks"] == [] and mpc["fallbacks"] == []
    for m in (pid, mpc):
        assert m["energy_j"] > 0 and m["iae_ks"] > 0
    assert pid != mpc  # two different runs
    assert (out / "compare.png").stat().st_size > 10000
    assert "MPC against PID" in (out / "compare.md").read_text()
    # the pid variant lost the mpc's disturbance role; the mpc one kept it
    bp = json.loads((out / "board_pid.json").read_text())["loops"][0]
    bm = json.loads((out / "board_mpc.json").read_text())["loops"][0]
    assert (bp["controller"], bm["controller"]) == ("pid", "mpc")
    assert "d0" not in bp["sensors"] and bm["sensors"]["d0"] == 1


def test_compare_without_a_blob_for_the_mpc_is_a_usage_error(tmp_path):
    r = cli("hil", "compare", "chip_gpu_mpc", "--controllers", "pid,mpc")
    assert r.returncode == 2 and "--blob" in r.stderr


def test_the_model_loader_ignores_unknown_keys_only(tmp_path):
    m = copy.deepcopy(json.loads(CHIP_MODEL.read_text()))
    m["later_addition"] = {"x": 1}
    p = tmp_path / "m.json"
    p.write_text(json.dumps(m))
    assert design.load_model(p)["nx"] == 1
    del m["ts_s"]
    p.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="missing key.*ts_s"):
        design.load_model(p)
