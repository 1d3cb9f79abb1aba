"""The host end of a ThermoPilot link: requests with answers and retries over a serial port.

A reader thread decodes every frame the board sends (or, with ``threaded=False``, the thread
that waits for an answer reads the port itself: one thread, no hand-over per frame, what the
lockstep HIL rig wants on a port only it uses). Each Session picks a random session
byte (1..255) that its HELLO opens on the board and every request carries; the board answers
with the same byte, so two programs sharing one board (a HIL run and a monitor) never take
each other's answers. Answers (messages with a ``req_seq`` field) for this session wake the
request that waits for them; broadcasts (session 0: telemetry, events, log text) go to queues
that the caller drains. ``stats()`` reports both sides' link counters.
"""

import collections
import random
import threading
import time

import serial

from . import schema
from .framing import StreamDecoder, pack

ERROR_NAMES = {v: k for k, v in schema.ERRORS.items()}


class LinkError(Exception):
    """A link problem the user can act on; the message says what happened and what to do."""


class LinkTimeout(LinkError):
    pass


#: NACK.other when no other parameter is involved
NO_OTHER = 0xFFFF


class Nack(LinkError):
    """The board refused a request; ``code`` (name), ``value``, ``min``, ``max`` and
    ``other`` (index of a conflicting parameter, or None) say why."""

    def __init__(self, request, answer):
        self.code = ERROR_NAMES.get(answer.code, "error %d" % answer.code)
        self.value, self.min, self.max = answer.value, answer.min, answer.max
        self.other = None if answer.other == NO_OTHER else answer.other
        self.request = request
        self.answer = answer
        super().__init__(self.describe())

    def describe(self, param_names=None):
        """One sentence; ``param_names`` (index -> name) names a conflicting parameter."""
        msg = "board refused %s: %s" % (self.request, self.code.replace("_", " "))
        if self.code in ("out_of_range", "conflict", "time_jump", "bad_loop", "upload_order"):
            msg += " (%g not in [%g, %g])" % (self.value, self.min, self.max)
        elif self.code in ("bad_value", "unknown_message", "bad_command"):
            msg += " (%g)" % self.value
        if self.other is not None:
            other = (param_names or {}).get(self.other, "parameter #%d" % self.other)
            msg += "; the limit comes from %s" % other
        return msg


class SchemaMismatch(LinkError):
    pass


