"""Whole-process HIL benchmark: one-hour scenarios of every plant, this tree against a baseline.

Runs ``thermopilot hil run`` as a separate process (imports, board start, deploy, run,
report: everything a user waits for) on a copy of each plant's bundled scenario stretched to
``--duration`` seconds, and on the same copy at 600 s to see whether memory grows with
simulated time. With ``--baseline REF`` the same runs are made with the tree of git revision
REF, interleaved with this tree's (baseline, this, baseline, this...), so both see the same
machine load. Reported per run: wall time, x real time, CPU of the whole process tree per
step, peak RSS (the largest process of the tree: the host), and for this tree the
breakdown the run writes into summary.json (board start, steps, host and VM CPU per step,
report). Then ``thermopilot --help`` and an argument error (best of 10), and the board's tick
jitter and heap high-water with garbage collected between ticks and inside them.

Run: .venv/bin/python benchmarks/bench_hil.py [--baseline REF] [--duration 3600]
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable
SCENARIOS = ("battery_hold", "heatpump_superheat", "chip_gpu_trace")
#: the import package of a source tree: thermopilot.X is folder Y (pyproject.toml)
PACKAGE_DIRS = {
    "protocol": "protocol",
    "host": "host",
    "hil": "hil",
    "firmware": "firmware",
    "boards": "boards",
    "scenarios": "hil/scenarios",
    "campaigns": "hil/campaigns",
}


def extract_tree(ref, dest):
    """Write git revision ``ref`` to dest/src and a ``thermopilot`` package over it into
    dest/pkg (put dest/pkg first on PYTHONPATH); the compiled C core is copied from here."""
    src = pathlib.Path(dest) / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref],
        capture_output=True,
        check=True,
    ).stdout
    tar_path = pathlib.Path(dest) / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tf:
        tf.extractall(src, filter="data")
    for so in (ROOT / "host").glob("_tpcore*.so"):
        (src / "host" / so.name).write_bytes(so.read_bytes())
    return tree_package(src, pathlib.Path(dest) / "pkg")


def tree_package(src, dest):
    """A ``thermopilot`` package in dest whose parts are the folders of source tree src;
    both versions run through one of these, started the same way."""
    pkg = pathlib.Path(dest) / "thermopilot"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name, folder in PACKAGE_DIRS.items():
        (pkg / name).symlink_to(pathlib.Path(src) / folder)
    return str(dest)


def scenario_copy(name, duration_s, dest):
    """The bundled scenario ``name`` with duration_s changed (profiles hold their last
    value beyond their end), written to dest; returns its path."""
    text = (ROOT / "hil" / "scenarios" / (name + ".toml")).read_text()
    tag = "%dm" % (duration_s // 60)
    text, n = re.subn(r"(?m)^duration_s = [0-9.]+", "duration_s = %g" % duration_s, text, count=1)
    assert n == 1, name
    text = re.sub(r'(?m)^name = "%s"' % name, 'name = "%s_%s"' % (name, tag), text, count=1)
    path = pathlib.Path(dest) / ("%s_%s.toml" % (name, tag))
    path.write_text(text)
    return path, "%s_%s" % (name, tag)


def cli_cmd(pkg_path):
    """The command that runs ``thermopilot`` from the package at pkg_path."""
    env = dict(os.environ, PYTHONPATH=pkg_path)
    code = "import sys; from thermopilot.host.cli import main; sys.exit(main())"
    return [PY, "-c", code], env


def run_process(cmd, env, cwd):
    """Run cmd; (exit code, wall s, CPU s of the process and its children, peak RSS MB)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = proc.stdout.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, out


