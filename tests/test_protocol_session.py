"""The link session against the virtual board (the real firmware on the MicroPython VM):
every request is answered, refusals carry the range, retries are idempotent, both sides count
link errors, and a board built from another schema is refused."""

import pathlib
import re
import struct
import threading
import time
import zlib

import pytest
import serial

from thermopilot.hil import resources
from thermopilot.hil.vboard import VirtualBoard
from thermopilot.protocol import schema
from thermopilot.protocol.framing import cobs_encode, pack
from thermopilot.protocol.link import Nack, SchemaMismatch, Session


class LossySerial:
    """A serial port that can lose the next frames it sends or receives, or corrupt one."""

    def __init__(self, port):
        self.ser = serial.Serial(port, 115200, timeout=0.05)
        self.drop_tx = 0
        self.drop_rx = 0
        self.corrupt_rx = 0
        self._lock = threading.Lock()

    def write(self, data):
        with self._lock:
            if self.drop_tx and data.strip(b"\x00"):
                self.drop_tx -= 1
                return len(data)
        return self.ser.write(data)

    def read(self, n=1):
        data = bytearray(self.ser.read(n))
        with self._lock:
            if self.drop_rx and data:
                end = data.find(b"\x00")
                if end >= 0:
                    self.drop_rx -= 1
                    del data[: end + 1]
                else:
                    data.clear()
            if self.corrupt_rx and len(data) > 4 and 0 not in data[:5]:
                self.corrupt_rx -= 1
                data[3] ^= 0x01 if data[3] != 1 else 0x02
        return bytes(data)

    @property
    def in_waiting(self):
        return 0 if self.drop_rx else self.ser.in_waiting

    def close(self):
        self.ser.close()


@pytest.fixture(scope="module")
def board():
    vb = VirtualBoard().start()
    yield vb
    vb.stop()


@pytest.fixture(scope="module")
def lossy(board):
    return LossySerial(board.port)


@pytest.fixture(scope="module")
def session(board, lossy):
    s = Session(board.port, timeout_s=0.2, retries=3, serial_port=lossy)
    s.hello()
    s.stream_rate("TELEMETRY", 0)  # only answers on the wire: frames can be counted exactly
    time.sleep(0.1)
    yield s
    s.close()


def test_identity(session):
    ident = session.hello()
    assert ident.schema_hash == schema.SCHEMA_HASH
    assert ident.proto_version == schema.PROTOCOL_VERSION
    assert bytes(ident.board).rstrip(b"\x00") == b"virtual"
    assert ident.n_params == len(session.params()) > 0


def _zero_fields(msg):
    out = {}
    for name, _, htype in msg.fields:
        if htype.startswith("char"):
            out[name] = bytes(int(htype[5:-1]))
        elif "[" in htype:
            out[name] = [0.0] * int(htype.split("[")[1][:-1])
        else:
            out[name] = 0
    return out


def test_every_request_gets_an_answer(board, session):
    """Each host message, with all-zero fields, and every board message sent the wrong way,
    is answered with its value, an ACK or a NACK: never silence."""
    answers = {}
    got = threading.Event()

    def on_frame(msg, c):
        if "req_seq" in c:
            answers[c.req_seq] = (msg.name, c)
            got.set()

    session.on_frame = on_frame
    try:
        for msg in schema.MESSAGES:
            if msg.name == "HIL_SENSORS":
                continue  # switches the board to lockstep; the HIL tests cover it
            seq = session.send(msg.name, **_zero_fields(msg))
            deadline = time.monotonic() + 2.0
            while seq not in answers and time.monotonic() < deadline:
                got.wait(0.05)
                got.clear()
            assert seq in answers, "no answer to %s" % msg.name
            name, c = answers[seq]
            if name in ("ACK", "NACK"):
                assert c.req_msg == msg.id
            if msg.direction == "board":
                assert name == "NACK" and c.code == schema.ERRORS["unknown_message"]
    finally:
        session.on_frame = None


def test_out_of_range_refused_with_range(session):
    before = session.param_get("cool.kp")
    with pytest.raises(Nack) as err:
        session.param_set("cool.kp", 500.0)
    assert err.value.code == "out_of_range"
    assert (err.value.value, err.value.min, err.value.max) == (500.0, 0.0, 100.0)
    assert "500 not in [0, 100]" in str(err.value)
    assert session.param_get("cool.kp") == before
    with pytest.raises(Nack, match=r"not in \[233\.15, 398\.15\]"):
        session.command("setpoint", value=1000.0)
    # manual output within the loop's own output limits (cool.out_min 0.1 .. out_max 1)
    with pytest.raises(Nack, match=r"1\.5 not in \[0\.1, 1\]"):
        session.command("manual_output", value=1.5)
    with pytest.raises(Nack) as err:
        session.param_get("no.such")
    assert err.value.code == "unknown_param"
    assert session.param_set("cool.kp", 0.25) == pytest.approx(0.25)
    assert session.param_get("cool.kp") == pytest.approx(0.25)
    session.param_set("cool.kp", before)


