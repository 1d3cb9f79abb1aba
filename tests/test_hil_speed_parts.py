"""What makes a long HIL run fast and flat in memory, checked for correctness (the speed
itself is measured by benchmarks/bench_hil.py, not judged here): rows spilled to disk and
rows.csv streamed during the run equal what the rows in memory give, the decimated plot
keeps every extreme, the direct port to the VM carries the protocol and hands the VM back,
and the command line imports nothing heavy to print its help or refuse an argument."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from thermopilot.hil import plot, report
from thermopilot.hil import rows as rows_mod
from thermopilot.hil.rows import BLOCK, Rows

HEAVY = ("numpy", "matplotlib", "serial", "CoolProp", "construct", "scipy", "rich")


def _imported_by(code):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["hil", "run"], ["hil", "run", "--help"], ["param", "set"]]
)
def test_help_and_argument_errors_import_nothing_heavy(argv):
    code = (
        "import contextlib, io, json, sys\n"
        "from thermopilot.host.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        "        main(%r)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))\n"
        % (argv, HEAVY)
    )
    assert _imported_by(code) == []


def test_a_battery_run_does_not_import_coolprop():
    code = (
        "import json, sys\n"
        "from thermopilot.hil import resources, rig, scenario\n"
        "sc = scenario.load(resources.scenarios_dir() / 'battery_hold.toml')\n"
        "r = rig.Rig(sc)\n"
        "r.plant.step(0.1, {k: v[0] for k, v in r.plant.INPUTS.items()})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('CoolProp'))))\n"
    )
    assert _imported_by(code) == []


def _filled(n, spill, columns=None):
    columns = columns or ["t_s", "plant.x_k", "loop.a.mode", "faults", "out.0"]
    rows = Rows(columns, dt_s=0.1, spill=spill)
    rng = np.random.default_rng(3)
    data = rng.normal(300.0, 5.0, size=(n, len(columns)))
    data[:, 0] = np.arange(n) * 0.1
    data[:, 2] = rng.integers(0, 4, n)
    data[: n // 3, 2] = np.nan  # no telemetry yet
    data[:, 3] = rng.integers(0, 1 << 20, n)
    return rows, data


@pytest.mark.parametrize("n", [0, 1, BLOCK - 1, BLOCK, 2 * BLOCK + 17])
def test_spilled_rows_read_back_as_the_rows_in_memory(n):
    spilled, data = _filled(n, True)
    kept, _ = _filled(n, False)
    for k, row in enumerate(data):
        spilled.append(list(row))
        kept.append(list(row))
        if k == n // 2:  # a read while the run goes
            assert np.array_equal(spilled["plant.x_k"], kept["plant.x_k"], equal_nan=True)
    spilled.freeze()
    kept.freeze()
    assert len(spilled) == len(kept) == n
    for c in kept.columns:
        assert np.array_equal(spilled[c], data[:, kept.index[c]], equal_nan=True)
        assert np.array_equal(spilled[c], kept[c], equal_nan=True)
        if n:
            assert math.isclose(spilled.last(c), kept.last(c)) or (
                math.isnan(spilled.last(c)) and math.isnan(kept.last(c))
            )
    col = spilled["plant.x_k"]
    col[:] = 0.0  # a column is the caller's copy
    assert np.array_equal(spilled["plant.x_k"], data[:, 1])
    assert sum(len(b) for b in spilled.blocks()) == n
    spilled.close()


@pytest.mark.parametrize("n", [0, 5, BLOCK, 2 * BLOCK + 17])
def test_rows_csv_streamed_during_the_run_equals_rows_csv_written_after(tmp_path, n):
    streamed, data = _filled(n, True)
    kept, _ = _filled(n, False)
    path = tmp_path / "streamed.csv"
    for k, row in enumerate(data):
        if k == 3:
            streamed.stream_csv(path)  # rows appended before streaming starts are written too
        streamed.append(list(row))
        kept.append(list(row))
        if k % 3 == 0:
            streamed.format_pending()  # what the rig does while the board computes
    if n <= 3:
        streamed.stream_csv(path)
    assert not path.exists()  # rows.csv.part until the report completes it
    streamed.freeze()
    kept.freeze()
    report.write_rows(streamed, path)
    assert path.exists() and not (tmp_path / "streamed.csv.part").exists()
    report.write_rows(kept, tmp_path / "kept.csv")
    assert path.read_text() == (tmp_path / "kept.csv").read_text()
    lines = path.read_text().splitlines()
    assert len(lines) == n + 1
    if n:
        # the same values np.savetxt writes with the documented formats
        fmts = rows_mod.csv_formats(kept.columns)
        assert lines[-1] == ",".join(f % v for f, v in zip(fmts, data[-1], strict=True))
        assert "nan" in lines[1]  # the mode column before the first telemetry


def test_abandoned_stream_leaves_no_file(tmp_path):
    rows, data = _filled(10, True)
    rows.stream_csv(tmp_path / "rows.csv")
    for row in data:
        rows.append(list(row))
    rows.close()
    assert list(tmp_path.iterdir()) == []


def test_decimated_plot_keeps_every_extreme():
    rng = np.random.default_rng(5)
    n = 36001
    y = np.cumsum(rng.normal(0, 1, n))
    y[12345] = 1e6  # a one-tick spike
    y[30000] = -1e6
    y[20000:20010] = np.nan  # a gap (no telemetry)
    k = plot.minmax_indices(y, buckets=1000)
    assert len(k) <= 4 * 1000 + 1 and np.all(np.diff(k) > 0)
    assert k[0] == 0 and k[-1] == n - 1
    assert 12345 in k and 30000 in k
    assert np.any(np.isnan(y[k]))  # the gap stays a gap
    size = -(-n // 1000)
    for b in range(0, n, size):
        part = y[b : b + size]
        if np.all(np.isnan(part)):
            continue
        sel = y[k[(k >= b) & (k < b + size)]]
        assert np.nanmax(sel) == np.nanmax(part)
        assert np.nanmin(sel) == np.nanmin(part)
    short = np.arange(10.0)
    assert list(plot.minmax_indices(short)) == list(range(10))


def test_step_indices_draw_a_step_signal_exactly():
    f = np.zeros(5000)
    f[100:2000] = 1
    f[4999] = 1
    k = plot.step_indices(f)
    t = np.arange(len(f))
    # a step="post" drawing from the indices gives back every sample
    again = f[k][np.searchsorted(t[k], t, side="right") - 1]
    assert np.array_equal(again, f)


def test_direct_port_carries_the_protocol_and_hands_the_vm_back():
    from thermopilot.hil.vboard import VirtualBoard, VirtualBoardError
    from thermopilot.protocol.link import Session

    with VirtualBoard() as vb:
        with vb.session(timeout_s=1.0) as s:
            assert s._reader is None  # no reader thread: this thread reads the VM's pty
            ident = s.hello()
            with pytest.raises(VirtualBoardError, match="already open"):
                vb.direct()
            s.command("hil_start")
            s.stream_rate("TELEMETRY", ident.tick_hz)
            values = [0.5] + [0.0] * 15
            for k in range(20):
                ans = s.request(
                    "HIL_SENSORS", expect=("HIL_ACTUATORS",), t_ms=k * 100, valid=1, values=values
                )
                assert ans.t_ms == k * 100 and ans.ticks == 1
            s.poll(0.2)
            assert len(s.telemetry) >= 19  # one per tick, read with the answers
            s.command("hil_stop")
            assert s.heap_and_ticks().ticks >= 20
        # closed: the bridge has the VM again and serves the pty
        with Session(vb.port, timeout_s=1.0) as s:
            assert s.hello().board == ident.board


def test_the_run_reads_the_board_statistics_before_it_restores_the_parameters():
    # a scenario that turns collections between ticks off: restoring sys.gc_idle afterwards
    # starts the board's statistics over, so the run's heap and tick figures must be read first
    import tomllib

    from thermopilot.hil import resources, rig, scenario
    from thermopilot.hil.vboard import VirtualBoard
    from thermopilot.protocol.link import Session

    raw = tomllib.loads((resources.scenarios_dir() / "battery_hold.toml").read_text())
    raw.update(duration_s=5.0, setpoints=[], criteria=[{"kind": "no_fault"}])
    raw["params"]["sys.gc_idle"] = 0.0
    sc = scenario.check(raw, "battery_hold")
    with VirtualBoard(board=sc["board_path"]) as vb, Session(vb.port) as s:
        res = rig.Rig(sc).run(s)
        after = s.heap_and_ticks()
    assert res.params_restored
    assert after.tick_us_max == 0  # the restore did start them over
    assert res.board_stats["tick_us_max"] > 0 and res.board_stats["ticks"] >= 50
