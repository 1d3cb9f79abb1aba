"""The HIL rig: steps a plant model in lockstep with a board over the ThermoPilot protocol.

Every board tick the rig sends the sensor signals at simulated time ``t`` (HIL_SENSORS, raw
signals encoded by hil.boardio from the board definition's front ends), the board runs the
ticks that are due, streams its telemetry and answers with its actuator outputs (HIL_ACTUATORS);
the rig records a row (every plant output and input, what it sent, what the board answered,
every loop's telemetry) and advances the plant by one tick. Against the virtual board this runs
much faster than real time; against a real board (``realtime=True``) the rig paces itself by
the wall clock.

Before the run the rig checks the board against the scenario (its name, its loops and their
telemetry fields, the [params] names and ranges, every setpoint value), so that a mistake fails
before anything runs; it snapshots the board's parameters and restores them after the run
(unless told to keep them). Faults come from the registry in hil.faults; a KeyboardInterrupt
ends the run early with ``result.interrupted`` set, after the board has been stopped (its
outputs safe) and its parameters restored.
"""

import bisect
import math
import time

from thermopilot.protocol import schema
from thermopilot.protocol.link import LinkError, Nack

from . import boardio, signals
from . import criteria as criteria_mod
from . import faults as faults_mod
from . import scenario as scenario_mod
from . import sensors as sensors_mod
from .rows import Rows

N_SENSORS = schema.by_name("HIL_SENSORS").struct.values.subcon.count
FAULT_NAMES = {v: k for k, v in schema.FAULTS.items()}
EVENT_NAMES = {**FAULT_NAMES, **{v: k for k, v in schema.NOTICES.items()}}
KIND_NAMES = {v: k for k, v in schema.EVENT_KINDS.items()}
MODE_NAMES = {v: k for k, v in schema.MODES.items()}
BOARD_STATS_FIELDS = [f for f, _fmt, _h in schema.by_name("BOARD_STATS").fields if f != "req_seq"]


class RigError(RuntimeError):
    """The run cannot start or go on (a board that does not fit the scenario, a refused
    parameter); the message names the scenario, the key and the value."""


def profile_value(profile, t_s):
    """Piecewise-linear value of a [[profile]] entry at t_s (held flat outside its range)."""
    t, v = profile["t_s"], profile["values"]
    if t_s <= t[0]:
        return v[0]
    k = bisect.bisect_left(t, t_s)
    if k >= len(t):
        return v[-1]
    span = t[k] - t[k - 1]
    a = 0.0 if span == 0 else (t_s - t[k - 1]) / span
    return v[k - 1] + a * (v[k] - v[k - 1])


def _text(raw):
    return bytes(raw).split(b"\x00", 1)[0].decode(errors="replace")


def event_dict(e):
    return {
        "t_s": e.t_ms / 1000.0,
        "code": e.code,
        "name": EVENT_NAMES.get(e.code, "code%d" % e.code),
        "kind": KIND_NAMES.get(e.kind, str(e.kind)),
        "loop": e.loop,
        "value": e.value,
    }


class RigResult:
    """A run: ``rows`` (hil.rows.Rows), ``events`` (dicts), ``stats`` (link counters),
    ``board`` (IDENTITY), ``verdicts`` (after :meth:`evaluate`), ``interrupted``."""

    def __init__(self, scenario, rows, events, stats, board, rig):
        self.scenario = scenario
        self.rows = rows
        self.events = events
        self.stats = stats
        self.board = board
        self.rig = rig
        self.verdicts = []
        self.interrupted = False
        self.wall_s = 0.0
        self.params_restored = None
        self.loops = []
        #: where the time went: steps, steps_wall_s, host_cpu_s and vm_cpu_s (CPU of this
        #: process and of the board's VM, when known, over the steps)
        self.timing = {}
        #: the board's BOARD_STATS after the run (heap high-water, ticks), a dict, or {}
        self.board_stats = {}

    @property
    def passed(self):
        return (not self.interrupted) and all(v["passed"] for v in self.verdicts)

    def evaluate(self):
        self.verdicts = criteria_mod.evaluate(self.rig.criteria, self.rows, self.events)
        return self.verdicts

    def energy_j(self):
        """Energy of every plant output that is a power over the run, J."""
        from .criteria import _trapz

        t = self.rows.t
        out = {}
        for c in self.rows.columns:
            if c.startswith("plant.") and signals.is_power(c[6:]):
                out[c] = float(_trapz(self.rows[c], t)) if len(t) > 1 else 0.0
        return out


