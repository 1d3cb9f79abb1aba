"""Commands that talk to a running board over the ThermoPilot protocol: info, monitor, param,
fault, mode, manual, setpoint, upload.

Values are shown in the user's units (temperature in degC, pressure in bar, fractions in %,
temperature differences in K) from the quantity the board reports for each loop, field and
parameter; a number typed without a unit is in the unit the CLI shows.
"""

import csv
import difflib
import math
import pathlib
import sys
import time

from thermopilot.protocol import schema
from thermopilot.protocol.link import LinkError, Nack, Session

from . import units
from .console import EXIT_FAILED, UserError, print_json

MODE_NAMES = {v: k for k, v in schema.MODES.items()}
FAULT_NAMES = {v: k for k, v in schema.FAULTS.items()}
# faults and notices share the EVENT code space (fault bits below 32, notices from 32 up)
EVENT_NAMES = {**FAULT_NAMES, **{v: k for k, v in schema.NOTICES.items()}}
EVENT_KINDS = {v: k for k, v in schema.EVENT_KINDS.items()}
#: telemetry rates the board streams at (firmware app.py on_stream_rate)
from .cli import RATE_MAX_HZ, RATE_MIN_HZ  # noqa: E402 - beside their use


def _text(raw):
    return bytes(raw).split(b"\x00", 1)[0].decode(errors="replace")


def features(bits):
    return [k for k, v in schema.FEATURES.items() if bits & (1 << v)] or ["none"]


def fault_names(bits):
    return [FAULT_NAMES.get(b, "bit%d" % b) for b in range(32) if bits >> b & 1]


def parse_number(text, what):
    """A number the user typed; UserError naming it when it is not a finite number."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise UserError("%s: %r is not a number" % (what, text)) from None
    if not math.isfinite(v):
        raise UserError("%s: %s is not a finite number; give a plain number" % (what, text))
    return v


def open_session(args):
    """A Session on ``args.port`` that has said HELLO (schema checked)."""
    s = Session(args.port, timeout_s=args.timeout)
    try:
        s.ident = s.hello()
    except BaseException:
        s.close()
        raise
    return s


def find_loop(s, name):
    """The loop called ``name`` (or numbered so), from the board's LOOP_INFO."""
    loops = s.loops()
    for lp in loops:
        if lp["name"] == name or str(lp["loop"]) == name:
            return lp
    raise UserError(
        "board %s has no loop %r; its loops: %s"
        % (_text(s.ident.board), name, ", ".join(lp["name"] for lp in loops) or "none")
    )


def explain_nack(nack, what, quantity="none", board_unit=None, names=None):
    """A NACK as a sentence naming the value and the allowed range, in the user's units."""

    def show(v):
        return units.fmt(v, quantity, board_unit=board_unit)

    lo, hi = nack.min, nack.max
    code = nack.code
    if code == "out_of_range":
        return "board refused %s %s: out of range; allowed %s .. %s" % (
            what,
            show(nack.value),
            units.fmt(lo, quantity, board_unit=board_unit, unit=False),
            show(hi),
        )
    if code == "conflict":
        name = (names or {}).get(nack.other, "parameter #%s" % nack.other)
        other = name
        if getattr(nack, "other_value", None) is not None:
            # both values named: a rule pairs parameters of one quantity (hp.lop and hp.mop)
            other = "%s = %s" % (name, show(nack.other_value))
        return (
            "board refused %s %s: it would break the rule with %s; allowed now %s .. %s "
            "(change %s first to widen it)"
            % (
                what,
                show(nack.value),
                other,
                units.fmt(lo, quantity, board_unit=board_unit, unit=False),
                show(hi),
                name,
            )
        )
    if code == "bad_value":
        return "board refused %s %s: not a value it takes (a whole number? a valid choice?)" % (
            what,
            show(nack.value),
        )
    if code == "faulted":
        return (
            "board refused %s: a fault is latched and the loop is in its safe state "
            "(thermopilot fault list; fault reset once the cause is gone)" % what
        )
    return nack.describe(names)


