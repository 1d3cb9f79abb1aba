"""``thermopilot hil ...``: run, check and list HIL scenarios, run campaigns of them.

The commands live here, beside the rig they drive; ``host/cli.py`` registers them.

* ``hil run FILE``: one scenario on a fresh virtual board (lockstep) or a real board
  (``--port``, real time), with a progress line (simulated and wall time, the criteria's
  state); Ctrl-C stops the run cleanly: the board is stopped (outputs safe), its parameters
  restored, a partial report marked as interrupted written, exit 130.
* ``hil check FILE...``: validate scenario files without running them.
* ``hil list``: the bundled scenarios (``--kinds``: the fault and criteria kinds).
* ``hil campaign FILE``: a base scenario x sweeps x fault matrix, in parallel (hil.campaign).
"""

import pathlib
import sys
import time

from .cli import EXIT_FAILED, EXIT_USAGE, _features

EXIT_INTERRUPTED = 130
_NO_NATIVE_HELP = "leave out the C core (tpcore .mpy): the board runs the MicroPython fallback"


class _Progress:
    """The progress line of a run: simulated and wall time, speed, criteria state."""

    def __init__(self, console, sc, realtime):
        self.console = console
        self.sc = sc
        self.realtime = realtime
        self.t0 = time.monotonic()
        self.last_eval = -1e9
        self.last_plain = self.t0
        self.crit_text = ""
        self.live = None
        self.progress = None
        self.task = None

    def __enter__(self):
        from rich.progress import BarColumn, Progress, TextColumn

        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(
                self.sc["name"], total=self.sc["duration_s"], info="starting the board"
            )
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def criteria_state(self, rig):
        from thermopilot.hil import criteria

        rows = rig.rows
        if rows is None or len(rows) < 2:
            return ""
        counts = {"pass": 0, "ok": 0, "pending": 0, "fail": 0}
        failing = []
        for c in rig.criteria:
            try:
                v = c.evaluate(rows, rig._events)
                st = criteria.state(c, v, rows)
            except Exception:  # noqa: BLE001 - a partial run may not judge yet
                st = "pending"
            counts[st] += 1
            if st == "fail":
                failing.append(c.label())
        text = "criteria: %d passed, %d holding, %d pending, %d failed" % (
            counts["pass"],
            counts["ok"],
            counts["pending"],
            counts["fail"],
        )
        if failing:
            text += " (%s)" % ", ".join(failing[:3])
        return text

    def __call__(self, rig, k, n, t_s):
        now = time.monotonic()
        wall = now - self.t0
        if now - self.last_eval > 1.0 or k >= n:
            self.last_eval = now
            self.crit_text = self.criteria_state(rig)
        speed = t_s / wall if wall > 0 else 0.0
        info = "t=%.1f/%.0f s simulated, %.1f s wall (%.0fx)  %s" % (
            t_s,
            self.sc["duration_s"],
            wall,
            speed,
            self.crit_text,
        )
        if self.progress is not None:
            self.progress.update(self.task, completed=t_s, info=info)
        elif now - self.last_plain > (10.0 if self.realtime else 30.0):
            self.last_plain = now
            print("%s: %s" % (self.sc["name"], info), file=sys.stderr, flush=True)


