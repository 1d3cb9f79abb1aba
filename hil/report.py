"""Pass/fail criteria over a rig run, and the report: CSV, PNG plot, summary JSON."""

import csv
import json
import math
import pathlib

from thermopilot.protocol import schema

from . import resources

C_TO_K = 273.15
FAULT_NAMES = {v: k for k, v in schema.FAULTS.items()}
#: names of every event code: faults (0..31) and notices (32..)
EVENT_NAMES = {**FAULT_NAMES, **{v: k for k, v in schema.NOTICES.items()}}
LATCHED = schema.EVENT_KINDS["latched"]


def fault_names(bits):
    return [FAULT_NAMES.get(b, "bit%d" % b) for b in range(32) if bits & (1 << b)]


def _segments(rows):
    """(start index, end index) of runs of constant setpoint."""
    out = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["setpoint_k"] != rows[start]["setpoint_k"]:
            out.append((start, i))
            start = i
    return out


def evaluate(result):
    """Fill result.verdicts: one dict per criterion with passed, detail."""
    rows = result.rows
    verdicts = []
    for c in result.scenario["criteria"]:
        kind = c["kind"]
        after = c.get("after_s", 0.0)
        before = c.get("before_s", math.inf)
        if kind == "settles":
            # within within_s of every setpoint change, and from then on (inside the
            # [after_s, before_s] window), the measurement stays in the band
            worst, when = 0.0, None
            for a, b in _segments(rows):
                t_change = rows[a]["t_s"]
                for r in rows[a:b]:
                    t = r["t_s"]
                    if t >= t_change + c["within_s"] and after <= t <= before:
                        err = abs(r["measurement_k"] - r["setpoint_k"])
                        if err > worst:
                            worst, when = err, t
            ok = worst <= c["band_k"]
            detail = "largest error after settling time %.2f K%s (band %.2f K)" % (
                worst,
                "" if when is None else " at t=%.1f s" % when,
                c["band_k"],
            )
        elif kind == "overshoot_max":
            worst = 0.0
            for a, b in _segments(rows):
                sp = rows[a]["setpoint_k"]
                sign = 1.0 if rows[a]["measurement_k"] < sp else -1.0
                for r in rows[a:b]:
                    if r["t_s"] >= after:
                        worst = max(worst, sign * (r["measurement_k"] - sp))
            ok = worst <= c["max_k"]
            detail = "overshoot %.2f K (limit %.2f K)" % (worst, c["max_k"])
        elif kind == "no_fault":
            bits = 0
            for r in rows:
                bits |= r["faults"]
            ok = bits == 0 and not any(e.kind == LATCHED for e in result.events)
            detail = "no fault" if ok else "faults: %s" % ", ".join(fault_names(bits))
        elif kind == "fault_latched":
            name = c["fault"]
            if name not in schema.FAULTS:
                raise ValueError(
                    "criterion fault_latched: unknown fault %r; expected one of: %s"
                    % (name, ", ".join(schema.FAULTS))
                )
            bit = schema.FAULTS[name]
            before = c.get("before_s", math.inf)
            first = next((r["t_s"] for r in rows if r["faults"] & (1 << bit)), None)
            reported = any(e.code == bit and e.kind == LATCHED for e in result.events)
            ok = first is not None and first <= before and reported
            detail = "%s latched at t=%s, event %s" % (
                name,
                "never" if first is None else "%.1f s" % first,
                "reported" if reported else "NOT reported",
            )
        elif kind == "actuator_safe_at_end":
            ch = c.get("channel", 0)
            board = resources.load_board(result.scenario["board"])
            safe = board["actuators"][ch].get("safe", 0.0)
            last = rows[-1]["outputs"][ch]
            ok = abs(last - safe) < 1e-6
            detail = "actuator %d at end %.3f, safe value %.3f" % (ch, last, safe)
        elif kind == "actuator_below":
            ch = c.get("channel", 0)
            vals = [r["outputs"][ch] for r in rows if after <= r["t_s"] <= before]
            ok = max(vals) <= c["max"]
            detail = "actuator %d peaked at %.3f (limit %.3f)" % (ch, max(vals), c["max"])
        elif kind == "measurement_between":
            vals = [r["measurement_k"] for r in rows if after <= r["t_s"] <= before]
            if "min_k" in c:  # a temperature difference such as superheat, or kelvin
                lo, hi, unit, lim_lo, lim_hi = min(vals), max(vals), "K", c["min_k"], c["max_k"]
            else:
                lo, hi, unit = min(vals) - C_TO_K, max(vals) - C_TO_K, "degC"
                lim_lo, lim_hi = c["min_c"], c["max_c"]
            ok = lo >= lim_lo and hi <= lim_hi
            detail = "measurement %.2f..%.2f %s (allowed %.2f..%.2f)" % (
                lo,
                hi,
                unit,
                lim_lo,
                lim_hi,
            )
        else:  # scenario.check refuses unknown kinds
            raise ValueError("unknown criterion %r" % kind)
        verdicts.append({"criterion": kind, "passed": bool(ok), "detail": detail})
    result.verdicts = verdicts
    return verdicts