class Rig:
    """A scenario made ready to run: plant built, sensors and faults made. Building it checks
    what the loader could not without building the plant (its parameters' own rules)."""

    def __init__(self, sc, seed=1):
        self.sc = sc
        self.seed = seed
        self.ctx = scenario_mod.context(sc)
        from .plants import make_plant

        try:
            self.plant = make_plant(sc["plant"]["model"], **sc["plant"]["params"])
        except ValueError as exc:
            raise RigError("scenario %s [plant]: %s" % (sc["name"], exc)) from None
        self.board_def = self.ctx.board
        self.sensors = {}
        for k, s in enumerate(sc["sensors"]):
            bs = self.board_def["sensors"][s["channel"]]
            self.sensors[s["channel"]] = sensors_mod.for_channel(
                s["preset"], bs, s["noise"], s["quant"], s["lag_s"], seed=seed + k
            )
        self.faults = [faults_mod.make(f, i, seed) for i, f in enumerate(sc["faults"])]
        self.criteria = [criteria_mod.make(c, i) for i, c in enumerate(sc["criteria"])]
        self.session = None
        self.max_gap_ticks = 100
        self._wall0 = 0.0
        self._last_inputs = {}
        self.interrupted = False
        self.frames_dropped = 0
        #: called after every recorded row as on_tick(rig, t_s, loop_values, fault_bits); a
        #: true return ends the run there (host-side experiments such as a relay autotune)
        self.on_tick = None

    # -- hooks the faults use ----------------------------------------------------------------
    def sensor(self, ch):
        return self.sensors[ch]

    def sensor_quantity(self, ch):
        return signals.sensor_quantity(self.board_def["sensors"][ch])

    def actuator_cfg(self, ch):
        return self.ctx.wired_actuators[ch]

    def plant_input_now(self, ch):
        """The value the plant last received from actuator channel ``ch``."""
        a = self.ctx.wired_actuators[ch]
        if a["input"] in self._last_inputs:
            return self._last_inputs[a["input"]]
        return self._outputs[ch] * a["scale"] + a["offset"]

    def base_input(self, name, t_s):
        """A plant input's value at t_s from [[profile]], [inputs] or the plant's default."""
        for p in self.sc["profile"]:
            if p["input"] == name:
                return profile_value(p, t_s)
        if name in self.sc["inputs"]:
            return self.sc["inputs"][name]
        return self.plant.INPUTS[name][0]

    def write_raw(self, data):
        self.session.ser.write(data)

    def silence(self, duration_s):
        time.sleep(duration_s)
        self._wall0 += duration_s  # real time resumes where it stopped

    # -- preparing the board -----------------------------------------------------------------
    def _prepare(self, session, check_board):
        sc = self.sc
        where = "scenario %s" % sc["name"]
        ident = session.hello()
        name = _text(ident.board)
        if check_board and name != self.ctx.board_name:
            raise RigError(
                "%s is for board %r, but the board on %s is %r; run it against a %s board, or "
                "choose a scenario for %s (thermopilot hil list)"
                % (where, self.ctx.board_name, session.port, name, self.ctx.board_name, name)
            )
        loops = session.loops()
        if [lp["name"] for lp in loops] != self.ctx.loop_names:
            raise RigError(
                "%s: board %s has loops %s, the scenario's board definition %s"
                % (
                    where,
                    name,
                    ", ".join(lp["name"] for lp in loops),
                    ", ".join(self.ctx.loop_names),
                )
            )
        for lp, info in zip(loops, self.ctx.loops, strict=True):
            info["fields"] = tuple(f for f, _q in lp["fields"])
            info["field_quantities"] = dict(lp["fields"])
            if lp["quantity"] != "none":
                info["quantity"] = lp["quantity"]
        for c in self.criteria:
            sigs = c.cfg.get("signals") or [c.cfg.get("signal")]
            for s in sigs:
                if isinstance(s, str) and s.startswith("loop."):
                    loop, _, value = s[5:].rpartition(".")
                    info = self.ctx.loop(loop)
                    valid = list(signals.LOOP_VALUES) + list(info["fields"])
                    if value not in valid:
                        raise RigError(
                            "%s [[criteria]][%d]: signal %s: loop %s reports %s"
                            % (where, c.index, s, loop, ", ".join(valid))
                        )
        params = {p["name"]: p for p in session.params()}
        snapshot = {n: p["value"] for n, p in params.items()}
        for k, v in sc["params"].items():
            if k not in params:
                raise RigError(
                    "%s [params]: board %s has no parameter %r; its parameters: %s "
                    "(thermopilot param list)" % (where, name, k, ", ".join(params))
                )
            p = params[k]
            if not p["min"] <= v <= p["max"]:
                raise RigError(
                    "%s [params]: %s = %g out of range; the board allows %g..%g %s"
                    % (where, k, v, p["min"], p["max"], p["unit"])
                )
        # every setpoint against its parameter's range on this board (commanding them to see
        # would move a real board's live setpoint before the run)
        for k, sp in enumerate(sc["setpoints"]):
            info = self.ctx.loop(sp["loop"])
            p = params.get("%s.%s" % (sp["loop"], signals.setpoint_suffix(info["controller"])))
            if p is not None and not p["min"] <= sp["value"] <= p["max"]:
                raise RigError(
                    "%s [[setpoints]][%d]: loop %s accepts setpoints %g..%g %s, not %g"
                    % (where, k, sp["loop"], p["min"], p["max"], p["unit"], sp["value"])
                )
        try:
            self._apply_params(session, params, snapshot, where)
        except KeyboardInterrupt:
            self._restore(session, snapshot)
            raise
        return ident, loops, snapshot

    def _apply_params(self, session, params, snapshot, where):
        sc = self.sc
        session.request("PARAM_DEFAULTS", flags=0)
        for k, v in sc["params"].items():
            try:
                session.param_set(k, v)
            except Nack as exc:
                self._restore(session, snapshot)
                raise RigError(
                    "%s [params]: %s = %g: %s" % (where, k, v, exc.describe(_index_names(params)))
                ) from None

    @staticmethod
    def _restore(session, snapshot):
        """Set every parameter back to ``snapshot``; returns the names that could not be."""
        try:
            now = {p["name"]: p["value"] for p in session.params()}
        except LinkError:
            return sorted(snapshot)
        todo = [n for n, v in snapshot.items() if n in now and now[n] != v]
        # rules between parameters (out_min < out_max) may refuse one order: retry the rest
        for _ in range(4):
            left = []
            for n in todo:
                try:
                    session.param_set(n, snapshot[n])
                except Nack:
                    left.append(n)
                except LinkError:
                    return todo
            if not left or len(left) == len(todo):
                return left
            todo = left
        return todo

    # -- the run ---------------------------------------------------------------------------
    def run(
        self,
        session,
        realtime=False,
        progress=None,
        restore_params=True,
        check_board=True,
        rows_csv=None,
        vm_cpu=None,
    ):
        """Run the scenario on the board behind ``session``; returns a RigResult.

        ``realtime``: False runs in lockstep as fast as the board answers; True paces the
        steps by the wall clock (a real board); a number paces them at that many simulated
        seconds per wall second. ``rows_csv``: write rows.csv there while the run goes (the
        report then only closes it). ``vm_cpu``: a function returning the board's CPU seconds
        so far (a virtual board's VM), for ``result.timing``."""
        self.session = session
        ident, loops, snapshot = self._prepare(session, check_board)
        tick_hz = ident.tick_hz
        dt_s = 1.0 / tick_hz
        self.max_gap_ticks = max(2, int(ident.max_jump_ms / 1000.0 / dt_s))
        session.telemetry.clear()
        session.events.clear()
        t_wall = time.monotonic()
        rows = None
        timing = {}
        try:
            session.command("hil_start")
            session.fault_reset()
            session.stream_rate("TELEMETRY", tick_hz)
            rows = self._columns(loops, dt_s)
            if rows_csv is not None:
                rows.stream_csv(rows_csv)
            cpu0 = time.process_time()
            vm0 = vm_cpu() if vm_cpu else 0.0
            t0 = time.monotonic()
            self._steps(session, rows, loops, dt_s, realtime, progress)
            timing = {
                "steps": len(rows),
                "steps_wall_s": time.monotonic() - t0,
                "host_cpu_s": time.process_time() - cpu0,
            }
            if vm_cpu:
                timing["vm_cpu_s"] = vm_cpu() - vm0
        except Exception:
            if rows is not None:
                rows.close()  # no result: no partial rows.csv either
            raise
        finally:
            try:
                session.command("hil_stop")
            except (LinkError, OSError):
                pass  # the board may be gone; the run's result stands
            except KeyboardInterrupt:
                self.interrupted = True
            # the board's statistics before its parameters are restored: restoring a
            # scenario's sys.gc_idle starts them over (heap high-water, longest tick)
            try:
                b = session.heap_and_ticks()
                board_stats = {k: getattr(b, k) for k in BOARD_STATS_FIELDS}
            except (LinkError, OSError):
                board_stats = {}
            except KeyboardInterrupt:
                self.interrupted = True
                board_stats = {}
            restored = None
            if restore_params:
                try:
                    restored = self._restore(session, snapshot)
                except KeyboardInterrupt:
                    restored = sorted(snapshot)
        self._drain_events(session)
        try:
            stats = session.stats()
        except (LinkError, OSError):
            stats = {}
        rows.freeze()
        res = RigResult(self.sc, rows, self._events, stats, ident, self)
        res.timing = timing
        res.board_stats = board_stats
        res.interrupted = self.interrupted
        res.wall_s = time.monotonic() - t_wall
        res.params_restored = None if restored is None else not restored
        res.params_not_restored = restored or []
        res.loops = loops
        return res

    def _columns(self, loops, dt_s):
        outs = [k for k, v in self.plant.outputs().items() if isinstance(v, (int, float))]
        self._plant_keys = outs
        self._input_keys = list(self.plant.INPUTS)
        self._sensed = sorted(self.sensors)
        n_act = len(self.board_def.get("actuators", []))
        self._n_act = n_act
        cols = ["t_s"]
        cols += ["plant." + k for k in outs]
        cols += ["input." + k for k in self._input_keys]
        cols += ["sensed.%d" % ch for ch in self._sensed]
        cols += ["out.%d" % ch for ch in range(n_act)]
        cols.append("faults")
        self._loop_width = []
        for lp in loops:
            names = list(signals.LOOP_VALUES) + [f for f, _q in lp["fields"]]
            cols += ["loop.%s.%s" % (lp["name"], v) for v in names]
            self._loop_width.append(len(names))
        aliases = {}
        for k, a in enumerate(self.board_def.get("actuators", [])):
            if a.get("name"):
                aliases["out." + a["name"]] = "out.%d" % k
        # spilled to disk block by block: memory stays flat however long the run
        rows = Rows(cols, self.ctx, dt_s, aliases, spill=True)
        self.rows = rows
        return rows

    def _drain_events(self, session):
        q = session.events
        while q:
            self._events.append(event_dict(q.popleft()))

    def _steps(self, session, rows, loops, dt_s, realtime, progress):
        sc = self.sc
        tick_hz = 1.0 / dt_s
        n_steps = int(round(sc["duration_s"] * tick_hz))
        setpoints = list(sc["setpoints"])
        pending = sorted(self.faults, key=lambda f: f.t_s)
        active = []
        self._events = []
        outputs = [0.0] * max(self._n_act, 8)
        self._outputs = outputs
        faults_bits = 0
        loop_vals = [[math.nan] * w for w in self._loop_width]
        n_fields = [len(lp["fields"]) for lp in loops]
        plant = self.plant
        plant_outputs = plant.outputs()
        plant_keys = self._plant_keys
        input_keys = self._input_keys
        input_defaults = {k: plant.INPUTS[k][0] for k in input_keys}
        sensed = self._sensed
        board_sensors = self.board_def["sensors"]
        wired = [(ch, self.sc_sensor(ch)["output"], self.sensors[ch]) for ch in sensed]
        actuators = [(a["channel"], a["input"], a["scale"], a["offset"]) for a in sc["actuators"]]
        act_fault = {}
        link_faults = []
        input_faults = []
        ramps = []
        tq = session.telemetry
        eq = session.events
        events = self._events
        self._wall0 = time.monotonic()
        last_progress = 0.0
        n_act = self._n_act
        format_rows = rows.format_pending
        try:
            for k in range(n_steps + 1):
                t_s = k * dt_s
                while setpoints and setpoints[0]["t_s"] <= t_s + 1e-9:
                    sp = setpoints.pop(0)
                    session.command("setpoint", loop=sp["loop_index"], value=sp["value"])
                # a fault that ends now heals before the next on the same target begins
                for f in [f for f in active if f.t_end <= t_s + 1e-9]:
                    active.remove(f)
                    f.active = False
                    f.stop(self, t_s)
                    for group in (link_faults, input_faults, ramps):
                        if f in group:
                            group.remove(f)
                    if f.GROUP == "actuator":
                        act_fault.pop(f.cfg["channel"], None)
                while pending and pending[0].t_s <= t_s + 1e-9:
                    f = pending.pop(0)
                    f.start(self, t_s)
                    f.active = True
                    active.append(f)
                    rows.injections.append(
                        {
                            "index": f.index,
                            "kind": f.KIND,
                            "label": f.label(),
                            "t_s": t_s,
                            "t_end": min(f.t_end, sc["duration_s"]),
                            "group": f.GROUP,
                        }
                    )
                    if f.GROUP == "actuator":
                        act_fault[f.cfg["channel"]] = f
                    elif f.GROUP == "link" and hasattr(f, "before_frame"):
                        link_faults.append(f)
                    elif f.KIND == "plant_input":
                        input_faults.append(f)
                    elif f.KIND == "plant_change" and f.cfg["ramp_s"] > 0:
                        ramps.append(f)
                values = {}
                raw = [0.0] * N_SENSORS
                valid = 0
                for ch, out_name, sensor in wired:
                    v = sensor.read(plant_outputs[out_name], t_s)
                    values[ch] = v
                    raw[ch] = boardio.encode(board_sensors[ch], v)
                    valid |= 1 << ch
                send = True
                for f in link_faults:
                    send = f.before_frame(self) and send
                if realtime:
                    # True: real time; a number: that many simulated seconds per wall second
                    delay = self._wall0 + t_s / float(realtime) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if not send:
                    self.frames_dropped += 1
                else:
                    ans = session.request(
                        "HIL_SENSORS",
                        expect=("HIL_ACTUATORS",),
                        idle=format_rows,  # rows.csv while the board computes
                        t_ms=int(round(t_s * 1000)),
                        valid=valid,
                        values=raw,
                    )
                    outputs[:] = ans.outputs
                    faults_bits = ans.faults
                    while tq:
                        c = tq.popleft()
                        if c.loop < len(loop_vals):
                            lv = loop_vals[c.loop]
                            lv[0] = c.setpoint
                            lv[1] = c.measurement
                            lv[2] = c.output
                            lv[3] = c.mode
                            lv[4] = c.state
                            lv[5] = c.p
                            lv[6] = c.i
                            lv[7] = c.d
                            nf = n_fields[c.loop]
                            if nf:
                                lv[8 : 8 + nf] = c.fields[:nf]
                    while eq:
                        events.append(event_dict(eq.popleft()))
                inputs = dict(sc["inputs"])
                for p in sc["profile"]:
                    inputs[p["input"]] = profile_value(p, t_s)
                for f in input_faults:
                    f.override(inputs, t_s)
                for ch, name, scale, offset in actuators:
                    v = outputs[ch] * scale + offset
                    f = act_fault.get(ch)
                    if f is not None:
                        v = f.apply(v, t_s, dt_s)
                    inputs[name] = v
                self._last_inputs = inputs
                row = [t_s]
                row += [plant_outputs[key] for key in plant_keys]
                row += [inputs.get(key, input_defaults[key]) for key in input_keys]
                row += [values[ch] for ch in sensed]
                row += outputs[:n_act]
                row.append(faults_bits)
                for lv in loop_vals:
                    row += lv
                rows.append(row)
                if k == n_steps:
                    break
                if self.on_tick is not None and self.on_tick(self, t_s, loop_vals, faults_bits):
                    break
                for f in ramps:
                    f.tick(self, t_s)
                plant_outputs = plant.step(dt_s, inputs)
                if progress is not None:
                    now = time.monotonic()
                    if now - last_progress >= 0.1:
                        last_progress = now
                        progress(self, k + 1, n_steps, t_s)
        except KeyboardInterrupt:
            self.interrupted = True
        if progress is not None and not self.interrupted:
            progress(self, n_steps, n_steps, n_steps * dt_s)

    def sc_sensor(self, ch):
        return self.ctx.wired_sensors[ch]


def _index_names(params):
    return {p["index"]: n for n, p in params.items()}


def run(scenario, port=None, session=None, realtime=None, progress=None, seed=1, **kw):
    """Run ``scenario`` (a dict from scenario.load) against the board on ``port``/``session``
    and evaluate its criteria; returns a RigResult."""
    from thermopilot.protocol.link import Session

    rig = Rig(scenario, seed=seed)
    own = session is None
    if own:
        session = Session(port)
    try:
        res = rig.run(session, realtime=bool(realtime), progress=progress, **kw)
    finally:
        if own:
            session.close()
    res.evaluate()
    return res
