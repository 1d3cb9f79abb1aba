# Board side of the ThermoPilot framing: COBS + 0x00 delimiter around
# session | seq | msg_id | len | payload | crc32 (see protocol/framing.py, the host side).
# Buffers are made once; COBS and CRC-32 run in viper over them, so a frame costs no heap.
from array import array

import micropython
from micropython import const

from . import codec

_HDR = const(4)
_MAX_FRAME = 4 + codec.MAX_PAYLOAD + 4
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
def _copy(dst: ptr8, src: ptr8, n: int):
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


copy = _copy


@micropython.viper
def copy_at(dst: ptr8, src: ptr8, off: int, n: int):
    # dst[0:n] = src[off:off + n], without a slice or a memoryview
    i = 0
    while i < n:
        dst[i] = src[off + i]
        i += 1


@micropython.viper
def copy_into(dst: ptr8, off: int, src: ptr8, n: int):
    # dst[off:off + n] = src[0:n], without a slice or a memoryview
    i = 0
    while i < n:
        dst[off + i] = src[i]
        i += 1


@micropython.viper
def get_u16(buf: ptr8, off: int) -> int:
    # little-endian u16 field of a frame
    return buf[off] | (buf[off + 1] << 8)


@micropython.viper
def get_u30(buf: ptr8, off: int) -> int:
    # little-endian u32 field of a frame, cut to 30 bits: a small int on every port
    return buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | ((buf[off + 3] & 0x3F) << 24)


@micropython.viper
def _gather(src: ptr8, i: int, n: int, dst: ptr8, st: ptr32, cap: int) -> int:
    # append the bytes of src[i:n] to dst (st[0] of them held, at most cap; more sets the
    # overflow flag st[1]) up to the first 0x00; returns its index, or n if there is none
    o = st[0]
    while i < n:
        b = src[i]
        if b == 0:
            st[0] = o
            return i
        if o < cap:
            dst[o] = b
            o += 1
        else:
            st[1] = 1
        i += 1
    st[0] = o
    return n


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


_SESSIONS = const(4)  # host programs the board keeps link state for (LRU)


