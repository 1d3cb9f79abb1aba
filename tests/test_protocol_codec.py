"""The schema, its generated firmware codec, host framing round trips and the schema hash."""

import pathlib
import re
import struct
import sys
import types
import zlib

import pytest
from construct import Float32l, Int8ul, Int16ul, Int32ul, Struct
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_cases import fields_of, message_cases, struct_payload

from thermopilot.protocol import codegen, schema
from thermopilot.protocol.framing import (
    MAX_ENCODED,
    FrameError,
    StreamDecoder,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
    pack,
)


def _firmware_codec():
    """Import the generated firmware codec in CPython (with a stand-in for micropython)."""
    stub = types.ModuleType("micropython")
    stub.const = lambda x: x
    ns = {}
    saved = sys.modules.get("micropython")
    sys.modules["micropython"] = stub
    try:
        exec(compile(codegen.TARGET.read_text(), str(codegen.TARGET), "exec"), ns)
    finally:
        if saved is None:
            del sys.modules["micropython"]
        else:
            sys.modules["micropython"] = saved
    return ns


def test_generated_codec_is_up_to_date():
    assert codegen.main(["--check"]) == 0, "run python -m thermopilot.protocol.codegen"
    assert codegen.TARGET.read_text() == codegen.generate()


def test_codegen_check_fails_on_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "codec.py"
    stale.write_text(codegen.generate().replace("S_TELEMETRY = const(", "S_TELEMETRY = const(1+"))
    assert codegen.main(["--check", "--out", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert codegen.main(["--check", "--out", str(tmp_path / "missing.py")]) == 1


def test_generated_file_says_generated():
    head = codegen.TARGET.read_text().splitlines()[:2]
    assert "do not edit" in head[0] and "protocol/codegen.py" in head[0]


def test_firmware_codec_matches_schema():
    fw = _firmware_codec()
    assert (fw["SCHEMA_HASH_HI"] << 16) | fw["SCHEMA_HASH_LO"] == schema.SCHEMA_HASH
    assert fw["PROTOCOL_VERSION"] == schema.PROTOCOL_VERSION
    assert fw["MAX_PAYLOAD"] == schema.MAX_PAYLOAD
    for m in schema.MESSAGES:
        assert fw["M_" + m.name] == m.id
        assert fw["F_" + m.name] == m.format
        assert fw["S_" + m.name] == m.size == struct.calcsize(m.format)
        assert fw["SIZE_BY_ID"][m.id] == m.size
    known = {m.id for m in schema.MESSAGES}
    assert all(fw["SIZE_BY_ID"][i] == 0 for i in range(128) if i not in known)
    for table, prefix in (
        (schema.ERRORS, "ERR"),
        (schema.FAULTS, "FAULT"),
        (schema.COMMANDS, "CMD"),
        (schema.MODES, "MODE"),
    ):
        for k, v in table.items():
            assert fw["%s_%s" % (prefix, k.upper())] == v


def test_schema_hash_covers_names_types_and_version(monkeypatch):
    text = schema.schema_text()
    assert schema.SCHEMA_HASH == zlib.crc32(("v%d\n" % schema.PROTOCOL_VERSION + text).encode())
    assert "16 TELEMETRY u8 loop u8 mode u8 state u32 t_ms f32 setpoint" in text
    assert "f32[16] values" in text and "char[16] name" in text
    # the enumerations are in it too: a renumbered fault is a different schema
    assert "enum FAULT " in text and "host_lost=4" in text
    monkeypatch.setitem(schema.FAULTS, "host_lost", 30)
    assert schema.schema_text() != text
    monkeypatch.setitem(schema.FAULTS, "host_lost", 4)
    # renaming a field or changing its type changes the text the hash is taken over
    m = schema.by_name("EVENT")
    variants = [
        Struct(
            "code" / Int16ul,
            "loop" / Int8ul,
            "latch" / Int8ul,
            "t_ms" / Int32ul,
            "value" / Float32l,
        ),
        Struct(
            "code" / Int16ul,
            "loop" / Int8ul,
            "latched" / Int8ul,
            "t_ms" / Int32ul,
            "value" / Int32ul,
        ),
    ]
    seen = {text}
    original = list(schema.MESSAGES)
    for v in variants:
        other = [
            schema.Message(m.id, m.name, m.direction, v, m.doc) if x is m else x for x in original
        ]
        monkeypatch.setattr(schema, "MESSAGES", other)
        seen.add(schema.schema_text())
    assert len(seen) == 3


def test_message_table_is_consistent():
    ids = [m.id for m in schema.MESSAGES]
    assert len(set(ids)) == len(ids) and all(0 < i < 128 for i in ids)
    for m in schema.MESSAGES:
        assert m.direction in ("host", "board")
        # every answer names the request it answers
        if m.name in (
            "IDENTITY",
            "PARAM_INFO",
            "PARAM_VALUE",
            "HIL_ACTUATORS",
            "LINK_STATS",
            "ACK",
            "NACK",
        ):
            assert m.fields[0][0] == "req_seq"
    assert schema.MAX_PAYLOAD == max(m.size for m in schema.MESSAGES)
    with pytest.raises(KeyError, match="TELEMETRY"):
        schema.by_name("TELEMETRI")
    assert schema.by_id(0x7D) is None


@given(message_cases())
def test_construct_and_struct_agree(case):
    msg, fields = case
    payload = msg.struct.build(fields)
    assert payload == struct_payload(msg, fields)
    assert len(payload) == msg.size
    parsed = msg.struct.parse(payload)
    assert msg.parse(payload) == parsed
    for name, _, _ in msg.fields:
        assert parsed[name] == fields[name]


@given(message_cases())
def test_fast_build_is_constructs_build(case):
    # Message.build packs with the precomputed struct; construct's build is the reference
    msg, fields = case
    assert msg.build(fields) == msg.struct.build(fields)


def test_fast_build_refuses_what_construct_refuses():
    msg = schema.by_name("HIL_SENSORS")
    good = {"t_ms": 0, "valid": 1, "values": [0.0] * 16}
    for bad in (
        {"t_ms": -1},
        {"valid": 0x10000},
        {"values": [0.0] * 15},
        {"values": [1e39] + [0.0] * 15},
        {"values": ["x"] + [0.0] * 15},
    ):
        with pytest.raises(ValueError, match="HIL_SENSORS"):
            msg.build(dict(good, **bad))
        with pytest.raises(Exception):  # noqa: B017 - construct's own error types
            msg.struct.build(dict(good, **bad))
    with pytest.raises(ValueError, match="valid is missing"):
        msg.build({"t_ms": 0, "values": [0.0] * 16})


@given(message_cases(), st.integers(0, 255), st.integers(0, 255))
def test_frame_round_trip(case, seq, session):
    msg, fields = case
    frame = pack(msg.name, seq, session=session, **fields)
    assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]
    assert len(frame) - 1 <= MAX_ENCODED
    got = decode_frame(frame[:-1])
    assert got == (session, seq, msg, msg.struct.build(fields))
    dec = StreamDecoder()
    (out,) = dec.feed(frame)
    assert out[0] == session and out[1] == seq and out[2] is msg
    assert all(out[3][name] == fields[name] for name, _, _ in msg.fields)


@given(st.binary(max_size=1200))
def test_cobs_round_trip(data):
    enc = cobs_encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= len(data) + 1 + len(data) // 254
    assert cobs_decode(enc) == data


def test_cobs_known_vectors():
    # vectors from the COBS paper / Wikipedia
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    # a run of 254 non-zero bytes: the canonical encoding decodes; ours adds a harmless empty
    # block at the end (one byte, within the 1 + n/254 overhead bound)
    run = bytes(range(1, 255))
    assert cobs_decode(b"\xff" + run) == run
    assert cobs_decode(b"\xff" + run + b"\x02\xff") == run + b"\xff"
    assert cobs_encode(run) in (b"\xff" + run, b"\xff" + run + b"\x01")


def test_frame_layout():
    body = bytes([5, 7, 0x7E, 3, 9, 0x7E, 0])
    frame = encode_frame(7, 0x7E, bytes([9, 0x7E, 0]), session=5)
    raw = cobs_decode(frame[:-1])
    assert raw[:-4] == body
    assert raw[-4:] == struct.pack("<I", zlib.crc32(body))


def test_pack_refuses_bad_values():
    with pytest.raises(ValueError, match="TELEMETRY"):
        pack("TELEMETRY", 0, loop=300)
    with pytest.raises(KeyError, match="known"):
        pack("TELEMETRI", 0)


@settings(max_examples=30)
@given(fields_of(schema.by_name("PARAM_SET")))
def test_param_set_name_field_packs(fields):
    # PARAM_GET/SET carry a field called "name": it must not clash with pack's arguments
    frame = pack("PARAM_SET", 1, **fields)
    assert decode_frame(frame[:-1])[3] == schema.by_name("PARAM_SET").struct.build(fields)


def test_nan_survives_as_nan():
    frame = pack(
        "TELEMETRY",
        1,
        loop=0,
        mode=0,
        state=0,
        t_ms=0,
        setpoint=float("nan"),
        measurement=0,
        output=0,
        p=0,
        i=0,
        d=0,
        faults=0,
        fields=[0.0] * 8,
    )
    (out,) = StreamDecoder().feed(frame)
    assert out[3].setpoint != out[3].setpoint


def test_frame_error_kinds():
    good = pack("ACK", 1, req_seq=1, req_msg=2, code=0)[:-1]
    raw = bytearray(cobs_decode(good))
    cases = {
        "bad_cobs": b"\x05\x01",
        "bad_len": cobs_encode(b"\x01\x02"),
        "bad_crc": cobs_encode(bytes(raw[:-1]) + bytes([raw[-1] ^ 1])),
    }
    body = bytes([0, 1, 0x7D, 0])
    cases["unknown"] = cobs_encode(body + struct.pack("<I", zlib.crc32(body)))
    body = bytes([0, 1, 0x7E, 2, 1, 2])  # ACK with a 2-byte payload, length field agrees
    cases["bad_len "] = cobs_encode(body + struct.pack("<I", zlib.crc32(body)))
    for kind, block in cases.items():
        with pytest.raises(FrameError) as err:
            decode_frame(block)
        assert err.value.kind == kind.strip()
    assert re.search("expected 3", str(err.value))


def test_protocol_doc_matches_the_schema():
    """docs/protocol.md names the current schema hash and lists every message with its size,
    fields, and every error code."""
    doc = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert "schema hash `0x%08x`" % schema.SCHEMA_HASH in doc
    for m in schema.MESSAGES:
        fields = ", ".join("%s:%s" % (n, t) for n, _, t in m.fields)
        row = "| 0x%02X | %s | %s | %d | %s |" % (m.id, m.name, m.direction, m.size, fields)
        assert row in doc, "docs/protocol.md lacks or misstates " + m.name
    for name, code in schema.ERRORS.items():
        assert "| %d | %s |" % (code, name) in doc
