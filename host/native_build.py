"""cffi (API mode) build of the ThermoPilot C control core into ``thermopilot.host._tpcore``.

setup.py names ``host/native_build.py:ffibuilder`` in ``cffi_modules``, so ``pip install``
compiles ``firmware/native/*.c`` into the extension (the MicroPython binding, which needs
MicroPython's headers, is in ``firmware/native/natmod/``, outside the glob). Run this file
directly to build it in place for a quick check.
"""

import os
from pathlib import Path

from cffi import FFI

_REPO = Path(__file__).resolve().parent.parent
_NATIVE = _REPO / "firmware" / "native"


def _rel(path):
    # setuptools wants source paths relative to setup.py when it runs from the repo root
    try:
        return os.path.relpath(path, os.getcwd()) if Path.cwd() == _REPO else str(path)
    except ValueError:
        return str(path)


# API mode: the C compiler checks every declaration below against the headers.
_HEADERS = ["tp_pid.h", "tp_mpc.h"]
_SOURCES = sorted(_NATIVE.glob("*.c"))
_CDEF_PID = """
typedef enum { TP_PID_OK = 0, TP_PID_BAD_DT = 1, TP_PID_BAD_INPUT = 2 } tp_pid_status_t;
typedef struct {
    tp_float kp, ki, kd, tf_s, beta, gamma, out_min, out_max, rate_max, tt_s, reverse;
    tp_float auto_mode, manual_output;
    tp_float p, i, d, ff, v, output, y_prev, r_prev, primed, resume;
} tp_pid_t;
void tp_pid_init(tp_pid_t *c, tp_float kp, tp_float ki, tp_float kd, tp_float out_min,
                 tp_float out_max);
void tp_pid_reset(tp_pid_t *c, tp_float output);
void tp_pid_set_auto(tp_pid_t *c, int auto_mode, tp_float output, int has_output);
tp_pid_status_t tp_pid_step(tp_pid_t *c, tp_float setpoint, tp_float measurement,
                            tp_float dt_s, tp_float ff, tp_float track, int use_track);
"""
_CDEF_MPC = """
#define TP_MPC_BLOB_MAGIC ...
#define TP_MPC_BLOB_VERSION ...
#define TP_MPC_HEADER_BYTES ...
typedef enum {
    TP_MPC_SOLVED = 0, TP_MPC_MAX_ITER = 1, TP_MPC_INFEASIBLE = 2, TP_MPC_BAD_INPUT = 3,
    TP_MPC_NUMERIC = 4
} tp_mpc_status_t;
typedef enum {
    TP_MPC_BLOB_OK = 0, TP_MPC_BLOB_BAD_LENGTH = 1, TP_MPC_BLOB_BAD_MAGIC = 2,
    TP_MPC_BLOB_BAD_VERSION = 3, TP_MPC_BLOB_BAD_DIMS = 4, TP_MPC_BLOB_BAD_CRC = 5,
    TP_MPC_BLOB_BAD_MODEL = 6
} tp_mpc_blob_status_t;
typedef struct {
    int32_t nx, nu, nd, ny, nxa, ng, n, loaded;
    tp_float u_min[...], u_max[...], du_min[...], du_max[...];
    tp_float y_min[...], y_max[...], w_lin[...], w_quad[...];
    int32_t max_iter;
    tp_float tol;
    tp_float x[...], v[...];
    tp_float u0[...];
    tp_float res_primal, res_dual, mu;
    int32_t iterations, status, warm;
    ...;
} tp_mpc_t;
uint32_t tp_crc32(const uint8_t *data, size_t len, uint32_t crc);
tp_mpc_blob_status_t tp_mpc_load(tp_mpc_t *m, const uint8_t *blob, size_t len);
void tp_mpc_reset(tp_mpc_t *m);
tp_mpc_status_t tp_mpc_solve(tp_mpc_t *m, const tp_float *x0, const tp_float *u_prev,
                             const tp_float *d, const tp_float *x_ref, const tp_float *u_ref);
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
    + _CDEF_MPC
)
ffibuilder.set_source(
    "thermopilot.host._tpcore",
    "\n".join('#include "%s"' % h for h in _HEADERS),
    sources=[_rel(p) for p in _SOURCES],
    include_dirs=[_rel(_NATIVE)],
    extra_compile_args=["-std=c99", "-O3", "-Wall", "-Wextra"],
    depends=[_rel(p) for p in sorted(_NATIVE.glob("*.h"))],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
