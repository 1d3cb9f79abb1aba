# Board side of the ThermoPilot framing: COBS + 0x00 delimiter around
# seq | msg_id | len | payload | crc32 (see protocol/framing.py, the host side).
# Buffers are made once; COBS and CRC-32 run in viper over them, so a frame costs no heap.
import micropython
from micropython import const

from . import codec

_HDR = const(3)
_MAX_FRAME = 3 + codec.MAX_PAYLOAD + 4
_MAX_ENC = _MAX_FRAME + 2

_crc_table = None


def _make_crc_table():
    from array import array

    t = array("I", [0] * 256)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if (c & 1) else (c >> 1)
        t[n] = c
    return t


# _crc_store and _crc_ok repeat the CRC loop on purpose: returning the 32-bit CRC from a
# shared viper function would box it as a long int on 32-bit ports (a heap allocation per
# frame); each of them consumes the CRC in registers instead.
@micropython.viper
def _crc_store(buf: ptr8, n: int, table: ptr32):
    c = int(0xFFFFFFFF)
    i = 0
    while i < n:
        c = table[(c ^ buf[i]) & 0xFF] ^ ((c >> 8) & 0x00FFFFFF)
        i += 1
    c = c ^ int(0xFFFFFFFF)
    buf[n] = c & 0xFF
    buf[n + 1] = (c >> 8) & 0xFF
    buf[n + 2] = (c >> 16) & 0xFF
    buf[n + 3] = (c >> 24) & 0xFF


@micropython.viper
def _crc_ok(buf: ptr8, n: int, table: ptr32) -> bool:
    # n counts the body without the 4 CRC bytes that follow it
    c = int(0xFFFFFFFF)
    i = 0
    while i < n:
        c = table[(c ^ buf[i]) & 0xFF] ^ ((c >> 8) & 0x00FFFFFF)
        i += 1
    c = c ^ int(0xFFFFFFFF)
    return (
        buf[n] == (c & 0xFF)
        and buf[n + 1] == ((c >> 8) & 0xFF)
        and buf[n + 2] == ((c >> 16) & 0xFF)
        and buf[n + 3] == ((c >> 24) & 0xFF)
    )


@micropython.viper
def cobs_decode(src: ptr8, n: int, dst: ptr8) -> int:
    # decode n COBS bytes of src into dst; the decoded length, or -1 if malformed
    i = 0
    o = 0
    while i < n:
        code = src[i]
        if code == 0:
            return -1
        end = i + code
        if end > n:
            return -1
        i += 1
        while i < end:
            dst[o] = src[i]
            o += 1
            i += 1
        if code != 0xFF and i < n:
            dst[o] = 0
            o += 1
    return o


@micropython.viper
def cobs_encode(src: ptr8, n: int, dst: ptr8) -> int:
    # encode n bytes of src into dst, append the 0x00 delimiter; the encoded length
    code_at = 0
    o = 1
    code = 1
    i = 0
    while i < n:
        b = src[i]
        if b == 0:
            dst[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            dst[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                dst[code_at] = code
                code_at = o
                o += 1
                code = 1
        i += 1
    dst[code_at] = code
    dst[o] = 0
    return o + 1


def crc_store(buf, n):
    """Write the CRC-32 of buf[:n] little-endian into buf[n:n+4]."""
    _crc_store(buf, n, _table())


def crc_ok(buf, n):
    """True when buf[n:n+4] holds the CRC-32 of buf[:n]."""
    return _crc_ok(buf, n, _table())


def _table():
    global _crc_table
    if _crc_table is None:
        _crc_table = _make_crc_table()
    return _crc_table


class Link:
    """Frames in and out over a pair of byte streams, with link-health counters."""

    def __init__(self, write):
        self._table = _table()
        self._write = write
        self.rx_enc = bytearray(_MAX_ENC)
        self.rx_n = 0
        self.rx_overflowing = False
        self.rx = bytearray(_MAX_FRAME)
        self.rx_mv = memoryview(self.rx)
        self.tx = bytearray(_MAX_FRAME)
        self.tx_enc = bytearray(_MAX_ENC + 2)
        mv = memoryview(self.tx_enc)
        # one view per possible frame length, made now so that sending allocates nothing
        self.tx_views = [mv[:i] for i in range(_MAX_ENC + 2)]
        self.tx_seq = 0
        self.tx_n = 0
        self.last_rx_seq = -1
        # counters: ok, bad_crc, bad_cobs, bad_len, dropped, overflow, duplicate, tx
        self.rx_ok = 0
        self.rx_bad_crc = 0
        self.rx_bad_cobs = 0
        self.rx_bad_len = 0
        self.rx_dropped = 0
        self.rx_overflow = 0
        self.rx_duplicate = 0
        self.tx_frames = 0

    def feed_byte(self, b):
        """Take one received byte. Returns the payload length of a good frame (the frame is
        then in self.rx: seq, msg_id, len, payload) or -1 when no frame is complete."""
        if b != 0:
            if self.rx_n < _MAX_ENC:
                self.rx_enc[self.rx_n] = b
                self.rx_n += 1
            else:
                self.rx_overflowing = True
            return -1
        n = self.rx_n
        self.rx_n = 0
        if self.rx_overflowing:
            self.rx_overflowing = False
            self.rx_overflow += 1
            return -1
        if n == 0:
            return -1
        m = cobs_decode(self.rx_enc, n, self.rx)
        if m < 0:
            self.rx_bad_cobs += 1
            return -1
        if m < _HDR + 4:
            self.rx_bad_len += 1
            return -1
        if not _crc_ok(self.rx, m - 4, self._table):
            self.rx_bad_crc += 1
            return -1
        rx = self.rx
        length = rx[2]
        msg_id = rx[1]
        if (
            length != m - _HDR - 4
            or msg_id >= len(codec.SIZE_BY_ID)
            or codec.SIZE_BY_ID[msg_id] != length
        ):
            self.rx_bad_len += 1
            return -1
        self.rx_ok += 1
        seq = rx[0]
        if self.last_rx_seq >= 0 and seq != self.last_rx_seq:
            # a repeated seq is a retry, not a gap
            self.rx_dropped += (seq - self.last_rx_seq - 1) & 0xFF
        self.last_rx_seq = seq
        return length

    def send(self, msg_id, size):
        """Send the payload already packed at self.tx[3:3+size] as message msg_id."""
        tx = self.tx
        tx[0] = self.tx_seq
        tx[1] = msg_id
        tx[2] = size
        self.tx_seq = (self.tx_seq + 1) & 0xFF
        _crc_store(tx, _HDR + size, self._table)
        n = cobs_encode(tx, _HDR + size + 4, self.tx_enc)
        self.tx_n = n
        self._write(self.tx_views[n])
        self.tx_frames += 1
