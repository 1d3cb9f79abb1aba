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
jitter over ten simulated minutes in lockstep (frames through the board's link and HIL handler
on the VM) with garbage collected between ticks and when MicroPython must, with the heap
high-water and the collections between ticks and inside them.

Run: .venv/bin/python benchmarks/bench_hil.py [--baseline REF] [--duration 3600] [--no-short]
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


def hil_runs(versions, duration_s, tmp, repeats, short=True):
    results = []
    for name in SCENARIOS:
        for dur in (600, duration_s) if short else (duration_s,):
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
                        msg = "%s %s failed (%d): %s" % (
                            label,
                            sc_name,
                            code,
                            out.decode()[-800:],
                        )
                        if label.startswith("baseline"):
                            # an older tree may not read this tree's scenario (a sensor
                            # preset it does not know): no baseline row for that plant
                            print("  " + msg.strip().splitlines()[-1][:160], file=sys.stderr)
                            continue
                        raise SystemExit(msg)
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
link = a.link
hist = array("H", bytes(2 * 2048))  # tick durations, 1 us buckets; the last: 2047 us and more
buf = bytearray(256)
tick = a.tick
worst = [0]


def timed_tick(t_ms):
    t0 = time.ticks_us()
    tick(t_ms)
    us = time.ticks_diff(time.ticks_us(), t0)
    hist[us if us < 2047 else 2047] += 1
    if us > worst[0]:
        worst[0] = us


def replay(path, record):
    # what App.run does in lockstep: read what the host sent, take each frame through the
    # link (COBS, CRC, session), answer it (HIL_SENSORS: the due tick, telemetry, answer,
    # the heap look), then stream and look at the heap once per pass
    a.tick = timed_tick if record else tick
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            a.batching = True
            i = 0
            while i < n:
                size = link.feed(buf, i, n)
                i = link.next_i
                if size >= 0:
                    a.dispatch(size)
                    a.batching = False
                    a.flush()
                    a.stream()
                    a.idle_gc()
                    a.batching = True
            a.batching = False
            a.flush()
    a.tick = tick


for mode in (1.0, 0.0):
    a.params.values[a.i_gc] = mode
    a.gc_setup()
    replay("warm.bin", False)  # a minute: first-call allocations done
    a.heap_watch_reset()
    for k in range(2048):
        hist[k] = 0
    worst[0] = 0
    g0, t0 = a.gc_idle, a.gc_in_tick
    replay("run.bin", True)
    a.idle_gc()
    print("MODE %d peak %d total %d collections %d intick %d ticks %d max %d" % (
        int(mode), a.heap_peak, a.heap_total, a.gc_idle - g0, a.gc_in_tick - t0,
        sum(hist), worst[0]))
    a.hil_stop(False)
    gc.collect()
    for i in range(0, 2048, 128):
        print("H", " ".join(str(x) for x in hist[i : i + 128]))
