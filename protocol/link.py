"""The host end of a ThermoPilot link: requests with answers and retries over a serial port.

A reader thread decodes every frame the board sends. Answers (messages with a ``req_seq``
field) wake the request that waits for them; telemetry, events and log text go to queues
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


class Nack(LinkError):
    """The board refused a request; ``code`` (name), ``value``, ``min``, ``max`` say why."""

    def __init__(self, request, answer):
        self.code = ERROR_NAMES.get(answer.code, "error %d" % answer.code)
        self.value, self.min, self.max = answer.value, answer.min, answer.max
        self.answer = answer
        msg = "board refused %s: %s" % (request, self.code)
        if self.code == "out_of_range":
            msg += " (%g not in [%g, %g])" % (self.value, self.min, self.max)
        super().__init__(msg)


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
    """

    def __init__(self, port, baudrate=115200, timeout_s=0.5, retries=3, serial_port=None):
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
        self._seq = random.randrange(256)  # a new session never repeats the last one's seq
        self._cond = threading.Condition()
        self._answers = {}
        self.telemetry = collections.deque(maxlen=100000)
        self.events = collections.deque(maxlen=10000)
        self.logs = collections.deque(maxlen=1000)
        self.on_frame = None
        self.host_stats = {"requests": 0, "retries": 0, "timeouts": 0}
        self._stop = False
        self._tx_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
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
            if not data:
                continue
            for _seq, msg, c in self.decoder.feed(data):
                if self.on_frame is not None:
                    self.on_frame(msg, c)
                if "req_seq" in c:
                    with self._cond:
                        self._answers[c.req_seq] = (msg, c)
                        self._cond.notify_all()
                elif msg.name == "TELEMETRY":
                    self.telemetry.append(c)
                elif msg.name == "EVENT":
                    self.events.append(c)
                elif msg.name == "LOG":
                    self.logs.append(c)

    def close(self):
        self._stop = True
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
            self.ser.write(pack(msg_name, seq, **fields))
        return seq

    def request(self, msg_name, /, expect=("ACK",), **fields):
        """Send ``name`` and wait for its answer; retry with the same sequence on timeout.

        Returns the answer's construct Container. Raises Nack when the board refuses,
        LinkTimeout when no answer comes after all retries.
        """
        name = msg_name
        with self._tx_lock:
            self._seq = (self._seq + 1) & 0xFF
            seq = self._seq
        # a leading delimiter ends any noise the board holds, so noise between frames never
        # costs the request a timeout (one byte per request)
        frame = b"\x00" + pack(name, seq, **fields)
        self.host_stats["requests"] += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.host_stats["retries"] += 1
            with self._cond:
                self._answers.pop(seq, None)
            with self._tx_lock:
                self.ser.write(frame)
            deadline = time.monotonic() + self.timeout_s
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
            "no answer to %s from %s after %d tries; is ThermoPilot firmware running there? "
            "(thermopilot deploy --port %s installs it)"
            % (name, self.port, self.retries + 1, self.port)
        )

    # -- operations -------------------------------------------------------------------------

    def hello(self, check_schema=True):
        """Identify the board; refuse one built from another schema."""
        ident = self.request("HELLO", expect=("IDENTITY",), proto_version=schema.PROTOCOL_VERSION)
        if check_schema and (
            ident.schema_hash != schema.SCHEMA_HASH
            or ident.proto_version != schema.PROTOCOL_VERSION
        ):
            raise SchemaMismatch(
                "board %s runs firmware %s with protocol v%d, schema %08x; this host speaks "
                "protocol v%d, schema %08x (thermopilot %s). Deploy the matching firmware: "
                "thermopilot deploy --port %s"
                % (
                    _text(ident.board),
                    _text(ident.fw_version),
                    ident.proto_version,
                    ident.schema_hash,
                    schema.PROTOCOL_VERSION,
                    schema.SCHEMA_HASH,
                    _host_version(),
                    self.port,
                )
            )
        return ident

    def board_stats(self):
        return self.request("LINK_STATS_REQ", expect=("LINK_STATS",), flags=0)

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
        return self.request(
            "PARAM_SET", expect=("PARAM_VALUE",), name=_name16(name), value=float(value)
        ).value

    def command(self, command, loop=0, value=0.0):
        return self.request(
            "COMMAND", loop=loop, command=schema.COMMANDS[command], value=float(value)
        )

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
    return {
        "index": c.index,
        "name": _text(c.name),
        "unit": _text(c.unit),
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
