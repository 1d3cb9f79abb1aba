"""``thermopilot tune LOOP`` and ``thermopilot identify LOOP``: experiments the host runs on one
loop, on a real board in real time (``--port``) or on the virtual board in lockstep with a
scenario's plant (``--scenario``).

The host drives the loop's output in manual mode and reads its telemetry; the board keeps its
supervisor, limits and safe states, so a fault during the experiment ends in the same safe
state as in normal running (docs/tuning.md says why the host, not the board, runs the relay).
On success, abort or Ctrl-C the loop goes back to the mode and output it had (on a fault it
stays in the safe state the board chose).
"""

import json
import math
import sys
import time

from . import units
from .console import EXIT_FAILED, UserError


def _schema():
    # imported when a command runs, not when the parser is built (--help stays fast)
    from thermopilot.protocol import schema

    return schema


def _mode_name(mode):
    return {v: k for k, v in _schema().MODES.items()}.get(mode, mode)


def _run(args, make_driver, what):
    """The experiment in lockstep on a virtual board (--scenario) or on the board at --port in
    real time: (driver, rig result or None, info)."""
    if args.scenario:
        return run_lockstep(args, make_driver, what)
    return run_realtime(args, make_driver, what)


def _failed(args, verb, loop, driver, exp):
    """Say why the experiment `exp` stopped and where the loop was left; the exit code."""
    msg = "%s loop %s failed (%s): %s; the loop %s" % (
        verb,
        loop["name"],
        exp.reason,
        exp.message,
        "is held in its safe state by the board (fault %s)" % driver.fault
        if driver.fault
        else "is back in mode %s" % _mode_name(driver.prev_mode),
    )
    if args.json:
        print(json.dumps({"ok": False, "reason": exp.reason, "message": msg}))
    else:
        print("thermopilot: %s" % msg, file=sys.stderr)
    return EXIT_FAILED


def fault_text(bits):
    names = {v: k for k, v in _schema().FAULTS.items()}
    return ", ".join(names.get(b, "bit%d" % b) for b in range(32) if bits >> b & 1)


class ManualExperiment:
    """Drives one loop's output in manual mode from an experiment object (a RelayTuner or an
    identification test): ``feed(t_s, y, fault) -> u`` and ``finished``.

    :meth:`sample` takes the loop's telemetry (SI) each tick: before ``start_s`` the loop runs
    as it is (settling at its operating point); then the loop's mode and output are noted,
    the experiment is made by ``make(setpoint, output)`` and every output it returns is sent
    as the loop's manual output. :meth:`restore` puts the loop back.
    """

    def __init__(self, session, loop, make, start_s=0.0, on_progress=None):
        self.session = session
        self.loop = loop
        self.make = make
        self.start_s = float(start_s)
        self.on_progress = on_progress
        self.exp = None
        self.prev_mode = None
        self.prev_output = None
        self.last_u = None
        self.t_start = None
        self.fault = None
        self.restored = False

    def sample(self, t_s, setpoint, measurement, output, mode, fault_bits):
        """One telemetry sample; returns True when the experiment has finished."""
        if self.exp is None:
            if fault_bits:
                self.fault = fault_text(fault_bits)
                raise UserError(
                    "loop %s: the board reports %s before the experiment; clear the cause and "
                    "run 'thermopilot fault reset'" % (self.loop["name"], self.fault)
                )
            if t_s < self.start_s or math.isnan(measurement):
                return False
            self.prev_mode = int(mode)
            self.prev_output = float(output)
            lo, hi = self.loop["out_min"], self.loop["out_max"]
            u0 = min(max(float(output), lo), hi)
            self.exp = self.make(setpoint, u0, measurement)
            self.t_start = t_s
            self._send(u0)
            self.session.command("mode", loop=self.loop["loop"], value=_schema().MODES["manual"])
            return False
        fault = fault_text(fault_bits) if fault_bits else False
        if fault:
            self.fault = fault
        u = self.exp.feed(t_s, measurement, fault=fault)
        if self.on_progress is not None:
            self.on_progress(self)
        if self.exp.finished:
            return True
        if u != self.last_u:
            self._send(u)
        return False

    def _send(self, u):
        self.session.command("manual_output", loop=self.loop["loop"], value=float(u))
        self.last_u = u

    def restore(self):
        """The loop back to its previous mode and output, unless a fault holds it safe."""
        if self.prev_mode is None or self.restored or self.fault:
            return
        self.restored = True
        if self.prev_mode == _schema().MODES["manual"]:
            self._send(self.prev_output)
        self.session.command("mode", loop=self.loop["loop"], value=self.prev_mode)


