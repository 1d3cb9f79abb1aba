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


# -- the corrupted-stream check shared by the test and the benchmark -------------------------

#: messages that carry a u32 the check uses as a unique id, with that field's name
UID_FIELDS = {
    "TELEMETRY": "t_ms",
    "HIL_SENSORS": "t_ms",
    "HIL_ACTUATORS": "t_ms",
    "EVENT": "t_ms",
    "LINK_STATS": "rx_ok",
    "UPLOAD_CHUNK": "offset",
}


def frame_pool(n, rng):
    """n frames (random messages and field values, no NaN) whose uid field is their index;
    returns (frames, originals) with originals[i] = (seq, Message, fields dict)."""
    from thermopilot.protocol.framing import encode_frame

    names = sorted(UID_FIELDS)
    frames = []
    originals = []
    for i in range(n):
        msg = schema.by_name(rng.choice(names))
        while True:
            raw = bytes(rng.randrange(256) if rng.random() < 0.8 else 0 for _ in range(msg.size))
            c = msg.parse(raw)
            c[UID_FIELDS[msg.name]] = i
            payload = struct.pack(msg.format, *flat(msg, c))
            c = msg.parse(payload)
            if all(v == v for v in flat(msg, c) if isinstance(v, float)):
                break
        seq = rng.randrange(256)
        session = rng.randrange(256)
        frames.append(encode_frame(seq, msg.id, payload, session))
        originals.append((session, seq, msg, c))
    return frames, originals


def check_corrupted_streams(n_corrupted, rng, stream_len=1000, rate=0.5, pool=None):
    """Feed streams of valid frames with corruptions (each frame hit with probability
    ``rate``) to a StreamDecoder in random-sized chunks until ``n_corrupted`` frames were hit.

    Fails (AssertionError) if the decoder raises, accepts a frame that differs from the one
    sent, accepts a frame twice, or misses an intact frame that follows a delimiter.
    Returns a dict of counts.
    """
    from thermopilot.protocol.framing import StreamDecoder

    frames, originals = pool or frame_pool(stream_len * 2, rng)
    totals = dict(
        frames=0, corrupted=0, accepted=0, must_accept=0, corrupted_accepted=0, intact_lost=0
    )
    while totals["corrupted"] < n_corrupted:
        start = rng.randrange(len(frames) - stream_len + 1)
        idx = range(start, start + stream_len)
        stream, hit, must = corrupt_stream([frames[i] for i in idx], rate, rng)
        dec = StreamDecoder()
        got = []
        pos = 0
        while pos < len(stream):
            step = rng.choice((1, 7, 64, 512, 4096, 65536))
            got += dec.feed(stream[pos : pos + step])
            pos += step
        seen = set()
        for session, seq, msg, c in got:
            uid = c[UID_FIELDS[msg.name]] if msg.name in UID_FIELDS else None
            assert uid in idx and uid not in seen, "accepted a frame that was never sent"
            assert (session, seq, msg, c) == originals[uid], "accepted a corrupted frame"
            seen.add(uid)
            if hit[uid - start]:
                totals["corrupted_accepted"] += 1  # e.g. an inserted 0x00 before a whole frame
        for k, i in enumerate(idx):
            if must[k]:
                assert i in seen, "no resynchronisation at frame %d after a corruption" % k
            elif not hit[k] and i not in seen:
                totals["intact_lost"] += 1  # merged with the corrupted frame before it
        totals["frames"] += stream_len
        totals["corrupted"] += sum(hit)
        totals["accepted"] += len(got)
        totals["must_accept"] += sum(must)
        assert sum(dec.stats.values()) - dec.stats["dropped"] >= len(got)
    return totals
