"""The run plot, for a thermal engineer to read at a glance.

Panels, top to bottom, all on one time axis:

* the loops: each loop's setpoint and the signal the criteria judge: plant truth (solid) where
  the scenario wires the loop's sensor, else the board's own measurement (dashed; an estimate
  when the board derives it, e.g. a chip's junction from case temperature and power, with the
  plant's truth beside it), what the board sensed in grey, criterion bands and windows;
* plant truth for the other quantities the criteria judge or the plant is known for (junction
  and dry-out margin of a chip cooler, cell maximum and spread of a pack, liquid at the
  compressor), one panel per quantity, with their criterion limits;
* actuators, one panel per unit (valve in steps, compressor in rev/s, duty 0..1, power cap in
  W): what the plant received, the board's command dashed where a fault made them differ, and
  board outputs no plant input receives (a battery's current-derate request) as requested;
* disturbances: plant inputs that change during the run (pack current, GPU power, compressor
  speed, an overridden ambient), each on its own panel;
* the board's latched faults and the list of criteria with PASS/FAIL.

Every injected fault's window is shaded on every panel and labelled once. Units: degC for
temperatures, K for differences, bar for pressures.
"""

import math

import numpy as np

from thermopilot.protocol import schema

from . import signals

C_TO_K = 273.15
#: plant truth shown whatever the criteria say: what each plant's engineer looks at first
KEY_SIGNALS = {
    "chip_cooler": ["plant.junction_k", "plant.dryout_margin"],
    "battery_loop": ["plant.cell_max_k", "plant.cell_spread_k"],
    "heatpump_r290": ["plant.liquid_at_compressor"],
}
MAX_EXTRA = 3
MAX_DISTURBANCES = 3
FAULT_COLORS = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


#: a line with more points than twice this is drawn decimated: the first, the lowest and the
#: highest point of each of this many equal stretches (the plot is ~900 px wide, so nothing
#: visible is lost and every extreme, e.g. a one-tick spike, stays)
PLOT_BUCKETS = 1000