# -- board facts --------------------------------------------------------------------------


def loop_direction(board_name, loop_name, override=None):
    """True when more output lowers the loop's measurement: ``override`` ("reverse" or
    "direct") or the board definition's ``reverse`` key."""
    if override is not None:
        return override == "reverse"
    from thermopilot.hil import resources

    try:
        board = resources.load_board(board_name)
    except (OSError, ValueError, KeyError):
        raise UserError(
            "board %r has no definition on this host to tell the direction of loop %s; give "
            "--direction reverse (more output lowers the measurement) or direct"
            % (board_name, loop_name)
        ) from None
    for lp in board.get("loops", []):
        if lp.get("name") == loop_name:
            return bool(lp.get("reverse", False))
    return False


def _difference_quantity(q):
    return "temperature_difference" if q == "temperature" else q


def user_value(text, quantity, what, difference=False):
    """A value typed at the command line (with an optional unit after a space) in SI."""
    if text is None:
        return None
    parts = str(text).split()
    try:
        v = float(parts[0])
    except (ValueError, IndexError):
        raise UserError("%s: %r is not a number" % (what, text)) from None
    if not math.isfinite(v):
        raise UserError("%s: %r is not a finite number" % (what, text))
    q = _difference_quantity(quantity) if difference else quantity
    try:
        return units.to_si(v, q, parts[1] if len(parts) > 1 else None)
    except ValueError as exc:
        raise UserError("%s: %s" % (what, exc)) from None


def _half_swing(amp, loop, oq):
    """The output move ``amp`` checked against half the loop's output range; exactly half is
    allowed (the board's limits are float32: 0.3..1.0 has a span a few 1e-8 under 0.7)."""
    lo, hi = loop["out_min"], loop["out_max"]
    half = 0.5 * (hi - lo)
    if amp > half * (1.0 + 1e-6):
        raise UserError(
            "--amplitude %s is more than half the output range %s..%s of loop %s"
            % (units.fmt(amp, oq), units.fmt(lo, oq), units.fmt(hi, oq), loop["name"])
        )
    return min(amp, half)


# -- tune ----------------------------------------------------------------------------------


def _tuner_factory(args, loop, reverse):
    from .control.tune import RelayTuner, TuneError

    q = loop["quantity"]
    oq = loop["out_quantity"]
    span = loop["out_max"] - loop["out_min"]
    amp = user_value(args.amplitude, oq, "--amplitude", difference=True)
    if amp is None:
        amp = 0.15 * span
    band = user_value(args.band, q, "--band", difference=True)
    hyst = user_value(args.hysteresis, q, "--hysteresis", difference=True)
    sp_user = user_value(args.setpoint, q, "--setpoint")

    def make(setpoint, u0, y):
        sp = sp_user if sp_user is not None else setpoint
        # the relay's centre must leave room for its swing inside the output limits
        lo, hi = loop["out_min"], loop["out_max"]
        a = _half_swing(amp, loop, oq)
        u0 = min(max(u0, lo + a), hi - a)
        try:
            return RelayTuner(
                sp,
                u0,
                a,
                out_min=lo,
                out_max=hi,
                reverse=reverse,
                band=band if band is not None else math.inf,
                max_duration_s=args.max_duration,
                hold_s=args.hold,
                hysteresis=hyst,
                min_hysteresis=max(loop.get("resolution", 0.0) or 0.0, 0.0),
                cycles=args.cycles,
                tolerance=args.tolerance,
            )
        except TuneError as exc:
            raise UserError("tune loop %s: %s" % (loop["name"], exc)) from None

    return make