class Session:
    """A link to one board on ``port`` (any path pyserial opens: /dev/ttyACM0, a pty, ...).

    Parameters
    ----------
    port : str
        Serial device path.
    timeout_s : float
        How long to wait for an answer before retrying.
    retries : int
        How many times a request is re-sent (same sequence number) before giving up.
    serial_port : object or None
        An open port to use instead of opening ``port`` (pyserial's interface: write, read,
        in_waiting, close).
    threaded : bool
        True: a reader thread decodes what the board sends, so telemetry queues fill while
        the caller does other things. False: frames are read only inside :meth:`request`
        and :meth:`poll`, by the calling thread, from a ``serial_port`` that has
        ``read_ready(timeout_s)`` (bytes waiting, after waiting up to timeout_s for the
        first); only one thread may use such a session.
    """

    def __init__(
        self,
        port,
        baudrate=115200,
        timeout_s=0.5,
        retries=3,
        serial_port=None,
        session=None,
        threaded=True,
    ):
        self.port = port
        self.timeout_s = timeout_s
        self.retries = retries
        if serial_port is not None:
            self.ser = serial_port
        else:
            try:
                self.ser = serial.Serial(port, baudrate, timeout=0.05)
            except (serial.SerialException, OSError) as exc:
                raise LinkError(
                    "cannot open %s: %s. Check the path (thermopilot ports lists serial "
                    "ports; thermopilot vboard prints the virtual board's)." % (port, exc)
                ) from None
        self.decoder = StreamDecoder()
        self._seq = random.randrange(256)
        #: this program's session byte; the board answers it only to frames that carry it
        self.session = random.randrange(1, 256) if session is None else session
        self._cond = threading.Condition()
        self._answers = {}
        self.telemetry = collections.deque(maxlen=100000)
        self.events = collections.deque(maxlen=10000)
        self.logs = collections.deque(maxlen=1000)
        self.on_frame = None
        self.host_stats = {"requests": 0, "retries": 0, "timeouts": 0, "other_session": 0}
        self._stop = False
        self._tx_lock = threading.Lock()
        self._reader = None
        if threaded:
            self._reader = threading.Thread(target=self._read_loop, daemon=True)
            self._reader.start()
        elif not hasattr(self.ser, "read_ready"):
            raise TypeError("Session(threaded=False) needs a serial_port with read_ready()")
        # a lone delimiter ends whatever partial bytes the board holds (a REPL's leftovers),
        # so the first request is not merged with them
        self.ser.write(b"\x00")

    # -- plumbing ---------------------------------------------------------------------------

    def _read_loop(self):
        while not self._stop:
            try:
                # one byte blocks up to the port timeout; then take whatever else is waiting
                data = self.ser.read(1)
                if data:
                    waiting = self.ser.in_waiting
                    if waiting:
                        data += self.ser.read(waiting)
            except (serial.SerialException, OSError, TypeError):
                if self._stop:
                    return
                time.sleep(0.05)
                continue
            if data:
                self._take(data)

    def _take(self, data):
        # decode received bytes: answers to their waiting request, broadcasts to the queues
        for sess, _seq, msg, c in self.decoder.feed(data):
            if self.on_frame is not None:
                self.on_frame(msg, c)
            if "req_seq" in c:
                if sess != self.session:
                    self.host_stats["other_session"] += 1
                    continue
                with self._cond:
                    self._answers[c.req_seq] = (msg, c)
                    self._cond.notify_all()
            elif msg.name == "TELEMETRY":
                self.telemetry.append(c)
            elif msg.name == "EVENT":
                self.events.append(c)
            elif msg.name == "LOG":
                self.logs.append(c)

    def poll(self, timeout_s=0.0):
        """Without a reader thread: decode what the board has sent (waiting up to
        ``timeout_s`` for it), so that the telemetry, events and logs queues are current.
        With one, just wait ``timeout_s``."""
        if self._reader is not None:
            if timeout_s > 0:
                time.sleep(timeout_s)
            return
        try:
            data = self.ser.read_ready(timeout_s)
        except OSError:
            return
        if data:
            self._take(data)

    def close(self):
        self._stop = True
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        try:
            self.ser.close()
        except Exception:  # noqa: BLE001 - closing a vanished port is not an error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, msg_name, /, **fields):
        """Send a message without waiting for an answer; returns its sequence number."""
        with self._tx_lock:
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
            self.ser.write(pack(msg_name, seq, session=self.session, **fields))
        return seq

    def request(self, msg_name, /, expect=("ACK",), idle=None, **fields):
        """Send ``name`` and wait for its answer; retry with the same sequence on timeout.

        ``idle``, if given, is called once after the first send, before waiting: work the
        caller can do while the board computes its answer.

        Returns the answer's construct Container. Raises Nack when the board refuses,
        LinkTimeout when no answer comes after all retries.
        """
        name = msg_name
        with self._tx_lock:
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
        # a leading delimiter ends any noise the board holds, so noise between frames never
        # costs the request a timeout (one byte per request)
        frame = b"\x00" + pack(name, seq, session=self.session, **fields)
        self.host_stats["requests"] += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.host_stats["retries"] += 1
            with self._cond:
                self._answers.pop(seq, None)
            with self._tx_lock:
                self.ser.write(frame)
            if idle is not None and not attempt:
                idle()
            deadline = time.monotonic() + self.timeout_s
            if self._reader is None:
                while True:
                    got = self._read_answer(seq, deadline)
                    if got is None:
                        break  # timed out: send again
                    c = self._answer_of(name, expect, got)
                    if c is not None:
                        return c
                continue
            with self._cond:
                while True:
                    got = self._answers.pop(seq, None)
                    if got is not None:
                        msg, c = got
                        if msg.name == "NACK":
                            raise Nack(name, c)
                        if msg.name in expect:
                            return c
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
        self.host_stats["timeouts"] += 1
        raise LinkTimeout(
            "no answer to %s from %s after %d %s; is ThermoPilot running there? Install it "
            "with thermopilot deploy --port %s --board BOARD (thermopilot deploy -h lists the "
            "boards), or reset the board (thermopilot vboard reset for a virtual board)"
            % (
                name,
                self.port,
                self.retries + 1,
                "try" if self.retries == 0 else "tries",
                self.port,
            )
        )

    def _read_answer(self, seq, deadline):
        # no reader thread: read the port here until the answer to seq (of the expected
        # kind or a NACK) arrives or the deadline passes
        answers = self._answers
        while True:
            got = answers.pop(seq, None)
            if got is not None:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = self.ser.read_ready(left)
            except OSError:
                data = b""  # the board is gone: the request times out as on a dead port
                time.sleep(min(left, 0.05))
            if data:
                self._take(data)

    @staticmethod
    def _answer_of(name, expect, got):
        msg, c = got
        if msg.name == "NACK":
            raise Nack(name, c)
        if msg.name in expect:
            return c
        return None

    # -- operations -------------------------------------------------------------------------

    def hello(self, check_schema=True):
        """Open this session on the board and identify it; refuse a board built from another
        schema."""
        ident = self.request("HELLO", expect=("IDENTITY",), proto_version=schema.PROTOCOL_VERSION)
        if check_schema and (
            ident.schema_hash != schema.SCHEMA_HASH
            or ident.proto_version != schema.PROTOCOL_VERSION
        ):
            raise SchemaMismatch(
                "board %s runs firmware %s with protocol v%d, schema %08x; this host speaks "
                "protocol v%d, schema %08x (thermopilot %s). Deploy the matching firmware: "
                "thermopilot deploy --port %s --board %s"
                % (
                    _text(ident.board),
                    _text(ident.fw_version),
                    ident.proto_version,
                    ident.schema_hash,
                    schema.PROTOCOL_VERSION,
                    schema.SCHEMA_HASH,
                    _host_version(),
                    self.port,
                    _text(ident.board),
                )
            )
        return ident

    def board_stats(self):
        return self.request("LINK_STATS_REQ", expect=("LINK_STATS",), flags=0)

    def heap_and_ticks(self):
        """The board's BOARD_STATS: heap now, at its lowest and in all, garbage collections
        between ticks and inside them, ticks run, tick duration max and mean, late ticks."""
        return self.request("BOARD_STATS_REQ", expect=("BOARD_STATS",), flags=0)

    def stats(self):
        """Host and board link counters in one dict."""
        out = {"host_" + k: v for k, v in self.decoder.stats.items()}
        out.update({"host_" + k: v for k, v in self.host_stats.items()})
        b = self.board_stats()
        for k in (
            "rx_ok",
            "rx_bad_crc",
            "rx_bad_cobs",
            "rx_bad_len",
            "rx_dropped",
            "rx_overflow",
            "rx_duplicate",
            "tx_frames",
            "hil_rejected",
            "handler_errors",
            "events_lost",
        ):
            out["board_" + k] = getattr(b, k)
        return out

    def params(self):
        """Every parameter's description: list of dicts with name, unit, type, range, value."""
        first = self.request("PARAM_INFO_REQ", expect=("PARAM_INFO",), index=0)
        out = [_param_row(first)]
        for i in range(1, first.count):
            out.append(_param_row(self.request("PARAM_INFO_REQ", expect=("PARAM_INFO",), index=i)))
        return out

    def param_get(self, name):
        return self.request("PARAM_GET", expect=("PARAM_VALUE",), name=_name16(name)).value

    def param_set(self, name, value):
        """Set parameter ``name``; the board's answer value. A refusal because of another
        parameter (a cross-parameter rule, NACK ``conflict``) names both parameters and both
        values, e.g. "board refused hp.lop = 290: conflict with hp.mop = 288.15 (hp.lop
        allowed in [213.15, 286.15])"; the Nack then carries ``other_name`` and
        ``other_value``."""
        try:
            return self.request(
                "PARAM_SET", expect=("PARAM_VALUE",), name=_name16(name), value=float(value)
            ).value
        except Nack as err:
            if err.code != "conflict" or err.other is None:
                raise
            info = self.request("PARAM_INFO_REQ", expect=("PARAM_INFO",), index=err.other)
            err.other_name = _text(info.name)
            err.other_value = info.value
            err.args = (
                "board refused %s = %g: conflict with %s = %g (%s allowed in [%g, %g])"
                % (name, value, err.other_name, info.value, name, err.min, err.max),
            )
            raise

    def command(self, command, loop=0, value=0.0):
        """Send COMMAND ``command`` (a name of schema.COMMANDS); fault_reset answers with
        FAULT_STATUS (what stays latched because its cause is still there), others with ACK."""
        expect = ("FAULT_STATUS",) if command == "fault_reset" else ("ACK",)
        return self.request(
            "COMMAND",
            expect=expect,
            loop=loop,
            command=schema.COMMANDS[command],
            value=float(value),
        )

    def fault_reset(self):
        """Clear every latched fault whose cause is gone; returns the FAULT_STATUS answer."""
        return self.command("fault_reset")

    def fault_status(self):
        return self.request("FAULT_STATUS_REQ", expect=("FAULT_STATUS",), flags=0)

    def faults(self):
        """Latched or present faults: list of dicts with name, latched, present, loop, t_s,
        value, count."""
        st = self.fault_status()
        names = {v: k for k, v in schema.FAULTS.items()}
        out = []
        for bit in range(32):
            if not ((st.latched | st.present) >> bit) & 1:
                continue
            f = self.request("FAULT_INFO_REQ", expect=("FAULT_INFO",), bit=bit)
            out.append(
                {
                    "name": names.get(bit, "bit%d" % bit),
                    "bit": bit,
                    "latched": bool(f.latched),
                    "present": bool(f.present),
                    "trip": bool((st.trip >> bit) & 1),
                    "loop": f.loop,
                    "t_s": f.t_ms / 1000.0,
                    "value": f.value,
                    "count": f.count,
                }
            )
        return out

    def loops(self):
        """Every loop's description: list of dicts with name, controller, quantity,
        out_quantity, out_min, out_max, resolution and fields [(name, quantity)]."""
        qnames = {v: k for k, v in schema.QUANTITIES.items()}
        first = self.request("LOOP_INFO_REQ", expect=("LOOP_INFO",), loop=0)
        out = []
        for k in range(first.count):
            li = first if k == 0 else self.request("LOOP_INFO_REQ", expect=("LOOP_INFO",), loop=k)
            fields = []
            for j in range(li.n_fields):
                fi = self.request("FIELD_INFO_REQ", expect=("FIELD_INFO",), loop=k, index=j)
                fields.append((_text(fi.name), qnames.get(fi.quantity, "none")))
            out.append(
                {
                    "loop": k,
                    "name": _text(li.name),
                    "controller": _text(li.controller),
                    "quantity": qnames.get(li.quantity, "none"),
                    "out_quantity": qnames.get(li.out_quantity, "none"),
                    "out_min": li.out_min,
                    "out_max": li.out_max,
                    "resolution": li.resolution,
                    "fields": fields,
                }
            )
        return out

    def upload(self, slot, data, progress=None):
        """Upload ``data`` (bytes, e.g. an MPC model blob) to ``slot`` in 48-byte chunks.

        The board stores it as slotN.bin only when the length and the CRC-32 of the whole
        upload match; a lost chunk answer is retried and applied once.
        """
        import zlib

        data = bytes(data)
        self.request(
            "UPLOAD_BEGIN", slot=slot, total_len=len(data), crc32=zlib.crc32(data) & 0xFFFFFFFF
        )
        for off in range(0, len(data), 48):
            chunk = data[off : off + 48]
            self.request(
                "UPLOAD_CHUNK", slot=slot, offset=off, n=len(chunk), data=chunk.ljust(48, b"\x00")
            )
            if progress is not None:
                progress(off + len(chunk), len(data))
        self.request("UPLOAD_END", slot=slot)

    def stream_rate(self, msg_name, rate_hz):
        return self.request(
            "STREAM_RATE", msg_id=schema.by_name(msg_name).id, rate_hz=float(rate_hz)
        )


def _name16(name):
    raw = name.encode()
    if len(raw) > 16:
        raise ValueError("parameter name %r is longer than 16 bytes" % name)
    return raw.ljust(16, b"\x00")


def _text(raw):
    return bytes(raw).split(b"\x00", 1)[0].decode(errors="replace")


def _param_row(c):
    types = {v: k for k, v in schema.PARAM_TYPES.items()}
    qnames = {v: k for k, v in schema.QUANTITIES.items()}
    return {
        "index": c.index,
        "name": _text(c.name),
        "unit": _text(c.unit),
        "quantity": qnames.get(c.quantity, "none"),
        "type": types.get(c.type, "?"),
        "min": c.min,
        "max": c.max,
        "default": c.default,
        "value": c.value,
    }


def _host_version():
    try:
        from importlib.metadata import version

        return version("thermopilot")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "source"
