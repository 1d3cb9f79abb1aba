"""The ThermoPilot message schema: the single source of truth for every codec.

Each message is a fixed-size little-endian ``construct.Struct``. The firmware codec
(``firmware/tpfw/codec.py``) is generated from these definitions by ``protocol.codegen``;
the schema hash (a CRC-32 over every message's id, name and its fields' names and types,
in the spirit of MAVLink's CRC_EXTRA) travels in the identity message so that a host
refuses a board built from another schema.
"""

import struct as _struct
import zlib

from construct import (
    Array,
    Bytes,
    Container,
    Float32l,
    Int8sl,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    ListContainer,
    Struct,
)

PROTOCOL_VERSION = 1

#: construct field type -> (struct format character(s), name used in the schema hash)
_FORMATS = {
    id(Int8ul): ("B", "u8"),
    id(Int8sl): ("b", "i8"),
    id(Int16ul): ("H", "u16"),
    id(Int32ul): ("I", "u32"),
    id(Int32sl): ("i", "i32"),
    id(Float32l): ("f", "f32"),
}

# Fault bits (telemetry ``faults``, actuator frame ``faults``) and event codes share numbers.
FAULTS = {
    "sensor_open": 0,
    "sensor_short": 1,
    "sensor_implausible": 2,
    "over_temperature": 3,
    "host_lost": 4,
    "stale_setpoint": 5,
    "params_corrupt": 6,
    "loop_overrun": 7,
}

# Loop modes (telemetry ``mode``; command values for ``mode``).
MODES = {"off": 0, "manual": 1, "auto": 2, "autotune": 3, "safe": 4}

# COMMAND.command values.
COMMANDS = {
    "mode": 1,
    "manual_output": 2,
    "fault_reset": 3,
    "setpoint": 4,
    "release_console": 5,
}

# NACK.code values.
ERRORS = {
    "unknown_message": 1,
    "bad_length": 2,
    "unknown_param": 3,
    "out_of_range": 4,
    "bad_loop": 5,
    "bad_command": 6,
    "bad_value": 7,
    "flash_error": 8,
    "upload_crc": 9,
    "upload_order": 10,
    "faulted": 11,
}

# PARAM_INFO.type values.
PARAM_TYPES = {"f32": 0, "i32": 1, "bool": 2}

# Feature flags in IDENTITY.features.
FEATURES = {"c_core": 0, "hil": 1, "flash_params": 2}

_NAME = Bytes(16)  # NUL-padded ASCII


class Message:
    """One message: id, name, direction and its fixed-size construct struct."""

    def __init__(self, msg_id, name, direction, struct, doc):
        self.id = msg_id
        self.name = name
        self.direction = direction  # "host", "board" (who sends it) or "both"
        self.struct = struct
        self.doc = doc
        self.fields = []  # (name, struct format, hash type)
        for sub in struct.subcons:
            self.fields.append((sub.name,) + _field_format(sub.subcon))
        self.format = "<" + "".join(f for _, f, _ in self.fields)
        self.size = struct.sizeof()
        # parse() reads the payload with one precomputed struct: construct's own parse costs
        # ~80 us per telemetry frame, too slow for a saturated USB full-speed link
        self._unpack_from = _struct.Struct(self.format).unpack_from
        self._layout = []  # (field name, index of its first value, array length or 0)
        k = 0
        for fname, fmt, _ in self.fields:
            count = int(fmt[:-1]) if fmt[-1] != "s" and len(fmt) > 1 else 0
            self._layout.append((fname, k, count))
            k += count or 1

    def parse(self, payload):
        """Decode a payload of exactly ``size`` bytes into a construct Container; the same
        result as ``self.struct.parse(payload)``, about 10x faster."""
        vals = self._unpack_from(payload)
        c = Container()
        for fname, k, count in self._layout:
            c[fname] = vals[k] if not count else ListContainer(vals[k : k + count])
        return c

    def __repr__(self):
        return "Message(%d, %r, %d bytes)" % (self.id, self.name, self.size)