class _TuneProgress:
    """A rich progress line: phase, cycle count, the current Ku/Pu estimate."""

    def __init__(self, err, loop, enabled):
        self.err = err
        self.loop = loop
        self.enabled = enabled
        self.progress = None
        self.task = None
        self.last = 0.0
        self.verb = "tune"

    def __enter__(self):
        if self.enabled and self.err.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn

            self.progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), console=self.err, transient=True
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("tune %s: starting" % self.loop["name"])
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, driver):
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        p = driver.exp.progress
        text = "%s %s: %s, %.0f s, %d cycles" % (
            self.verb,
            self.loop["name"],
            p["state"],
            p["elapsed_s"],
            p["cycles"],
        )
        if p["ku"] is not None:
            text += ", Ku ~ %.4g, Pu ~ %.1f s" % (p["ku"], p["pu_s"])
        if self.progress is not None:
            self.progress.update(self.task, description=text)
        elif self.enabled and now - getattr(self, "_plain", 0.0) > 10.0:
            self._plain = now
            print(text, file=sys.stderr, flush=True)


def run_lockstep(args, make_driver, what):
    """Run a ManualExperiment on a fresh virtual board in lockstep with the scenario's plant.

    Returns (driver, rig result, board session facts)."""
    from thermopilot.hil import rig as rig_mod
    from thermopilot.hil import scenario
    from thermopilot.hil.vboard import VirtualBoard
    from thermopilot.protocol.link import Session

    from .cli_hil import _resolve_scenario_arg

    sc = scenario.load(_resolve_scenario_arg(args.scenario))
    settle = args.settle
    # the scenario's board, plant, sensors, inputs and profiles; its setpoint changes only
    # while the loop settles, its criteria not at all
    sc["setpoints"] = [s for s in sc["setpoints"] if s["t_s"] < settle]
    sc["criteria"] = []
    # the host does more per tick than a plain run (the experiment, its fits): on a loaded
    # machine a longer gap between lockstep frames must not read as a lost host
    sc["params"] = dict(sc["params"])
    sc["params"]["hil.timeout_s"] = max(float(sc["params"].get("hil.timeout_s", 0.0)), 10.0)
    if getattr(args, "steady", False):
        # the plant's inputs held at their [inputs] values: the experiment sees only its own
        # moves (no load profile, no injected faults)
        sc["profile"] = []
        sc["faults"] = []
    sc["duration_s"] = settle + args.max_duration + 10.0
    the_rig = rig_mod.Rig(sc, seed=args.seed)
    info = {"scenario": sc["name"]}
    kw = {}
    if getattr(args, "save", False):
        # saved gains go to the flash that 'thermopilot vboard' keeps for this board
        import pathlib

        from thermopilot.hil.vboard import state_dir

        kw["workdir"] = str(state_dir(pathlib.Path(sc["board_path"]).stem))
        info["flash"] = kw["workdir"]
    with VirtualBoard(
        board=sc["board_path"], native=not getattr(args, "no_native", False), **kw
    ) as vb:
        with Session(vb.port, timeout_s=args.timeout) as s:
            ident = s.hello()
            loops = s.loops()
            loop = _pick_loop(loops, args.loop, ident, s)
            loop["tick_hz"] = float(ident.tick_hz)
            driver = make_driver(s, loop, _text(ident.board))
            index = loop["loop"]

            def on_tick(rig, t_s, loop_vals, fault_bits):
                lv = loop_vals[index]
                return driver.sample(t_s, lv[0], lv[1], lv[2], lv[3], fault_bits)

            the_rig.on_tick = on_tick
            try:
                res = the_rig.run(s, restore_params=True)
            finally:
                try:
                    driver.restore()
                except Exception:  # noqa: BLE001 - the board is stopped by the rig anyway
                    pass
            info["board"] = _text(ident.board)
            info["port"] = vb.port
            info["loop"] = loop
            if res.interrupted:
                raise KeyboardInterrupt
            after = getattr(driver, "after", None)
            if after is not None:
                after(s, loop)
    return driver, res, info


