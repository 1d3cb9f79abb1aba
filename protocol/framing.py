"""Framing: COBS with a 0x00 delimiter around ``session | seq | msg_id | len | payload | crc32``.

The session byte names the host program a frame belongs to (chosen at HELLO; 0 marks the
board's broadcasts: telemetry, events, log text). The CRC-32 (zlib's, little-endian on the
wire) covers the header and the payload. A receiver
that meets any corruption drops bytes up to the next 0x00 and resynchronises there, so one bad
byte costs at most the frame it hit. The same layout is implemented on the board by
``firmware/tpfw/link.py``.
"""

import struct
import zlib

from construct import ConstructError

from .schema import HEADER_SIZE, MAX_PAYLOAD, by_id, by_name

HEADER = struct.Struct("<BBBB")
assert HEADER.size == HEADER_SIZE
CRC = struct.Struct("<I")
#: largest unencoded frame: header, payload, CRC
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC.size
#: largest COBS-encoded frame without its delimiter
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1


class FrameError(ValueError):
    """A frame that cannot be accepted; ``kind`` is one of bad_cobs, bad_crc, bad_len,
    unknown, overflow."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def cobs_encode(data):
    """COBS-encode ``data`` (bytes); the result holds no 0x00 byte. Each run between zeros
    becomes a code byte and the run (split at 254 bytes), copied as a slice, not byte by
    byte: the HIL rig encodes a frame per tick."""
    out = bytearray()
    for run in bytes(data).split(b"\x00"):
        while len(run) >= 254:
            out.append(0xFF)
            out += run[:254]
            run = run[254:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (without the delimiter); FrameError('bad_cobs') if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError("bad_cobs", "COBS block holds a zero byte at %d" % i)
        end = i + code
        if end > n:
            raise FrameError("bad_cobs", "COBS code %d at %d runs past the block end" % (code, i))
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(seq, msg_id, payload, session=0):
    """One complete frame on the wire: COBS(header + payload + CRC-32) + b'\\x00'."""
    body = HEADER.pack(session & 0xFF, seq & 0xFF, msg_id, len(payload)) + payload
    return cobs_encode(body + CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)) + b"\x00"


def decode_frame(block):
    """Check one COBS block (delimiter removed); return (session, seq, message, payload).

    Raises FrameError on a bad COBS block, CRC, length or unknown message id.
    """
    raw = cobs_decode(block)
    if len(raw) < HEADER.size + CRC.size:
        raise FrameError("bad_len", "frame of %d bytes is shorter than header and CRC" % len(raw))
    body, (crc,) = raw[:-4], CRC.unpack(raw[-4:])
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise FrameError("bad_crc", "CRC mismatch")
    session, seq, msg_id, length = HEADER.unpack_from(body)
    payload = body[HEADER.size :]
    if length != len(payload):
        raise FrameError(
            "bad_len", "length field %d but %d payload bytes" % (length, len(payload))
        )
    msg = by_id(msg_id)
    if msg is None:
        raise FrameError("unknown", "unknown message id 0x%02x" % msg_id)
    if msg.size != length:
        raise FrameError(
            "bad_len", "%s payload is %d bytes, expected %d" % (msg.name, length, msg.size)
        )
    return session, seq, msg, payload


def pack(name, seq, /, session=0, **fields):
    """Encode message ``name`` with ``fields`` into a wire frame (Message.build does the
    payload)."""
    msg = by_name(name)
    try:
        payload = msg.build(fields)
    except (ConstructError, ValueError) as exc:
        raise ValueError("cannot encode %s %r: %s" % (name, fields, exc)) from None
    return encode_frame(seq, msg.id, payload, session)


class StreamDecoder:
    """Incremental decoder for a byte stream: ``feed(bytes)`` returns the good frames.

    Never raises on bad input: every rejected frame is counted in ``stats`` by kind
    (bad_cobs, bad_crc, bad_len, unknown, overflow); ``dropped`` counts sequence gaps.
    """

    def __init__(self):
        self._buf = bytearray()
        self._overflowing = False
        self._last_seq = None
        self.stats = dict.fromkeys(
            ("ok", "bad_cobs", "bad_crc", "bad_len", "unknown", "overflow", "dropped"), 0
        )

    def feed(self, data):
        """Consume ``data``; return a list of (session, seq, Message, construct Container)."""
        out = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                chunk = data[start:]
                if not self._overflowing:
                    self._buf += chunk
                    if len(self._buf) > MAX_ENCODED:
                        self._buf.clear()
                        self._overflowing = True
                        self.stats["overflow"] += 1
                return out
            if self._overflowing:
                self._overflowing = False
            else:
                self._buf += data[start:end]
                if len(self._buf) > MAX_ENCODED:
                    self.stats["overflow"] += 1
                elif self._buf:
                    frame = self._take(bytes(self._buf))
                    if frame is not None:
                        out.append(frame)
            self._buf.clear()
            start = end + 1

    def _take(self, block):
        try:
            session, seq, msg, payload = decode_frame(block)
        except FrameError as exc:
            self.stats[exc.kind] += 1
            return None
        self.stats["ok"] += 1
        if self._last_seq is not None and seq != self._last_seq:
            # a repeated seq is the board re-sending a cached answer, not a gap (as on the board)
            self.stats["dropped"] += (seq - self._last_seq - 1) & 0xFF
        self._last_seq = seq
        return session, seq, msg, msg.parse(payload)