"""


def hil_frames(board, t0_ms, n, session=1):
    """COBS frames a host sends in a lockstep run of ``n`` ticks from board time t0_ms: HELLO,
    then one HIL_SENSORS per 0.1 s tick. The first sensor reads 30 degC plus a triangle of
    +-1 K (period 60 s), the others a fixed mid-range value, so the controller works."""
    from thermopilot.hil import boardio
    from thermopilot.protocol import schema
    from thermopilot.protocol.framing import pack

    sensors = board["sensors"]
    out = [b"\x00" + pack("HELLO", 0, session=session, proto_version=schema.PROTOCOL_VERSION)]
    for k in range(n):
        t_ms = t0_ms + 100 * k
        phase = (t_ms % 60000) / 60000.0
        tri = 4 * phase - 1 if phase < 0.5 else 3 - 4 * phase
        raw = [boardio.encode(sensors[0], 303.15 + tri)] + [0.5] * (len(sensors) - 1)
        raw += [0.0] * (16 - len(raw))
        out.append(
            pack(
                "HIL_SENSORS",
                (k + 1) & 0xFF,
                session=session,
                t_ms=t_ms,
                valid=(1 << len(sensors)) - 1,
                values=raw,
            )
        )
    return b"".join(out)


def percentile(hist, q):
    """The q-quantile (0..1) of the durations counted in ``hist`` (1 us buckets)."""
    n = sum(hist)
    want = q * n
    seen = 0
    for us, c in enumerate(hist):
        seen += c
        if seen >= want:
            return us
    return len(hist) - 1


def tick_jitter(board="virtual", heap="160K", ticks=6000):
    """Tick durations on the VM in a lockstep run of ``ticks`` 0.1 s ticks (6000: ten
    simulated minutes) through the board's HIL request handler and link, with the files a
    deploy copies (.mpy, C core): p50/p99/p99.9/max, collections between ticks and ticks
    inside which one ran, with collection between ticks (1) and when MicroPython must (0)."""
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
        b = resources.load_board(board)
        (pathlib.Path(tmp) / "warm.bin").write_bytes(hil_frames(b, 0, 600, session=1))
        (pathlib.Path(tmp) / "run.bin").write_bytes(hil_frames(b, 60000, ticks, session=2))
        path = pathlib.Path(tmp) / "jitter.py"
        path.write_text(JITTER)
        mp = pathlib.Path(PY).parent / "micropython"
        res = subprocess.run(
            [str(mp), "-X", "heapsize=" + heap, str(path)],
            capture_output=True,
            text=True,
            cwd=tmp,
            timeout=600,
        )
    out = {}
    hist = None
    for line in res.stdout.splitlines():
        if line.startswith("MODE"):
            f = line.split()
            vals = dict(zip(f[2::2], (int(x) for x in f[3::2]), strict=True))
            out[int(f[1])] = vals
            hist = vals["hist"] = []
        elif line.startswith("H ") and hist is not None:
            hist += [int(x) for x in line.split()[1:]]
    for vals in out.values():
        h = vals.pop("hist")
        if len(h) != 2048 or not sum(h):
            continue
        vals.update(
            p50=percentile(h, 0.5),
            p99=percentile(h, 0.99),
            p999=percentile(h, 0.999),
            over100=sum(h[101:]),
            over300=sum(h[301:]),
        )
    if len(out) != 2 or any("p50" not in v for v in out.values()):
        raise SystemExit("tick jitter run failed: " + res.stdout + res.stderr)
    return out


def _us(x):
    """A percentile from the 1 us histogram: its last bucket holds 2047 us and more."""
    return "≥ 2047" if x >= 2047 else str(x)


def print_jitter():
    """The tick jitter table (docs/benchmarks.md, "Firmware tick"), with the load average."""
    load = os.getloadavg()[0]
    print("## Tick jitter on the VM (10 simulated minutes in lockstep, 160K heap, virtual "
          "board, deployed files), load average %.1f\n" % load)  # fmt: skip
    jit = tick_jitter()
    print("| garbage collection | ticks | p50 (us) | p99 (us) | p99.9 (us) | max (us) | ticks > "
          "100 us | ticks > 300 us | collections between ticks | ticks with a collection "
          "inside | heap highest use (B) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, label in ((1, "between ticks (sys.gc_idle = 1)"), (0, "when needed (gc_idle = 0)")):
        j = jit[mode]
        print(
            "| %s | %d | %s | %s | %s | %d | %d | %d | %d | %d | %d of %d |"
            % (
                label,
                j["ticks"],
                _us(j["p50"]),
                _us(j["p99"]),
                _us(j["p999"]),
                j["max"],
                j["over100"],
                j["over300"],
                j["collections"],
                j["intick"],
                j["peak"],
                j["total"],
            )
        )


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
    ap.add_argument(
        "--no-short", action="store_true", help="only the --duration runs (no 600 s runs)"
    )
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
        results = hil_runs(
            versions, int(args.duration), tmp.name, args.repeats, short=not args.no_short
        )
        print(fmt_table(results, versions))
        print()
        print("Board heap during the runs (this tree; BOARD_STATS after the run):\n")
        print("| plant | simulated | heap total (B) | highest use (B) | lowest free (B) |"
              " collections between ticks | ticks with a collection inside |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            h = r["heap"]
            if h and r["version"] == "this tree":
                print(
                    "| %s | %d min | %d | %d | %d | %d | %d |"
                    % (
                        r["plant"],
                        r["duration_s"] // 60,
                        h["total_b"],
                        h["peak_used_b"],
                        h["min_free_b"],
                        h["gc_between_ticks"],
                        h["gc_in_tick"],
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
    print_jitter()
    tmp.cleanup()


if __name__ == "__main__":
    main()