def run_realtime(args, make_driver, what):
    """Run a ManualExperiment on the board at ``args.port``, paced by its telemetry."""
    from thermopilot.protocol.link import Session

    info = {}
    with Session(args.port, timeout_s=args.timeout) as s:
        ident = s.hello()
        loops = s.loops()
        loop = _pick_loop(loops, args.loop, ident, s)
        loop["tick_hz"] = float(ident.tick_hz)
        driver = make_driver(s, loop, _text(ident.board))
        rate = ident.tick_hz if args.rate is None else args.rate
        s.telemetry.clear()
        s.stream_rate("TELEMETRY", rate)
        t_host0 = time.monotonic()
        try:
            while True:
                if time.monotonic() - t_host0 > driver.start_s + args.max_duration + 60.0:
                    raise UserError(
                        "no end of the %s after %.0f s: the board's telemetry stopped?"
                        % (what, time.monotonic() - t_host0)
                    )
                if not s.telemetry:
                    time.sleep(0.01)
                    continue
                c = s.telemetry.popleft()
                if c.loop != loop["loop"]:
                    continue
                if driver.sample(
                    c.t_ms / 1000.0, c.setpoint, c.measurement, c.output, c.mode, c.faults
                ):
                    break
        finally:
            try:
                driver.restore()
            except Exception:  # noqa: BLE001 - report the first error, not the restore's
                pass
        after = getattr(driver, "after", None)
        if after is not None:
            after(s, loop)
        info["board"] = _text(ident.board)
        info["port"] = args.port
        info["loop"] = loop
    return driver, None, info


def _text(raw):
    return bytes(raw).split(b"\x00", 1)[0].decode(errors="replace")


def _pick_loop(loops, name, ident, session=None):
    for lp in loops:
        if lp["name"] == name or str(lp["loop"]) == name:
            if session is not None:
                # the loop's own output limits (parameters) are narrower than the actuator's
                vals = {p["name"]: p["value"] for p in session.params()}
                lp["out_min"] = vals.get(lp["name"] + ".out_min", lp["out_min"])
                lp["out_max"] = vals.get(lp["name"] + ".out_max", lp["out_max"])
            return lp
    raise UserError(
        "board %s has no loop %r; its loops: %s"
        % (_text(ident.board), name, ", ".join(lp["name"] for lp in loops) or "none")
    )


