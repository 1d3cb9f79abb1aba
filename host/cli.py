"""The ``thermopilot`` command line: ports, vboard, flash, deploy, info, monitor, param, hil.

Every user mistake (a port that does not exist, a board that does not answer, a bad scenario
file, a parameter out of range) ends in one line on stderr that says what went wrong and what
to do, and a non-zero exit: 1 when a HIL criterion failed, 2 for everything else.
"""

import argparse
import csv
import getpass
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

from thermopilot.hil import resources
from thermopilot.protocol import schema
from thermopilot.protocol.link import LinkError, Session

C_TO_K = 273.15
EXIT_FAILED = 1
EXIT_USAGE = 2


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def _text(raw):
    return bytes(raw).split(b"\x00", 1)[0].decode(errors="replace")


def _features(bits):
    return [k for k, v in schema.FEATURES.items() if bits & (1 << v)] or ["none"]


# -- commands ------------------------------------------------------------------------------


def cmd_ports(args):
    from serial.tools import list_ports

    ports = list(list_ports.comports())
    if not ports:
        print("no serial ports found (a virtual board's port is printed by thermopilot vboard)")
    for p in ports:
        print("%-20s %s" % (p.device, p.description))
    return 0


def cmd_vboard(args):
    from thermopilot.hil.vboard import VirtualBoard

    vb = VirtualBoard(
        board=args.board,
        heap=args.heap,
        workdir=args.workdir,
        ports=args.ports,
        native=not args.no_native,
    )
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        vb.start()
        print(
            "virtual board %r running MicroPython (heap %s) on port%s:"
            % (args.board, vb.heap, "s" if len(vb.ports) > 1 else "")
        )
        for port in vb.ports:
            print(port, flush=True)
        print("try: thermopilot info --port %s   (Ctrl-C stops the board)" % vb.port, flush=True)
        while not stop and vb.proc.poll() is None:
            time.sleep(0.2)
        if vb.proc.poll() is not None:
            raise UserError("the MicroPython VM exited with code %d" % vb.proc.returncode)
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()
        print("virtual board stopped", file=sys.stderr)
    return 0


def cmd_info(args):
    with Session(args.port, timeout_s=args.timeout) as s:
        ident = s.hello()
        print("board         %s" % _text(ident.board))
        print("firmware      %s" % _text(ident.fw_version))
        print(
            "protocol      v%d, schema %08x (host: v%d, %08x)"
            % (ident.proto_version, ident.schema_hash, schema.PROTOCOL_VERSION, schema.SCHEMA_HASH)
        )
        print("features      %s" % ", ".join(_features(ident.features)))
        print(
            "loops         %d at %g Hz, %d parameters"
            % (ident.n_loops, ident.tick_hz, ident.n_params)
        )
        st = s.stats()
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
    return 0


def _tlm_row(t):
    mode = {v: k for k, v in schema.MODES.items()}.get(t.mode, str(t.mode))
    faults = [k for k, v in schema.FAULTS.items() if t.faults & (1 << v)]
    return [
        "%d" % t.loop,
        mode,
        "%.1f" % (t.t_ms / 1000.0),
        "%.2f" % (t.setpoint - C_TO_K),
        "%.2f" % (t.measurement - C_TO_K) if math.isfinite(t.measurement) else "—",
        "%.3f" % t.output,
        "%.3f" % t.p,
        "%.3f" % t.i,
        "%.3f" % t.d,
        ", ".join(faults) or "ok",
    ]