def hil_runs(versions, duration_s, tmp, repeats):
    results = []
    for name in SCENARIOS:
        for dur in (600, duration_s):
            path, sc_name = scenario_copy(name, dur, tmp)
            for rep in range(repeats):
                for label, pkg in versions:
                    cmd, env = cli_cmd(pkg)
                    report_dir = pathlib.Path(tmp) / ("report_" + label.split()[0])
                    load = os.getloadavg()[0]
                    code, wall, cpu, rss, out = run_process(
                        cmd + ["hil", "run", str(path), "--report-dir", str(report_dir)],
                        env,
                        tmp,
                    )
                    if code not in (0, 1):
                        raise SystemExit(
                            "%s %s failed (%d): %s" % (label, sc_name, code, out.decode()[-800:])
                        )
                    summary = json.loads((report_dir / sc_name / "summary.json").read_text())
                    steps = int(round(dur * 10)) + 1
                    results.append(
                        {
                            "plant": name,
                            "duration_s": dur,
                            "version": label,
                            "repeat": rep,
                            "load": load,
                            "wall_s": wall,
                            "x_real_time": dur / wall,
                            "cpu_s": cpu,
                            "cpu_ms_per_step": 1e3 * cpu / steps,
                            "peak_rss_mb": rss,
                            "passed": summary["passed"],
                            "timing": summary.get("timing", {}),
                            "heap": summary.get("heap", {}),
                        }
                    )
                    r = results[-1]
                    print(
                        "  %-20s %5d s  %-16s wall %6.1f s (%4.0fx)  rss %5.0f MB  load %.1f"
                        % (name, dur, label, wall, r["x_real_time"], rss, load),
                        file=sys.stderr,
                        flush=True,
                    )
    return results


def cli_latency(versions, tmp, n=10):
    out = []
    for label, pkg in versions:
        cmd, env = cli_cmd(pkg)
        for what, args, want in (
            ("thermopilot --help", ["--help"], 0),
            ("thermopilot hil run (argument missing)", ["hil", "run"], 2),
        ):
            best = 1e9
            for _ in range(n):
                code, wall, _cpu, _rss, _out = run_process(cmd + args, env, tmp)
                assert code == want, (what, code)
                best = min(best, wall)
            out.append((what, label, best))
    return out


JITTER = r"""
import gc, sys, time
from array import array
sys.path.append("lib")
from tpfw import app, board as boardmod
b = boardmod.load("board.json")
del sys.modules["tpfw.board"]
del boardmod
gc.collect()

class Sink:
    def write(self, b, n=0):
        return n or len(b)

a = app.App(b, None, Sink())
print("C core", app.core.NATIVE)
a.hal.valid = 1
a.hal.raw[0] = 0.45
N = 3000  # durations kept in 6 KB of the heap
for m, mode in enumerate((1.0, 0.0)):
    a.params.values[a.i_gc] = mode
    a.gc_setup()
    a.hil_start()
    g0 = a.gc_idle
    us = array("H", bytes(2 * N))
    base = m * (N + 100)
    a.next_tick_ms = base * 100
    for k in range(100):
        a.run_due((base + k) * 100)
        a.idle_gc()
    a.heap_watch_reset()
    for k in range(N):
        t0 = time.ticks_us()
        a.run_due((base + 100 + k) * 100)
        us[k] = min(65535, time.ticks_diff(time.ticks_us(), t0))
        a.stream()
        a.idle_gc()
    a.idle_gc()
    peak, total, collections = a.heap_peak, a.heap_total, a.gc_idle - g0
    gc.collect()
    print("MODE %d peak %d total %d collections %d intick %d" % (int(mode), peak, total, collections, a.gc_in_tick))
    for i in range(0, N, 50):
        print("US", " ".join(str(x) for x in us[i : i + 50]))
"""