def cmd_tune(args):
    from rich.console import Console

    from .control.tune import TuneError, gains

    _check_target(args)
    err = Console(stderr=True)
    outcome = {}

    def make_driver(session, loop, board_name):
        # an mpc loop keeps the PID rows it falls back to (and that 'hil compare' runs as
        # its pid variant): those are the gains tune finds there
        if loop["controller"] not in ("pid", "mpc"):
            raise UserError(
                "loop %s runs the %r controller; tune finds PID gains for 'pid' loops (and "
                "the fallback PID of 'mpc' loops)" % (loop["name"], loop["controller"])
            )
        reverse = loop_direction(board_name, loop["name"], args.direction)
        prog = outcome["progress"]
        d = ManualExperiment(
            session,
            loop,
            _tuner_factory(args, loop, reverse),
            start_s=args.settle if args.scenario else 0.0,
            on_progress=prog,
        )
        d.after = lambda s, lp: _apply(args, d, s, lp, outcome)
        return d

    with _TuneProgress(err, {"name": args.loop}, not args.json) as prog:
        outcome["progress"] = prog
        t0 = time.monotonic()
        driver, _res, info = _run(args, make_driver, "tune")
        wall = time.monotonic() - t0
    tuner = driver.exp
    loop = info["loop"]
    q = loop["quantity"]
    if tuner is None:
        raise UserError("loop %s: the tune never started (no telemetry)" % loop["name"])
    if tuner.state != "done":
        return _failed(args, "tune", loop, driver, tuner)
    res = tuner.result
    try:
        g = gains(res, args.rule, args.kind, dt_s=1.0 / loop["tick_hz"])
    except TuneError as exc:
        raise UserError(str(exc)) from None
    out = {
        "ok": True,
        "loop": loop["name"],
        "board": info.get("board"),
        "scenario": info.get("scenario"),
        "rule": g["rule"],
        "kind": g["kind"],
        "kp": g["kp"],
        "ki": g["ki"],
        "kd": g["kd"],
        "ku": res["ku"],
        "pu_s": res["pu_s"],
        "amplitude": res["amplitude"],
        "hysteresis": res["hysteresis"],
        "noise_pp": res["noise_pp"],
        "symmetry": res["symmetry"],
        "centre": res["centre"],
        "cycles": res["cycles"],
        "duration_s": res["duration_s"],
        "fopdt": res["fopdt"],
        "setpoint": res["setpoint"],
        "applied": outcome.get("applied", False),
        "saved": outcome.get("saved", False),
        "wall_s": wall,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        "loop %s: %d cycles in %.0f s (%.1f s wall) around %s; Ku %.4g, Pu %.1f s, "
        "oscillation +/-%s, hysteresis %s, half-period symmetry %.2f"
        % (
            loop["name"],
            res["cycles"],
            res["duration_s"],
            wall,
            units.fmt(res["setpoint"], q, loop["resolution"]),
            res["ku"],
            res["pu_s"],
            units.fmt(res["amplitude"], _difference_quantity(q)),
            units.fmt(res["hysteresis"], _difference_quantity(q)),
            res["symmetry"],
        )
    )
    if res["fopdt"]:
        m = res["fopdt"]
        print(
            "FOPDT fit: gain %.4g per output unit, lag %.1f s, dead time %.1f s (NRMSE %.3f)"
            % (m["gain"], m["tau_s"], m["dead_s"], m["nrmse"])
        )
    print(
        "%s %s: kp %.5g, ki %.5g 1/s, kd %.5g s%s"
        % (
            g["rule"],
            g["kind"].upper(),
            g["kp"],
            g["ki"],
            g["kd"],
            " (applied%s)" % (" and saved" if out["saved"] else "")
            if out["applied"]
            else "; --apply sets them on the board",
        )
    )
    return 0


def _apply(args, driver, session, loop, outcome):
    """--apply / --save after a successful tune, with every value checked against the
    board's ranges first (nothing is written when one is out of range)."""
    from .control.tune import TuneError, gains

    tuner = driver.exp
    if not (args.apply or args.save) or tuner is None or tuner.state != "done":
        return
    try:
        g = gains(tuner.result, args.rule, args.kind, dt_s=1.0 / loop["tick_hz"])
    except TuneError as exc:
        raise UserError(str(exc)) from None
    params = {p["name"]: p for p in session.params()}
    todo = []
    for key in ("kp", "ki", "kd"):
        name = "%s.%s" % (loop["name"], key)
        p = params.get(name)
        if p is None:
            raise UserError("board has no parameter %s; nothing applied" % name)
        if not p["min"] <= g[key] <= p["max"]:
            raise UserError(
                "%s = %.5g is outside the board's range %g..%g; nothing applied; try "
                "another --rule or a larger --amplitude" % (name, g[key], p["min"], p["max"])
            )
        todo.append((name, g[key]))
    for name, v in todo:
        session.param_set(name, v)
    outcome["applied"] = True
    if args.save:
        session.request("PARAM_SAVE", flags=0)
        outcome["saved"] = True


