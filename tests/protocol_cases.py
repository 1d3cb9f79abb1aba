"""Shared hypothesis strategies for protocol tests: field values for any schema message."""

import struct

from hypothesis import strategies as st
from thermopilot.protocol import schema

_INTS = {
    "u8": st.integers(0, 0xFF),
    "i8": st.integers(-0x80, 0x7F),
    "u16": st.integers(0, 0xFFFF),
    "u32": st.integers(0, 0xFFFFFFFF),
    "i32": st.integers(-0x80000000, 0x7FFFFFFF),
}
# every finite float32, infinities and subnormals included; NaN is tested on its own because
# its payload bits need not survive a float32 -> double -> float32 trip
F32 = st.floats(width=32, allow_nan=False)


def _value(htype):
    if htype in _INTS:
        return _INTS[htype]
    if htype == "f32":
        return F32
    base, n = htype[:-1].split("[")
    n = int(n)
    if base == "char":
        return st.binary(min_size=n, max_size=n)
    return st.lists(_value(base), min_size=n, max_size=n)


def fields_of(msg):
    """Strategy for a dict of field values of ``msg``."""
    return st.fixed_dictionaries({name: _value(htype) for name, _, htype in msg.fields})


@st.composite
def message_cases(draw, messages=None):
    """(Message, fields dict) for any message of the schema (or of ``messages``)."""
    msg = draw(st.sampled_from(messages or schema.MESSAGES))
    return msg, draw(fields_of(msg))


def flat(msg, fields):
    """The field values in wire order, arrays flattened, as struct.pack wants them."""
    out = []
    for name, _, _ in msg.fields:
        v = fields[name]
        out.extend(v if isinstance(v, list) else [v])
    return out


def struct_payload(msg, fields):
    return struct.pack(msg.format, *flat(msg, fields))


# -- corruption of a byte stream -------------------------------------------------------------

CORRUPTIONS = ("bit_flip", "drop", "insert", "burst")


def corrupt(frame, kind, rng):
    """``frame`` (bytes, delimiter included) with one corruption of ``kind`` applied.

    bit_flip: one bit of one byte; drop: one byte removed; insert: one random byte added;
    burst: 2..16 consecutive bytes replaced by random ones (a noise burst on the line).
    """
    b = bytearray(frame)
    n = len(b)
    if kind == "bit_flip":
        b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "drop":
        del b[rng.randrange(n)]
    elif kind == "insert":
        b.insert(rng.randrange(n + 1), rng.randrange(256))
    else:
        k = rng.randint(2, 16)
        at = rng.randrange(max(1, n - k + 1))
        b[at : at + k] = bytes(rng.randrange(256) for _ in range(k))
    return bytes(b)


def corrupt_stream(frames, rate, rng):
    """Join ``frames``, corrupting each with probability ``rate``.

    Returns (stream, hit, must_accept): hit[i] says frame i was altered; must_accept[i] says
    frame i is intact and preceded by a delimiter (or the stream start), so a decoder that
    resynchronises at the next delimiter must accept it.
    """
    parts = []
    hit = []
    must = []
    prev_ends_clean = True
    for f in frames:
        if rng.random() < rate:
            g = corrupt(f, rng.choice(CORRUPTIONS), rng)
        else:
            g = f
        altered = g != f
        hit.append(altered)
        must.append(not altered and prev_ends_clean)
        prev_ends_clean = g.endswith(b"\x00")
        parts.append(g)
    return b"".join(parts), hit, must