# -- info ----------------------------------------------------------------------------------


def info_dict(s):
    ident = s.ident
    st = s.stats()
    loops = s.loops()
    return {
        "port": s.port,
        "board": _text(ident.board),
        "firmware": _text(ident.fw_version),
        "protocol": ident.proto_version,
        "schema": "%08x" % ident.schema_hash,
        "host_protocol": schema.PROTOCOL_VERSION,
        "host_schema": "%08x" % schema.SCHEMA_HASH,
        "features": [f for f in features(ident.features) if f != "none"],
        "tick_hz": ident.tick_hz,
        "n_params": ident.n_params,
        "loops": [
            {
                "name": lp["name"],
                "controller": lp["controller"],
                "quantity": lp["quantity"],
                "unit": units.shown_unit(lp["quantity"]),
                "resolution": lp["resolution"],
                "output_quantity": lp["out_quantity"],
                "output_unit": units.shown_unit(lp["out_quantity"]),
                "output_min": lp["out_min"],
                "output_max": lp["out_max"],
                "fields": [{"name": n, "quantity": q} for n, q in lp["fields"]],
            }
            for lp in loops
        ],
        "link": st,
        "heap": _heap(s),
    }


def _heap(s):
    """The board's heap and tick statistics (BOARD_STATS), or {} if it has none."""
    from thermopilot.hil.report import heap_summary

    try:
        b = s.heap_and_ticks()
    except LinkError:
        return {}
    return heap_summary({k: getattr(b, k) for k in b if k != "req_seq" and not k.startswith("_")})


def cmd_info(args):
    with open_session(args) as s:
        d = info_dict(s)
    if args.json:
        print_json(d)
        return 0
    st = d["link"]
    print("board         %s" % d["board"])
    print("firmware      %s" % d["firmware"])
    print(
        "protocol      v%d, schema %s (host: v%d, %s)"
        % (d["protocol"], d["schema"], d["host_protocol"], d["host_schema"])
    )
    print("features      %s" % (", ".join(d["features"]) or "none"))
    print(
        "loops         %d at %g Hz, %d parameters" % (len(d["loops"]), d["tick_hz"], d["n_params"])
    )
    for lp in d["loops"]:
        q = lp["output_quantity"]
        print(
            "  %-5s %-5s %s in %s (resolution %s); output %s .. %s"
            % (
                lp["name"],
                lp["controller"],
                lp["quantity"].replace("_", " "),
                lp["unit"] or "-",
                units.fmt(
                    lp["resolution"],
                    "temperature_difference"
                    if lp["quantity"] == "temperature"
                    else lp["quantity"],
                ),
                units.fmt(lp["output_min"], q, unit=False),
                units.fmt(lp["output_max"], q),
            )
        )
    print(
        "link (host)   ok %d, bad crc %d, bad cobs %d, bad len %d, dropped %d, "
        "retries %d, timeouts %d"
        % (
            st["host_ok"],
            st["host_bad_crc"],
            st["host_bad_cobs"],
            st["host_bad_len"],
            st["host_dropped"],
            st["host_retries"],
            st["host_timeouts"],
        )
    )
    print(
        "link (board)  ok %d, bad crc %d, bad cobs %d, bad len %d, dropped %d, "
        "overflow %d, duplicates %d, sent %d"
        % (
            st["board_rx_ok"],
            st["board_rx_bad_crc"],
            st["board_rx_bad_cobs"],
            st["board_rx_bad_len"],
            st["board_rx_dropped"],
            st["board_rx_overflow"],
            st["board_rx_duplicate"],
            st["board_tx_frames"],
        )
    )
    h = d["heap"]
    if h:
        print(
            "heap          %d of %d bytes used at the highest since boot or the last HIL "
            "start (%d free now), %d collections between ticks, %d inside a tick; longest "
            "tick %d us, mean %.0f us"
            % (
                h["peak_used_b"],
                h["total_b"],
                h["free_now_b"],
                h["gc_between_ticks"],
                h["gc_in_tick"],
                h["tick_us_max"],
                h["tick_us_mean"],
            )
        )
    return 0


