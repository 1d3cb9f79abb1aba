"""Campaigns: a base scenario x parameter sweeps x a fault matrix, each case on its own board.

A campaign file (TOML) has groups; each group takes a base scenario and makes cases::

    name = "faults_ci"
    description = "..."
    seed = 1

    [[group]]
    name = "battery"
    base = "battery_hold"              # bundled scenario, or a path relative to this file
    base_criteria = "replace"          # or "keep" (default): the base's criteria stay
    set = { duration_s = 300, "params.cool.inef_s" = 60.0 }   # every case of the group
    trim_setpoints = true              # drop base setpoints at or after a shorter duration_s

    [[group.sweep]]                    # axes: a grid over values (or min/max with steps),
    path = "params.cool.kp"            # or, with group.samples = N, N seeded random draws
    values = [0.2, 0.3, 0.4]

    [[group.faults]]                   # the fault matrix: one case per row (and per sweep
    kind = "sensor_open"               # point); a list value expands the row (t_s = [60, 120])
    t_s = [60, 120]
    expect = "sensor_open"             # board fault(s) that must latch within within_s:
    within_s = 0.2                     # adds latch_latency and actuator_safe_at_end
                                       # (expect = "none": adds no_fault instead)
    safe = { derate = 0.3 }            # optional: the controller's safe values for this fault
    [[group.criteria]]                 # added to every case of the group

Paths: ``duration_s``, ``params.<board parameter>``, ``plant.params.<name>``,
``inputs.<name>``, ``<table>.<index>.<key>`` for sensors, actuators, setpoints, faults,
criteria and profile. Every case is checked (scenario.check) before any board starts.

Running: each case on a fresh virtual board in its own worker process (:class:`LocalPool`,
as many workers as cores by default) or on a Dask ``distributed`` cluster (``--cluster``). A
case's VM runs in its own process group and dies with the process that started it (the kernel
kills it when that process dies, even by SIGKILL: hil.vboard), and the local pool also kills the
process group of every VM a dead worker had started; a case whose worker died is run once more,
then reported as an error.
"""

import copy
import csv
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import random
import re
import shutil
import signal
import tempfile
import time
import traceback

import tomllib

from . import resources, scenario
from .tables import REQUIRED, Key, ScenarioError, choice_message, read_table

CAMPAIGN_KEYS = {
    "name": Key(str, REQUIRED, "[A-Za-z0-9_-]+; results go to report/NAME/"),
    "description": Key(str, "", "one line"),
    "seed": Key(int, 1, "seed of random sweeps and of each case's noise"),
    "group": Key(list, REQUIRED, "[[group]] tables"),
}
GROUP_KEYS = {
    "name": Key(str, REQUIRED, "group name"),
    "base": Key(str, REQUIRED, "bundled scenario name or path relative to the campaign file"),
    "base_criteria": Key(
        str, "keep", "keep or replace the base's criteria", choices=("keep", "replace")
    ),
    "set": Key(dict, {}, "path -> value applied to every case"),
    "trim_setpoints": Key(
        bool, False, "drop the base's [[setpoints]] at or after a shortened duration_s"
    ),
    "sweep": Key(list, [], "[[group.sweep]] axes"),
    "samples": Key(int, 0, "random sweep: number of draws (0: grid)", lo=0, hi=100000),
    "faults": Key(list, [], "[[group.faults]] rows of the fault matrix"),
    "criteria": Key(list, [], "[[group.criteria]] added to every case"),
}
SWEEP_KEYS = {
    "path": Key(str, REQUIRED, "what to vary"),
    "values": Key(list, None, "values (grid: each; random: one at a time)"),
    "min": Key(float, None, "low end"),
    "max": Key(float, None, "high end"),
    "steps": Key(int, None, "grid: this many values from min to max", lo=2, hi=10000),
}
EXPECT_KEYS = {
    "expect": Key((str, list), None, "board fault(s) that must latch, or 'none'"),
    "within_s": Key(float, None, "stated latency + margin, simulated s", lo=0.0),
    "label": Key(str, None, "name of this row in the results"),
    "safe": Key(
        dict,
        None,
        "actuator -> value or [min, max] at the end where the controller's safe sequence for "
        "this fault is not the board's safe values (actuator_safe_at_end safe)",
    ),
}
TABLES = ("sensors", "actuators", "setpoints", "faults", "criteria", "profile")


class CampaignError(ScenarioError):
    """A campaign file that cannot run; raised before any board starts."""