# -- identify ------------------------------------------------------------------------------


def cmd_identify(args):
    from rich.console import Console

    from .control import identify as idm
    from .control.tune import TuneError

    args.max_duration = args.hold + args.duration
    _check_target(args)
    if args.ts is not None and not args.ts > 0:
        raise UserError("--ts %r: expected a sample time in s > 0" % args.ts)
    dist_col = _disturbance_column(args)
    err = Console(stderr=True)
    holder = {}

    def make_driver(session, loop, board_name):
        holder["board"] = board_name
        oq = loop["out_quantity"]
        span = loop["out_max"] - loop["out_min"]
        amp = user_value(args.amplitude, oq, "--amplitude", difference=True)
        amp = 0.1 * span if amp is None else amp
        band = user_value(args.band, loop["quantity"], "--band", difference=True)

        def make(setpoint, u0, y):
            lo, hi = loop["out_min"], loop["out_max"]
            a = _half_swing(amp, loop, oq)
            u0 = min(max(u0, lo + a), hi - a)
            try:
                return idm.StepTest(
                    u0,
                    a,
                    args.duration,
                    out_min=lo,
                    out_max=hi,
                    signal=args.signal,
                    clock_s=args.clock,
                    band=math.inf if band is None else band,
                    hold_s=args.hold,
                    seed=args.seed,
                )
            except TuneError as exc:
                raise UserError("identify loop %s: %s" % (loop["name"], exc)) from None

        return ManualExperiment(
            session,
            loop,
            make,
            start_s=args.settle if args.scenario else 0.0,
            on_progress=holder["progress"],
        )

    with _TuneProgress(err, {"name": args.loop}, not args.json) as prog:
        prog.verb = "identify"
        holder["progress"] = prog
        t0 = time.monotonic()
        driver, res, info = _run(args, make_driver, "identification test")
        wall = time.monotonic() - t0
    test = driver.exp
    loop = info["loop"]
    if test is None:
        raise UserError("loop %s: the test never started (no telemetry)" % loop["name"])
    if test.state != "done":
        return _failed(args, "identify", loop, driver, test)
    d_rec, d_unit = None, ""
    if dist_col is not None:
        d_rec, d_unit = _disturbance_record(res, dist_col, test.t)
    try:
        m = idm.identify(
            test.t,
            test.us,
            test.y,
            order=args.order,
            ts_s=args.ts,
            tick_s=1.0 / loop["tick_hz"],
            u0=test.u0,
            signal=args.signal,
            d=d_rec,
        )
    except TuneError as exc:
        raise UserError("identify loop %s: %s" % (loop["name"], exc)) from None
    channel = _actuator_channel(holder["board"], loop)
    obj = idm.model_to_dict(
        m,
        loop["name"],
        info.get("board"),
        "out.%d" % channel if channel is not None else "out.%s" % loop["name"],
        "loop.%s.measurement" % loop["name"],
        units.SI_UNIT.get(loop["quantity"], ""),
        loop["out_min"],
        loop["out_max"],
        disturbance_name=dist_col,
        disturbance_unit=d_unit,
    )
    out_path = args.out or "model_%s.json" % loop["name"]
    idm.save_model(out_path, obj)
    plot_path = None
    if not args.no_plot:
        plot_path = args.plot or out_path.rsplit(".", 1)[0] + ".png"
        q = loop["quantity"]
        idm.plot_fit(
            plot_path,
            m,
            "loop %s: %s test, model vs data" % (loop["name"], args.signal),
            y_label="%s, %s" % (q, units.shown_unit(q)),
            y_offset=units.display(0.0, q),
        )
    fit = m["fit"]
    fop = m["fopdt"]
    warning = None
    if fit["nrmse_validation"] > 1.0:
        # worse than predicting the held-out data's mean: the model is written (the test's
        # record is in it), but an MPC designed from it would steer by a wrong picture
        warning = (
            "the model predicts the held-out third worse than its mean (NRMSE %.2f > 1): "
            "run a longer test (--duration), a larger --amplitude, or a --clock near a "
            "third of the plant's lag before designing an MPC from it" % fit["nrmse_validation"]
        )
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "model": out_path,
                    "plot": plot_path,
                    "ts_s": m["ts_s"],
                    "nx": int(m["A"].shape[0]),
                    "fopdt": fop,
                    "fit": fit,
                    "warning": warning,
                    "wall_s": wall,
                },
                indent=2,
            )
        )
        return 0
    print(
        "loop %s: %s test of %.0f s (%.1f s wall); FOPDT gain %.4g, lag %.1f s, dead time %.1f s"
        % (
            loop["name"],
            args.signal,
            args.duration,
            wall,
            fop["gain"],
            fop["tau_s"],
            fop["dead_s"],
        )
    )
    print(
        "state-space model: %d states at Ts %.3g s; NRMSE %.3f on the held-out third "
        "(%.3f on the fitted part)"
        % (m["A"].shape[0], m["ts_s"], fit["nrmse_validation"], fit["nrmse_train"])
    )
    print("model: %s%s" % (out_path, "; plot: %s" % plot_path if plot_path else ""))
    if warning:
        err.print("[yellow]warning:[/] " + warning, highlight=False)
    return 0