def cmd_monitor(args):
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    heads = [
        "loop",
        "mode",
        "t [s]",
        "setpoint [°C]",
        "measured [°C]",
        "output",
        "P",
        "I",
        "D",
        "faults",
    ]
    console = Console(stderr=False)
    csv_file = open(args.csv, "w", newline="") if args.csv else None
    writer = csv.writer(csv_file) if csv_file else None
    if writer:
        writer.writerow(
            [
                "host_time_s",
                "loop",
                "mode",
                "t_s",
                "setpoint_c",
                "measurement_c",
                "output",
                "p",
                "i",
                "d",
                "faults",
            ]
        )
    latest = {}
    events = []
    t_end = time.monotonic() + args.duration if args.duration else math.inf
    n = 0
    with Session(args.port, timeout_s=args.timeout) as s:
        ident = s.hello()
        if args.rate:
            s.stream_rate("TELEMETRY", args.rate)

        def table():
            tb = Table(
                title="ThermoPilot %s — %s (Ctrl-C to stop)" % (_text(ident.board), args.port)
            )
            for h in heads:
                tb.add_column(h, justify="right")
            for k in sorted(latest):
                tb.add_row(*_tlm_row(latest[k]))
            for e in events[-5:]:
                tb.caption = (tb.caption or "") + e + "\n"
            return tb

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
                        if writer:
                            writer.writerow(
                                ["%.3f" % time.time()]
                                + [
                                    t.loop,
                                    t.mode,
                                    t.t_ms / 1000.0,
                                    t.setpoint - C_TO_K,
                                    t.measurement - C_TO_K,
                                    t.output,
                                    t.p,
                                    t.i,
                                    t.d,
                                    t.faults,
                                ]
                            )
                    while s.events:
                        e = s.events.popleft()
                        name = {v: k for k, v in schema.FAULTS.items()}.get(e.code, e.code)
                        events.append(
                            "event t=%.1f s: %s latched (loop %d, value %g)"
                            % (e.t_ms / 1000.0, name, e.loop, e.value)
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


def cmd_param(args):
    with Session(args.port, timeout_s=args.timeout) as s:
        s.hello()
        if args.action == "list":
            rows = s.params()
            print(
                "%-16s %12s %12s %12s %12s %-6s"
                % ("name", "value", "min", "max", "default", "unit")
            )
            for r in rows:
                print(
                    "%-16s %12.6g %12.6g %12.6g %12.6g %-6s"
                    % (r["name"], r["value"], r["min"], r["max"], r["default"], r["unit"])
                )
        elif args.action == "get":
            _need_args(args, 1)
            print("%s = %g" % (args.args[0], s.param_get(args.args[0])))
        elif args.action == "set":
            _need_args(args, 2)
            try:
                value = float(args.args[1])
            except ValueError:
                raise UserError("value %r is not a number" % args.args[1]) from None
            print("%s = %g" % (args.args[0], s.param_set(args.args[0], value)))
        elif args.action == "save":
            s.request("PARAM_SAVE", flags=0)
            print("parameters saved to the board's flash")
        elif args.action == "defaults":
            s.request("PARAM_DEFAULTS", flags=0)
            print("parameters restored to defaults (not saved: thermopilot param save)")
    return 0


def _need_args(args, n):
    if len(args.args) != n:
        raise UserError("param %s takes %d argument(s), got %d" % (args.action, n, len(args.args)))


def cmd_fault(args):
    """List the board's faults, or clear those whose cause is gone."""
    with Session(args.port, timeout_s=args.timeout) as s:
        s.hello()
        if args.action == "reset":
            before = s.fault_status()
            st = s.fault_reset()
            names = {v: k for k, v in schema.FAULTS.items()}

            def listed(bits):
                return ", ".join(names.get(b, "bit%d" % b) for b in range(32) if bits >> b & 1)

            cleared = before.latched & ~st.latched
            print("cleared: %s" % (listed(cleared) or "nothing was latched"))
            if st.latched:
                print(
                    "still latched, cause present: %s (fix the cause, then reset again)"
                    % listed(st.latched)
                )
                return EXIT_FAILED
            return 0
        rows = s.faults()
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
                    "-" if r["loop"] == 255 else str(r["loop"]),
                    r["t_s"],
                    r["value"],
                    r["count"],
                )
            )
    return 0


def cmd_deploy(args):
    """Copy the firmware to a real board with mpremote (the REPL must be free)."""
    board_file = resources.board_path(args.board)
    # the firmware's own checker, on the MicroPython VM: a board that would not boot is
    # refused before anything is copied
    resources.check_board(board_file)
    try:
        with Session(args.port, timeout_s=0.3, retries=1) as s:
            s.command("release_console")
            print("the running application released the console")
    except LinkError:
        pass  # no application running: the REPL is already free
    cmd = [sys.executable, "-m", "mpremote", "connect", args.port, "resume"]
    cmd += resources.deploy_args(board_file, native=not args.no_native)
    module, why = resources.native_module(resources.load_board(board_file))
    if args.no_native:
        module, why = None, "not copied (--no-native)"
    if module is None:
        print("C core: %s; the board runs the MicroPython fallback" % why)
    else:
        print("C core: %s -> :%s" % (module, resources.NATIVE_REMOTE))
    n_files = len(resources.firmware_files()) + (module is not None)
    print("mpremote connect %s resume: copying %d files" % (args.port, n_files + 1))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines() or ["no output"]
        raise UserError("mpremote failed: %s" % lines[-1])
    print(
        "deployed %d files and board %s; reset the board to start ThermoPilot"
        % (n_files, board_file.stem)
    )
    return 0


def cmd_upload(args):
    path = pathlib.Path(args.file)
    if not path.is_file():
        raise UserError("file %s does not exist" % path)
    data = path.read_bytes()
    with Session(args.port, timeout_s=args.timeout) as s:
        s.hello()
        s.upload(args.slot, data)
    print(
        "uploaded %d bytes to slot %d (stored as slot%d.bin after its CRC-32 checked out)"
        % (len(data), args.slot, args.slot)
    )
    return 0


