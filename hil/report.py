"""The report of a run, as files: rows.csv, summary.json and plot.png in ``report/NAME/``.

Criteria live in hil.criteria, the plot in hil.plot; this module only writes.

* ``rows.csv``: one row per tick, one column per signal (SCENARIO_V2.md "Signals"), SI units
  (the unit is in each plant output's name; loop values are in the loop's SI unit);
* ``summary.json``: verdicts (passed, detail, value, unit), energy of every plant power output,
  the injected faults, the board's events, link counters, whether the run was interrupted,
  the board's heap and tick statistics after the run (``board_stats``, ``heap``: its total,
  highest use, collections between ticks and ticks inside which one ran) and where the time
  went (``timing``: steps, host and board CPU per step, report);
* ``plot.png``: hil.plot (lines drawn decimated, every extreme kept).

A rig run with ``rows_csv`` has written rows.csv while it ran; :func:`write_rows` then only
completes it.
"""

import json
import math
import os
import pathlib
import time

import numpy as np

from thermopilot.protocol import schema

from . import signals
from .rows import csv_formats

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


def write_rows(rows, path):
    """rows.csv: a header of signal names, then one line per tick (hil.rows.csv_formats).
    Rows streamed to ``path`` during the run are only completed."""
    if rows.csv_path is not None and os.path.abspath(rows.csv_path) == os.path.abspath(path):
        rows.finish_csv()
        return
    line = ",".join(csv_formats(rows.columns)) + "\n"
    with open(path, "w") as f:
        f.write(",".join(rows.columns) + "\n")
        for block in rows.blocks():
            f.write((line * len(block)) % tuple(block.ravel().tolist()))


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
            "board_stats": result.board_stats,
            "heap": heap_summary(result.board_stats),
            "timing": _timing(result.timing),
            "params_restored": result.params_restored,
            "columns": {
                c: signals.SI_UNITS.get(signals.quantity_of(c, ctx), "-") for c in rows.columns
            },
        }
    )


def heap_summary(board_stats):
    """The board's heap during the run from its BOARD_STATS: total, highest use (the
    high-water: total - lowest free, sampled where use peaks, just before each collection),
    free now, collections between ticks and ticks inside which one ran; {} when the board did
    not say."""
    if not board_stats:
        return {}
    total = board_stats["heap_total"]
    return {
        "total_b": total,
        "peak_used_b": total - board_stats["heap_min_free"],
        "min_free_b": board_stats["heap_min_free"],
        "free_now_b": board_stats["heap_free"],
        "gc_between_ticks": board_stats["gc_idle"],
        "gc_in_tick": board_stats["gc_in_tick"],
        "tick_us_max": board_stats["tick_us_max"],
        "tick_us_mean": board_stats["tick_us_mean"],
    }


def _timing(timing):
    out = dict(timing)
    n = timing.get("steps") or 0
    if n:
        for k in ("steps_wall_s", "host_cpu_s", "vm_cpu_s"):
            if k in timing:
                out[k.replace("_s", "_ms_per_step", 1)] = 1e3 * timing[k] / n
    return out


def write(result, out_dir, plot=True, rows=True):
    """Write rows.csv (``rows``), plot.png (``plot``) and summary.json into out_dir; returns
    the path. summary.json comes last, with how long the other two took (``timing``)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if rows:
        write_rows(result.rows, out / "rows.csv")
    else:
        result.rows.abandon_csv()
    t1 = time.monotonic()
    if plot and len(result.rows) > 1:
        from . import plot as plot_mod

        plot_mod.plot(result, out / "plot.png")
    t2 = time.monotonic()
    result.timing["report_rows_s"] = t1 - t0
    result.timing["report_plot_s"] = t2 - t1
    (out / "summary.json").write_text(json.dumps(summary(result), indent=2))
    result.timing["report_s"] = time.monotonic() - t0
    return out