def _disturbance_column(args):
    """``--disturbance`` as the rig's column ``sensed.N``, or None; checked before anything
    moves."""
    spec = getattr(args, "disturbance", None)
    if spec is None:
        return None
    text = str(spec).strip()
    num = text[len("sensed.") :] if text.startswith("sensed.") else text
    if not num.isdigit():
        raise UserError(
            "--disturbance %r: expected a sensor channel of the board, sensed.N or N "
            "(the channel the loop's d0 role reads)" % spec
        )
    if not args.scenario:
        raise UserError(
            "--disturbance %s: the disturbance is recorded from the scenario's sensors, so it "
            "needs --scenario (lockstep); on a real board identify without it" % spec
        )
    if getattr(args, "steady", False):
        raise UserError(
            "--disturbance %s with --steady: --steady holds the plant's inputs, so the "
            "disturbance would not move; drop --steady" % spec
        )
    return "sensed.%d" % int(num)


def _disturbance_record(res, col, t):
    """The disturbance as the board sensed it, at the test's sample times, and its SI unit."""
    from thermopilot.hil import signals

    rows = res.rows
    if not rows.has(col):
        have = [c for c in rows.columns if c.startswith("sensed.")]
        raise UserError(
            "--disturbance %s: the scenario has no sensor on that channel (it has %s)"
            % (col, ", ".join(have) or "none")
        )
    import numpy as np

    d = np.interp(np.asarray(t, float), rows.t, rows[col])
    try:
        unit = units.SI_UNIT.get(signals.quantity_of(col, res.rig.ctx), "")
    except (AttributeError, KeyError, ValueError):
        unit = ""
    return d, unit


def _actuator_channel(board_name, loop):
    from thermopilot.hil import resources

    try:
        board = resources.load_board(board_name)
    except (OSError, ValueError, KeyError):
        return None
    for lp in board.get("loops", []):
        if lp.get("name") == loop["name"]:
            return lp.get("actuators", {}).get("out")
    return None


def _check_target(args):
    if bool(args.port) == bool(args.scenario):
        raise UserError(
            "give --port PORT (a board, real time) or --scenario FILE (the virtual board in "
            "lockstep with the scenario's plant), one of them"
        )
    if not args.max_duration > 0:
        raise UserError("--max-duration %r: expected seconds > 0" % args.max_duration)