def minmax_indices(y, buckets=PLOT_BUCKETS):
    """Indices of ``y`` that draw it at ``buckets`` stretches: per stretch its first point,
    its lowest and its highest (NaN gaps kept: a stretch's first NaN too), in order. All
    indices when ``y`` is short."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n <= 2 * buckets:
        return np.arange(n)
    size = -(-n // buckets)
    pad = size * buckets - n
    nan = np.isnan(y)
    lo = np.where(nan, np.inf, y)
    hi = np.where(nan, -np.inf, y)
    if pad:
        lo = np.concatenate([lo, np.full(pad, np.inf)])
        hi = np.concatenate([hi, np.full(pad, -np.inf)])
        nan = np.concatenate([nan, np.zeros(pad, bool)])
    base = np.arange(buckets) * size
    parts = [
        base,
        base + lo.reshape(buckets, size).argmin(axis=1),
        base + hi.reshape(buckets, size).argmax(axis=1),
    ]
    nan_b = nan.reshape(buckets, size)
    has_nan = nan_b.any(axis=1)
    parts.append((base + nan_b.argmax(axis=1))[has_nan])
    idx = np.unique(np.concatenate(parts + [[n - 1]]))
    return idx[idx < n]


def step_indices(y):
    """Indices that draw a step signal (``step="post"``) exactly: every change and the ends."""
    y = np.asarray(y)
    if len(y) < 3:
        return np.arange(len(y))
    ch = np.flatnonzero(y[1:] != y[:-1])
    return np.unique(np.concatenate([[0, len(y) - 1], ch, ch + 1]))


def _line(ax, t, y, *args, **kw):
    """ax.plot(t, y, ...) with y decimated by minmax_indices."""
    k = minmax_indices(y)
    return ax.plot(t[k], np.asarray(y)[k], *args, **kw)


def unit_of(quantity, hint=""):
    """(offset, scale, label) so that display = (si - offset) * scale."""
    if quantity == "temperature":
        return C_TO_K, 1.0, "°C"
    if quantity == "temperature_difference":
        return 0.0, 1.0, "K"
    if quantity == "pressure":
        return 0.0, 1e-5, "bar"
    if quantity == "fraction":
        return 0.0, 1.0, hint or "0..1"
    return 0.0, 1.0, hint or signals.SI_UNITS.get(quantity, "")


def _name(sig):
    return sig.split(".", 1)[1] if "." in sig else sig


def _shade_faults(axes, injections, labelled):
    for k, inj in enumerate(injections):
        color = FAULT_COLORS[k % len(FAULT_COLORS)]
        t0, t1 = inj["t_s"], inj["t_end"]
        for ax in axes:
            if t1 - t0 > 0:
                ax.axvspan(t0, t1, color=color, alpha=0.12, lw=0)
            ax.axvline(t0, color=color, lw=1.0, ls=":")
        top = axes[0]
        if k not in labelled:
            labelled.add(k)
            top.annotate(
                "fault: " + inj["label"],
                xy=(t0, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2 - 11 * (k % 4)),
                textcoords="offset points",
                fontsize=7,
                color=color,
                va="top",
            )


def _verdict_text(v):
    return "%s: %s" % (v.get("label", v["criterion"]), "PASS" if v["passed"] else "FAIL")


def layout(result):
    """What the plot shows where: loop_panel [(loop, judged signal, quantity)], extra
    {quantity or "__main__": [signals]}, extra_panels [(quantity, signals)], disturbances
    [input names], actuator units {input: unit label}."""
    rows = result.rows
    ctx = rows.ctx
    sc = result.scenario
    crits = result.rig.criteria
    loop_panel = []  # (loop name, judged signal, quantity)
    for info in ctx.loops:
        sig = ctx.judged_signal(info)
        if rows.has(sig):
            loop_panel.append((info["name"], sig, signals.quantity_of(sig, ctx)))
    main_q = {q for _n, _s, q in loop_panel}
    judged = []
    for c in crits:
        for s in c.cfg.get("signals") or [c.cfg.get("signal")]:
            if isinstance(s, str) and s not in judged:
                judged.append(s)
    for s in KEY_SIGNALS.get(ctx.model, []):
        if s not in judged:
            judged.append(s)
    extra = {}  # quantity -> signals
    for s in judged:
        if not rows.has(s) or s.startswith("out.") or s.startswith("input."):
            continue
        if any(s == js for _n, js, _q in loop_panel):
            continue
        q = signals.quantity_of(s, ctx)
        if q in main_q and s.startswith("plant."):
            extra.setdefault("__main__", []).append(s)
            continue
        extra.setdefault(q, []).append(s)
    extra_panels = [(q, extra[q]) for q in extra if q != "__main__"][:MAX_EXTRA]
    driven = {a["input"] for a in sc["actuators"]}
    disturbances = []
    for name in ctx.inputs:
        col = "input." + name
        if name in driven or not rows.has(col):
            continue
        x = rows[col]
        if len(x) and np.nanmax(x) - np.nanmin(x) > 1e-9 * max(1.0, abs(np.nanmax(x))):
            disturbances.append(name)
    disturbances = disturbances[:MAX_DISTURBANCES]

    units = {
        a["input"]: (ctx.input_unit(a["input"]) if ctx.input_unit(a["input"]) not in ("-", "")
                     else "0..1")
        for a in sc["actuators"]
    }  # fmt: skip
    # board outputs no plant input receives (a battery's current-derate request, read by the
    # vehicle): drawn as the board's request in the actuator's own unit
    wired = {a["channel"] for a in sc["actuators"]}
    board_outputs = {}
    for ch, act in enumerate(ctx.board.get("actuators", [])):
        if ch not in wired and rows.has("out.%d" % ch):
            unit = act.get("unit") or ("0..1" if act.get("quantity") == "fraction" else "-")
            board_outputs[ch] = (act.get("name", "ch%d" % ch), unit)
    # one panel per unit, so that a duty 0..1 is not drawn flat under a power in W
    panels = {}
    for a in sc["actuators"]:
        panels.setdefault(units[a["input"]], []).append(("input", a["input"], a["channel"]))
    for ch, (name, unit) in board_outputs.items():
        panels.setdefault(unit, []).append(("out", name, ch))
    return {
        "loop_panel": loop_panel,
        "extra": extra,
        "extra_panels": extra_panels,
        "disturbances": disturbances,
        "actuator_units": units,
        "board_outputs": board_outputs,
        "actuator_panels": list(panels.items()),
    }


def loop_label(ctx, loop, sig):
    """The legend of a loop's judged signal: plant truth, or what the board computes (an
    estimate when the loop has no sensor of its own, e.g. a chip's junction from its case
    temperature and power)."""
    if sig.startswith("plant."):
        return "%s (plant truth)" % _name(sig)
    if ctx.loop(loop)["sensors"].get("pv") is None:
        return "%s measurement (estimated on the board)" % loop
    return "%s measurement (on the board)" % loop


def preload():
    """Import matplotlib in a background thread (a HIL run calls this before its board boots,
    so the import overlaps the wait for the board instead of adding to the report)."""
    import threading

    def _import():
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

    threading.Thread(target=_import, daemon=True).start()


def plot(result, path):
    """Write the run plot of ``result`` (a rig.RigResult with verdicts) to ``path``."""
    # a Figure on an Agg canvas, without pyplot: no figure manager, no backend switch, and
    # nothing left open in a global registry
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _Columns(result.rows)
    ctx = rows.ctx
    sc = result.scenario
    t = rows.t
    crits = result.rig.criteria
    verdicts = {v["index"]: v for v in result.verdicts}

    lay = layout(result)
    loop_panel = lay["loop_panel"]
    extra = lay["extra"]
    extra_panels = lay["extra_panels"]
    disturbances = lay["disturbances"]
    act_panels = lay["actuator_panels"] or [("", [])]
    n_act = len(act_panels)
    n_panels = 1 + len(extra_panels) + n_act + len(disturbances) + 1
    ratios = (
        [3] + [1.6] * len(extra_panels) + [1.8 if n_act == 1 else 1.2] * n_act
        + [1.1] * len(disturbances) + [0.9]
    )  # fmt: skip
    fig = Figure(figsize=(11, 1.5 + 1.45 * sum(ratios)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_panels, 1, gridspec_kw={"height_ratios": ratios})
    axes = list(np.atleast_1d(axes))
    ax_main = axes[0]
    ax_extra = axes[1 : 1 + len(extra_panels)]
    k_act = 1 + len(extra_panels)
    ax_acts = axes[k_act : k_act + n_act]
    ax_dist = axes[k_act + n_act : k_act + n_act + len(disturbances)]
    ax_faults = axes[-1]
    panel_of = {}
    act_of = {}  # actuator channel -> its panel
    for ax, (_unit, items) in zip(ax_acts, act_panels, strict=True):
        for *_kind_name, ch in items:
            act_of[ch] = ax
    for a in sc["actuators"]:
        # a criterion on out.<ch> is drawn on the actuator panel, in the plant input's unit
        ax = act_of[a["channel"]]
        panel_of["out.%d" % a["channel"]] = (ax, -a["offset"] / a["scale"], a["scale"])
    for ch in lay["board_outputs"]:
        panel_of["out.%d" % ch] = (act_of[ch], 0.0, 1.0)

    # -- loops ---------------------------------------------------------------------------
    main_unit = None
    for k, (loop, sig, q) in enumerate(loop_panel):
        off, sc_, unit = unit_of(q)
        main_unit = unit
        color = "C%d" % (3 + k)
        sp = rows["loop.%s.setpoint" % loop]
        _line(ax_main, t, (sp - off) * sc_, "k--", lw=1.1, label="%s setpoint" % loop)
        pv = ctx.loop(loop)["sensors"].get("pv")
        if pv is not None and rows.has("sensed.%d" % pv):
            _line(
                ax_main,
                t,
                (rows["sensed.%d" % pv] - off) * sc_,
                color="0.7",
                lw=0.7,
                label="sensed (what the board got, ch %d)" % pv,
            )
        estimate = not sig.startswith("plant.")
        _line(
            ax_main,
            t,
            (rows[sig] - off) * sc_,
            color=color,
            lw=1.1 if estimate else 1.5,
            ls="--" if estimate else "-",
            label=loop_label(ctx, loop, sig),
        )
        panel_of[sig] = (ax_main, off, sc_)
        panel_of["loop.%s.setpoint" % loop] = (ax_main, off, sc_)
    for s in extra.get("__main__", []):
        q = signals.quantity_of(s, ctx)
        off, sc_, unit = unit_of(q)
        _line(ax_main, t, (rows[s] - off) * sc_, lw=1.0, label=_name(s) + " (plant truth)")
        panel_of[s] = (ax_main, off, sc_)
    ax_main.set_ylabel(
        "%s [%s]" % (", ".join(n for n, _s, _q in loop_panel) or "loop", main_unit or "")
    )
    for ax, (q, sigs) in zip(ax_extra, extra_panels, strict=True):
        off, sc_, unit = unit_of(q)
        for s in sigs:
            _line(ax, t, (rows[s] - off) * sc_, lw=1.2, label=_name(s))
            panel_of[s] = (ax, off, sc_)
        ax.set_ylabel("%s [%s]" % (q.replace("_", " "), unit))
    # the loop panel's range follows the plant truth and the setpoints, not a wire break's
    # reading far out of range (the board's view of it stays drawn, clipped)
    span = []
    for loop, sig, q in loop_panel:
        off, sc_, _u = unit_of(q)
        for col in (sig, "loop.%s.setpoint" % loop):
            x = (rows[col] - off) * sc_
            x = x[np.isfinite(x)]
            if len(x):
                span += [float(np.min(x)), float(np.max(x))]
    for s in extra.get("__main__", []):
        off, sc_, _u = unit_of(signals.quantity_of(s, ctx))
        x = (rows[s] - off) * sc_
        x = x[np.isfinite(x)]
        if len(x):
            span += [float(np.min(x)), float(np.max(x))]

    # -- criterion bands -----------------------------------------------------------------
    labelled = set()
    for c in crits:
        v = verdicts.get(c.index)
        if v is None:
            continue
        color = "green" if v["passed"] else "red"
        for band in c.bands(result.rows):
            sig, lo, hi, t0, t1 = band[:5]
            where = panel_of.get(sig)
            if where is None:
                continue
            ax, off, sc_ = where
            label = _verdict_text(v) if c.index not in labelled else None
            labelled.add(c.index)
            if len(band) > 5:  # relative to the setpoint (settles)
                loop = c.cfg["loop"]
                sp = rows["loop.%s.setpoint" % loop]
                k = np.unique(
                    np.concatenate([minmax_indices(sp), step_indices((t >= t0) & (t <= t1))])
                )
                tk, spk = t[k], sp[k]
                ax.fill_between(
                    tk,
                    (spk + lo - off) * sc_,
                    (spk + hi - off) * sc_,
                    where=(tk >= t0) & (tk <= t1),
                    color=color,
                    alpha=0.10,
                    lw=0,
                    label=label,
                )
                continue
            first = True
            for lim in (lo, hi):
                if lim is None:
                    continue
                ax.hlines(
                    (lim - off) * sc_,
                    t0,
                    t1,
                    colors=color,
                    linestyles="-.",
                    lw=1.0,
                    label=label if first else None,
                )
                first = False

    for c in crits:
        for band in c.bands(result.rows):
            if panel_of.get(band[0], (None,))[0] is ax_main and len(band) == 5:
                off, sc_ = panel_of[band[0]][1:]
                span += [(lim - off) * sc_ for lim in band[1:3] if lim is not None]
    if span:
        lo, hi = min(span), max(span)
        pad = max(0.5, 0.08 * (hi - lo))
        ax_main.set_ylim(lo - pad, hi + pad)

    # -- actuators -----------------------------------------------------------------------
    acts = {a["channel"]: a for a in sc["actuators"]}
    for ax, (unit, items) in zip(ax_acts, act_panels, strict=True):
        names = []
        for kind, name, ch in items:
            if kind == "out":  # a request no plant input receives: the board's output
                _line(ax, t, rows["out.%d" % ch], lw=1.3, label="%s (board request)" % name)
                names.append(name)
                continue
            a = acts[ch]
            act = ctx.board["actuators"][ch]
            got = rows["input." + name]
            cmd = rows["out.%d" % ch] * a["scale"] + a["offset"]
            line = _line(
                ax,
                t,
                got,
                lw=1.3,
                label="%s → %s (plant)" % (act.get("name", "ch%d" % ch), name),
            )[0]
            if np.nanmax(np.abs(got - cmd)) > 1e-6 * max(1.0, np.nanmax(np.abs(cmd))):
                _line(ax, t, cmd, ls="--", lw=0.9, color=line.get_color(), label="board command")
            names.append(act.get("name", name))
        ax.set_ylabel("%s [%s]" % (", ".join(names) if len(names) < 3 else "actuators", unit))

    # -- disturbances --------------------------------------------------------------------
    for ax, name in zip(ax_dist, disturbances, strict=True):
        unit = ctx.input_unit(name)
        q = signals.quantity_of("input." + name, ctx)
        off, sc_, label = unit_of(q, unit if unit not in ("-", "") else "")
        _line(ax, t, (rows["input." + name] - off) * sc_, color="C7", lw=1.2, label=name)
        ax.set_ylabel("%s [%s]" % (name, label))

    # -- faults and verdicts -------------------------------------------------------------
    f = rows["faults"].astype(np.int64)
    bits = [b for b in range(32) if np.any(f >> b & 1)]
    names = {v: k for k, v in schema.FAULTS.items()}
    for k, b in enumerate(bits):
        on = f >> b & 1
        i = step_indices(on)
        ax_faults.fill_between(t[i], k, k + 0.8 * on[i], step="post", color="C3", alpha=0.7)
    ax_faults.set_yticks([k + 0.4 for k in range(len(bits))])
    ax_faults.set_yticklabels([names.get(b, "bit%d" % b) for b in bits], fontsize=8)
    ax_faults.set_ylim(-0.1, max(1, len(bits)) + 0.1)
    ax_faults.set_ylabel("latched")
    if not bits:
        ax_faults.text(0.02, 0.5, "no fault latched", transform=ax_faults.transAxes, color="0.4")
    from matplotlib.lines import Line2D

    handles = [
        Line2D(
            [],
            [],
            color="green" if v["passed"] else "red",
            marker="s",
            ls="",
            label=_verdict_text(v),
        )
        for v in result.verdicts
    ]
    if handles:
        ax_faults.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False
        )
    ax_faults.set_xlabel("time [s]")

    _shade_faults(axes, result.rows.injections, set())
    # Few ticks, and time ticks on the bottom panel only: every tick is a Line2D with a marker
    # and a Text that matplotlib builds and draws one by one, the largest cost of the plot
    # after the text. The panels above share the time range and get their vertical grid lines
    # as one collection each.
    from matplotlib.ticker import MaxNLocator, NullLocator

    t_end = float(t[-1]) if len(t) else 0.0
    if not result.interrupted:
        t_end = max(t_end, float(sc["duration_s"]))
    t_end = t_end if t_end > 0 else 1.0
    x_ticks = MaxNLocator(nbins=8, steps=[1, 2, 3, 5, 6, 10]).tick_values(0.0, t_end)
    x_ticks = x_ticks[(x_ticks >= 0) & (x_ticks <= t_end)]
    for ax in axes:
        ax.set_xlim(0.0, t_end)
    ax_faults.set_xticks(x_ticks)
    for ax in axes[:-1]:
        ax.xaxis.set_major_locator(NullLocator())
        ax.vlines(x_ticks, 0, 1, transform=ax.get_xaxis_transform(), colors="#b0b0b0",
                  lw=0.8, alpha=0.3)  # fmt: skip
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(alpha=0.3, axis="y")
        h, lab = ax.get_legend_handles_labels()
        if h:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax_faults.grid(alpha=0.3, axis="x")
    verdict = "INTERRUPTED" if result.interrupted else ("PASS" if result.passed else "FAIL")
    n_fail = sum(not v["passed"] for v in result.verdicts)
    fig.suptitle(
        "%s — %s%s" % (sc["name"], verdict, " (%d criteria failed)" % n_fail if n_fail else ""),
        color="green" if verdict == "PASS" else "red",
    )
    # a fixed layout (legends right of the axes): tight_layout would draw the whole figure
    # once more to measure it, and fast PNG compression; each halves the time of a plot
    inch = fig.get_size_inches()[1]
    fig.subplots_adjust(
        left=0.08, right=0.76, bottom=0.45 / inch, top=1.0 - 0.5 / inch, hspace=0.12
    )
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})
    return path


class _Columns:
    """The run's rows with every column read once (a spilled column is read back from disk on
    each ``rows[name]``)."""

    def __init__(self, rows):
        self._rows = rows
        self._cache = {}
        self.ctx = rows.ctx
        self.t = self["t_s"]

    def has(self, name):
        return self._rows.has(name)

    def __getitem__(self, name):
        col = self._cache.get(name)
        if col is None:
            col = self._cache[name] = self._rows[name]
        return col


def _finite(x):
    return x is not None and math.isfinite(x)