# -- parameters ----------------------------------------------------------------------------


def _param_by_name(s, rows, name):
    for r in rows:
        if r["name"] == name:
            return r
    close = difflib.get_close_matches(name, [r["name"] for r in rows], n=3, cutoff=0.5)
    raise UserError(
        "%s is not a parameter of board %s%s; thermopilot param list --port %s lists them"
        % (
            name,
            _text(s.ident.board),
            " (did you mean %s?)" % ", ".join(close) if close else "",
            s.port,
        )
    )


def _param_view(r):
    q = r["quantity"]
    return {
        "name": r["name"],
        "value": r["value"],
        "min": r["min"],
        "max": r["max"],
        "default": r["default"],
        "unit": r["unit"],
        "quantity": q,
        "type": r["type"],
        "shown_unit": units.shown_unit(q, r["unit"]),
        "shown": {k: units.display(r[k], q) for k in ("value", "min", "max", "default")},
    }


def _num(v):
    return "%.6g" % v


def cmd_param(args):
    with open_session(args) as s:
        if args.action == "list":
            rows = [_param_view(r) for r in s.params()]
            if args.json:
                print_json(rows)
                return 0
            print(
                "%-16s %11s %11s %11s %11s  %s"
                % ("name", "value", "min", "max", "default", "unit")
            )
            for r in rows:
                sh = r["shown"]
                print(
                    "%-16s %11s %11s %11s %11s  %s"
                    % (
                        r["name"],
                        _num(sh["value"]),
                        _num(sh["min"]),
                        _num(sh["max"]),
                        _num(sh["default"]),
                        r["shown_unit"],
                    )
                )
        elif args.action == "get":
            _need_args(args, 1, "NAME")
            rows = s.params()
            r = _param_view(_param_by_name(s, rows, args.args[0]))
            r["value"] = s.param_get(r["name"])
            r["shown"]["value"] = units.display(units.f32(r["value"]), r["quantity"])
            if args.json:
                print_json(r)
            else:
                print(
                    "%s = %s%s"
                    % (
                        r["name"],
                        _num(r["shown"]["value"]),
                        " " + r["shown_unit"] if r["shown_unit"] else "",
                    )
                )
        elif args.action == "set":
            if len(args.args) not in (2, 3):
                raise UserError(
                    "param set takes NAME VALUE [UNIT], got %d argument(s): %s"
                    % (len(args.args), " ".join(args.args) or "none")
                )
            name = args.args[0]
            rows = s.params()
            r = _param_by_name(s, rows, name)
            q, bu = r["quantity"], r["unit"]
            value = parse_number(args.args[1], name)
            unit = args.args[2] if len(args.args) == 3 else None
            try:
                si = units.to_si(value, q, unit, board_unit=bu)
            except ValueError as exc:
                raise UserError("%s: %s" % (name, exc)) from None
            names = {x["index"]: x["name"] for x in rows}
            try:
                got = s.param_set(name, si)
            except Nack as n:
                raise UserError(explain_nack(n, name, q, bu, names)) from None
            shown = units.shown_unit(q, bu)
            print(
                "%s = %s%s"
                % (name, _num(units.display(units.f32(got), q)), " " + shown if shown else "")
            )
        elif args.action == "save":
            _need_args(args, 0, "")
            ack = s.request("PARAM_SAVE", flags=0)
            if getattr(ack, "code", 0) == 1:
                print("parameters unchanged since the last save; nothing written")
            else:
                print("parameters saved to the board's flash")
        elif args.action == "defaults":
            _need_args(args, 0, "")
            s.request("PARAM_DEFAULTS", flags=0)
            print("parameters restored to defaults (not saved: thermopilot param save)")
    return 0


def _need_args(args, n, form):
    if len(args.args) != n:
        raise UserError(
            "param %s takes %s, got %s"
            % (
                args.action,
                form or "no argument",
                " ".join(args.args) if args.args else "no argument",
            )
        )