# -- expansion -------------------------------------------------------------------------------


def set_path(raw, path, value, where):
    """Set ``path`` (see the module doc) in a scenario dict from TOML."""
    if path == "duration_s" or path in ("name", "board", "description"):
        raw[path] = value
        return
    head, _, rest = path.partition(".")
    if head == "params" and rest:
        raw.setdefault("params", {})[rest] = value
        return
    if head == "inputs" and rest:
        raw.setdefault("inputs", {})[rest] = value
        return
    if head == "plant" and rest.startswith("params.") and len(rest) > 7:
        raw.setdefault("plant", {}).setdefault("params", {})[rest[7:]] = value
        return
    if head in TABLES:
        idx, _, key = rest.partition(".")
        if idx.isdigit() and key:
            table = raw.get(head, [])
            if int(idx) >= len(table):
                raise CampaignError(
                    "%s: path %r: the base has %d [[%s]] entries" % (where, path, len(table), head)
                )
            table[int(idx)][key] = value
            return
    raise CampaignError(
        "%s: path %r; expected duration_s, params.<name>, plant.params.<name>, inputs.<name> or "
        "<table>.<index>.<key> (tables: %s)" % (where, path, ", ".join(TABLES))
    )


def _sweep_points(group, where, rng):
    axes = []
    for k, ax in enumerate(group["sweep"]):
        w = "%s [[group.sweep]][%d]" % (where, k)
        a = read_table(ax, SWEEP_KEYS, w)
        if a["values"] is None and (a["min"] is None or a["max"] is None):
            raise CampaignError("%s: give values, or min and max" % w)
        if a["values"] is not None and not a["values"]:
            raise CampaignError("%s: values is empty" % w)
        axes.append(a)
    if not axes:
        return [{}]
    if group["samples"]:
        pts = []
        for _ in range(group["samples"]):
            p = {}
            for a in axes:
                if a["values"] is not None:
                    p[a["path"]] = rng.choice(a["values"])
                else:
                    p[a["path"]] = rng.uniform(a["min"], a["max"])
            pts.append(p)
        return pts
    lists = []
    for a in axes:
        if a["values"] is not None:
            lists.append(a["values"])
        elif a["steps"] is None:
            raise CampaignError(
                "%s [[group.sweep]] %s: a grid over min..max needs steps (or give samples = N "
                "in the group for random draws)" % (where, a["path"])
            )
        else:
            n = a["steps"]
            lists.append([a["min"] + (a["max"] - a["min"]) * i / (n - 1) for i in range(n)])
    return [
        dict(zip([a["path"] for a in axes], combo, strict=True))
        for combo in itertools.product(*lists)
    ]


def _fault_rows(group, where):
    rows = []
    for k, row in enumerate(group["faults"]):
        w = "%s [[group.faults]][%d]" % (where, k)
        if not isinstance(row, dict):
            raise CampaignError("%s: expected a table" % w)
        expect = {key: row[key] for key in EXPECT_KEYS if key in row}
        exp = read_table(expect, EXPECT_KEYS, w)
        fault = {key: v for key, v in row.items() if key not in EXPECT_KEYS}
        if exp["expect"] not in (None, "none") and exp["within_s"] is None:
            raise CampaignError("%s: expect needs within_s (the stated latency)" % w)
        lists = {key: v for key, v in fault.items() if isinstance(v, list)}
        keys = list(lists)
        for combo in itertools.product(*[lists[key] for key in keys]) if keys else [()]:
            f = dict(fault, **dict(zip(keys, combo, strict=True)))
            rows.append((f, exp, w))
    return rows or [(None, None, where)]


def _base(ref, base_dir, where):
    p = pathlib.Path(ref)
    cands = []
    if base_dir is not None:
        cands.append(pathlib.Path(base_dir) / p)
    cands.append(p)
    cands.append(resources.scenarios_dir() / (ref if ref.endswith(".toml") else ref + ".toml"))
    for c in cands:
        if c.is_file():
            try:
                return tomllib.loads(c.read_text()), c.parent
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise CampaignError(
                    "%s: base %s is not valid TOML: %s" % (where, c, exc)
                ) from None
    raise CampaignError(
        choice_message(where, "base", ref, [n for n, _p, _d in scenario.bundled()])
        + " (or a path relative to the campaign file)"
    )


def _slug(x):
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", str(x)).strip("-")
    return s[:40] or "x"