def _display(result):
    """(offset, unit) for the user's edge: degC for temperatures, K for differences."""
    if result.scenario.get("celsius", True):
        return C_TO_K, "c"
    return 0.0, "k"


def write(result, out_dir):
    """Write rows.csv, telemetry.csv, summary.json and plot.png into out_dir."""
    off, u = _display(result)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    n_out = getattr(result.board, "n_actuators", 4)
    plant_keys = sorted(k for k, v in rows[0]["plant"].items() if isinstance(v, (int, float)))
    with open(out / "rows.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "t_s",
                "setpoint_" + u,
                "measurement_" + u,
                "sensed_" + u,
            ]
            + ["out%d" % k for k in range(n_out)]
            + ["faults"]
            + plant_keys
        )
        for r in rows:
            w.writerow(
                [
                    f"{r['t_s']:.3f}",
                    f"{r['setpoint_k'] - off:.3f}",
                    f"{r['measurement_k'] - off:.3f}",
                    f"{r['sensed_k'] - off:.3f}",
                ]
                + [f"{o:.4f}" for o in r["outputs"][:n_out]]
                + [r["faults"]]
                + [f"{r['plant'][k]:.6g}" for k in plant_keys]
            )
    with open(out / "telemetry.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "t_s",
                "loop",
                "mode",
                "setpoint_" + u,
                "measurement_" + u,
                "output",
                "p",
                "i",
                "d",
                "faults",
            ]
        )
        for t in result.telemetry:
            w.writerow(
                [
                    t.t_ms / 1000.0,
                    t.loop,
                    t.mode,
                    f"{t.setpoint - off:.3f}",
                    f"{t.measurement - off:.3f}",
                    f"{t.output:.4f}",
                    f"{t.p:.4f}",
                    f"{t.i:.4f}",
                    f"{t.d:.4f}",
                    t.faults,
                ]
            )
    summary = {
        "scenario": result.scenario["name"],
        "passed": result.passed,
        "board": bytes(result.board.board).split(b"\x00")[0].decode(),
        "criteria": result.verdicts,
        "events": [
            {
                "t_s": e.t_ms / 1000.0,
                "event": EVENT_NAMES.get(e.code, e.code),
                "kind": {v: k for k, v in schema.EVENT_KINDS.items()}.get(e.kind, e.kind),
                "loop": e.loop,
                "value": e.value,
            }
            for e in result.events
        ],
        "link": result.stats,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(result, out / "plot.png")
    return out


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    off, u = _display(result)
    rows = result.rows
    t = [r["t_s"] for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(
        3, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    ax1.plot(t, [r["setpoint_k"] - off for r in rows], "k--", lw=1.2, label="setpoint")
    ax1.plot(
        t,
        [r["sensed_k"] - off for r in rows],
        color="0.7",
        lw=0.8,
        label="sensor (as the board saw it)",
    )
    ax1.plot(
        t, [r["measurement_k"] - off for r in rows], "C3", lw=1.5, label="measurement (plant)"
    )
    lo = min(min(r["measurement_k"], r["setpoint_k"]) for r in rows) - off
    hi = max(max(r["measurement_k"], r["setpoint_k"]) for r in rows) - off
    pad = max(1.0, 0.1 * (hi - lo))
    ax1.set_ylim(lo - pad, hi + pad)
    ax1.set_ylabel(
        "%s [%s]"
        % (result.scenario["sensors"][0]["output"].replace("_k", ""), "°C" if u == "c" else "K")
    )
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    for a in result.scenario["actuators"]:
        ax2.plot(
            t,
            [r["outputs"][a["channel"]] for r in rows],
            lw=1.3,
            label="%s (channel %d)" % (a["input"], a["channel"]),
        )
    ax2.set_ylabel("actuator [0..1]")
    ax2.set_ylim(-0.05, 1.05)
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    bits = sorted({b for r in rows for b in range(32) if r["faults"] & (1 << b)})
    for k, b in enumerate(bits):
        ax3.fill_between(
            t,
            k,
            [k + 0.8 if r["faults"] & (1 << b) else k for r in rows],
            step="post",
            label=FAULT_NAMES.get(b, "bit%d" % b),
        )
    ax3.set_yticks([k + 0.4 for k in range(len(bits))])
    ax3.set_yticklabels([FAULT_NAMES.get(b, str(b)) for b in bits], fontsize=8)
    ax3.set_ylabel("faults")
    ax3.set_xlabel("time [s]")
    if not bits:
        ax3.text(
            0.5,
            0.5,
            "no fault latched",
            transform=ax3.transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
        ax3.set_yticks([])
    verdict = "PASS" if result.passed else "FAIL"
    fig.suptitle("%s — %s" % (result.scenario["name"], verdict))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