def _field_format(subcon):
    if id(subcon) in _FORMATS:
        return _FORMATS[id(subcon)]
    if isinstance(subcon, Array):
        inner, hname = _FORMATS[id(subcon.subcon)]
        return ("%d%s" % (subcon.count, inner), "%s[%d]" % (hname, subcon.count))
    if type(subcon).__name__ == "Bytes":
        return ("%ds" % subcon.length, "char[%d]" % subcon.length)
    raise TypeError("field type %r has no firmware format" % (subcon,))


def _m(msg_id, name, direction, doc, *fields):
    return Message(msg_id, name, direction, Struct(*fields), doc)


MESSAGES = [
    _m(
        0x01,
        "HELLO",
        "host",
        "Ask the board who it is; answered by IDENTITY.",
        "proto_version" / Int8ul,
    ),
    _m(
        0x02,
        "IDENTITY",
        "board",
        "Firmware, board, schema hash, features.",
        "req_seq" / Int8ul,
        "proto_version" / Int8ul,
        "fw_version" / _NAME,
        "board" / _NAME,
        "schema_hash" / Int32ul,
        "features" / Int32ul,
        "n_loops" / Int8ul,
        "n_params" / Int16ul,
        "tick_hz" / Float32l,
    ),
    _m(
        0x10,
        "TELEMETRY",
        "board",
        "One loop's state, streamed at its stream rate.",
        "loop" / Int8ul,
        "mode" / Int8ul,
        "t_ms" / Int32ul,
        "setpoint" / Float32l,
        "measurement" / Float32l,
        "output" / Float32l,
        "p" / Float32l,
        "i" / Float32l,
        "d" / Float32l,
        "faults" / Int32ul,
    ),
    _m(
        0x11,
        "EVENT",
        "board",
        "A fault latched or cleared, or a notable change.",
        "code" / Int16ul,
        "loop" / Int8ul,
        "latched" / Int8ul,
        "t_ms" / Int32ul,
        "value" / Float32l,
    ),
    _m(0x12, "LOG", "board", "Text from the board.", "level" / Int8ul, "text" / Bytes(60)),
    _m(
        0x20,
        "PARAM_INFO_REQ",
        "host",
        "Describe parameter number index; answered by PARAM_INFO.",
        "index" / Int16ul,
    ),
    _m(
        0x21,
        "PARAM_INFO",
        "board",
        "Name, type, unit, range, default and value of a parameter.",
        "req_seq" / Int8ul,
        "index" / Int16ul,
        "count" / Int16ul,
        "name" / _NAME,
        "unit" / Bytes(8),
        "type" / Int8ul,
        "min" / Float32l,
        "max" / Float32l,
        "default" / Float32l,
        "value" / Float32l,
    ),
    _m(
        0x22,
        "PARAM_GET",
        "host",
        "Read a parameter by name; answered by PARAM_VALUE.",
        "name" / _NAME,
    ),
    _m(
        0x23,
        "PARAM_VALUE",
        "board",
        "A parameter's value.",
        "req_seq" / Int8ul,
        "index" / Int16ul,
        "name" / _NAME,
        "value" / Float32l,
    ),
    _m(
        0x24,
        "PARAM_SET",
        "host",
        "Write a parameter; answered by PARAM_VALUE or NACK.",
        "name" / _NAME,
        "value" / Float32l,
    ),
    _m(
        0x25,
        "PARAM_SAVE",
        "host",
        "Save all parameters to flash atomically; ACK or NACK.",
        "flags" / Int8ul,
    ),
    _m(
        0x26,
        "PARAM_DEFAULTS",
        "host",
        "Restore every parameter to its default; ACK.",
        "flags" / Int8ul,
    ),
    _m(
        0x30,
        "COMMAND",
        "host",
        "Mode, manual output, setpoint, fault reset, console release.",
        "loop" / Int8ul,
        "command" / Int8ul,
        "value" / Float32l,
    ),
    _m(
        0x31,
        "STREAM_RATE",
        "host",
        "Set how often a message streams (Hz, 0 = off).",
        "msg_id" / Int8ul,
        "rate_hz" / Float32l,
    ),
    _m(
        0x40,
        "HIL_SENSORS",
        "host",
        "Lockstep: simulated time and sensor values.",
        "t_ms" / Int32ul,
        "valid" / Int16ul,
        "values" / Array(8, Float32l),
    ),
    _m(
        0x41,
        "HIL_ACTUATORS",
        "board",
        "Lockstep answer: actuator outputs at t_ms.",
        "req_seq" / Int8ul,
        "t_ms" / Int32ul,
        "ticks" / Int16ul,
        "faults" / Int32ul,
        "outputs" / Array(4, Float32l),
    ),
    _m(
        0x50,
        "UPLOAD_BEGIN",
        "host",
        "Start a chunked upload to a slot (e.g. an MPC model).",
        "slot" / Int8ul,
        "total_len" / Int32ul,
        "crc32" / Int32ul,
    ),
    _m(
        0x51,
        "UPLOAD_CHUNK",
        "host",
        "Upload data at offset; n bytes of data are used.",
        "slot" / Int8ul,
        "offset" / Int32ul,
        "n" / Int8ul,
        "data" / Bytes(48),
    ),
    _m(
        0x52,
        "UPLOAD_END",
        "host",
        "Finish an upload; the board checks length and CRC-32.",
        "slot" / Int8ul,
    ),
    _m(0x60, "LINK_STATS_REQ", "host", "Ask for the board's link counters.", "flags" / Int8ul),
    _m(
        0x61,
        "LINK_STATS",
        "board",
        "The board's link counters.",
        "req_seq" / Int8ul,
        "rx_ok" / Int32ul,
        "rx_bad_crc" / Int32ul,
        "rx_bad_cobs" / Int32ul,
        "rx_bad_len" / Int32ul,
        "rx_dropped" / Int32ul,
        "rx_overflow" / Int32ul,
        "rx_duplicate" / Int32ul,
        "tx_frames" / Int32ul,
    ),
    _m(
        0x7E,
        "ACK",
        "board",
        "A request succeeded.",
        "req_seq" / Int8ul,
        "req_msg" / Int8ul,
        "code" / Int8ul,
    ),
    _m(
        0x7F,
        "NACK",
        "board",
        "A request failed: error code, offending value and allowed range.",
        "req_seq" / Int8ul,
        "req_msg" / Int8ul,
        "code" / Int8ul,
        "value" / Float32l,
        "min" / Float32l,
        "max" / Float32l,
    ),
]

_BY_ID = {m.id: m for m in MESSAGES}
_BY_NAME = {m.name: m for m in MESSAGES}
assert len(_BY_ID) == len(MESSAGES) and len(_BY_NAME) == len(MESSAGES)
#: the largest payload; frames carry it plus a 3-byte header and a 4-byte CRC
MAX_PAYLOAD = max(m.size for m in MESSAGES)
assert MAX_PAYLOAD <= 255


def by_id(msg_id):
    """The message with this id, or None."""
    return _BY_ID.get(msg_id)


def by_name(name):
    """The message called ``name``; KeyError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError("unknown message %r; known: %s" % (name, ", ".join(_BY_NAME))) from None


def schema_text():
    """The canonical text the schema hash is computed from."""
    parts = []
    for m in sorted(MESSAGES, key=lambda m: m.id):
        fields = " ".join("%s %s" % (t, n) for n, _, t in m.fields)
        parts.append("%d %s " % (m.id, m.name) + fields)
    return "\n".join(parts)


SCHEMA_HASH = zlib.crc32(("v%d\n" % PROTOCOL_VERSION + schema_text()).encode()) & 0xFFFFFFFF
