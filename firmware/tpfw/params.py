# Typed, named, ranged parameters, saved to flash atomically:
# write params.tmp, read it back and check its CRC-32, then rename over params.bin.
import os
import struct
from array import array

from micropython import const

from . import codec
from .link import crc_ok, crc_store

_MAGIC = b"TPP1"
_REC = const(20)  # name 16s + value f
_FILE = "params.bin"
_TMP = "params.tmp"

OK = const(0)


class Params:
    """Table rows: (name, unit, type, min, max, default). Values live in array('f')."""

    def __init__(self, table, path_dir=""):
        self.names = [r[0] for r in table]
        self.units = [r[1] for r in table]
        self.types = bytearray(r[2] for r in table)
        self.mins = array("f", [r[3] for r in table])
        self.maxs = array("f", [r[4] for r in table])
        self.defaults = array("f", [r[5] for r in table])
        self.values = array("f", self.defaults)
        self.index = {}
        for i, n in enumerate(self.names):
            if len(n) > 16:
                raise ValueError("parameter name longer than 16 chars: %s" % n)
            self.index[n] = i
        self.path = path_dir + _FILE
        self.tmp = path_dir + _TMP
        self.on_change = None
        self.load_error = ""

    def find(self, name16):
        # name16: bytes from a frame, NUL padded
        end = name16.find(b"\x00")
        name = (name16 if end < 0 else name16[:end]).decode()
        return self.index.get(name, -1)

    def check(self, i, v):
        """0 when v is acceptable for parameter i, else a codec.ERR_* code."""
        if v != v:
            return codec.ERR_BAD_VALUE
        if v < self.mins[i] or v > self.maxs[i]:
            return codec.ERR_OUT_OF_RANGE
        if self.types[i] != codec.PTYPE_F32 and v != int(v):
            return codec.ERR_BAD_VALUE
        return OK

    def set(self, i, v):
        err = self.check(i, v)
        if err == OK:
            self.values[i] = v
            if self.on_change is not None:
                self.on_change(self.names[i], self.values[i])
        return err

    def get(self, name):
        return self.values[self.index[name]]

    def restore_defaults(self):
        for i in range(len(self.values)):
            self.values[i] = self.defaults[i]
            if self.on_change is not None:
                self.on_change(self.names[i], self.values[i])

    def _image(self):
        n = len(self.names)
        buf = bytearray(6 + n * _REC + 4)
        buf[0:4] = _MAGIC
        struct.pack_into("<H", buf, 4, n)
        for i in range(n):
            struct.pack_into("<16sf", buf, 6 + i * _REC, self.names[i].encode(), self.values[i])
        crc_store(buf, len(buf) - 4)
        return buf

    def save(self):
        """Write atomically; True on success. The previous file survives any failure."""
        img = self._image()
        try:
            with open(self.tmp, "wb") as f:
                f.write(img)
            with open(self.tmp, "rb") as f:
                back = f.read()
            if back != img or not crc_ok(bytearray(back), len(back) - 4):
                return False
            os.rename(self.tmp, self.path)
            return True
        except OSError:
            return False

    def load(self):
        """Load saved values if the file is intact; keep defaults otherwise.
        Returns True when values were loaded. Unknown names in the file are skipped and
        values now out of range keep their default (load_error says which)."""
        try:
            with open(self.path, "rb") as f:
                data = bytearray(f.read())
        except OSError:
            return False
        if len(data) < 10 or data[0:4] != _MAGIC or not crc_ok(data, len(data) - 4):
            self.load_error = "params.bin corrupt; defaults kept"
            return False
        (n,) = struct.unpack_from("<H", data, 4)
        if 6 + n * _REC + 4 != len(data):
            self.load_error = "params.bin length mismatch; defaults kept"
            return False
        for k in range(n):
            name, v = struct.unpack_from("<16sf", data, 6 + k * _REC)
            i = self.find(name)
            if i >= 0 and self.check(i, v) == OK:
                self.values[i] = v
            else:
                self.load_error = "skipped saved %s" % name.rstrip(b"\x00").decode()
        return True
