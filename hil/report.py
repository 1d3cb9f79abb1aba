"""The report of a run, as files: rows.csv, summary.json and plot.png in ``report/NAME/``.

Criteria live in hil.criteria, the plot in hil.plot; this module only writes.

* ``rows.csv``: one row per tick, one column per signal (SCENARIO_V2.md "Signals"), SI units
  (the unit is in each plant output's name; loop values are in the loop's SI unit);
* ``summary.json``: verdicts (passed, detail, value, unit), energy of every plant power output,
  the injected faults, the board's events, link counters, and whether the run was interrupted;
* ``plot.png``: hil.plot.
"""

import json
import math
import pathlib

import numpy as np

from thermopilot.protocol import schema

from . import signals

FAULT_NAMES = {v: k for k, v in schema.FAULTS.items()}
#: names of every event code: faults (0..31) and notices (32..)
EVENT_NAMES = {**FAULT_NAMES, **{v: k for k, v in schema.NOTICES.items()}}


def fault_names(bits):
    return [FAULT_NAMES.get(b, "bit%d" % b) for b in range(32) if int(bits) & (1 << b)]


def _clean(x):
    """JSON without NaN/inf (they become null)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _int_column(name):
    return name == "faults" or name.endswith(".mode") or name.endswith(".state")


def write_rows(rows, path):
    """rows.csv: a header of signal names, then one line per tick."""
    fmt = []
    for c in rows.columns:
        if c == "t_s":
            fmt.append("%.3f")
        elif _int_column(c):
            fmt.append("%.0f")  # NaN (no telemetry yet) stays readable
        else:
            fmt.append("%.7g")
    with open(path, "w") as f:
        f.write(",".join(rows.columns) + "\n")
        for block in rows.blocks():
            np.savetxt(f, block, fmt=fmt, delimiter=",")


def summary(result):
    """The summary dict written to summary.json (also what hil run --json prints)."""
    sc = result.scenario
    rows = result.rows
    ctx = rows.ctx
    energy = result.energy_j()
    return _clean(
        {
            "scenario": sc["name"],
            "description": sc.get("description", ""),
            "passed": result.passed,
            "interrupted": result.interrupted,
            "board": bytes(result.board.board).split(b"\x00")[0].decode(errors="replace"),
            "plant": sc["plant"]["model"],
            "duration_s": sc["duration_s"],
            "simulated_s": float(rows.t[-1]) if len(rows) else 0.0,
            "wall_s": round(result.wall_s, 3),
            "criteria": result.verdicts,
            "energy_j": {k.split(".", 1)[1]: v for k, v in energy.items()},
            "faults_injected": rows.injections,
            "events": [dict(e, event=e["name"]) for e in result.events],
            "link": result.stats,
            "params_restored": result.params_restored,
            "columns": {
                c: signals.SI_UNITS.get(signals.quantity_of(c, ctx), "-") for c in rows.columns
            },
        }
    )


def write(result, out_dir, plot=True, rows=True):
    """Write summary.json, rows.csv (``rows``) and plot.png (``plot``) into out_dir; returns
    the path."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        write_rows(result.rows, out / "rows.csv")
    (out / "summary.json").write_text(json.dumps(summary(result), indent=2))
    if plot and len(result.rows) > 1:
        from . import plot as plot_mod

        plot_mod.plot(result, out / "plot.png")
    return out