# -- faults --------------------------------------------------------------------------------


def cmd_fault(args):
    """List the board's faults, or clear those whose cause is gone."""
    with open_session(args) as s:
        if args.action == "reset":
            before = s.fault_status()
            st = s.fault_reset()
            cleared = before.latched & ~st.latched
            if args.json:
                print_json(
                    {"cleared": fault_names(cleared), "still_latched": fault_names(st.latched)}
                )
            else:
                print("cleared: %s" % (", ".join(fault_names(cleared)) or "nothing was latched"))
                if st.latched:
                    print(
                        "still latched, cause present: %s (fix the cause, then reset again)"
                        % ", ".join(fault_names(st.latched))
                    )
            return EXIT_FAILED if st.latched else 0
        rows = s.faults()
        loops = {lp["loop"]: lp["name"] for lp in s.loops()}
    for r in rows:
        r["loop"] = None if r["loop"] == 255 else loops.get(r["loop"], r["loop"])
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no fault latched or present")
        return 0
    print(
        "%-26s %-8s %-8s %-5s %10s %12s %6s"
        % ("fault", "latched", "cause", "loop", "t [s]", "value", "count")
    )
    for r in rows:
        print(
            "%-26s %-8s %-8s %-5s %10.1f %12.4g %6d"
            % (
                r["name"],
                ("trip" if r["trip"] else "yes") if r["latched"] else "no",
                "present" if r["present"] else "gone",
                "-" if r["loop"] is None else str(r["loop"]),
                r["t_s"],
                r["value"],
                r["count"],
            )
        )
    return 0


# -- board control -------------------------------------------------------------------------


def cmd_mode(args):
    with open_session(args) as s:
        lp = find_loop(s, args.loop)
        try:
            s.command("mode", loop=lp["loop"], value=schema.MODES[args.mode])
        except Nack as n:
            raise UserError(
                explain_nack(n, "mode %s for loop %s" % (args.mode, lp["name"]))
            ) from None
    print("loop %s: mode %s" % (lp["name"], args.mode))
    return 0


def _value_si(args, quantity, what):
    """args.value (with args.unit, or the quantity's display unit) in SI; UserError names
    `what` and the value."""
    value = parse_number(args.value, what)
    try:
        return units.to_si(value, quantity, args.unit)
    except ValueError as exc:
        raise UserError("%s: %s" % (what, exc)) from None


def cmd_manual(args):
    with open_session(args) as s:
        lp = find_loop(s, args.loop)
        q = lp["out_quantity"]
        si = _value_si(args, q, "manual output for loop %s" % lp["name"])
        try:
            s.command("manual_output", loop=lp["loop"], value=si)
            s.command("mode", loop=lp["loop"], value=schema.MODES["manual"])
        except Nack as n:
            raise UserError(explain_nack(n, "manual output for loop %s" % lp["name"], q)) from None
    print("loop %s: mode manual, output %s" % (lp["name"], units.fmt(si, q)))
    return 0


def cmd_setpoint(args):
    with open_session(args) as s:
        lp = find_loop(s, args.loop)
        q = lp["quantity"]
        si = _value_si(args, q, "setpoint for loop %s" % lp["name"])
        try:
            s.command("setpoint", loop=lp["loop"], value=si)
        except Nack as n:
            names = None
            if n.other is not None:
                names = {r["index"]: r["name"] for r in s.params()}
            raise UserError(
                explain_nack(n, "setpoint for loop %s" % lp["name"], q, names=names)
            ) from None
    print("loop %s: setpoint %s" % (lp["name"], units.fmt(si, q, lp["resolution"])))
    return 0


def cmd_upload(args):
    path = pathlib.Path(args.file)
    if not path.is_file():
        raise UserError("file %s does not exist" % path)
    data = path.read_bytes()
    with open_session(args) as s:
        s.upload(args.slot, data)
    print(
        "uploaded %d bytes to slot %d (stored as slot%d.bin after its CRC-32 checked out)"
        % (len(data), args.slot, args.slot)
    )
    return 0


