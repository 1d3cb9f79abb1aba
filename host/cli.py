# PYTHON_ARGCOMPLETE_OK
"""The ``thermopilot`` command line: the parser and the error handling; the commands live in
cli_board (info, monitor, param, fault, mode, manual, setpoint, upload), cli_vboard, deploy,
flash (flash, ports) and cli_hil.

Every user mistake (a port that does not exist, a board that does not answer, a bad value, a
parameter out of range) ends in one line on stderr that says what went wrong and what to do,
and exit code 2; 1 means a HIL criterion failed or a fault stays latched; 130 a Ctrl-C.

argparse stays (with argcomplete for shell completion): the ``hil`` group is registered by
cli_hil.register(sub, port_arg), the commands are split into modules, and a framework
(click/typer) would not make them shorter.
"""

import argparse
import importlib
import os
import re
import sys

from .console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Interrupted,
    UserError,
    quiet_broken_pipe,
    stop_on_ctrl_c,
)

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "UserError", "build_parser", "main", "_features"]


#: telemetry rates a board accepts (STREAM_RATE), Hz
RATE_MIN_HZ = 0.01
RATE_MAX_HZ = 100.0


def _features(bits):
    from thermopilot.protocol import schema

    return [k for k, v in schema.FEATURES.items() if bits & (1 << v)] or ["none"]


def version_text():
    from thermopilot.protocol import schema
    from thermopilot.protocol.link import _host_version

    return "thermopilot %s (protocol v%d, schema %08x)" % (
        _host_version(),
        schema.PROTOCOL_VERSION,
        schema.SCHEMA_HASH,
    )


# -- commands kept here --------------------------------------------------------------------


def cmd_deploy(args):
    from .deploy import Deploy

    d = Deploy(args.port, args.board, native=not args.no_native, boot_timeout_s=args.boot_timeout)
    with stop_on_ctrl_c("the copy stops after the current file") as stop:
        d.run(stop)
    return 0


def cmd_completion(args):
    import argcomplete

    sys.stdout.write(argcomplete.shellcode(["thermopilot"], shell=args.shell))
    return 0


# -- parser --------------------------------------------------------------------------------

# negative numbers, inf and nan are values, not options: "param set cool.sp -5", "-inf"
_NEGATIVE = re.compile(
    r"^-(\d+\.?\d*(e[-+]?\d+)?|\.\d+(e[-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE
)


class Parser(argparse.ArgumentParser):
    """argparse that takes ``-5``, ``-1e3``, ``-inf`` and ``nan`` as values (so a bad value
    reaches the command, which names it), not as unknown options."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._negative_number_matcher = _NEGATIVE


_NO_NATIVE_HELP = "leave out the C core (tpcore .mpy): the board runs the MicroPython fallback"


def _port_completer(**_kw):
    from .flash import list_ports

    return [p["device"] for p in list_ports()]


class _Version(argparse.Action):
    """--version, worked out only when asked (it imports the protocol and package metadata)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(version_text() + "\n", sys.stdout)
        parser.exit()


def _command(module, name):
    """The function ``name`` of ``host.<module>``, imported when the command runs: the
    parser (and so --help and argument errors) never imports a command's dependencies
    (the protocol's construct, pyserial, numpy, matplotlib, CoolProp)."""

    def run(args):
        return getattr(importlib.import_module("." + module, __package__), name)(args)

    run.__name__ = name
    return run


