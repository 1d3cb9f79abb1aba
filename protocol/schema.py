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

PROTOCOL_VERSION = 3

#: construct field type -> (struct format character(s), name used in the schema hash)
_FORMATS = {
    id(Int8ul): ("B", "u8"),
    id(Int8sl): ("b", "i8"),
    id(Int16ul): ("H", "u16"),
    id(Int32ul): ("I", "u32"),
    id(Int32sl): ("i", "i32"),
    id(Float32l): ("f", "f32"),
}

# Fault bits (telemetry ``faults``, actuator frame ``faults``) and event codes 0..31 share
# numbers. docs/protocol.md lists each with its detection and latency.
FAULTS = {
    "sensor_open": 0,
    "sensor_short": 1,
    "sensor_implausible": 2,
    "over_temperature": 3,
    "host_lost": 4,
    "stale_setpoint": 5,
    "params_corrupt": 6,
    "loop_overrun": 7,
    "sensor_stuck": 8,
    "sensor_rate": 9,
    "sensor_drift": 10,
    "control_ineffective": 11,
    "actuator_feedback": 12,
    "internal": 13,
    "low_superheat": 14,
    "lop": 15,
    "mop": 16,
    "high_condensing": 17,
    "charge_loss": 18,
    "thermal_runaway": 19,
    "cooling_lost": 20,
    "pump_failure": 21,
    "coolant_leak": 22,
    "dryout": 23,
    "junction_over_temperature": 24,
    "over_pressure": 25,
    # a controller has too few healthy sensors left to protect its plant (e.g. most cell-group
    # sensors of a battery pack failed): it trips to its safe sequence
    "sensing_lost": 28,
}

# Event codes from 32 up: notices (EVENT.kind = notice or warning), never latched.
NOTICES = {
    "c_core_missing": 32,
    "controller_fallback": 33,
    "params_refused": 34,
    "protector_active": 35,
    "runaway_warning": 36,
    "derate_request": 37,
    "power_cap": 38,
    "hil_started": 39,
    "hil_stopped": 40,
    "setpoint_adapted": 41,
    "sensor_degraded": 42,
}

# EVENT.kind values.
EVENT_KINDS = {"cleared": 0, "latched": 1, "notice": 2, "warning": 3}

# Loop modes (telemetry ``mode``; command values for ``mode``).
MODES = {"off": 0, "manual": 1, "auto": 2, "autotune": 3, "safe": 4}

# COMMAND.command values.
COMMANDS = {
    "mode": 1,
    "manual_output": 2,
    "fault_reset": 3,
    "setpoint": 4,
    "release_console": 5,
    "hil_start": 6,
    "hil_stop": 7,
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
    "internal": 12,
    "time_jump": 13,
    "conflict": 14,
    "not_hil": 15,
}

# PARAM_INFO.type values.
PARAM_TYPES = {"f32": 0, "i32": 1, "bool": 2}

# What a value measures (LOOP_INFO, FIELD_INFO, PARAM_INFO ``quantity``); values travel in SI:
# temperature in K, a temperature difference in K, pressure in Pa, fraction 0..1, speed in
# rev/s, flow in L/min, concentration in ppm. The host shows them in the user's units.
QUANTITIES = {
    "none": 0,
    "temperature": 1,
    "temperature_difference": 2,
    "pressure": 3,
    "fraction": 4,
    "steps": 5,
    "speed": 6,
    "power": 7,
    "current": 8,
    "flow": 9,
    "rate": 10,
    "time": 11,
    "gain": 12,
    "voltage": 13,
    "concentration": 14,
    "state": 15,
    "count": 16,
    "energy": 17,
}

# Feature flags in IDENTITY.features.
FEATURES = {"c_core": 0, "hil": 1, "flash_params": 2}