def tick_jitter(board="virtual", heap="160K"):
    """Tick durations on the VM (the application's tick, telemetry and the collector policy,
    no link), with the files a deploy copies (.mpy, C core): p50/p99/p99.9/max with
    collection between ticks (1) and inside them (0)."""
    import shutil

    from thermopilot.hil import resources, vboard

    with tempfile.TemporaryDirectory() as tmp:
        for local, remote in vboard._image(resources.board_path(board), True):
            dst = pathlib.Path(tmp) / remote
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dst)
        module = pathlib.Path(tmp) / resources.NATIVE_REMOTE
        if module.exists():
            (module.parent / "tpcore.sha256").write_text(resources.native_stamp(module))
        path = pathlib.Path(tmp) / "jitter.py"
        path.write_text(JITTER)
        mp = pathlib.Path(PY).parent / "micropython"
        res = subprocess.run(
            [str(mp), "-X", "heapsize=" + heap, str(path)],
            capture_output=True,
            text=True,
            cwd=tmp,
            timeout=300,
        )
    out = {}
    us = None
    for line in res.stdout.splitlines():
        if line.startswith("MODE"):
            f = line.split()
            vals = dict(zip(f[2::2], (int(x) for x in f[3::2]), strict=True))
            out[int(f[1])] = vals
            us = vals["us"] = []
        elif line.startswith("US") and us is not None:
            us += [int(x) for x in line.split()[1:]]
    for vals in out.values():
        s = sorted(vals.pop("us"))
        n = len(s)
        if not n:
            continue
        vals.update(
            p50=s[n // 2],
            p99=s[n * 99 // 100],
            p999=s[n * 999 // 1000],
            max=s[-1],
            over100=sum(1 for x in s if x > 100),
            over300=sum(1 for x in s if x > 300),
        )
    if len(out) != 2 or any("p50" not in v for v in out.values()):
        raise SystemExit("tick jitter run failed: " + res.stdout + res.stderr)
    return out


def fmt_table(results, versions):
    lines = [
        "| plant | simulated | version | wall (s) | x real time | CPU, all processes (s) | "
        "x real time by CPU | peak RSS (MB) | board start (s) | steps (s) | host CPU/step "
        "(ms) | VM CPU/step (ms) | report (s) | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t = r["timing"]

        def g(key, scale=1.0, fmt="%.2f", t=t):
            return fmt % (t[key] * scale) if key in t else "-"

        lines.append(
            "| %s | %d min | %s | %.1f | %.0fx | %.1f | %.0fx | %.0f | %s | %s | %s | %s | %s "
            "| %.1f |"
            % (
                r["plant"],
                r["duration_s"] // 60,
                r["version"],
                r["wall_s"],
                r["x_real_time"],
                r["cpu_s"],
                r["duration_s"] / r["cpu_s"],
                r["peak_rss_mb"],
                g("start_s", fmt="%.1f"),
                g("steps_wall_s", fmt="%.1f"),
                g("host_cpu_ms_per_step"),
                g("vm_cpu_ms_per_step"),
                "%.2f" % (t["report_rows_s"] + t["report_plot_s"])
                if "report_plot_s" in t
                else "-",
                r["load"],
            )
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="git revision to run side by side (e.g. b910325)")
    ap.add_argument("--duration", type=float, default=3600.0, help="simulated s (3600)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each case per version")
    ap.add_argument("--skip-runs", action="store_true", help="only --help and jitter")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="thermopilot-bench-hil-")
    versions = []
    if args.baseline:
        versions.append(("baseline %s" % args.baseline, extract_tree(args.baseline, tmp.name)))
    versions.append(("this tree", tree_package(ROOT, pathlib.Path(tmp.name) / "this")))
    print("## HIL as whole processes", flush=True)
    print()
    print(
        "`benchmarks/bench_hil.py%s`, %s, %d CPUs, load average at the start %.1f; "
        "versions interleaved.\n"
        % (
            " --baseline %s" % args.baseline if args.baseline else "",
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            os.cpu_count(),
            os.getloadavg()[0],
        )
    )
    if not args.skip_runs:
        results = hil_runs(versions, int(args.duration), tmp.name, args.repeats)
        print(fmt_table(results, versions))
        print()
        print("Board heap during the runs (this tree; BOARD_STATS after the run):\n")
        print("| plant | simulated | heap total (B) | highest use (B) | lowest free (B) |"
              " collections between ticks |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|")
        for r in results:
            h = r["heap"]
            if h and r["version"] == "this tree":
                print(
                    "| %s | %d min | %d | %d | %d | %d |"
                    % (
                        r["plant"],
                        r["duration_s"] // 60,
                        h["total_b"],
                        h["peak_used_b"],
                        h["min_free_b"],
                        h["gc_between_ticks"],
                    )
                )
        (pathlib.Path(tmp.name) / "results.json").write_text(json.dumps(results))
        print()
    print("## Command line latency (best of 10, whole process)\n")
    print("| command | version | wall (s) |")
    print("|---|---|---:|")
    for what, label, best in cli_latency(versions, tmp.name):
        print("| %s | %s | %.3f |" % (what, label, best))
    print()
    print("## Tick jitter on the VM (3000 ticks, 160K heap, virtual board, deployed files)\n")
    jit = tick_jitter()
    print("| garbage collection | p50 (us) | p99 (us) | p99.9 (us) | max (us) | ticks > 100 us |"
          " ticks > 300 us | collections between ticks | heap highest use (B) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, label in ((1, "between ticks (sys.gc_idle = 1)"), (0, "when needed (gc_idle = 0)")):
        j = jit[mode]
        print(
            "| %s | %d | %d | %d | %d | %d | %d | %d | %d of %d |"
            % (
                label,
                j["p50"],
                j["p99"],
                j["p999"],
                j["max"],
                j["over100"],
                j["over300"],
                j["collections"],
                j["peak"],
                j["total"],
            )
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
