"""What the run plot shows: plant truth the criteria judge and each plant's key quantities on
their own panels, disturbances, actuators in physical units, fault windows, verdicts."""

import pytest
import tomllib

from thermopilot.hil import plot, resources, rig, scenario
from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol.link import Session


def short(name, duration, **extra):
    raw = tomllib.loads((resources.scenarios_dir() / (name + ".toml")).read_text())
    raw["duration_s"] = duration
    raw["setpoints"] = [s for s in raw.get("setpoints", []) if s["t_s"] < duration]
    raw["criteria"] = [{"kind": "no_fault"}] + extra.pop("criteria", [])
    raw.update(extra)
    return scenario.check(raw, name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    specs = {
        "chip_gpu_trace": short(
            "chip_gpu_trace",
            30.0,
            criteria=[{"kind": "at_most", "signal": "plant.junction_k", "max": 400.0}],
            faults=[{"kind": "actuator_partial", "t_s": 10.0, "duration_s": 5.0, "factor": 0.5}],
        ),
        "heatpump_superheat": short("heatpump_superheat", 20.0),
    }
    for name, sc in specs.items():
        with VirtualBoard(board=sc["board_path"]) as vb, Session(vb.port) as s:
            res = rig.Rig(sc).run(s)
        res.evaluate()
        path = tmp_path_factory.mktemp("plot") / "plot.png"
        plot.plot(res, path)
        out[name] = (res, path)
    return out


def test_chip_plot_shows_junction_dryout_and_the_power_trace(runs):
    res, path = runs["chip_gpu_trace"]
    lay = plot.layout(res)
    # the chip controller's loop: its measurement is the junction the board estimates, the
    # plant's junction (judged) on the same axis
    assert lay["loop_panel"] == [("chip", "loop.chip.measurement", "temperature")]
    assert "plant.junction_k" in lay["extra"]["__main__"]
    assert ("fraction", ["plant.dryout_margin"]) in lay["extra_panels"]
    assert lay["disturbances"] == ["chip_power_w"]  # the GPU trace on its own panel
    assert path.stat().st_size > 20000
    assert res.rows.injections[0]["t_end"] == 15.0  # the shaded window


def test_heatpump_valve_in_steps_compressor_in_rev_per_s(runs):
    res, _path = runs["heatpump_superheat"]
    lay = plot.layout(res)
    assert lay["actuator_units"] == {"valve_steps_cmd": "steps"}
    assert lay["loop_panel"][0][2] == "temperature_difference"  # superheat in K, not degC
    assert plot.unit_of("speed") == (0.0, 1.0, "rev/s")
    assert plot.unit_of("temperature")[2] == "°C" and plot.unit_of("pressure")[1] == 1e-5