#: every enumeration the board and the host must agree on; all of them enter the schema hash
ENUMS = {
    "FAULT": FAULTS,
    "NOTICE": NOTICES,
    "EVENT": EVENT_KINDS,
    "MODE": MODES,
    "CMD": COMMANDS,
    "ERR": ERRORS,
    "PTYPE": PARAM_TYPES,
    "Q": QUANTITIES,
    "FEATURE": FEATURES,
}

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
        #: byte offset of each field inside the payload (the firmware codec's O_ constants)
        self.offsets = {}
        at = 0
        for fname, fmt, _ in self.fields:
            self.offsets[fname] = at
            at += _struct.calcsize("<" + fmt)
        self._layout = []  # (field name, index of its first value, array length or 0)
        k = 0
        for fname, fmt, _ in self.fields:
            count = int(fmt[:-1]) if fmt[-1] != "s" and len(fmt) > 1 else 0
            self._layout.append((fname, k, count))
            k += count or 1
        self._pack = _struct.Struct(self.format).pack
        # struct pads or cuts a bytes field that construct would refuse: those messages (names,
        # uploads; a few per session) keep construct's build
        self.fast_build = not any(fmt.endswith("s") for _, fmt, _ in self.fields)

    def parse(self, payload):
        """Decode a payload of exactly ``size`` bytes into a construct Container; the same
        result as ``self.struct.parse(payload)``, about 10x faster."""
        vals = self._unpack_from(payload)
        c = Container()
        for fname, k, count in self._layout:
            c[fname] = vals[k] if not count else ListContainer(vals[k : k + count])
        return c

    def build(self, fields):
        """Encode ``fields`` (every field by name) into a payload: the same bytes as
        ``self.struct.build(fields)`` for messages without bytes fields (``fast_build``),
        about 10x faster (the HIL rig sends one per tick). Raises ValueError naming the
        message and what is wrong."""
        if not self.fast_build:
            return self.struct.build(fields)
        vals = []
        for fname, _k, count in self._layout:
            if fname not in fields:
                raise ValueError("%s: field %s is missing" % (self.name, fname))
            v = fields[fname]
            if count:
                if len(v) != count:
                    raise ValueError(
                        "%s: %s has %d values, expected %d" % (self.name, fname, len(v), count)
                    )
                vals.extend(v)
            else:
                vals.append(v)
        try:
            return self._pack(*vals)
        except (_struct.error, OverflowError, TypeError) as exc:
            raise ValueError("%s: %s" % (self.name, exc)) from None

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
        "Open a session (the frame's session byte) and ask the board who it is; IDENTITY.",
        "proto_version" / Int8ul,
    ),
    _m(
        0x02,
        "IDENTITY",
        "board",
        "Firmware, board, schema hash, features, sizes.",
        "req_seq" / Int8ul,
        "proto_version" / Int8ul,
        "fw_version" / _NAME,
        "board" / _NAME,
        "schema_hash" / Int32ul,
        "features" / Int32ul,
        "n_loops" / Int8ul,
        "n_params" / Int16ul,
        "tick_hz" / Float32l,
        "n_sensors" / Int8ul,
        "n_actuators" / Int8ul,
        "max_jump_ms" / Int32ul,
    ),
    _m(
        0x03,
        "LOOP_INFO_REQ",
        "host",
        "Describe loop number loop; answered by LOOP_INFO.",
        "loop" / Int8ul,
    ),
    _m(
        0x04,
        "LOOP_INFO",
        "board",
        "A loop: name, controller, what its setpoint and output measure, its extra fields.",
        "req_seq" / Int8ul,
        "loop" / Int8ul,
        "count" / Int8ul,
        "name" / Bytes(8),
        "controller" / Bytes(12),
        "quantity" / Int8ul,
        "out_quantity" / Int8ul,
        "out_min" / Float32l,
        "out_max" / Float32l,
        "resolution" / Float32l,
        "n_fields" / Int8ul,
    ),
    _m(
        0x05,
        "FIELD_INFO_REQ",
        "host",
        "Describe extra telemetry field index of loop; answered by FIELD_INFO.",
        "loop" / Int8ul,
        "index" / Int8ul,
    ),
    _m(
        0x06,
        "FIELD_INFO",
        "board",
        "Name and quantity of one extra telemetry field of a loop.",
        "req_seq" / Int8ul,
        "loop" / Int8ul,
        "index" / Int8ul,
        "count" / Int8ul,
        "name" / Bytes(12),
        "quantity" / Int8ul,
    ),
    _m(
        0x10,
        "TELEMETRY",
        "board",
        "One loop's state, streamed at its stream rate; fields as FIELD_INFO describes.",
        "loop" / Int8ul,
        "mode" / Int8ul,
        "state" / Int8ul,
        "t_ms" / Int32ul,
        "setpoint" / Float32l,
        "measurement" / Float32l,
        "output" / Float32l,
        "p" / Float32l,
        "i" / Float32l,
        "d" / Float32l,
        "faults" / Int32ul,
        "fields" / Array(8, Float32l),
    ),
    _m(
        0x11,
        "EVENT",
        "board",
        "A fault latched or cleared, a warning or a notice (code: FAULTS or NOTICES).",
        "code" / Int16ul,
        "loop" / Int8ul,
        "kind" / Int8ul,
        "t_ms" / Int32ul,
        "value" / Float32l,
    ),
    _m(0x12, "LOG", "board", "Text from the board.", "level" / Int8ul, "text" / Bytes(60)),
    _m(
        0x13,
        "FAULT_STATUS_REQ",
        "host",
        "Ask which faults are latched and which causes are present; FAULT_STATUS.",
        "flags" / Int8ul,
    ),
    _m(
        0x14,
        "FAULT_STATUS",
        "board",
        "Latched faults, faults whose cause is present now, and the board's time.",
        "req_seq" / Int8ul,
        "latched" / Int32ul,
        "present" / Int32ul,
        "trip" / Int32ul,
        "t_ms" / Int32ul,
    ),
    _m(
        0x15,
        "FAULT_INFO_REQ",
        "host",
        "Describe fault bit; answered by FAULT_INFO.",
        "bit" / Int8ul,
    ),
    _m(
        0x16,
        "FAULT_INFO",
        "board",
        "One fault: latched, present, first latch time, loop, value, times latched.",
        "req_seq" / Int8ul,
        "bit" / Int8ul,
        "latched" / Int8ul,
        "present" / Int8ul,
        "loop" / Int8ul,
        "t_ms" / Int32ul,
        "value" / Float32l,
        "count" / Int16ul,
    ),
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
        "Name, type, unit, quantity, range, default and value of a parameter.",
        "req_seq" / Int8ul,
        "index" / Int16ul,
        "count" / Int16ul,
        "name" / _NAME,
        "unit" / Bytes(8),
        "type" / Int8ul,
        "quantity" / Int8ul,
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
        "Save all parameters to flash atomically; ACK (code 1: unchanged, not written).",
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
        "Mode, manual output, setpoint, fault reset, console release, HIL start/stop.",
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
        "Lockstep: simulated time and raw sensor signals (ADC fraction, volts or SI).",
        "t_ms" / Int32ul,
        "valid" / Int16ul,
        "values" / Array(16, Float32l),
    ),
    _m(
        0x41,
        "HIL_ACTUATORS",
        "board",
        "Lockstep answer: actuator outputs at t_ms, in each actuator's unit.",
        "req_seq" / Int8ul,
        "t_ms" / Int32ul,
        "ticks" / Int16ul,
        "faults" / Int32ul,
        "outputs" / Array(8, Float32l),
    ),
    _m(
        0x50,
        "UPLOAD_BEGIN",
        "host",
        "Start a chunked upload to a slot 0..7 (e.g. an MPC model).",
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
        "hil_rejected" / Int32ul,
        "handler_errors" / Int32ul,
        "events_lost" / Int32ul,
    ),
    _m(
        0x62,
        "BOARD_STATS_REQ",
        "host",
        "Ask for the board's heap and tick statistics.",
        "flags" / Int8ul,
    ),
    _m(
        0x63,
        "BOARD_STATS",
        "board",
        "Heap (now, lowest), collections between ticks and inside them, tick durations, slow "
        "and late ticks.",
        "req_seq" / Int8ul,
        "heap_free" / Int32ul,
        "heap_min_free" / Int32ul,
        "heap_total" / Int32ul,
        "gc_idle" / Int32ul,
        "gc_in_tick" / Int32ul,
        "ticks_slow" / Int32ul,
        "ticks" / Int32ul,
        "tick_us_max" / Int32ul,
        "tick_us_mean" / Float32l,
        "ticks_late" / Int32ul,
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
        "A request failed: error code, offending value, allowed range, conflicting parameter.",
        "req_seq" / Int8ul,
        "req_msg" / Int8ul,
        "code" / Int8ul,
        "value" / Float32l,
        "min" / Float32l,
        "max" / Float32l,
        "other" / Int16ul,
    ),
]