def cmd_flash(args):
    board = resources.load_board(args.board)
    fl = board.get("flash", {})
    method = fl.get("method")
    fw = pathlib.Path(args.firmware)
    if method == "esptool":
        if not fw.exists():
            raise UserError(
                "firmware file %s does not exist; download %s from micropython.org"
                % (fw, fl.get("firmware", "the MicroPython .bin"))
            )
        cmd = [
            sys.executable,
            "-m",
            "esptool",
            "--chip",
            fl["chip"],
            "--port",
            args.port,
            "--baud",
            str(fl.get("baud", 460800)),
            "write_flash",
            "-z",
            fl["offset"],
            str(fw),
        ]
    elif method == "uf2":
        if not fw.exists():
            raise UserError(
                "firmware file %s does not exist; download %s from micropython.org"
                % (fw, fl.get("firmware", "the MicroPython .uf2"))
            )
        drive = pathlib.Path(args.drive or "/media/%s/RPI-RP2" % getpass.getuser())
        if not args.dry_run and not (drive / "INFO_UF2.TXT").exists():
            raise UserError(
                "no UF2 drive at %s: %s, then pass --drive MOUNTPOINT"
                % (drive, fl.get("bootloader", "enter the bootloader"))
            )
        cmd = ["cp", str(fw), str(drive) + "/"]
    else:
        raise UserError(
            "board %s has no flash method (%r); nothing to flash" % (args.board, method)
        )
    print(" ".join(cmd))
    if args.dry_run:
        return 0
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise UserError("flashing failed (exit %d); see the output above" % res.returncode)
    return 0


# -- parser --------------------------------------------------------------------------------


_NO_NATIVE_HELP = "leave out the C core (tpcore .mpy): the board runs the MicroPython fallback"


def build_parser():
    ap = argparse.ArgumentParser(
        prog="thermopilot",
        description="ThermoPilot: tune, monitor and test thermal controllers on MicroPython "
        "boards and on the virtual board.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def port_arg(p, required=True):
        p.add_argument(
            "--port",
            required=required,
            help="serial device, e.g. /dev/ttyACM0 or the virtual board's pty",
        )
        p.add_argument(
            "--timeout",
            type=float,
            default=0.5,
            help="seconds to wait for each answer before retrying (default 0.5)",
        )

    p = sub.add_parser("ports", help="list serial ports")
    p.set_defaults(func=cmd_ports)

    p = sub.add_parser("vboard", help="run the firmware on a virtual board behind a pty")
    p.add_argument("--board", default="virtual", help="board definition (default: virtual)")
    p.add_argument("--heap", default=None, help="MicroPython heap, e.g. 110K")
    p.add_argument("--workdir", default=None, help="the board's filesystem (default: temp)")
    p.add_argument(
        "--ports",
        type=int,
        default=1,
        choices=range(1, 5),
        help="how many ports share the board (e.g. 2: a HIL run and a monitor)",
    )
    p.add_argument("--no-native", action="store_true", help=_NO_NATIVE_HELP)
    p.set_defaults(func=cmd_vboard)

    p = sub.add_parser("info", help="identity, features and link statistics of a board")
    port_arg(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("monitor", help="live telemetry table; --csv logs it")
    port_arg(p)
    p.add_argument("--csv", help="write every telemetry row to this CSV file")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    p.add_argument(
        "--rate", type=float, default=0, help="telemetry rate to ask the board for (Hz)"
    )
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("param", help="list, get, set, save or restore parameters")
    p.add_argument("action", choices=["list", "get", "set", "save", "defaults"])
    p.add_argument("args", nargs="*", help="NAME [VALUE]")
    port_arg(p)
    p.set_defaults(func=cmd_param)

    p = sub.add_parser("fault", help="list the board's faults, or reset those whose cause is gone")
    p.add_argument("action", choices=["list", "reset"])
    port_arg(p)
    p.set_defaults(func=cmd_fault)

    p = sub.add_parser("deploy", help="copy the firmware to a board with mpremote")
    p.add_argument(
        "--board", required=True, help="board definition: %s" % ", ".join(resources.board_names())
    )
    port_arg(p)
    p.add_argument("--no-native", action="store_true", help=_NO_NATIVE_HELP)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("upload", help="upload a binary (e.g. an MPC model blob) to a slot")
    p.add_argument("file")
    p.add_argument("--slot", type=int, default=0, choices=range(0, 8))
    port_arg(p)
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("flash", help="flash MicroPython itself (esptool or UF2)")
    p.add_argument("--board", required=True)
    p.add_argument("--firmware", required=True, help="MicroPython .bin or .uf2")
    p.add_argument("--port", help="serial port (esptool)")
    p.add_argument("--drive", help="mount point of the RPI-RP2 drive (UF2)")
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=cmd_flash)

    from . import cli_hil

    cli_hil.register(sub, port_arg)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, LinkError, ValueError, OSError, RuntimeError) as exc:
        if os.environ.get("THERMOPILOT_DEBUG"):
            raise
        print("thermopilot: error: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