def test_retry_after_lost_request(session, lossy):
    retries = session.host_stats["retries"]
    dup = session.board_stats().rx_duplicate
    lossy.drop_tx = 1
    assert session.param_get("cool.ki") >= 0
    assert session.host_stats["retries"] == retries + 1
    assert session.board_stats().rx_duplicate == dup  # the board never saw the first copy


def test_repeated_request_is_idempotent(session, lossy):
    """UPLOAD_CHUNK is not idempotent by nature (a second copy is out of order). Losing its
    answer makes the host send the same frame again; the board must answer it again without
    applying the chunk twice."""
    data = bytes(range(96))
    session.request("UPLOAD_BEGIN", slot=3, total_len=len(data), crc32=zlib.crc32(data))
    dup = session.board_stats().rx_duplicate
    retries = session.host_stats["retries"]
    lossy.drop_rx = 1
    session.request("UPLOAD_CHUNK", slot=3, offset=0, n=48, data=data[:48])
    assert session.host_stats["retries"] == retries + 1
    session.request("UPLOAD_CHUNK", slot=3, offset=48, n=48, data=data[48:])
    session.request("UPLOAD_END", slot=3)  # NACKs unless each chunk was applied exactly once
    assert session.board_stats().rx_duplicate == dup + 1


def test_repeated_frame_gets_the_same_answer(board, session):
    seen = []
    session.on_frame = lambda msg, c: seen.append((msg.name, dict(c)))
    try:
        frame = pack("COMMAND", 77, loop=0, command=schema.COMMANDS["manual_output"], value=0.5)
        for _ in range(3):
            session.ser.write(b"\x00" + frame)
            time.sleep(0.15)
    finally:
        session.on_frame = None
    acks = [c for name, c in seen if name == "ACK" and c["req_seq"] == 77]
    assert len(acks) == 3 and acks[0] == acks[1] == acks[2]


def test_link_counters_on_both_sides(session, lossy):
    b0 = session.stats()
    body = bytes([1, schema.by_name("ACK").id, 3, 1, 2, 3])
    crc = struct.pack("<I", zlib.crc32(body))
    garbage = [
        cobs_encode(body + bytes([crc[0] ^ 0xFF]) + crc[1:]),  # bad CRC
        b"\x05\x01",  # COBS code runs past the block
        cobs_encode(bytes([1, 0x7E, 9]) + struct.pack("<I", zlib.crc32(bytes([1, 0x7E, 9])))),
        b"\x11" * 400,  # no delimiter for longer than any frame
    ]
    for g in garbage:
        session.ser.write(b"\x00" + g + b"\x00")
    lossy.corrupt_rx = 1
    session.param_get("cool.kd")  # its answer is corrupted on the way in, then retried
    b1 = session.stats()
    d = {k: b1[k] - b0[k] for k in b0}
    assert d["board_rx_bad_crc"] == 1
    assert d["board_rx_bad_cobs"] == 1
    assert d["board_rx_bad_len"] == 1
    assert d["board_rx_overflow"] == 1
    host_bad = d["host_bad_crc"] + d["host_bad_cobs"] + d["host_bad_len"]
    assert host_bad == 1 and d["host_retries"] == 1
    # board frames sent = host frames decoded + the one corrupted on the way
    assert d["board_tx_frames"] == d["host_ok"] + host_bad
    assert d["board_rx_ok"] == d["host_requests"] + d["host_retries"]


def test_schema_mismatch_refused(tmp_path):
    vb = VirtualBoard(workdir=str(tmp_path))
    vb.start(deploy=True, run=False)
    try:
        # a board whose firmware came from another schema: its codec differs in the hash
        lib = pathlib.Path(vb.workdir) / "lib" / "tpfw"
        (lib / "codec.mpy").unlink()
        codec = lib / "codec.py"
        text = (resources.firmware_dir() / "tpfw" / "codec.py").read_text()
        lo = schema.SCHEMA_HASH & 0xFFFF
        text, n = re.subn(
            r"SCHEMA_HASH_LO = const\(0x[0-9a-f]+\)",
            "SCHEMA_HASH_LO = const(0x%04x)" % (lo ^ 0x5A5A),
            text,
        )
        assert n == 1
        codec.write_text(text)
        vb.run_app()
        with Session(vb.port, timeout_s=0.3) as s:
            with pytest.raises(SchemaMismatch) as err:
                s.hello()
            msg = str(err.value)
            board_hash = schema.SCHEMA_HASH ^ 0x5A5A
            assert "%08x" % board_hash in msg and "%08x" % schema.SCHEMA_HASH in msg
            assert "protocol v%d" % schema.PROTOCOL_VERSION in msg
            assert "thermopilot deploy --port" in msg
            assert s.hello(check_schema=False).schema_hash == board_hash
    finally:
        vb.stop()
