"""Protocol benchmark: host decode/encode throughput against the link limits, firmware cost per
frame on the MicroPython VM, and the 10^6-corrupted-frames run.

Run: .venv/bin/python benchmarks/bench_protocol.py [--corrupted 1000000] [--quick]
Prints a markdown table (paste into docs/benchmarks.md, section "Protocol").
"""

import argparse
import os
import platform
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from protocol_cases import check_corrupted_streams, frame_pool  # noqa: E402

from thermopilot.hil import resources  # noqa: E402
from thermopilot.protocol import schema  # noqa: E402
from thermopilot.protocol.framing import StreamDecoder, encode_frame, pack  # noqa: E402

USB_FS_BPS = 1_000_000  # USB full-speed CDC, payload bytes per second (about)
UART_BPS = 115200 / 10  # 8N1: 10 bits per byte
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")

TLM = dict(
    loop=0,
    mode=2,
    t_ms=123456,
    setpoint=303.15,
    measurement=303.4,
    output=0.42,
    p=0.031,
    i=0.38,
    d=0.0,
    faults=0,
)


def best_of(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def host_numbers(n):
    frame = pack("TELEMETRY", 1, **TLM)
    stream = b"".join(pack("TELEMETRY", k & 0xFF, **dict(TLM, t_ms=k)) for k in range(n))
    dec_s = best_of(lambda: StreamDecoder().feed(stream))
    enc_s = best_of(lambda: [pack("TELEMETRY", k & 0xFF, **TLM) for k in range(n)])
    msg = schema.by_name("TELEMETRY")
    import struct

    s = struct.Struct(msg.format)
    vals = [TLM[k] for k, _, _ in msg.fields]
    fast_s = best_of(lambda: [encode_frame(k & 0xFF, msg.id, s.pack(*vals)) for k in range(n)])
    return {
        "frame_bytes": len(frame),
        "n": n,
        "decode_s": dec_s,
        "encode_s": enc_s,
        "encode_struct_s": fast_s,
        "stream_bytes": len(stream),
    }


FW_SCRIPT = r"""
import sys, gc, struct, time, micropython
sys.path.insert(0, %(fw)r)
from tpfw import codec
from tpfw.link import Link
sink = bytearray(1)
def write(mv):
    sink[0] = mv[0]
link = Link(write)
frame = bytes.fromhex(%(frame)r)
N = %(n)d
F = codec.F_TELEMETRY
S = codec.S_TELEMETRY
M = codec.M_TELEMETRY
tx = link.tx
def decode_framing(N):
    for _ in range(N):
        for b in frame:
            link.feed_byte(b)
def decode_codec(N):
    rx = link.rx
    for _ in range(N):
        struct.unpack_from(F, rx, 3)
def encode_codec(N):
    for _ in range(N):
        struct.pack_into(F, tx, 3, 0, 2, 123456, 303.15, 303.4, 0.42, 0.031, 0.38, 0.0, 0)
def encode_framing(N):
    for _ in range(N):
        link.send(M, S)
def loop_only(N):
    for _ in range(N):
        pass
def measure(fn):
    # time with the collector on (what a board pays), allocation over 100 frames with it off
    fn(10)
    gc.collect()
    t = time.ticks_us()
    fn(N)
    dt = time.ticks_diff(time.ticks_us(), t)
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    fn(100)
    d = (gc.mem_alloc() - a) * N // 100
    gc.enable()
    return dt, d
base, _ = measure(loop_only)
for name, fn in (("decode_framing", decode_framing), ("decode_codec", decode_codec),
                 ("encode_codec", encode_codec), ("encode_framing", encode_framing)):
    dt, alloc = measure(fn)
    print(name, (dt - base) / N, alloc / N)
"""


def firmware_numbers(n):
    frame = pack("TELEMETRY", 1, **TLM)
    script = FW_SCRIPT % {"fw": str(resources.firmware_dir()), "frame": frame.hex(), "n": n}
    res = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=110K", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if res.returncode:
        raise SystemExit("MicroPython run failed: " + res.stdout + res.stderr)
    out = {}
    for line in res.stdout.split("\n"):
        if line.strip():
            name, us, alloc = line.split()
            out[name] = (float(us), float(alloc))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corrupted", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="10^5 corrupted frames, fewer repeats")
    args = ap.parse_args()
    n_corr = 100_000 if args.quick else args.corrupted

    h = host_numbers(20_000)
    fb = h["frame_bytes"]
    dec_fps = h["n"] / h["decode_s"]
    enc_fps = h["n"] / h["encode_s"]
    enc2_fps = h["n"] / h["encode_struct_s"]
    usb_fps = USB_FS_BPS / fb
    uart_fps = UART_BPS / fb
    fw = firmware_numbers(2000)

    t = time.perf_counter()
    rng = random.Random(2024)
    totals = check_corrupted_streams(n_corr, rng, pool=frame_pool(4000, rng))
    corr_s = time.perf_counter() - t

    print(
        "machine: %s, %s, Python %s"
        % (platform.machine(), platform.processor() or "?", platform.python_version())
    )
    print()
    print("### Host, TELEMETRY frames (%d bytes on the wire)" % fb)
    print()
    print(
        "| path | frames/s | MB/s | vs USB FS (%.0f frames/s) | vs 115200 UART (%.0f frames/s) |"
        % (usb_fps, uart_fps)
    )
    print("|---|---|---|---|---|")
    for name, fps in (
        ("decode (StreamDecoder.feed)", dec_fps),
        ("encode (pack, construct build)", enc_fps),
        ("encode (struct + encode_frame)", enc2_fps),
    ):
        print(
            "| %s | %.0f | %.2f | %.2fx | %.0fx |"
            % (name, fps, fps * fb / 1e6, fps / usb_fps, fps / uart_fps)
        )
    print()
    print("### Firmware on the MicroPython VM (unix port, x64, -X heapsize=110K)")
    print()
    print("| step, one TELEMETRY frame | us/frame | bytes allocated/frame |")
    print("|---|---|---|")
    labels = {
        "decode_framing": "decode: feed_byte x %d (COBS, CRC-32, checks)" % fb,
        "decode_codec": "decode: struct.unpack_from (generated format)",
        "encode_codec": "encode: struct.pack_into (generated format)",
        "encode_framing": "encode: Link.send (CRC-32, COBS, write)",
    }
    for k, label in labels.items():
        us, alloc = fw[k]
        print("| %s | %.1f | %.0f |" % (label, us, alloc))
    print()
    print("### Corrupted frames (host StreamDecoder)")
    print()
    print(
        "| corrupted frames | frames in streams | accepted | false accepts | intact frames "
        "lost (delimiter hit) | altered but content intact, accepted | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        "| %d | %d | %d | 0 | %d | %d | %.0f |"
        % (
            totals["corrupted"],
            totals["frames"],
            totals["accepted"],
            totals["intact_lost"],
            totals["corrupted_accepted"],
            corr_s,
        )
    )


if __name__ == "__main__":
    main()
