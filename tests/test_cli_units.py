"""Units at the user's edge, the monitor's 80-column table and CSV rows, the progress line
and Ctrl-C handling shared by the long-running commands."""

import io
import math
import os
import signal
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thermopilot.host import cli_board, console, units


def test_quantities_are_shown_in_the_users_units():
    assert units.fmt(305.15, "temperature", 0.01) == "32.00 °C"
    # a superheat of 10 K is a temperature difference, never -263 degC
    assert units.fmt(10.0, "temperature_difference", 0.01) == "10.00 K"
    assert units.fmt(3.5e5, "pressure", 1000) == "3.50 bar"
    assert units.fmt(0.4, "fraction") == "40.0 %"
    assert units.fmt(12.0, "power") == "12 W"
    assert units.fmt(float("nan"), "temperature") == "—"


def test_typed_values_with_and_without_units():
    assert units.to_si(32, "temperature") == pytest.approx(305.15)
    assert units.to_si(305.15, "temperature", "K") == pytest.approx(305.15)
    assert units.to_si(32, "temperature", "degC") == pytest.approx(305.15)
    assert units.to_si(3, "pressure") == pytest.approx(3e5)
    assert units.to_si(300, "pressure", "kPa") == pytest.approx(3e5)
    assert units.to_si(40, "fraction") == pytest.approx(0.4)
    assert units.to_si(0.4, "fraction", "fraction") == pytest.approx(0.4)
    assert units.to_si(8, "temperature_difference") == 8
    with pytest.raises(ValueError, match="unit 'bar' does not measure a temperature"):
        units.to_si(1, "temperature", "bar")
    with pytest.raises(ValueError, match="use 's'"):
        units.to_si(1, "time", "min")


@given(
    st.sampled_from(["temperature", "temperature_difference", "pressure", "fraction", "power"]),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_shown_values_type_back_to_the_same_si_value(q, v):
    assert units.to_si(units.display(v, q), q) == pytest.approx(v, rel=1e-9, abs=1e-9)


def test_rounding_to_the_sensor_resolution():
    assert units.rounded(29.999993896484398, 0.01) == "30.00"
    # a float32 resolution (0.0099999998) still means two decimals
    assert units.rounded(29.999993896484398, 0.0099999998) == "30.00"
    assert units.rounded(12.34, 0.5) == "12.5"
    assert units.rounded(1234.0, 10) == "1230"
    assert units.rounded(float("nan"), 0.01) == "nan"


def _tlm(**kw):
    t = dict(
        loop=0,
        mode=2,
        state=0,
        t_ms=12345,
        setpoint=303.15,
        measurement=303.1599938964844,
        output=0.44912,
        p=0.9,
        i=-0.45,
        d=0.0,
        faults=(1 << 0) | (1 << 3),
        fields=[0.0] * 8,
    )
    t.update(kw)
    return types.SimpleNamespace(**t)


LOOPS = [
    {
        "loop": 0,
        "name": "cool",
        "controller": "pid",
        "quantity": "temperature",
        "out_quantity": "fraction",
        "out_min": 0.0,
        "out_max": 1.0,
        "resolution": 0.0099999998,
        "fields": [],
    },
    {
        "loop": 1,
        "name": "sh",
        "controller": "pid",
        "quantity": "temperature_difference",
        "out_quantity": "fraction",
        "out_min": 0.0,
        "out_max": 1.0,
        "resolution": 0.01,
        "fields": [("superheat", "temperature_difference"), ("p_suction", "pressure")],
    },
]


def test_csv_rows_have_named_modes_and_faults_and_rounded_values():
    view = cli_board.MonitorView(LOOPS)
    head = cli_board.csv_header(LOOPS)
    row = cli_board.csv_row(view, LOOPS, _tlm(), 100.0)
    d = dict(zip(head, row, strict=True))
    assert d["mode"] == "auto" and d["loop"] == "cool"
    assert d["faults"] == "sensor_open|over_temperature"
    assert d["setpoint"] == "30.00" and d["measurement"] == "30.01" and d["unit"] == "°C"
    assert d["output"] == "44.91" and d["output_unit"] == "%"
    assert "sh.p_suction [bar]" in head
    row = cli_board.csv_row(
        view,
        LOOPS,
        _tlm(loop=1, setpoint=10.0, measurement=9.876, fields=[9.876, 3.1e5] + [0] * 6),
        1,
    )
    d = dict(zip(head, row, strict=True))
    assert d["setpoint"] == "10.00" and d["measurement"] == "9.88" and d["unit"] == "K"
    assert d["sh.p_suction [bar]"] == "3.1" and d["sh.superheat [K]"] == "9.876"


def test_monitor_fits_80_columns():
    from rich.console import Console

    view = cli_board.MonitorView(LOOPS)
    latest = {
        0: _tlm(faults=(1 << 0) | (1 << 3) | (1 << 10)),
        1: _tlm(loop=1, setpoint=10.0, measurement=9.8, mode=4, fields=[9.8, 3.1e5] + [0] * 6),
    }
    events = ["t=1.0 s: sensor_open latched (loop cool, value 0) " + "x" * 100]
    tb = cli_board.monitor_table(view, latest, "ThermoPilot board on /dev/ttyACM0", 80, events)
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(tb)
    lines = buf.getvalue().splitlines()
    assert max(len(ln) for ln in lines) <= 80, "\n".join(lines)
    text = buf.getvalue()
    # the important columns keep their full headers; units come from the board
    for head in ("loop", "mode", "setpoint", "measured", "output", "faults"):
        assert head in text
    assert "30.00 °C" in text and "10.00 K" in text and "9.80 K" in text and "safe" in text
    assert "sensor_open +2" in text
    assert "p_suction 3.1 bar" in text


def test_columns_are_dropped_by_priority():
    cols = [
        {"key": k, "priority": p, "width": 10}
        for k, p in [("loop", 1), ("P", 8), ("measured", 3), ("t", 7), ("faults", 6)]
    ]
    kept = [c["key"] for c in cli_board.fit_columns(cols, 40)]
    assert kept == ["loop", "measured", "faults"]


def test_progress_line_off_a_terminal():
    buf = io.StringIO()
    with console.Progress("copy", total=2000, unit="bytes", stream=buf, plain_every_s=0) as bar:
        bar.update(1000, note="main.py")
        bar.update(2000, note="")
    out = buf.getvalue().splitlines()
    assert out[0].startswith("copy  [##########----------]  50%  1.0 kB/2.0 kB  wall")
    assert "main.py" in out[0]
    assert out[-1].startswith("copy  [####################] 100%")
    assert len(out) == 2  # the final state once, not repeated by finish()


def test_first_ctrl_c_asks_to_stop_the_second_stops_at_once(capsys):
    with console.stop_on_ctrl_c("stopping after this step") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(console.Interrupted, match="board set safe"):
            stop.check("board set safe")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                math.sqrt(2)  # the handler runs between bytecodes
    assert "stopping after this step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