# -- monitor -------------------------------------------------------------------------------


def fit_columns(columns, width, gap=3):
    """Keep the columns (dicts with ``priority`` and ``width``) that fit in ``width``
    characters with ``gap`` between them, most important first; returns them in their
    original order."""
    chosen = set()
    used = -gap
    for c in sorted(columns, key=lambda c: c["priority"]):
        w = c["width"] + gap
        if used + w <= width or not chosen:
            chosen.add(id(c))
            used += w
    return [c for c in columns if id(c) in chosen]


class MonitorView:
    """Telemetry rows in the user's units, for the table and the CSV."""

    def __init__(self, loops):
        self.loops = {lp["loop"]: lp for lp in loops}

    def cells(self, t):
        lp = self.loops.get(
            t.loop,
            {
                "name": str(t.loop),
                "quantity": "none",
                "resolution": 0,
                "out_quantity": "none",
                "fields": [],
            },
        )
        q, res = lp["quantity"], lp["resolution"]
        faults = fault_names(t.faults)
        meas = t.measurement if math.isfinite(t.measurement) else None
        return {
            "loop": lp["name"],
            "mode": MODE_NAMES.get(t.mode, str(t.mode)),
            "t": "%.1f" % (t.t_ms / 1000.0),
            "setpoint": units.fmt(t.setpoint, q, res),
            "measured": units.fmt(meas, q, res) if meas is not None else "—",
            "output": units.fmt(t.output, lp["out_quantity"]),
            "P": "%.3g" % t.p,
            "I": "%.3g" % t.i,
            "D": "%.3g" % t.d,
            # the first fault and how many more (thermopilot fault list shows them all)
            "faults": (faults[0] + (" +%d" % (len(faults) - 1) if len(faults) > 1 else ""))
            if faults
            else "ok",
            "fields": [
                "%s %s" % (name, units.fmt(t.fields[k], fq))
                for k, (name, fq) in enumerate(lp["fields"])
            ],
        }


_COLUMNS = [
    ("loop", "loop", 1, "left"),
    ("mode", "mode", 2, "left"),
    ("t", "t [s]", 7, "right"),
    ("setpoint", "setpoint", 4, "right"),
    ("measured", "measured", 3, "right"),
    ("output", "output", 5, "right"),
    ("P", "P", 8, "right"),
    ("I", "I", 9, "right"),
    ("D", "D", 10, "right"),
    ("faults", "faults", 6, "left"),
]


def monitor_table(view, latest, title, width, events):
    from rich import box
    from rich.table import Table

    rows = [view.cells(latest[k]) for k in sorted(latest)]
    cols = []
    for key, head, prio, justify in _COLUMNS:
        w = max([len(head)] + [len(r[key]) for r in rows])
        if key == "faults":
            w = min(w, 16)  # the rest of the line; longer text is cut with "…"
        cols.append({"key": key, "head": head, "priority": prio, "width": w, "justify": justify})
    cols = fit_columns(cols, width - 1)
    # no outer edge; one space of padding each side of a column and a separator between
    tb = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False, expand=False)
    used = sum(c["width"] + 3 for c in cols) - 3
    for c in cols:
        w = c["width"] + (max(0, width - 1 - used) if c["key"] == "faults" else 0)
        tb.add_column(
            c["head"],
            justify=c["justify"],
            no_wrap=True,
            overflow="ellipsis",
            min_width=min(w, c["width"]),
            max_width=w,
        )
    for r in rows:
        tb.add_row(*[r[c["key"]] for c in cols])
    notes = []
    for r in rows:
        if r["fields"]:
            notes.append("%s: %s" % (r["loop"], ", ".join(r["fields"])))
    notes += events[-5:]
    if notes:
        tb.caption = "\n".join(n if len(n) < width else n[: width - 2] + "…" for n in notes)
        tb.caption_justify = "left"
    return tb


