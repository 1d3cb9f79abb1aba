"""cffi (API mode) build of the ThermoPilot C control core into ``thermopilot.host._tpcore``.

setup.py names ``host/native_build.py:ffibuilder`` in ``cffi_modules``, so ``pip install``
compiles ``firmware/native/*.c`` (all but the MicroPython binding ``tp_mod.c``) into the
extension. Run this file directly to build it in place for a quick check.
"""

import os
from pathlib import Path

from cffi import FFI

_REPO = Path(__file__).resolve().parent.parent
_NATIVE = _REPO / "firmware" / "native"
# the MicroPython binding needs the MicroPython headers; the host never builds it
_BOARD_ONLY = {"tp_mod.c"}


def _rel(path):
    # setuptools wants source paths relative to setup.py when it runs from the repo root
    try:
        return os.path.relpath(path, os.getcwd()) if Path.cwd() == _REPO else str(path)
    except ValueError:
        return str(path)


# API mode: the C compiler checks every declaration below against the headers.
_HEADERS = ["tp_pid.h"]
_SOURCES = sorted(p for p in _NATIVE.glob("*.c") if p.name not in _BOARD_ONLY)
_CDEF_PID = """
typedef enum { TP_PID_OK = 0, TP_PID_BAD_DT = 1, TP_PID_BAD_INPUT = 2 } tp_pid_status_t;
typedef struct {
    tp_float kp, ki, kd, tf_s, beta, gamma, out_min, out_max, rate_max, tt_s, reverse;
    tp_float auto_mode, manual_output;
    tp_float p, i, d, ff, v, output, y_prev, r_prev, primed;
} tp_pid_t;
void tp_pid_init(tp_pid_t *c, tp_float kp, tp_float ki, tp_float kd, tp_float out_min,
                 tp_float out_max);
void tp_pid_reset(tp_pid_t *c, tp_float output);
void tp_pid_set_auto(tp_pid_t *c, int auto_mode, tp_float manual_output);
tp_pid_status_t tp_pid_step(tp_pid_t *c, tp_float setpoint, tp_float measurement,
                            tp_float dt_s, tp_float ff, tp_float track, int use_track);
"""

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef float tp_float;
    #define TP_MPC_NX_MAX ...
    #define TP_MPC_NU_MAX ...
    #define TP_MPC_ND_MAX ...
    #define TP_MPC_NY_MAX ...
    #define TP_MPC_N_MAX ...
    #define TP_PID_NFLOATS ...
    """
    + _CDEF_PID
)
ffibuilder.set_source(
    "thermopilot.host._tpcore",
    "\n".join('#include "%s"' % h for h in _HEADERS),
    sources=[_rel(p) for p in _SOURCES],
    include_dirs=[_rel(_NATIVE)],
    extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