def campaigns_dir():
    """The bundled campaigns (hil/campaigns): faults_ci and the bases it uses."""
    import importlib.util

    spec = importlib.util.find_spec("thermopilot.campaigns")
    if spec is not None and spec.submodule_search_locations:
        return pathlib.Path(list(spec.submodule_search_locations)[0])
    return pathlib.Path(__file__).parent / "campaigns"


def load(path):
    """Read, expand and check a campaign file (or a bundled campaign's name); returns
    (campaign dict, list of cases)."""
    path = pathlib.Path(path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        bundled = campaigns_dir() / (path.name + ".toml")
        if bundled.is_file():
            path = bundled
    if not path.is_file():
        raise CampaignError("campaign file %s does not exist" % path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignError("%s is not valid TOML: %s" % (path, exc)) from None
    return expand(raw, str(path), path.parent)


def expand(raw, where="campaign", base_dir=None):
    """Expand a campaign dict into cases, each checked as a scenario."""
    try:
        return _expand(raw, where, base_dir)
    except CampaignError:
        raise
    except ScenarioError as exc:
        raise CampaignError(str(exc)) from None


def _expand(raw, where, base_dir):
    top = read_table(raw, CAMPAIGN_KEYS, where)
    if not scenario.NAME_RE.match(top["name"]):
        raise CampaignError(
            "%s: name = %r; expected letters, digits, '_' or '-'" % (where, top["name"])
        )
    rng = random.Random(top["seed"])
    cases = []
    names = set()
    for gi, g in enumerate(top["group"]):
        w = "%s [[group]][%d]" % (where, gi)
        group = read_table(g, GROUP_KEYS, w)
        if not scenario.NAME_RE.match(group["name"]) or group["name"] in names:
            raise CampaignError("%s: name = %r must be a unique safe name" % (w, group["name"]))
        names.add(group["name"])
        base, base_path = _base(group["base"], base_dir, w)
        points = _sweep_points(group, w, rng)
        frows = _fault_rows(group, w)
        for point in points:
            for fault, exp, _w in frows:
                case = copy.deepcopy(base)
                for p, v in group["set"].items():
                    set_path(case, p, v, w + " set")
                for p, v in point.items():
                    set_path(case, p, v, w + " sweep")
                if group["trim_setpoints"] and isinstance(case.get("duration_s"), (int, float)):
                    case["setpoints"] = [
                        sp
                        for sp in case.get("setpoints", [])
                        if sp.get("t_s", 0) < case["duration_s"]
                    ]
                if group["base_criteria"] == "replace":
                    case["criteria"] = []
                case.setdefault("faults", [])
                case.setdefault("criteria", [])
                label = "none"
                if fault is not None:
                    index = len(case["faults"])
                    case["faults"].append(fault)
                    label = exp["label"] or _fault_label(fault)
                    if exp["expect"] == "none":
                        case["criteria"].append({"kind": "no_fault"})
                    elif exp["expect"] is not None:
                        t_f = fault.get("t_s", 0.0)
                        if isinstance(t_f, (int, float)) and t_f > 1.0:
                            # nothing may latch before the fault (no false alarm); the latch of
                            # a fault seen in the frame just before t_s is the latency's (up to
                            # 0.5 s before on a 2 Hz board: no_fault's window includes its end)
                            case["criteria"].append(
                                {"kind": "no_fault", "before_s": float(t_f) - 0.501}
                            )
                        case["criteria"].append(
                            {
                                "kind": "latch_latency",
                                "fault": exp["expect"],
                                "after_fault": index,
                                "max_s": exp["within_s"],
                            }
                        )
                        safe = {"kind": "actuator_safe_at_end"}
                        if exp["safe"]:
                            safe["safe"] = copy.deepcopy(exp["safe"])
                        case["criteria"].append(safe)
                case["criteria"] += copy.deepcopy(group["criteria"])
                cid = "%s-%03d" % (
                    group["name"],
                    len([c for c in cases if c["group"] == group["name"]]),
                )
                case["name"] = cid
                cw = "%s case %s (%s%s)" % (
                    where,
                    cid,
                    label,
                    "".join(", %s=%s" % (k, v) for k, v in point.items()),
                )
                try:
                    scenario.check(case, cw, base_dir=base_path)
                except ScenarioError as exc:
                    raise CampaignError(str(exc)) from None
                cases.append(
                    {
                        "id": cid,
                        "group": group["name"],
                        "base": group["base"],
                        "fault": label,
                        "fault_kind": fault["kind"] if fault else "none",
                        "expect": _expect_text(exp),
                        "within_s": exp["within_s"] if exp else None,
                        "sweep": point,
                        "raw": case,
                        "base_dir": str(base_path),
                        "seed": top["seed"] + len(cases),
                    }
                )
    if not cases:
        raise CampaignError("%s: no cases" % where)
    return {"name": top["name"], "description": top["description"], "seed": top["seed"]}, cases


def _fault_label(f):
    extra = []
    for k in ("channel", "param", "input", "value", "offset", "gain", "rate_per_s", "t_s"):
        if k in f and not (k == "channel" and f.get("kind", "").startswith(("plant", "link"))):
            extra.append("%s=%s" % (k, f[k]))
    return f.get("kind", "?") + ("(" + ",".join(extra) + ")" if extra else "")


def _expect_text(exp):
    if not exp or exp["expect"] is None:
        return ""
    e = exp["expect"]
    return "|".join(e) if isinstance(e, list) else e


# -- one case --------------------------------------------------------------------------------


def run_case(case, out_dir, plots="failed", on_vm=None, native=True, rows="failed"):
    """Run one case on a fresh virtual board; returns a small result dict (no rows).

    ``on_vm(pgid, workdir)`` is called once the case's VM runs (the local pool records it so
    that it can kill the VM's process group and remove its filesystem if this worker dies).
    """

    from . import report, rig
    from .vboard import VirtualBoard

    t0 = time.monotonic()
    out = pathlib.Path(out_dir) / case["id"]
    res = {
        "id": case["id"],
        "passed": False,
        "error": "",
        "verdicts": [],
        "report": str(out),
        "wall_s": 0.0,
        "worker_pid": os.getpid(),
    }
    try:
        sc = scenario.check(case["raw"], case["id"], base_dir=case["base_dir"])
        the_rig = rig.Rig(sc, seed=case["seed"])
        # the board's filesystem is made here and announced first, so that whoever cleans up
        # after a killed worker knows it even if the worker dies while the VM starts
        workdir = tempfile.mkdtemp(prefix="thermopilot-vboard-")
        if on_vm is not None:
            on_vm(None, workdir)
        vb = VirtualBoard(board=sc["board_path"], native=native, workdir=workdir)
        try:
            vb.start(deploy=False, run=False)
            if on_vm is not None:
                on_vm(vb.proc.pid, workdir)
            vb.deploy()
            vb.run_app()
            with vb.session() as s:
                result = the_rig.run(s, restore_params=False)
        finally:
            vb.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        result.evaluate()
        res["passed"] = result.passed
        res["verdicts"] = [
            {k: v.get(k) for k in ("label", "criterion", "passed", "value", "unit", "detail")}
            | ({"latched": v["latched"]} if "latched" in v else {})
            for v in result.verdicts
        ]
        res["energy_j"] = {k.split(".", 1)[1]: v for k, v in result.energy_j().items()}
        failed = not result.passed
        report.write(
            result,
            out,
            plot=plots == "all" or (plots == "failed" and failed),
            rows=rows == "all" or (rows == "failed" and failed),
        )
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop a campaign
        res["error"] = "%s: %s" % (type(exc).__name__, exc)
        res["traceback"] = traceback.format_exc(limit=6)
    res["wall_s"] = round(time.monotonic() - t0, 3)
    return res


# -- local parallel pool ---------------------------------------------------------------------


def _worker_main(conn, out_dir, plots, native):
    # the parent handles Ctrl-C; a worker is told to stop or is terminated
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_vm(pgid, workdir=None):
        conn.send(("vm", (pgid, workdir)))

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        res = run_case(msg, out_dir, plots, on_vm=on_vm, native=native, rows=plots)
        conn.send(("done", res))


class _Worker:
    def __init__(self, ctx, out_dir, plots, native):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main, args=(child, out_dir, plots, native), daemon=True
        )
        self.proc.start()
        child.close()
        self.case = None
        self.vms = []


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class LocalPool:
    """``workers`` processes, each running one case at a time on its own virtual board."""

    def __init__(self, workers, out_dir, plots="failed", native=True, retries=1):
        self.n = max(1, workers)
        self.out_dir = str(out_dir)
        self.plots = plots
        self.native = native
        self.retries = retries
        self.ctx = multiprocessing.get_context("spawn")
        self.workers = []

    def run(self, cases, on_result):
        """Run ``cases``; ``on_result(result)`` is called as each finishes."""
        from multiprocessing.connection import wait

        todo = list(cases)
        tries = {c["id"]: 0 for c in cases}
        self.workers = [self._new() for _ in range(min(self.n, len(todo)))]
        try:
            while todo or any(w.case is not None for w in self.workers):
                for w in self.workers:
                    if w.case is None and todo:
                        w.case = todo.pop(0)
                        w.vms = []
                        tries[w.case["id"]] += 1
                        w.conn.send(w.case)
                busy = [w for w in self.workers if w.case is not None]
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
                for w in list(busy):
                    if w.conn in ready:
                        try:
                            kind, payload = w.conn.recv()
                        except (EOFError, OSError):
                            kind, payload = None, None
                        if kind == "vm":
                            w.vms.append(payload)
                            continue
                        if kind == "done":
                            w.case = None
                            w.vms = []
                            on_result(payload)
                            continue
                    if w.proc.sentinel in ready or not w.proc.is_alive():
                        self._replace(w, todo, tries, on_result)
        finally:
            self.close()

    def _new(self):
        return _Worker(self.ctx, self.out_dir, self.plots, self.native)

    def _replace(self, w, todo, tries, on_result):
        w.proc.join(timeout=1)
        for pgid, workdir in w.vms:
            if pgid:
                _kill_group(pgid)  # the kernel killed them already (PDEATHSIG); be sure
            if workdir:  # the dead worker could not remove its board's filesystem
                shutil.rmtree(workdir, ignore_errors=True)
        case = w.case
        code = w.proc.exitcode
        if case is not None:
            if tries[case["id"]] <= self.retries:
                todo.insert(0, case)
            else:
                on_result(
                    {
                        "id": case["id"],
                        "passed": False,
                        "error": "its worker died twice (exit code %s)" % code,
                        "verdicts": [],
                        "report": "",
                        "wall_s": 0.0,
                    }
                )
        self.workers[self.workers.index(w)] = self._new()

    def close(self):
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.monotonic() + 5
        for w in self.workers:
            w.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.terminate()
                w.proc.join(timeout=3)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            for pgid, workdir in w.vms:
                if pgid:
                    _kill_group(pgid)
                if workdir:
                    shutil.rmtree(workdir, ignore_errors=True)
        self.workers = []


# -- Dask ------------------------------------------------------------------------------------


def _dask_case(case, out_dir, plots, native):
    return run_case(case, out_dir, plots, native=native, rows=plots)


def run_cluster(address, cases, out_dir, on_result, plots="failed", native=True, retries=1):
    """Run ``cases`` on the Dask ``distributed`` cluster at ``address``."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise CampaignError(
            "--cluster needs Dask distributed: pip install 'thermopilot[cluster]'"
        ) from None
    try:
        client = Client(address, timeout="10s")
    except OSError as exc:
        raise CampaignError("cannot reach the Dask scheduler at %s: %s" % (address, exc)) from None
    try:
        futures = [
            client.submit(
                _dask_case,
                c,
                str(out_dir),
                plots,
                native,
                key="%s-%s" % (c["id"], os.getpid()),
                pure=False,
                retries=retries,
            )
            for c in cases
        ]
        ids = {f.key: c["id"] for f, c in zip(futures, cases, strict=True)}
        for f in as_completed(futures):
            try:
                on_result(f.result())
            except Exception as exc:  # noqa: BLE001 - a lost worker beyond its retries
                on_result(
                    {
                        "id": ids[f.key],
                        "passed": False,
                        "error": "%s: %s" % (type(exc).__name__, exc),
                        "verdicts": [],
                        "report": "",
                        "wall_s": 0.0,
                    }
                )
    finally:
        client.close()


# -- results ---------------------------------------------------------------------------------


def table_rows(campaign, cases, results):
    """One flat dict per case for the results table."""
    by_id = {r["id"]: r for r in results}
    paths = []
    for c in cases:
        for p in c["sweep"]:
            if p not in paths:
                paths.append(p)
    out = []
    for c in cases:
        r = by_id.get(c["id"], {"passed": False, "error": "not run", "verdicts": [], "report": ""})
        lat = next((v for v in r["verdicts"] if v["criterion"] == "latch_latency"), None)
        safe = next((v for v in r["verdicts"] if v["criterion"] == "actuator_safe_at_end"), None)
        row = {
            "case": c["id"],
            "group": c["group"],
            "base": c["base"],
            "fault": c["fault"],
            "fault_kind": c["fault_kind"],
            "expect": c["expect"],
            "within_s": c["within_s"],
            "latched": lat.get("latched", "") if lat else "",
            "latency_s": lat["value"] if lat else None,
            "safe_at_end": safe["passed"] if safe else None,
            "passed": bool(r["passed"]),
            "failed_criteria": ";".join(v["label"] for v in r["verdicts"] if not v["passed"]),
            "error": r.get("error", ""),
            "wall_s": r.get("wall_s"),
            "report": r.get("report", ""),
        }
        for p in paths:
            row["sweep:" + p] = c["sweep"].get(p)
        out.append(row)
    return out


def write_table(rows, path):
    path = pathlib.Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise CampaignError(
                "Parquet needs pyarrow: pip install 'thermopilot[parquet]', or use a .csv table"
            ) from None
        cols = list(rows[0]) if rows else []
        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in cols}), str(path))
        return path
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def summary_plot(rows, path, title):
    """Pass/fail counts per group and fault kind, and each latency against its bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = []
    for r in rows:
        k = (r["group"], r["fault_kind"])
        if k not in keys:
            keys.append(k)
    passed = [
        sum(1 for r in rows if (r["group"], r["fault_kind"]) == k and r["passed"]) for k in keys
    ]
    failed = [
        sum(1 for r in rows if (r["group"], r["fault_kind"]) == k and not r["passed"])
        for k in keys
    ]
    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(11, 4 + 0.18 * len(keys)), gridspec_kw={"height_ratios": [2, 1.2]}
    )
    y = range(len(keys))
    ax1.barh(y, passed, color="tab:green", label="passed")
    ax1.barh(y, failed, left=passed, color="tab:red", label="failed")
    ax1.set_yticks(list(y))
    ax1.set_yticklabels(["%s: %s" % k for k in keys], fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("cases")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3, axis="x")
    lat = [(i, r) for i, r in enumerate(rows) if r["latency_s"] is not None and r["within_s"]]
    if lat:
        ax2.scatter(
            [i for i, _r in lat],
            [r["latency_s"] / r["within_s"] for _i, r in lat],
            c=["tab:green" if r["passed"] else "tab:red" for _i, r in lat],
            s=12,
        )
        ax2.axhline(1.0, color="k", ls="--", lw=1, label="stated latency")
        ax2.set_yscale("symlog", linthresh=0.01)
        ax2.set_ylim(-0.002, 2.0)
        ax2.legend(fontsize=8)
    ax2.set_xlabel("case")
    ax2.set_ylabel("latency / stated")
    ax2.grid(alpha=0.3)
    n_pass = sum(passed)
    fig.suptitle("%s: %d of %d cases passed" % (title, n_pass, len(rows)))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def default_workers():
    return max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
    )