def register(sub, port_arg, json_arg):
    """Add ``tune`` and ``identify`` to the top-level subparsers ``sub``."""
    from .control import DEFAULT_RULE, RULES

    p = sub.add_parser(
        "tune",
        help="relay autotune of a PID loop (real board: --port; virtual board: --scenario)",
    )
    p.add_argument("loop", help="loop name (thermopilot info lists them)")
    _target_args(p, port_arg)
    p.add_argument(
        "--rule",
        choices=RULES,
        default=DEFAULT_RULE,
        help="tuning rule: zn (Ziegler-Nichols), tl (Tyreus-Luyben), simc, amigo (from the "
        "FOPDT fit); default %s" % DEFAULT_RULE,
    )
    p.add_argument("--kind", choices=("pi", "pid"), default="pi", help="PI (default) or PID")
    p.add_argument("--setpoint", help="relay around this value (default: the loop's setpoint)")
    p.add_argument(
        "--amplitude", help="relay half-swing in the output's unit (default 15%% of its range)"
    )
    p.add_argument("--band", help="abort when the measurement moves more than this from start")
    p.add_argument("--hysteresis", help="relay hysteresis (default: 2x the measured noise)")
    p.add_argument("--hold", type=float, default=10.0, help="noise hold before the relay, s")
    p.add_argument("--cycles", type=int, default=4, help="cycles that must agree (default 4)")
    p.add_argument("--tolerance", type=float, default=0.1, help="their spread (default 0.1)")
    p.add_argument("--max-duration", type=float, default=3600.0, help="s (default 3600)")
    p.add_argument("--apply", action="store_true", help="set the loop's kp, ki, kd on the board")
    p.add_argument("--save", action="store_true", help="--apply and save them to flash")
    json_arg(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "identify",
        help="step or PRBS test of a loop, FOPDT and state-space model for mpc design",
    )
    p.add_argument("loop", help="loop name (thermopilot info lists them)")
    _target_args(p, port_arg)
    p.add_argument("--signal", choices=("step", "prbs"), default="step", help="test signal")
    p.add_argument(
        "--amplitude", help="output move in the output's unit (default 10%% of its range)"
    )
    p.add_argument("--duration", type=float, default=600.0, help="test length, s (default 600)")
    p.add_argument("--clock", type=float, default=20.0, help="PRBS bit time, s (default 20)")
    p.add_argument("--band", help="abort when the measurement moves more than this from start")
    p.add_argument("--hold", type=float, default=30.0, help="hold before the first move, s")
    p.add_argument("--order", type=int, choices=(1, 2), default=2, help="model poles (2)")
    p.add_argument("--ts", type=float, default=None, help="model sample time, s (default: auto)")
    p.add_argument("--out", help="model file (default model_LOOP.json)")
    p.add_argument("--plot", help="plot file (default: the model's name with .png)")
    p.add_argument("--no-plot", action="store_true", help="no plot")
    p.add_argument(
        "--disturbance",
        metavar="sensed.N",
        help="lockstep: also fit this measured disturbance (the sensor channel of the loop's "
        "d0 role) as the model's column E; the scenario's profile moves it during the test",
    )
    json_arg(p)
    p.set_defaults(func=cmd_identify)


def _target_args(p, port_arg):
    port_arg(p, required=False)
    p.add_argument(
        "--scenario",
        help="lockstep on a fresh virtual board with this scenario's board, plant and sensors",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=120.0,
        help="lockstep: s the loop runs as the scenario has it before the experiment",
    )
    p.add_argument("--seed", type=int, default=1, help="lockstep: sensor noise seed")
    p.add_argument(
        "--steady",
        action="store_true",
        help="lockstep: hold the plant's inputs at the scenario's [inputs] (no profiles, no "
        "faults), so the experiment sees only its own moves",
    )
    p.add_argument(
        "--direction",
        choices=("reverse", "direct"),
        default=None,
        help="reverse: more output lowers the measurement (default: the board definition's)",
    )
    p.add_argument("--rate", type=float, default=None, help="real time: telemetry rate, Hz")
    p.add_argument(
        "--no-native",
        action="store_true",
        help="lockstep: the virtual board without the C core (MicroPython fallback)",
    )
