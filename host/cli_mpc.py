"""``thermopilot mpc design MODEL.json -o BLOB``: the identified model -> the MPC blob.

The model file is what ``thermopilot identify`` writes (docs/tuning.md, "The model file"); the
output is the blob the board's ``mpc`` controller runs followed by its loop binding
(:func:`thermopilot.host.control.design.design_from_model`), sent with
``thermopilot upload BLOB --slot N``. Every refusal (non-convex weights, limits that exclude
the operating point, an unstable or mis-dimensioned model, a model that does not fit the
board's loop) is one line naming the value and the fix.
"""

import pathlib

from .console import UserError


def _floats_or_none(text, name):
    """'2.5,,none' -> [2.5, None, None]: one value per model output, empty for no limit."""
    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "" or part.lower() == "none":
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise UserError(
                "--%s %r: %r is not a number (comma-separated, one per model output, empty for "
                "no limit)" % (name, text, part)
            ) from None
    return out


def cmd_mpc_design(args):
    from thermopilot.hil import resources

    from .control import design

    model = design.load_model(args.model)
    board = None
    ref = args.board or model.get("board")
    if ref:
        try:
            board = resources.load_board(resources.board_path(ref))
        except (ValueError, OSError) as exc:
            raise UserError("board %r: %s" % (ref, exc)) from None
    data = design.design_from_model(
        model,
        board=board,
        horizon=args.horizon,
        q_y=args.q,
        r_u=args.r,
        r_du=args.r_du,
        u_min=args.u_min,
        u_max=args.u_max,
        du_max=args.du_max,
        y_min=_floats_or_none(args.y_min, "y-min"),
        y_max=_floats_or_none(args.y_max, "y-max"),
        slack_linear=args.slack_linear,
        slack_quadratic=args.slack_quadratic,
        blocks=args.blocks,
        fallback_iter=args.fallback_iter,
    )
    out = pathlib.Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    blob, ts_s = design.split_design(data)
    from .control import blob as blob_mod

    info = blob_mod.unpack(blob)
    print(
        "wrote %s: %d bytes; loop %s, nx=%d nu=%d nd=%d ny=%d, horizon %d x %g s = %g s, "
        "MicroPython fallback %d block(s) x %d ADMM iterations%s"
        % (
            out,
            len(data),
            model["loop"],
            info["nx"],
            info["nu"],
            info["nd"],
            info["ny"],
            info["n"],
            ts_s,
            info["n"] * ts_s,
            info["nb"],
            info["fb_iter"],
            "; checked against board %s" % board["name"] if board else "",
        )
    )
    if info["nd"]:
        # the plant low-passes a disturbance over its slowest mode, so holding the running
        # mean over that time is the plant's own view of pulses (docs/controllers.md)
        import numpy as np

        radius = float(np.max(np.abs(np.linalg.eigvals(model["A"]))))
        tau_s = -model["ts_s"] / np.log(radius) if 0.0 < radius < 1.0 else 0.0
        print(
            "measured disturbances: the model's slowest time constant is %.0f s; for pulsing "
            "ones (a drive cycle's current) set the loop's mpc_dtau_s to it: "
            "thermopilot param set %s.mpc_dtau_s %.0f --port PORT" % (tau_s, model["loop"], tau_s)
        )
    print("next: thermopilot upload %s --slot 0 --port PORT" % out)
    return 0


def register(sub):
    """Add the ``mpc`` command group to the top-level subparsers ``sub``."""
    p = sub.add_parser("mpc", help="model-predictive control: design the blob for a loop")
    msub = p.add_subparsers(dest="mpc_command", required=True)
    d = msub.add_parser(
        "design",
        help="identified model (thermopilot identify) -> MPC blob for 'thermopilot upload'",
        description="Weights, limits and horizon are in the model's units and samples; the "
        "soft output limits are per model output (comma-separated, in the output's SI unit, "
        "K for temperatures).",
    )
    d.add_argument("model", help="model file written by 'thermopilot identify' (JSON)")
    d.add_argument("-o", "--output", required=True, help="blob file to write")
    d.add_argument(
        "--board", help="board definition to check the loop against (default: the model's)"
    )
    d.add_argument("--horizon", type=int, default=20, help="prediction horizon in samples")
    d.add_argument("--q", type=float, default=1.0, help="weight on the measurement error^2")
    d.add_argument("--r", type=float, default=0.0, help="weight on (u - u_ref)^2")
    d.add_argument("--r-du", type=float, default=1.0, help="weight on the move^2 per sample")
    d.add_argument("--u-min", type=float, help="hard input limit (default: the model's range)")
    d.add_argument("--u-max", type=float, help="hard input limit (default: the model's range)")
    d.add_argument("--du-max", type=float, help="largest input move per sample (rate limit)")
    d.add_argument("--y-min", help="soft lower limits, one per output: '2.0' or '2.0,'")
    d.add_argument("--y-max", help="soft upper limits, one per output")
    d.add_argument("--slack-linear", type=float, default=1e3, help="soft-limit penalty, linear")
    d.add_argument(
        "--slack-quadratic", type=float, default=1e3, help="soft-limit penalty, quadratic"
    )
    d.add_argument(
        "--blocks", type=int, default=1, help="move blocks of the MicroPython formulation"
    )
    d.add_argument(
        "--fallback-iter",
        type=int,
        default=10,
        help="ADMM iterations per step of the MicroPython formulation",
    )
    d.set_defaults(func=cmd_mpc_design)
