"""``thermopilot hil ...``: run HIL scenarios against the virtual board or a real board.

The commands live here, beside the rig they drive; ``host/cli.py`` registers them.
"""

import pathlib
import time

from thermopilot.protocol import schema

from .cli import EXIT_FAILED, _features

_NO_NATIVE_HELP = "leave out the C core (tpcore .mpy): the board runs the MicroPython fallback"


def cmd_hil_run(args):
    from rich.console import Console
    from rich.table import Table

    from thermopilot.hil import report, rig, scenario

    sc = scenario.load(args.scenario)
    out_dir = pathlib.Path(args.report_dir) / sc["name"]
    console = Console()
    t0 = time.monotonic()
    if args.port:
        target = args.port
        result = rig.run(sc, port=args.port, realtime=True)
    else:
        from thermopilot.hil.vboard import VirtualBoard

        with VirtualBoard(board=sc["board"], native=not args.no_native) as vb:
            target = "virtual board (%s)" % vb.port
            result = rig.run(sc, port=vb.port, realtime=args.realtime)
    wall = time.monotonic() - t0
    report.evaluate(result)
    report.write(result, out_dir)
    tb = Table(
        title="HIL %s on %s: %.0f s simulated in %.1f s"
        % (sc["name"], target, sc["duration_s"], wall)
    )
    tb.add_column("criterion")
    tb.add_column("result")
    tb.add_column("detail")
    for v in result.verdicts:
        tb.add_row(
            v["criterion"],
            "[green]PASS[/green]" if v["passed"] else "[red]FAIL[/red]",
            v["detail"],
        )
    console.print(tb)
    st = result.stats
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
    for e in result.events:
        console.print(
            "event t=%.1f s: %s %s"
            % (
                e.t_ms / 1000.0,
                report.EVENT_NAMES.get(e.code, e.code),
                {v: k for k, v in schema.EVENT_KINDS.items()}.get(e.kind, ""),
            )
        )
    console.print("report: %s (plot.png, rows.csv, telemetry.csv, summary.json)" % out_dir)
    console.print(
        "[bold green]PASSED[/bold green]" if result.passed else "[bold red]FAILED[/bold red]"
    )
    return 0 if result.passed else EXIT_FAILED


def register(sub, port_arg):
    """Add the ``hil`` command group to the top-level subparsers ``sub``."""
    p = sub.add_parser("hil", help="hardware-in-the-loop scenarios")
    hsub = p.add_subparsers(dest="hil_command", required=True)
    r = hsub.add_parser("run", help="run a scenario; exit 1 if a criterion fails")
    r.add_argument("scenario", help="scenario .toml file")
    r.add_argument("--port", help="run against a real board on this port (real time)")
    r.add_argument(
        "--realtime", action="store_true", help="pace the virtual board by the wall clock too"
    )
    r.add_argument("--report-dir", default="report", help="where report/NAME/ goes")
    r.add_argument("--no-native", action="store_true", help="virtual board: " + _NO_NATIVE_HELP)
    r.set_defaults(func=cmd_hil_run)
