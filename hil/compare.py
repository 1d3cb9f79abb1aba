"""The same scenario with different controllers on the same plant: ``thermopilot hil compare``.

Each controller runs on a fresh virtual board whose definition is the scenario's board with
every loop's controller switched to it (the loop keeps its sensors and actuator; roles a
controller does not take are dropped, e.g. the mpc's measured-disturbance roles for the pid).
The PID parameters are the same rows in both (the mpc loop falls back to them), so the
scenario's [params] apply to both; its ``LOOP.mpc_*`` rows only to the mpc run. The mpc run
gets the MPC blob uploaded into slot 0 before the run. Sensor noise uses the same seed.

The table, per controller (plant truth throughout):

- IAE of the loop's controlled signal against its setpoint, K s (the first loop), and the
  same above the setpoint only (a cooling loop cannot act below it with its pump at minimum);
- the largest deviation from the setpoint, K;
- constraint violations, seconds: superheat below 2 K (heat pump), a cell above the
  operating window's top of 35 degC (battery; reference systems.md s.2), the junction above
  100 degC (chip; an assumption: the usual accelerator junction limit lies between 90 and
  105 degC) or the case above 90 degC (systems.md s.3);
- actuator energy, J: every plant output that is an actuator's power (pump, compressor,
  heater, fan);
- the share of the run the MPC drove the output, and its fallback notices.
"""

import json
import pathlib

import numpy as np
import tomllib

from . import resources, rig, scenario

# plant output -> (limit, "above" or "below"): what counts as a constraint violation
VIOLATIONS = {
    "battery_loop": (("plant.cell_max_k", 308.15, "above"),),
    "chip_cooler": (("plant.junction_k", 373.15, "above"), ("plant.case_k", 363.15, "above")),
    "heatpump_r290": (("plant.superheat_k", 2.0, "below"),),
}
# plant outputs that are actuator powers (what the board's outputs spend)
ACTUATOR_POWER = ("pump_power_w", "compressor_power_w", "heater_w", "fan_power_w")
_ROLES = {"pid": (("pv",), ("out",)), "mpc": (("pv", "d0", "d1", "d2"), ("out",))}


def board_variant(board, controller):
    """A copy of ``board`` whose loops all run ``controller``."""
    b = json.loads(json.dumps(board))
    keep_s, keep_a = _ROLES.get(controller, (None, None))
    for lp in b["loops"]:
        lp["controller"] = controller
        if keep_s is not None:
            lp["sensors"] = {r: c for r, c in lp.get("sensors", {}).items() if r in keep_s}
            lp["actuators"] = {r: c for r, c in lp.get("actuators", {}).items() if r in keep_a}
        lp["defaults"] = {
            k: v
            for k, v in lp.get("defaults", {}).items()
            if controller == "mpc" or not k.startswith("mpc_")
        }
    b["name"] = ("%s_%s" % (board["name"][:12], controller))[:16]
    return b


def metrics(result, sc):
    """The table row of one run (see the module docstring)."""
    rows = result.rows
    t = rows.t
    dt = np.diff(t, prepend=t[0])
    lp = sc["board_def"]["loops"][0] if "board_def" in sc else None
    name = lp["name"] if lp else rows.ctx.loops[0]["name"]
    info = {"name": name, "sensors": lp["sensors"] if lp else {}}
    sig = rows.ctx.judged_signal(info)
    y = rows[sig]
    sp = rows["loop.%s.setpoint" % name]
    err = np.abs(y - sp)
    ok = np.isfinite(err)
    hot = np.clip(y - sp, 0.0, None)
    out = {
        "signal": sig,
        "iae_ks": float(np.sum(err[ok] * dt[ok])),
        # the error on the hot side only: what a cooling loop can act on (below its setpoint
        # at idle, the pump at its minimum is all it can do)
        "iae_hot_ks": float(np.sum(hot[ok] * dt[ok])),
        "max_dev_k": float(np.max(err[ok])) if ok.any() else float("nan"),
    }
    viol = 0.0
    for col, lim, side in VIOLATIONS.get(sc["plant"]["model"], ()):
        if rows.has(col):
            v = rows[col]
            bad = v > lim if side == "above" else v < lim
            viol += float(np.sum(dt[bad]))
    out["violations_s"] = viol
    energy = result.energy_j()
    out["energy_j"] = float(
        sum(v for k, v in energy.items() if k.split(".", 1)[1] in ACTUATOR_POWER)
    )
    col = "loop.%s.mpc" % name
    out["mpc_share"] = float(np.nanmean(rows[col] == 1.0)) if rows.has(col) else 0.0
    out["fallbacks"] = [
        (round(e["t_s"], 1), int(e["value"]))
        for e in result.events
        if e.get("name") == "controller_fallback"
    ]
    out["passed"] = bool(result.passed)
    return out


def _params_for(params, controller):
    """The scenario's [params] for one variant: the mpc's own rows (``LOOP.mpc_*``) only
    where the loop runs the mpc, as the board's defaults in :func:`board_variant`."""
    if controller == "mpc":
        return params
    return {k: v for k, v in params.items() if not k.split(".", 1)[-1].startswith("mpc_")}