def build_parser():
    from thermopilot.hil import resources

    ap = Parser(
        prog="thermopilot",
        description="ThermoPilot: flash, deploy, monitor, tune and test thermal controllers on "
        "MicroPython boards and on the virtual board. Values are shown and typed in degC, bar, "
        "% and K (temperature differences); add a unit to type another (e.g. 305 K).",
    )
    ap.add_argument("--version", action=_Version, help="show the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def port_arg(p, required=True):
        a = p.add_argument(
            "--port",
            required=required,
            help="serial device, e.g. /dev/ttyACM0 or the virtual board's pty",
        )
        a.completer = _port_completer
        p.add_argument(
            "--timeout",
            type=float,
            default=0.5,
            help="seconds to wait for each answer before retrying (default 0.5)",
        )

    def json_arg(p):
        p.add_argument("--json", action="store_true", help="print JSON for scripts")

    board_help = "board definition: %s, or a path to a .json" % ", ".join(resources.board_names())

    p = sub.add_parser("ports", help="list serial ports with VID:PID and the board they look like")
    json_arg(p)
    p.set_defaults(func=_command("flash", "cmd_ports"))

    p = sub.add_parser(
        "vboard",
        help="run a virtual board (run), reset it (reset) or list the running ones (list)",
    )
    p.add_argument("action", nargs="?", default="run", choices=["run", "reset", "list"])
    p.add_argument("--board", default=None, help=board_help + " (default: virtual)")
    p.add_argument(
        "--heap", default=None, help="MicroPython heap, e.g. 160K (default: the board's)"
    )
    p.add_argument(
        "--workdir",
        default=None,
        help="the board's filesystem (default: kept per board name under ~/.cache/thermopilot)",
    )
    p.add_argument("--fresh", action="store_true", help="start with an empty filesystem")
    p.add_argument(
        "--ports",
        type=int,
        default=1,
        choices=range(1, 5),
        help="how many ports share the board (e.g. 2: a HIL run and a monitor)",
    )
    p.add_argument("--port", default=None, help="reset: the virtual board on this pty")
    p.add_argument("--no-native", action="store_true", help=_NO_NATIVE_HELP)
    json_arg(p)
    p.set_defaults(func=_command("cli_vboard", "cmd_vboard"))

    p = sub.add_parser("info", help="identity, loops, features and link statistics of a board")
    port_arg(p)
    json_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_info"))

    p = sub.add_parser("monitor", help="live telemetry table in degC/K/bar/%%; --csv logs it")
    port_arg(p)
    p.add_argument("--csv", help="write every telemetry row to this CSV file")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="telemetry rate to ask the board for, %g .. %g Hz" % (RATE_MIN_HZ, RATE_MAX_HZ),
    )
    p.set_defaults(func=_command("cli_board", "cmd_monitor"))

    p = sub.add_parser(
        "param",
        help="list, get, set (NAME VALUE [UNIT]), save or restore (defaults) parameters",
    )
    p.add_argument("action", choices=["list", "get", "set", "save", "defaults"])
    p.add_argument("args", nargs="*", help="NAME [VALUE [UNIT]]")
    port_arg(p)
    json_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_param"))

    p = sub.add_parser("fault", help="list the board's faults, or reset those whose cause is gone")
    p.add_argument("action", choices=["list", "reset"])
    port_arg(p)
    json_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_fault"))

    p = sub.add_parser("mode", help="set a loop's mode: auto, manual or off")
    p.add_argument("loop", help="loop name (thermopilot info lists them)")
    p.add_argument("mode", choices=["auto", "manual", "off"])
    port_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_mode"))

    p = sub.add_parser("manual", help="drive a loop's output by hand (switches it to manual)")
    p.add_argument("loop", help="loop name")
    p.add_argument("value", help="output, in %% for a fraction (or add a unit)")
    p.add_argument("unit", nargs="?", default=None, help="e.g. %%, fraction")
    port_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_manual"))

    p = sub.add_parser(
        "setpoint", help="set a loop's setpoint (degC, K, bar... as the loop measures)"
    )
    p.add_argument("loop", help="loop name")
    p.add_argument("value", help="setpoint in the shown unit (degC, K, bar, %%) or with UNIT")
    p.add_argument("unit", nargs="?", default=None, help="e.g. degC, K, bar, kPa")
    port_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_setpoint"))

    p = sub.add_parser(
        "deploy",
        help="copy the firmware (.mpy for the board's CPU) to a board, verify it, reset it",
    )
    p.add_argument("--board", required=True, help=board_help)
    port_arg(p)
    p.add_argument("--no-native", action="store_true", help=_NO_NATIVE_HELP)
    p.add_argument(
        "--boot-timeout",
        type=float,
        default=20.0,
        help="seconds the board may take to answer after its reset (default 20)",
    )
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("upload", help="upload a binary (e.g. an MPC model blob) to a slot")
    p.add_argument("file")
    p.add_argument("--slot", type=int, default=0, choices=range(0, 8))
    port_arg(p)
    p.set_defaults(func=_command("cli_board", "cmd_upload"))

    p = sub.add_parser("flash", help="flash MicroPython itself (esptool API or a UF2 copy)")
    p.add_argument("--board", required=True, help=board_help)
    p.add_argument("--firmware", required=True, help="MicroPython .bin (ESP32) or .uf2 (RP2)")
    p.add_argument("--port", help="serial port (ESP32, esptool)")
    p.add_argument("--drive", help="mount point of the RPI-RP2 drive (UF2)")
    p.add_argument("--dry-run", action="store_true", help="check the image, say what would happen")
    p.set_defaults(func=_command("flash", "cmd_flash"))

    p = sub.add_parser(
        "completion",
        help="print the shell completion script: thermopilot completion bash >> ~/.bashrc",
    )
    p.add_argument("shell", choices=["bash", "zsh", "fish", "tcsh", "powershell"])
    p.set_defaults(func=cmd_completion)

    from . import cli_hil, cli_tune

    cli_hil.register(sub, port_arg)
    cli_tune.register(sub, port_arg, json_arg)
    from . import cli_mpc

    cli_mpc.register(sub)
    return ap


def main(argv=None):
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions
        try:
            import argcomplete

            argcomplete.autocomplete(parser)
        except ImportError:  # completion is a nicety; the CLI works without it
            pass
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # the reader of stdout went away (thermopilot info | head): not an error
        quiet_broken_pipe()
        return 0
    except Interrupted as exc:
        print("thermopilot: interrupted: %s" % exc, file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("thermopilot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, ValueError, OSError, RuntimeError) as exc:
        return _user_error(exc)
    except Exception as exc:
        from thermopilot.protocol.link import LinkError

        if not isinstance(exc, LinkError):
            raise
        return _user_error(exc)


def _user_error(exc):
    if os.environ.get("THERMOPILOT_DEBUG"):
        raise exc
    print("thermopilot: error: %s" % exc, file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