def dumps(x):
    return json.dumps(
        x, default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o)
    )


def markdown(rows):
    """The results as a Markdown table, one line per group and fault row (start times and
    sweep points folded: passed count, latency range, the bound)."""
    lines = [
        "| group | fault | expected | latched | latency (s) | bound (s) | safe at end | passed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = []
    for r in rows:
        label = re.sub(r",?t_s=[0-9.]+", "", r["fault"]).replace("()", "")
        k = (r["group"], label, r["expect"], r["within_s"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        rs = [
            r
            for r in rows
            if (r["group"], re.sub(r",?t_s=[0-9.]+", "", r["fault"]).replace("()", "")) == k[:2]
            and r["expect"] == k[2]
        ]
        lat = [r["latency_s"] for r in rs if r["latency_s"] not in (None, "")]
        lat = [float(x) for x in lat]
        latched = sorted({r["latched"] for r in rs if r["latched"]})
        safe = [r["safe_at_end"] for r in rs if r["safe_at_end"] not in (None, "")]
        lines.append(
            "| %s | %s | %s | %s | %s | %s | %s | %d/%d |"
            % (
                k[0],
                k[1].replace("|", "/"),
                (k[2] or "").replace("|", " or "),
                ", ".join(latched) or "-",
                ("%.1f" % min(lat) if min(lat) == max(lat) else "%.1f-%.1f" % (min(lat), max(lat)))
                if lat
                else "-",
                "%g" % float(k[3]) if k[3] not in (None, "") else "-",
                ("yes" if all(str(x) == "True" for x in safe) else "NO") if safe else "-",
                sum(1 for r in rs if str(r["passed"]) == "True"),
                len(rs),
            )
        )
    return "\n".join(lines) + "\n"
