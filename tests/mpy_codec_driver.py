# Runs on the MicroPython VM (not CPython): the board's framing (tpfw/link.py) and generated
# codec (tpfw/codec.py) decode the host's frames and encode them again.
# Usage: micropython mpy_codec_driver.py FIRMWARE_DIR [chunks]
# ("chunks": the stream is fed with Link.feed in chunks of 1, 2, ... 67 bytes in turn, as the
# application reads its console, instead of feed_byte one byte at a time)
# Each stdin line is the hex of a byte stream; the answer line is
#   <hex of re-encoded frames or -> <ok> <bad_crc> <bad_cobs> <bad_len> <overflow> <dropped>
# after feeding the stream byte by byte to one Link (its counters carry over between lines).
# As the board application does, a frame whose id is unknown or whose length differs from the
# codec's counts as bad_len; every accepted frame is answered in its own session.
import struct
import sys
from binascii import hexlify, unhexlify

sys.path.insert(0, sys.argv[1])

from tpfw import codec  # noqa: E402
from tpfw.link import Link  # noqa: E402

FORMATS = {}
for _k in dir(codec):
    if _k.startswith("M_"):
        _name = _k[2:]
        FORMATS[getattr(codec, _k)] = (getattr(codec, "F_" + _name), getattr(codec, "S_" + _name))

out = []
link = Link(lambda mv: out.append(bytes(mv)))
CHUNKS = len(sys.argv) > 2 and sys.argv[2] == "chunks"
_size = [0]


def feed(data):
    """The payload length of every good frame in data, fed as the chosen mode feeds."""
    if not CHUNKS:
        for b in data:
            n = link.feed_byte(b)
            if n >= 0:
                yield n
        return
    at = 0
    while at < len(data):
        _size[0] = _size[0] % 67 + 1
        buf = bytearray(data[at : at + _size[0]])
        at += len(buf)
        i = 0
        while i < len(buf):
            n = link.feed(buf, i, len(buf))
            i = link.next_i
            if n >= 0:
                yield n


while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    out.clear()
    data = unhexlify(line)
    for n in feed(data):
        rx = link.rx
        msg_id = rx[2]
        if msg_id not in FORMATS or FORMATS[msg_id][1] != n:
            link.rx_ok -= 1
            link.rx_bad_len += 1
            continue
        fmt, size = FORMATS[msg_id]
        values = struct.unpack_from(fmt, rx, codec.HDR)
        struct.pack_into(fmt, link.tx, codec.HDR, *values)
        link.tx_seq = rx[1]  # echo the sequence number so the host can check it
        link.answer(msg_id, size)
    data = b"".join(out)
    print(
        hexlify(data).decode() if data else "-",
        link.rx_ok,
        link.rx_bad_crc,
        link.rx_bad_cobs,
        link.rx_bad_len,
        link.rx_overflow,
        link.rx_dropped,
    )