def cmd_hil_run(args):
    from rich.console import Console

    from thermopilot.hil import report, rig, scenario

    sc = scenario.load(args.scenario)
    out_dir = pathlib.Path(args.report_dir) / sc["name"]
    # the plant is built (and checked) before any board starts; a RigError (a RuntimeError)
    # is a user mistake the top level prints as one line
    the_rig = rig.Rig(sc, seed=args.seed)
    console = Console()
    err = Console(stderr=True)
    t0 = time.monotonic()
    result = None
    target = args.port
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_csv = out_dir / "rows.csv"  # written while the run goes
    if not args.no_plot:
        from thermopilot.hil import plot

        plot.preload()  # matplotlib's import overlaps the board's start
    try:
        with _Progress(err, sc, realtime=bool(args.port or args.realtime)) as progress:
            if args.port:
                result = _run_on(the_rig, args.port, True, progress, args, rows_csv=rows_csv)
            else:
                from thermopilot.hil.vboard import VirtualBoard

                with VirtualBoard(board=sc["board_path"], native=not args.no_native) as vb:
                    target = "virtual board (%s)" % vb.port
                    t_start = time.monotonic() - t0
                    result = _run_on(
                        the_rig,
                        vb.port,
                        args.realtime,
                        progress,
                        args,
                        vb.session(),
                        rows_csv=rows_csv,
                        vm_cpu=vb.cpu_s,
                    )
                    result.timing["start_s"] = t_start
    except KeyboardInterrupt:
        if result is None:
            print(
                "thermopilot: interrupted before the run started; nothing was written",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    wall = time.monotonic() - t0
    result.evaluate()
    report.write(result, out_dir, plot=not args.no_plot)
    _print_result(console, result, sc, target, wall, out_dir)
    if result.interrupted:
        print(
            "thermopilot: interrupted at t=%.1f s of %g s: the board was stopped (hil_stop, "
            "outputs safe)%s; partial report (marked interrupted) in %s"
            % (
                float(result.rows.t[-1]) if len(result.rows) else 0.0,
                sc["duration_s"],
                "" if args.keep_params else " and its parameters restored",
                out_dir,
            ),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0 if result.passed else EXIT_FAILED


def _run_on(the_rig, port, realtime, progress, args, session=None, **kw):
    from thermopilot.protocol.link import Session

    with session or Session(port) as s:
        for slot, data in _uploads(getattr(args, "upload", None)):
            s.upload(slot, data)  # before the run: the controllers load it at its start
        return the_rig.run(
            s,
            realtime=bool(realtime),
            progress=progress,
            restore_params=not args.keep_params,
            **kw,
        )


def _print_result(console, result, sc, target, wall, out_dir):
    from rich.table import Table

    from thermopilot.hil import report

    tb = Table(
        title="HIL %s on %s: %.0f s simulated in %.1f s%s"
        % (
            sc["name"],
            target,
            float(result.rows.t[-1]) if len(result.rows) else 0.0,
            wall,
            " (INTERRUPTED)" if result.interrupted else "",
        )
    )
    tb.add_column("criterion")
    tb.add_column("result")
    tb.add_column("detail")
    for v in result.verdicts:
        tb.add_row(
            v["label"],
            "[green]PASS[/green]" if v["passed"] else "[red]FAIL[/red]",
            v["detail"],
        )
    console.print(tb)
    st = result.stats
    if st:
        console.print(
            "link: %d frames ok, %d bad (host); board saw %d ok, %d bad crc, %d bad cobs,"
            " %d retries"
            % (
                st["host_ok"],
                st["host_bad_crc"] + st["host_bad_cobs"] + st["host_bad_len"],
                st["board_rx_ok"],
                st["board_rx_bad_crc"],
                st["board_rx_bad_cobs"],
                st["host_retries"],
            )
        )
    console.print(
        "control core on the board: %s"
        % ("C (tpcore)" if "c_core" in _features(result.board.features) else "MicroPython")
    )
    for inj in result.rows.injections:
        console.print("fault injected t=%.1f s: %s" % (inj["t_s"], inj["label"]))
    for e in result.events:
        if e["kind"] in ("latched", "cleared", "warning"):
            console.print("event t=%.1f s: %s %s" % (e["t_s"], e["name"], e["kind"]))
    energy = result.energy_j()
    if energy:
        console.print(
            "energy: "
            + ", ".join(
                "%s %.4g kJ" % (k.split(".", 1)[1], v / 1e3) for k, v in sorted(energy.items())
            )
        )
    if result.params_restored is False:
        console.print(
            "[yellow]parameters not restored: %s[/yellow]" % ", ".join(result.params_not_restored)
        )
    heap = report.heap_summary(result.board_stats)
    if heap:
        console.print(
            "board heap: %d of %d bytes at the highest (%d free at the lowest), %d "
            "collections between ticks, %d inside a tick; longest tick %d us (mean %.0f us)"
            % (
                heap["peak_used_b"],
                heap["total_b"],
                heap["min_free_b"],
                heap["gc_between_ticks"],
                heap["gc_in_tick"],
                heap["tick_us_max"],
                heap["tick_us_mean"],
            )
        )
    tm = result.timing
    if tm.get("steps"):
        console.print(
            "time: %s%.1f s for %d steps (%.2f ms each: host CPU %.2f ms%s), report %.2f s"
            % (
                "%.1f s board start, " % tm["start_s"] if "start_s" in tm else "",
                tm["steps_wall_s"],
                tm["steps"],
                1e3 * tm["steps_wall_s"] / tm["steps"],
                1e3 * tm["host_cpu_s"] / tm["steps"],
                ", board CPU %.2f ms" % (1e3 * tm["vm_cpu_s"] / tm["steps"])
                if "vm_cpu_s" in tm
                else "",
                tm.get("report_s", 0.0),
            )
        )
    console.print("report: %s (plot.png, rows.csv, summary.json)" % out_dir)
    if result.interrupted:
        console.print("[bold yellow]INTERRUPTED[/bold yellow]")
    else:
        console.print(
            "[bold green]PASSED[/bold green]" if result.passed else "[bold red]FAILED[/bold red]"
        )


def cmd_hil_check(args):
    from thermopilot.hil import scenario

    bad = 0
    for path in args.files:
        try:
            sc = scenario.load(path)
        except scenario.ScenarioError as exc:
            bad += 1
            print("FAIL %s" % exc, file=sys.stderr)
            continue
        print(
            "ok   %s: %s on %s, %s, %g s, %d fault(s), %d criteria"
            % (
                path,
                sc["name"],
                pathlib.Path(sc["board_path"]).stem,
                sc["plant"]["model"],
                sc["duration_s"],
                len(sc["faults"]),
                len(sc["criteria"]),
            )
        )
    if bad:
        print(
            "thermopilot: %d of %d scenario(s) invalid" % (bad, len(args.files)), file=sys.stderr
        )
        return EXIT_USAGE
    return 0


def cmd_hil_list(args):
    from rich.console import Console
    from rich.table import Table

    from thermopilot.hil import criteria, faults, scenario

    console = Console()
    if args.kinds:
        for title, reg in (("fault kinds", faults.FAULTS), ("criteria kinds", criteria.CRITERIA)):
            tb = Table(title=title)
            tb.add_column("kind")
            tb.add_column("keys")
            tb.add_column("what it does")
            for kind, cls in reg.items():
                keys = ", ".join(
                    k + ("" if key.required else "?") for k, key in cls.keys().items()
                )
                tb.add_row(kind, keys, cls.DOC)
            console.print(tb)
        return 0
    tb = Table(title="bundled scenarios (thermopilot hil run NAME.toml; path below)")
    tb.add_column("scenario")
    tb.add_column("description")
    for name, _path, desc in scenario.bundled():
        tb.add_row(name, desc)
    console.print(tb)
    console.print("in %s" % scenario.resources.scenarios_dir())
    return 0


def cmd_hil_campaign(args):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from thermopilot.hil import campaign

    camp, cases = campaign.load(args.file)  # every case checked before any board starts
    console = Console()
    if args.list:
        for c in cases:
            console.print(
                "%s  %s  %s%s"
                % (
                    c["id"],
                    c["fault"],
                    "expect %s within %s s" % (c["expect"], c["within_s"]) if c["expect"] else "",
                    "".join("  %s=%s" % kv for kv in c["sweep"].items()),
                )
            )
        console.print("%d cases" % len(cases))
        return 0
    out_dir = pathlib.Path(args.report_dir) / camp["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    counts = {"passed": 0, "failed": 0}
    workers = args.workers or campaign.default_workers()
    where = "cluster %s" % args.cluster if args.cluster else "%d local workers" % workers
    t0 = time.monotonic()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} passed[/green] [red]{task.fields[bad]} failed[/red]"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    task = progress.add_task("%s on %s" % (camp["name"], where), total=len(cases), ok=0, bad=0)
    last_plain = [time.monotonic()]

    def on_result(r):
        results.append(r)
        counts["passed" if r["passed"] else "failed"] += 1
        progress.update(task, advance=1, ok=counts["passed"], bad=counts["failed"])
        if not progress.console.is_terminal and time.monotonic() - last_plain[0] > 20:
            last_plain[0] = time.monotonic()
            print(
                "%s: %d/%d cases, %d failed"
                % (camp["name"], len(results), len(cases), counts["failed"]),
                file=sys.stderr,
                flush=True,
            )

    interrupted = False
    try:
        with progress:
            if args.cluster:
                campaign.run_cluster(
                    args.cluster, cases, out_dir, on_result, args.plots, not args.no_native
                )
            else:
                pool = campaign.LocalPool(workers, out_dir, args.plots, not args.no_native)
                pool.run(cases, on_result)
    except KeyboardInterrupt:
        interrupted = True
    wall = time.monotonic() - t0
    rows = campaign.table_rows(camp, cases, results)
    table = pathlib.Path(args.results) if args.results else out_dir / "results.csv"
    campaign.write_table(rows, table)
    plot = campaign.summary_plot(rows, out_dir / "summary.png", camp["name"])
    (out_dir / "results.md").write_text(campaign.markdown(rows))
    failed = [r for r in rows if not r["passed"]]
    for r in failed:
        console.print(
            "[red]FAILED[/red] %s %s: %s %s"
            % (
                r["case"],
                r["fault"],
                r["error"] or r["failed_criteria"],
                "(report %s)" % r["report"] if r["report"] else "",
            )
        )
    console.print(
        "%s: %d of %d cases passed in %.0f s on %s; results %s, plot %s"
        % (camp["name"], len(rows) - len(failed), len(rows), wall, where, table, plot)
    )
    if interrupted:
        print(
            "thermopilot: campaign interrupted after %d of %d cases; the workers and their "
            "boards were stopped; partial results in %s" % (len(results), len(cases), table),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else 0


def _uploads(specs):
    """[(slot, bytes)] from --upload SLOT=FILE options; UserError names a bad one."""
    from .console import UserError

    out = []
    for spec in specs or ():
        slot, sep, path = spec.partition("=")
        if not sep or not slot.isdigit() or not 0 <= int(slot) <= 7:
            raise UserError("--upload %r: expected SLOT=FILE with SLOT 0..7" % spec)
        try:
            out.append((int(slot), pathlib.Path(path).read_bytes()))
        except OSError as exc:
            raise UserError("--upload %r: %s" % (spec, exc.strerror or exc)) from None
    return out


def cmd_hil_compare(args):
    from rich.console import Console

    from thermopilot.hil import compare

    from .console import UserError

    names = [c.strip() for c in args.controllers.split(",") if c.strip()]
    blob = None
    if "mpc" in names:
        if not args.blob:
            raise UserError(
                "--controllers %s: the mpc run needs --blob FILE (thermopilot mpc design "
                "MODEL -o FILE)" % args.controllers
            )
        try:
            blob = pathlib.Path(args.blob).read_bytes()
        except OSError as exc:
            raise UserError("--blob %s: %s" % (args.blob, exc.strerror or exc)) from None
    err = Console(stderr=True)
    out_dir = pathlib.Path(args.report_dir)
    table = compare.run(
        args.scenario,
        names,
        blob=blob,
        out_dir=out_dir,
        native=not args.no_native,
        seed=args.seed,
        log=lambda text: err.print(text),
    )
    compare.print_table(Console(), table)
    return 0


def _resolve_scenario_arg(path):
    """A scenario argument: a file, or the name of a bundled scenario."""
    from thermopilot.hil import resources

    p = pathlib.Path(path)
    if not p.exists() and p.suffix == "" and "/" not in path:
        q = resources.scenarios_dir() / (path + ".toml")
        if q.exists():
            return str(q)
    return path


def register(sub, port_arg):
    """Add the ``hil`` command group to the top-level subparsers ``sub``."""
    p = sub.add_parser("hil", help="hardware-in-the-loop scenarios and campaigns")
    hsub = p.add_subparsers(dest="hil_command", required=True)
    r = hsub.add_parser("run", help="run a scenario; exit 1 if a criterion fails")
    r.add_argument("scenario", help="scenario .toml file (or a bundled scenario's name)")
    r.add_argument("--port", help="run against a real board on this port (real time)")
    r.add_argument(
        "--realtime", action="store_true", help="pace the virtual board by the wall clock too"
    )
    r.add_argument("--report-dir", default="report", help="where report/NAME/ goes")
    r.add_argument("--no-native", action="store_true", help="virtual board: " + _NO_NATIVE_HELP)
    r.add_argument(
        "--keep-params",
        action="store_true",
        help="leave the scenario's [params] on the board (default: restore them after the run)",
    )
    r.add_argument("--no-plot", action="store_true", help="skip plot.png")
    r.add_argument("--seed", type=int, default=1, help="seed of sensor noise and random faults")
    r.add_argument(
        "--upload",
        action="append",
        metavar="SLOT=FILE",
        help="upload FILE (an MPC blob from 'thermopilot mpc design') to SLOT before the run",
    )
    r.set_defaults(func=_with_resolved(cmd_hil_run))
    cm = hsub.add_parser(
        "compare",
        help="run a scenario once per controller (pid, mpc) on the same plant: one table, "
        "one plot",
    )
    cm.add_argument("scenario", help="scenario .toml file (or a bundled scenario's name)")
    cm.add_argument("--controllers", default="pid,mpc", help="comma-separated (default pid,mpc)")
    cm.add_argument("--blob", help="MPC blob for the mpc run (thermopilot mpc design -o FILE)")
    cm.add_argument("--report-dir", default="report", help="where report/NAME-compare/ goes")
    cm.add_argument("--no-native", action="store_true", help="virtual board: " + _NO_NATIVE_HELP)
    cm.add_argument("--seed", type=int, default=1, help="seed of sensor noise (the same for all)")
    cm.set_defaults(func=_with_resolved(cmd_hil_compare))
    c = hsub.add_parser("check", help="validate scenario files without running them")
    c.add_argument("files", nargs="+", help="scenario .toml files")
    c.set_defaults(func=cmd_hil_check)
    ls = hsub.add_parser("list", help="the bundled scenarios with their descriptions")
    ls.add_argument("--kinds", action="store_true", help="list the fault and criteria kinds")
    ls.set_defaults(func=cmd_hil_list)
    cp = hsub.add_parser(
        "campaign",
        help="run a campaign (base scenario x sweeps x fault matrix) in parallel; exit 1 if a "
        "case fails",
    )
    cp.add_argument("file", help="campaign .toml file")
    cp.add_argument("--workers", type=int, default=0, help="local workers (default: cores)")
    cp.add_argument(
        "--cluster", help="Dask distributed scheduler address (tcp://HOST:8786) instead"
    )
    cp.add_argument("--report-dir", default="report", help="where report/CAMPAIGN/ goes")
    cp.add_argument(
        "--results", help="results table (.csv or .parquet; default report/CAMPAIGN/results.csv)"
    )
    cp.add_argument(
        "--plots",
        choices=("failed", "all", "none"),
        default="failed",
        help="per-case plot.png and rows.csv: of failed cases (default), all or none; "
        "summary.json is always written",
    )
    cp.add_argument("--no-native", action="store_true", help="virtual boards: " + _NO_NATIVE_HELP)
    cp.add_argument("--list", action="store_true", help="list the cases and stop")
    cp.set_defaults(func=cmd_hil_campaign)


def _with_resolved(func):
    def run(args):
        args.scenario = _resolve_scenario_arg(args.scenario)
        return func(args)

    return run