def run(path, controllers, blob=None, out_dir="report", native=True, seed=1, log=print):
    """Run scenario ``path`` once per controller; write the table (compare.json,
    compare.md), the plot (compare.png) and each run's report under
    out_dir/NAME-compare/; return the table (a dict)."""
    from .vboard import VirtualBoard

    path = pathlib.Path(path)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    base = scenario.load(path)
    board = resources.load_board(base["board_path"])
    out = pathlib.Path(out_dir) / (base["name"] + "-compare")
    out.mkdir(parents=True, exist_ok=True)
    table = {"scenario": base["name"], "controllers": {}, "rows": {}}
    results = {}
    for ctl in controllers:
        variant = board_variant(board, ctl)
        bpath = out / ("board_%s.json" % ctl)
        bpath.write_text(json.dumps(variant, indent=2))
        sc = scenario.check(
            dict(raw, board=str(bpath), params=_params_for(raw.get("params", {}), ctl)),
            str(path),
            base_dir=path.parent,
        )
        sc["board_def"] = variant
        log("%s: running with %s on a virtual board" % (base["name"], ctl))
        the_rig = rig.Rig(sc, seed=seed)
        from thermopilot.protocol.link import Session

        with VirtualBoard(board=str(bpath), native=native) as vb, Session(vb.port) as s:
            if ctl == "mpc" and blob is not None:
                s.upload(0, blob)
            res = the_rig.run(s)
        res.evaluate()
        from . import report

        report.write(res, out / ctl)
        results[ctl] = (res, sc)
        table["controllers"][ctl] = metrics(res, sc)
    (out / "compare.json").write_text(json.dumps(table, indent=2))
    (out / "compare.md").write_text(markdown(table))
    plot(results, out / "compare.png")
    table["dir"] = str(out)
    return table


def markdown(table):
    """The table as Markdown (what docs/controllers.md quotes)."""
    lines = [
        "| controller | IAE (K s) | IAE above sp (K s) | max deviation (K) | violations (s) "
        "| actuator energy (kJ) | MPC share | fallbacks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ctl, m in table["controllers"].items():
        lines.append(
            "| %s | %.1f | %.1f | %.2f | %.1f | %.3f | %.0f %% | %s |"
            % (
                ctl,
                m["iae_ks"],
                m["iae_hot_ks"],
                m["max_dev_k"],
                m["violations_s"],
                m["energy_j"] / 1e3,
                100 * m["mpc_share"],
                ", ".join("t=%g s code %d" % f for f in m["fallbacks"]) or "none",
            )
        )
    ctls = list(table["controllers"])
    if "pid" in ctls and "mpc" in ctls:
        p, m = table["controllers"]["pid"], table["controllers"]["mpc"]
        lines.append("")
        lines.append(
            "MPC against PID: IAE %+.1f %% (above sp %+.1f %%), actuator energy %+.1f %%, "
            "violations %+.1f s"
            % (
                100 * (m["iae_ks"] / p["iae_ks"] - 1) if p["iae_ks"] else float("nan"),
                100 * (m["iae_hot_ks"] / p["iae_hot_ks"] - 1) if p["iae_hot_ks"] else float("nan"),
                100 * (m["energy_j"] / p["energy_j"] - 1) if p["energy_j"] else float("nan"),
                m["violations_s"] - p["violations_s"],
            )
        )
    return "\n".join(lines) + "\n"


def print_table(console, table):
    from rich.table import Table

    tb = Table(title="%s: controllers compared on plant truth" % table["scenario"])
    for col in (
        "controller",
        "IAE K s",
        "IAE > sp K s",
        "max dev K",
        "violations s",
        "energy kJ",
        "MPC",
    ):
        tb.add_column(col)
    for ctl, m in table["controllers"].items():
        tb.add_row(
            ctl,
            "%.1f" % m["iae_ks"],
            "%.1f" % m["iae_hot_ks"],
            "%.2f" % m["max_dev_k"],
            "%.1f" % m["violations_s"],
            "%.3f" % (m["energy_j"] / 1e3),
            "%.0f %%" % (100 * m["mpc_share"]),
        )
    console.print(tb)
    console.print(markdown(table).splitlines()[-1])
    console.print("report: %s (compare.png, compare.md, compare.json)" % table.get("dir", ""))


def plot(results, path):
    """One figure: the controlled signal with its setpoint, the actuator output, and the
    cumulative actuator energy, per controller."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for ctl, (res, sc) in results.items():
        rows = res.rows
        m = metrics(res, sc)
        t = rows.t
        name = sc["board_def"]["loops"][0]["name"]
        axes[0].plot(t, rows[m["signal"]] - 273.15, label="%s (%s)" % (m["signal"], ctl), lw=1)
        axes[1].plot(t, rows["loop.%s.output" % name], label=ctl, lw=1)
        power = np.zeros(len(t))
        for c in rows.columns:
            if c.startswith("plant.") and c[6:] in ACTUATOR_POWER:
                power = power + np.nan_to_num(rows[c])
        energy = np.concatenate([[0.0], np.cumsum(0.5 * (power[1:] + power[:-1]) * np.diff(t))])
        axes[2].plot(t, energy / 1e3, label=ctl, lw=1)
    first = next(iter(results.values()))
    name = first[1]["board_def"]["loops"][0]["name"]
    axes[0].plot(
        first[0].rows.t,
        first[0].rows["loop.%s.setpoint" % name] - 273.15,
        "k--",
        lw=0.8,
        label="setpoint",
    )
    axes[0].set_ylabel("°C")
    axes[1].set_ylabel("output")
    axes[2].set_ylabel("actuator energy kJ")
    axes[2].set_xlabel("t (s)")
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle("%s: %s" % (first[1]["name"], " vs ".join(results)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
