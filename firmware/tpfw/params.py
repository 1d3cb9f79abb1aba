# Typed, named, ranged parameters with cross-parameter rules, saved to flash atomically:
# write params.tmp, read it back and check its CRC-32, then rename over params.bin.
#
# A rule (a, b, gap) says value[a] + gap <= value[b] (out_min below out_max, LowSH below the
# setpoint, LOP below MOP, a warning below its alarm). A write that would break a rule is
# refused with the range that keeps it; a stored set that breaks a rule, or holds a value out
# of range, is refused as a whole at boot and the defaults are used: no value accepted over
# the wire can keep the board from booting.
import os
import struct
from array import array

from micropython import const

from . import codec
from .link import crc_ok, crc_store

_MAGIC = b"TPP1"
_REC = const(20)  # name 16s + value f
_REC_FMT = "<16sf"
_FILE = "params.bin"
_TMP = "params.tmp"

OK = const(0)
SAVED = const(0)
UNCHANGED = const(1)
NO_OTHER = const(0xFFFF)


class Params:
    """Rows: (name, unit, quantity, type, min, max, default); rules: (a, b, gap) by index.
    Values live in array('f')."""

    def __init__(self, table, rules=(), path_dir=""):
        self.names = [r[0] for r in table]
        self.units = [r[1] for r in table]
        self.quantities = bytearray(r[2] for r in table)
        self.types = bytearray(r[3] for r in table)
        self.mins = array("f", [r[4] for r in table])
        self.maxs = array("f", [r[5] for r in table])
        self.defaults = array("f", [r[6] for r in table])
        self.values = array("f", self.defaults)
        self.rules = list(rules)
        self.index = {}
        for i, n in enumerate(self.names):
            if len(n) > 16:
                raise ValueError("parameter name longer than 16 chars: %s" % n)
            if n in self.index:
                raise ValueError("parameter %s declared twice" % n)
            if not (self.mins[i] <= self.defaults[i] <= self.maxs[i]):
                raise ValueError(
                    "parameter %s: default %g not in [%g, %g]"
                    % (n, self.defaults[i], self.mins[i], self.maxs[i])
                )
            self.index[n] = i
        k = self.broken_rule(self.defaults)
        if k >= 0:
            raise ValueError("defaults break the rule " + self.rule_text(k))
        self.path = path_dir + _FILE
        self.tmp = path_dir + _TMP
        self.on_change = None
        self.load_error = ""  # why the stored set was refused, or what was skipped
        self.refused = False  # a stored set existed and was refused: defaults in use
        # the allowed range and the conflicting parameter of the last refused write
        self.err_lo = 0.0
        self.err_hi = 0.0
        self.err_other = NO_OTHER
        self._f32 = array("f", [0.0])

    def find(self, name16):
        # name16: bytes from a frame, NUL padded
        end = name16.find(b"\x00")
        try:
            name = (name16 if end < 0 else name16[:end]).decode()
        except UnicodeError:
            return -1
        return self.index.get(name, -1)

    def rule_text(self, k):
        a, b, gap = self.rules[k]
        if gap:
            return "%s + %g <= %s" % (self.names[a], gap, self.names[b])
        return "%s <= %s" % (self.names[a], self.names[b])

    def broken_rule(self, values):
        """Index of the first rule the values break, or -1."""
        for k in range(len(self.rules)):
            a, b, gap = self.rules[k]
            if not (values[a] + gap <= values[b]):
                return k
        return -1

    def check(self, i, v):
        """0 when v is acceptable for parameter i, else a codec.ERR_* code; err_lo, err_hi
        and err_other then say the allowed range and which parameter limits it."""
        self.err_lo = self.mins[i]
        self.err_hi = self.maxs[i]
        self.err_other = NO_OTHER
        if v != v:
            return codec.ERR_BAD_VALUE
        f = self._f32
        f[0] = v
        v = f[0]  # judged as it will be stored (float32)
        if v < self.mins[i] or v > self.maxs[i]:
            return codec.ERR_OUT_OF_RANGE
        if self.types[i] != codec.PTYPE_F32 and v != int(v):
            return codec.ERR_BAD_VALUE
        vals = self.values
        for a, b, gap in self.rules:
            if a == i and not (v + gap <= vals[b]):
                self.err_hi = min(self.maxs[i], vals[b] - gap)
                self.err_other = b
                return codec.ERR_CONFLICT
            if b == i and not (vals[a] + gap <= v):
                self.err_lo = max(self.mins[i], vals[a] + gap)
                self.err_other = a
                return codec.ERR_CONFLICT
        return OK

    def set(self, i, v):
        err = self.check(i, v)
        if err == OK:
            self.values[i] = v
            if self.on_change is not None:
                self.on_change(i)
        return err

    def get(self, name):
        return self.values[self.index[name]]

    def restore_defaults(self):
        for i in range(len(self.values)):
            self.values[i] = self.defaults[i]
        if self.on_change is not None:
            self.on_change(-1)

    def _image(self):
        n = len(self.names)
        buf = bytearray(6 + n * _REC + 4)
        buf[0:4] = _MAGIC
        struct.pack_into("<H", buf, 4, n)
        for i in range(n):
            struct.pack_into(_REC_FMT, buf, 6 + i * _REC, self.names[i].encode(), self.values[i])
        crc_store(buf, len(buf) - 4)
        return buf

    def _stored(self):
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def save(self):
        """Write atomically when the values differ from the stored ones. Returns SAVED,
        UNCHANGED (nothing written) or -1 on failure; the previous file survives any
        failure and any power cut."""
        img = self._image()
        if self._stored() == img:
            return UNCHANGED
        try:
            with open(self.tmp, "wb") as f:
                f.write(img)
            with open(self.tmp, "rb") as f:
                back = f.read()
            if back != img or not crc_ok(bytearray(back), len(back) - 4):
                return -1
            os.rename(self.tmp, self.path)
            _sync()
            return SAVED
        except OSError:
            return -1

    def cleanup(self):
        """Remove a temporary file a power cut left behind (the stored set is intact)."""
        try:
            os.remove(self.tmp)
            return True
        except OSError:
            return False

    def load(self):
        """Load the stored set if it is intact, in range and keeps every rule; otherwise keep
        the defaults and say why in load_error. Returns True when values were loaded.
        Names the firmware no longer has are skipped (and noted)."""
        try:
            with open(self.path, "rb") as f:
                data = bytearray(f.read())
        except OSError as e:
            if _exists(self.path):
                # there but unreadable (a directory in its place, a bad block)
                self.load_error = "params.bin unreadable (%s); defaults kept" % e
                self.refused = True
            return False
        self.refused = True  # until the set is accepted below
        if len(data) < 10 or data[0:4] != _MAGIC or not crc_ok(data, len(data) - 4):
            self.load_error = "params.bin corrupt; defaults kept"
            return False
        (n,) = struct.unpack_from("<H", data, 4)
        if 6 + n * _REC + 4 != len(data):
            self.load_error = "params.bin length mismatch; defaults kept"
            return False
        vals = array("f", self.defaults)
        skipped = ""
        for k in range(n):
            name, v = struct.unpack_from(_REC_FMT, data, 6 + k * _REC)
            i = self.find(name)
            if i < 0:
                skipped = name.rstrip(b"\x00").decode()
                continue
            if not (self.mins[i] <= v <= self.maxs[i]) or (
                self.types[i] != codec.PTYPE_F32 and v != int(v)
            ):
                self.load_error = "stored %s=%g not in [%g, %g]; defaults kept" % (
                    self.names[i],
                    v,
                    self.mins[i],
                    self.maxs[i],
                )
                return False
            vals[i] = v
        k = self.broken_rule(vals)
        if k >= 0:
            self.load_error = "stored set breaks %s; defaults kept" % self.rule_text(k)
            return False
        for i in range(len(vals)):
            self.values[i] = vals[i]
        self.refused = False
        if skipped:
            self.load_error = "skipped stored %s (not in this firmware)" % skipped
        return True


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _sync():
    # flush the filesystem's caches where the port has os.sync (ESP32, RP2040 do)
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()