class Link:
    """Frames in and out over a pair of byte streams, with link-health counters.

    Link state (last sequence number seen, the last answer kept for retries) belongs to a
    session: the header's session byte, opened by HELLO. A few sessions are kept, least
    recently used first out, so two programs sharing a board never see each other's answers
    and a new session's first sequence number never counts as a gap."""

    def __init__(self, write):
        self._table = _table()
        self._write = write
        self.rx_enc = bytearray(_MAX_ENC)
        # bytes of the frame being received, and 1 while it overflows rx_enc
        self.rx_state = array("i", [0, 0])
        self.next_i = 0  # feed(): where the caller's next byte is
        self.rx = bytearray(_MAX_FRAME)
        self.rx_mv = memoryview(self.rx)
        self.tx = bytearray(_MAX_FRAME)
        self.tx_enc = bytearray(_MAX_ENC + 2)
        self._tx_mv = memoryview(self.tx_enc)
        # a view per encoded frame length, made now so that sending allocates nothing; a frame
        # shorter than 254 bytes always grows by exactly one byte in COBS, plus the delimiter
        self.tx_views = {}
        for size in codec.SIZE_BY_ID:
            n = _HDR + size + 4 + 2
            if size and n not in self.tx_views:
                self.tx_views[n] = self._tx_mv[:n]
        self.tx_seq = 0
        self.tx_n = 0
        # per session: id (-1 free), last seq, last request key, last answer, LRU stamp
        self.s_id = array("h", [-1] * _SESSIONS)
        self.s_seq = array("h", [-1] * _SESSIONS)
        self.s_req = array("i", [-1] * _SESSIONS)
        self.s_ans = [bytearray(_MAX_ENC + 2) for _ in range(_SESSIONS)]
        self.s_ans_n = array("H", [0] * _SESSIONS)
        self.s_used = array("I", [0] * _SESSIONS)
        self._stamp = 0
        self.slot = 0  # session slot of the frame in self.rx
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
        """Take one received byte. Returns the payload length of a frame whose COBS and CRC
        are good (the frame is then in self.rx: session, seq, msg_id, len, payload, and
        self.slot is its session's slot) or -1 when no frame is complete. The caller checks
        msg_id and length against the codec and answers a mismatch with a NACK."""
        st = self.rx_state
        if b != 0:
            n = st[0]
            if n < _MAX_ENC:
                self.rx_enc[n] = b
                st[0] = n + 1
            else:
                st[1] = 1
            return -1
        n = st[0]
        st[0] = 0
        if st[1]:
            st[1] = 0
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
        length = rx[3]
        if length != m - _HDR - 4:
            self.rx_bad_len += 1
            return -1
        self.rx_ok += 1
        k = self._session(rx[0], rx[2] == codec.M_HELLO)
        self.slot = k
        seq = rx[1]
        last = self.s_seq[k]
        if last >= 0 and seq != last:
            # a repeated seq is a retry, not a gap
            self.rx_dropped += (seq - last - 1) & 0xFF
        self.s_seq[k] = seq
        return length

    def feed(self, buf, i, n):
        """Take the received bytes buf[i:n] up to the end of the first frame among them, in
        one viper pass (feed_byte costs a Python call per byte). Returns what feed_byte
        returns for that frame's delimiter (or -1 when buf[i:n] ends inside a frame) and sets
        self.next_i to the index of the first byte not taken."""
        j = _gather(buf, i, n, self.rx_enc, self.rx_state, _MAX_ENC)
        if j >= n:
            self.next_i = n
            return -1
        self.next_i = j + 1
        return self.feed_byte(0)

    def _session(self, sid, fresh):
        # the slot of session sid; a HELLO (fresh) starts its link state anew
        self._stamp = (self._stamp + 1) & 0x3FFFFFFF  # stays a small int on every port
        ids = self.s_id
        k = -1
        for i in range(_SESSIONS):
            if ids[i] == sid:
                k = i
                break
        if k < 0:
            k = 0
            for i in range(1, _SESSIONS):
                if self.s_used[i] < self.s_used[k]:
                    k = i
            ids[k] = sid
            fresh = True
        if fresh:
            self.s_seq[k] = -1
            self.s_req[k] = -1
            self.s_ans_n[k] = 0
        self.s_used[k] = self._stamp
        return k

    def is_retry(self):
        """True when the frame in self.rx repeats its session's last answered request."""
        rx = self.rx
        return self.s_req[self.slot] == ((rx[1] << 8) | rx[2])

    def resend(self):
        """Send the cached answer of the frame's session again (a retry: done only once)."""
        k = self.slot
        n = self.s_ans_n[k]
        self.rx_duplicate += 1
        _copy(self.tx_enc, self.s_ans[k], n)
        self._write(self._view(n))
        self.tx_frames += 1

    def answer(self, msg_id, size):
        """Send the payload packed at self.tx[HDR:HDR+size] as the answer to the frame in
        self.rx (same session) and keep it for a retry of that request."""
        rx = self.rx
        k = self.slot
        self._send(msg_id, size, rx[0])
        _copy(self.s_ans[k], self.tx_enc, self.tx_n)
        self.s_ans_n[k] = self.tx_n
        self.s_req[k] = (rx[1] << 8) | rx[2]

    def send(self, msg_id, size):
        """Broadcast the payload packed at self.tx[HDR:HDR+size] (session 0)."""
        self._send(msg_id, size, 0)

    def _send(self, msg_id, size, session):
        tx = self.tx
        tx[0] = session
        tx[1] = self.tx_seq
        tx[2] = msg_id
        tx[3] = size
        self.tx_seq = (self.tx_seq + 1) & 0xFF
        _crc_store(tx, _HDR + size, self._table)
        n = cobs_encode(tx, _HDR + size + 4, self.tx_enc)
        self.tx_n = n
        self._write(self._view(n))
        self.tx_frames += 1

    def _view(self, n):
        v = self.tx_views.get(n)
        if v is None:
            v = self.tx_views[n] = self._tx_mv[:n]
        return v
