# Which control core the board runs: the C core `tpcore` (a dynamic native module,
# lib/tpfw/tpcore.mpy, built per CPU architecture by `make natmod` and copied by
# `thermopilot deploy`) or the MicroPython fallback in pid.py and mpc.py.
#
#   NATIVE         True when the C core is in use
#   NATIVE_REASON  "" when it is, else a short reason for the fallback (no module, a module
#                  built for another CPU or another MicroPython .mpy version, a binding of
#                  another API version); at most 60 characters, so it fits a LOG frame
#   tpcore         the module, or None
#
# Whatever is wrong with the file, importing this module never raises: the board runs the
# fallback and the application reports NATIVE_REASON in an event.
#
# Deploy writes tpcore.sha256 ("<sha256 hex> <bytes>") after the module; the module is
# imported only if it matches. MicroPython's .mpy loader never returns from a truncated
# native module (a copy cut short by a pulled cable), so an unchecked file could hang the
# board at every boot.
import os
import sys

from micropython import const

# the binding API this firmware speaks (firmware/native/natmod/tpcore_natmod.c, TPCORE_API)
_API = const(1)
# floats in tp_pid_t (firmware/native/tp_pid.h) and in the PID io buffer
_PID_NFLOATS = const(23)
_PID_IO_NFLOATS = const(7)

tpcore = None
NATIVE = False
NATIVE_REASON = "not loaded"


def _here():
    try:
        return __file__.rsplit("/", 1)[0]
    except (NameError, AttributeError):
        return "lib/tpfw"  # frozen firmware has no __file__


def _file_problem(path):
    """None if `path` is the file its .sha256 stamp describes, else why not."""
    try:
        size = os.stat(path)[6]
    except OSError:
        return "no tpcore module (lib/tpfw/tpcore.mpy)"
    try:
        with open(path[:-4] + ".sha256") as f:
            want_hash, want_size = f.read().split()
        want_size = int(want_size)
    except (OSError, ValueError):
        return "tpcore.mpy unchecked: no valid tpcore.sha256 beside it"
    if size != want_size:
        return "tpcore.mpy: %d bytes, stamp says %d (copy cut short?)" % (size, want_size)
    try:
        from binascii import hexlify
        from hashlib import sha256
    except ImportError:
        return None  # a port without hashlib: the size check above is what there is
    h = sha256()
    buf = bytearray(512)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    if hexlify(h.digest()).decode() != want_hash:
        return "tpcore.mpy does not match its SHA-256 stamp (corrupt copy?)"
    return None


def _load():
    global tpcore, NATIVE, NATIVE_REASON
    try:
        problem = _file_problem(_here() + "/tpcore.mpy")
    except Exception as exc:  # noqa: BLE001 - a file system error must not stop the boot
        problem = "tpcore.mpy unchecked: %s" % exc
    if problem:
        NATIVE_REASON = problem
        return
    try:
        from . import tpcore as mod
    except ImportError:
        NATIVE_REASON = "no tpcore module (lib/tpfw/tpcore.mpy)"
        return
    except ValueError as exc:
        # MicroPython's loader: "incompatible .mpy arch" (built for another CPU) or
        # "incompatible .mpy file" (another .mpy version or sub-version)
        NATIVE_REASON = "tpcore.mpy: %s" % exc
        return
    except Exception as exc:  # noqa: BLE001 - a broken module must never stop the boot
        NATIVE_REASON = "tpcore.mpy: %s: %s" % (type(exc).__name__, exc)
        return
    api = getattr(mod, "API", 0)
    if api != _API:
        NATIVE_REASON = "tpcore API %d, this firmware needs %d" % (api, _API)
        return
    if mod.PID_NFLOATS != _PID_NFLOATS or mod.PID_IO_NFLOATS != _PID_IO_NFLOATS:
        NATIVE_REASON = "tpcore PID layout %d+%d floats, this firmware needs %d+%d" % (
            mod.PID_NFLOATS,
            mod.PID_IO_NFLOATS,
            _PID_NFLOATS,
            _PID_IO_NFLOATS,
        )
        return
    tpcore = mod
    NATIVE = True
    NATIVE_REASON = ""
    # code that runs `import tpcore` (the application's feature flags) finds the same module
    sys.modules["tpcore"] = mod


_load()
NATIVE_REASON = NATIVE_REASON[:60]