def csv_header(loops):
    head = [
        "host_time_s",
        "loop",
        "mode",
        "t_s",
        "setpoint",
        "measurement",
        "unit",
        "output",
        "output_unit",
        "p",
        "i",
        "d",
        "faults",
    ]
    for lp in loops:
        for name, fq in lp["fields"]:
            u = units.shown_unit(fq)
            head.append("%s.%s%s" % (lp["name"], name, " [%s]" % u if u else ""))
    return head


def csv_row(view, loops, t, host_time_s):
    lp = view.loops.get(t.loop)
    q = lp["quantity"] if lp else "none"
    res = units.display_step(lp["resolution"], q) if lp else 0
    oq = lp["out_quantity"] if lp else "none"

    def r(v, step):
        if not math.isfinite(v):
            return ""
        return units.rounded(units.display(v, q), step) if step else "%.6g" % v

    row = [
        "%.3f" % host_time_s,
        lp["name"] if lp else t.loop,
        MODE_NAMES.get(t.mode, t.mode),
        "%.3f" % (t.t_ms / 1000.0),
        r(t.setpoint, res),
        r(t.measurement, res),
        units.shown_unit(q),
        "%.4g" % units.display(t.output, oq),
        units.shown_unit(oq),
        "%.6g" % t.p,
        "%.6g" % t.i,
        "%.6g" % t.d,
        "|".join(fault_names(t.faults)),
    ]
    for other in loops:
        for k, (_name, fq) in enumerate(other["fields"]):
            if other["loop"] == t.loop:
                v = t.fields[k]
                row.append("%.6g" % units.display(v, fq) if math.isfinite(v) else "")
            else:
                row.append("")
    return row


def cmd_monitor(args):
    from rich.console import Console
    from rich.live import Live

    if args.rate is not None and not (RATE_MIN_HZ <= args.rate <= RATE_MAX_HZ):
        raise UserError(
            "--rate %g Hz is outside %g .. %g Hz, the telemetry rates the board streams at"
            % (args.rate, RATE_MIN_HZ, RATE_MAX_HZ)
        )
    if args.duration is not None and not args.duration > 0:
        raise UserError("--duration %g: give a time in seconds above 0" % args.duration)
    console = Console()
    width = min(console.width, 200)
    csv_file = None
    n = 0
    events = []
    latest = {}
    t_end = time.monotonic() + args.duration if args.duration else math.inf
    with open_session(args) as s:
        loops = s.loops()
        view = MonitorView(loops)
        if args.csv:
            try:
                csv_file = open(args.csv, "w", newline="")
            except OSError as exc:
                raise UserError("cannot write --csv %s: %s" % (args.csv, exc.strerror)) from None
            writer = csv.writer(csv_file)
            writer.writerow(csv_header(loops))
        if args.rate is not None:
            s.stream_rate("TELEMETRY", args.rate)
        title = "ThermoPilot %s on %s (Ctrl-C stops)" % (_text(s.ident.board), args.port)

        def table():
            return monitor_table(view, latest, title, width, events)

        try:
            with Live(
                table(), console=console, refresh_per_second=4, auto_refresh=sys.stdout.isatty()
            ) as live:
                while time.monotonic() < t_end:
                    time.sleep(0.1)
                    while s.telemetry:
                        t = s.telemetry.popleft()
                        latest[t.loop] = t
                        n += 1
                        if csv_file:
                            writer.writerow(csv_row(view, loops, t, time.time()))
                    while s.events:
                        e = s.events.popleft()
                        lname = view.loops.get(e.loop, {}).get("name", "-")
                        events.append(
                            "t=%.1f s: %s %s (loop %s, value %.4g)"
                            % (
                                e.t_ms / 1000.0,
                                EVENT_NAMES.get(e.code, e.code),
                                EVENT_KINDS.get(e.kind, ""),
                                lname,
                                e.value,
                            )
                        )
                    live.update(table())
        except KeyboardInterrupt:
            pass
        finally:
            if csv_file:
                csv_file.close()
    print(
        "%d telemetry rows%s" % (n, " written to %s" % args.csv if args.csv else ""),
        file=sys.stderr,
    )
    return 0


__all__ = ["LinkError"]