_BY_ID = {m.id: m for m in MESSAGES}
_BY_NAME = {m.name: m for m in MESSAGES}
assert len(_BY_ID) == len(MESSAGES) and len(_BY_NAME) == len(MESSAGES)
#: the largest payload; frames carry it plus a 4-byte header and a 4-byte CRC
MAX_PAYLOAD = max(m.size for m in MESSAGES)
assert MAX_PAYLOAD <= 255
#: frame header: session, seq, msg_id, len
HEADER_SIZE = 4
#: a broadcast frame (telemetry, events, log text) carries session 0; hosts use 1..255
BROADCAST_SESSION = 0


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
    """The canonical text the schema hash is computed from: every message's id, name, field
    names and types, then every enumeration's names and numbers (a renumbered fault, mode,
    command or error code changes the hash)."""
    parts = []
    for m in sorted(MESSAGES, key=lambda m: m.id):
        fields = " ".join("%s %s" % (t, n) for n, _, t in m.fields)
        parts.append("%d %s " % (m.id, m.name) + fields)
    for prefix in sorted(ENUMS):
        table = ENUMS[prefix]
        parts.append(
            "enum %s " % prefix + " ".join("%s=%d" % (k, table[k]) for k in sorted(table))
        )
    return "\n".join(parts)


SCHEMA_HASH = zlib.crc32(("v%d\n" % PROTOCOL_VERSION + schema_text()).encode()) & 0xFFFFFFFF
