/* `tpcore`: the ThermoPilot C control core as a MicroPython dynamic native module (.mpy).
 *
 * Built by `make natmod MPY_DIR=...` (see Makefile beside this file) from the same tp_pid.c
 * and tp_mpc.c as the host's cffi extension; stock MicroPython firmware imports the .mpy.
 * The binding is thin on purpose: every value travels through caller-owned buffers made once
 * by the firmware (firmware/tpfw/pid.py, mpc.py), so a control step allocates nothing here,
 * and no float object crosses the binding in a step (only at set-up), so the module does not
 * depend on the firmware's float width.
 *
 *   API, PID_NFLOATS, PID_IO_NFLOATS, MPC_WORKSPACE_BYTES, MPC_BLOB_VERSION, SOURCE_SHA256
 *   pid_init(state, kp, ki, kd, out_min, out_max)  state: array('f', PID_NFLOATS) = tp_pid_t
 *   pid_reset(state, output)
 *   pid_set_auto(state, auto[, output])
 *   pid_step(state, io) -> status       io: array('f', PID_IO_NFLOATS)
 *                                       [setpoint, measurement, dt_s, ff, track, use_track,
 *                                        output (written)]
 *   mpc_load(ws, blob) -> blob status   ws: bytearray(MPC_WORKSPACE_BYTES) = tp_mpc_t
 *   mpc_reset(ws)
 *   mpc_solve(ws, x0, u_prev, d, x_ref, u_ref, u0, info) -> status
 *       inputs: array('f') of the model's length (no copy), or a list/tuple of numbers;
 *       u0: array('f', nu) (written); info: array('f', 3) [iterations, res_primal, res_dual]
 * Any buffer of the wrong type or size raises ValueError naming it, its size and the size
 * expected; nothing is written then.
 */
#include "py/dynruntime.h"

#include "tp_mpc.h"
#include "tp_pid.h"

/* the Python-facing calls; firmware/tpfw/core.py refuses a module with another value */
#define TPCORE_API 1
/* floats in a PID io buffer: 6 inputs, then the output */
#define TPCORE_PID_IO_NFLOATS 7

#ifndef TPCORE_SOURCE_SHA256
#define TPCORE_SOURCE_SHA256 "unknown"
#endif

/* a str from a string literal (its length known at compile time: no strlen in a natmod) */
#define LITERAL(s) mp_obj_new_str((s), sizeof(s) - 1)

/* raise ValueError(fmt % (a, b, c)); formatted by the VM, so the message carries values */
static MP_NORETURN void raise_value_error(mp_obj_t fmt, mp_obj_t a, mp_obj_t b, mp_obj_t c)
{
    mp_obj_t items[3] = {a, b, c};
    mp_obj_t msg = mp_binary_op(MP_BINARY_OP_MODULO, fmt, mp_obj_new_tuple(3, items));
    nlr_raise(mp_obj_new_exception_arg1(&mp_type_ValueError, msg));
}

/* An array('f') (or a memoryview of one) holding exactly `count` floats. */
static tp_float *f32_buffer(mp_obj_t obj, size_t count, qstr what, int writable)
{
    mp_buffer_info_t info;
    if (!mp_get_buffer(obj, &info, writable ? MP_BUFFER_RW : MP_BUFFER_READ) ||
        info.typecode != 'f') {
        raise_value_error(LITERAL("tpcore: %s must be an array('f') of %d floats, got %s"),
                          MP_OBJ_NEW_QSTR(what), mp_obj_new_int((mp_int_t)count),
                          MP_OBJ_FROM_PTR(mp_obj_get_type(obj)));
    }
    if (info.len != count * sizeof(tp_float)) {
        raise_value_error(LITERAL("tpcore: %s has %d floats, expected %d"), MP_OBJ_NEW_QSTR(what),
                          mp_obj_new_int((mp_int_t)(info.len / sizeof(tp_float))),
                          mp_obj_new_int((mp_int_t)count));
    }
    return (tp_float *)info.buf;
}

static tp_pid_t *pid_state(mp_obj_t obj)
{
    return (tp_pid_t *)f32_buffer(obj, TP_PID_NFLOATS, MP_QSTR_pid_state, 1);
}

static tp_mpc_t *mpc_workspace(mp_obj_t obj)
{
    mp_buffer_info_t info;
    mp_obj_t what = MP_OBJ_NEW_QSTR(MP_QSTR_mpc_workspace);
    mp_get_buffer_raise(obj, &info, MP_BUFFER_RW);
    if (info.len != sizeof(tp_mpc_t)) {
        raise_value_error(LITERAL("tpcore: %s has %d bytes, expected %d"), what,
                          mp_obj_new_int((mp_int_t)info.len),
                          mp_obj_new_int((mp_int_t)sizeof(tp_mpc_t)));
    }
    if (((uintptr_t)info.buf) % sizeof(int32_t) != 0) {
        raise_value_error(LITERAL("tpcore: %s at address %d is not %d-byte aligned"), what,
                          mp_obj_new_int((mp_int_t)(uintptr_t)info.buf),
                          mp_obj_new_int((mp_int_t)sizeof(int32_t)));
    }
    return (tp_mpc_t *)info.buf;
}

/* ---- PID ------------------------------------------------------------------------------ */

static mp_obj_t tpcore_pid_init(size_t n_args, const mp_obj_t *args)
{
    tp_pid_t *c = pid_state(args[0]);
    tp_float kp = mp_obj_get_float_to_f(args[1]), ki = mp_obj_get_float_to_f(args[2]);
    tp_float kd = mp_obj_get_float_to_f(args[3]), lo = mp_obj_get_float_to_f(args[4]);
    tp_float hi = mp_obj_get_float_to_f(args[5]);
    (void)n_args;
    tp_pid_init(c, kp, ki, kd, lo, hi);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tpcore_pid_init_obj, 6, 6, tpcore_pid_init);

static mp_obj_t tpcore_pid_reset(mp_obj_t state, mp_obj_t output)
{
    tp_pid_t *c = pid_state(state);
    tp_pid_reset(c, mp_obj_get_float_to_f(output));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(tpcore_pid_reset_obj, tpcore_pid_reset);

static mp_obj_t tpcore_pid_set_auto(size_t n_args, const mp_obj_t *args)
{
    tp_pid_t *c = pid_state(args[0]);
    int has_output = n_args > 2;
    tp_float output = has_output ? mp_obj_get_float_to_f(args[2]) : 0.0f;
    tp_pid_set_auto(c, mp_obj_is_true(args[1]), output, has_output);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tpcore_pid_set_auto_obj, 2, 3, tpcore_pid_set_auto);

static mp_obj_t tpcore_pid_step(mp_obj_t state, mp_obj_t io_obj)
{
    tp_pid_t *c = pid_state(state);
    tp_float *io = f32_buffer(io_obj, TPCORE_PID_IO_NFLOATS, MP_QSTR_pid_io, 1);
    tp_pid_status_t st = tp_pid_step(c, io[0], io[1], io[2], io[3], io[4], io[5] != 0.0f);
    io[6] = c->output;
    return MP_OBJ_NEW_SMALL_INT(st);
}
static MP_DEFINE_CONST_FUN_OBJ_2(tpcore_pid_step_obj, tpcore_pid_step);

/* ---- MPC ------------------------------------------------------------------------------ */

static mp_obj_t tpcore_mpc_load(mp_obj_t ws, mp_obj_t blob_obj)
{
    tp_mpc_t *m = mpc_workspace(ws);
    mp_buffer_info_t blob;
    mp_get_buffer_raise(blob_obj, &blob, MP_BUFFER_READ);
    return MP_OBJ_NEW_SMALL_INT(tp_mpc_load(m, (const uint8_t *)blob.buf, blob.len));
}
static MP_DEFINE_CONST_FUN_OBJ_2(tpcore_mpc_load_obj, tpcore_mpc_load);

static mp_obj_t tpcore_mpc_reset(mp_obj_t ws)
{
    tp_mpc_reset(mpc_workspace(ws));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(tpcore_mpc_reset_obj, tpcore_mpc_reset);

/* An MPC input of `count` values: an array('f') is used in place; a list or tuple of
 * numbers is converted into `stage` (no allocation either way). */
static const tp_float *mpc_input(mp_obj_t obj, int32_t count, qstr what, tp_float *stage)
{
    mp_buffer_info_t info;
    size_t len, i;
    mp_obj_t *items;
    if (mp_get_buffer(obj, &info, MP_BUFFER_READ) && info.typecode == 'f') {
        return f32_buffer(obj, (size_t)count, what, 0);
    }
    if (mp_obj_get_type(obj) != &mp_type_list && mp_obj_get_type(obj) != &mp_type_tuple) {
        raise_value_error(LITERAL("tpcore: %s must be an array('f') or a list/tuple of %d "
                                  "numbers, got %s"),
                          MP_OBJ_NEW_QSTR(what), mp_obj_new_int((mp_int_t)count),
                          MP_OBJ_FROM_PTR(mp_obj_get_type(obj)));
    }
    mp_obj_get_array(obj, &len, &items);
    if (len != (size_t)count) {
        raise_value_error(LITERAL("tpcore: %s has %d values, expected %d"), MP_OBJ_NEW_QSTR(what),
                          mp_obj_new_int((mp_int_t)len), mp_obj_new_int((mp_int_t)count));
    }
    for (i = 0; i < len; i++) {
        stage[i] = mp_obj_get_float_to_f(items[i]);
    }
    return stage;
}

static mp_obj_t tpcore_mpc_solve(size_t n_args, const mp_obj_t *args)
{
    tp_mpc_t *m = mpc_workspace(args[0]);
    tp_float st_x0[TP_MPC_NX_MAX], st_up[TP_MPC_NU_MAX], st_d[TP_MPC_ND_MAX];
    tp_float st_xr[TP_MPC_NX_MAX], st_ur[TP_MPC_NU_MAX];
    const tp_float *x0, *u_prev, *d, *x_ref, *u_ref;
    tp_float *u0, *info;
    tp_mpc_status_t st;
    int32_t i;
    (void)n_args;
    /* the workspace is the caller's memory: check what the solver will index with */
    if (m->loaded != 1 || m->nx < 1 || m->nx > TP_MPC_NX_MAX || m->nu < 1 ||
        m->nu > TP_MPC_NU_MAX || m->nd < 0 || m->nd > TP_MPC_ND_MAX) {
        mp_raise_ValueError(MP_ERROR_TEXT("tpcore: no MPC model loaded in this workspace"));
    }
    x0 = mpc_input(args[1], m->nx, MP_QSTR_x0, st_x0);
    u_prev = mpc_input(args[2], m->nu, MP_QSTR_u_prev, st_up);
    d = mpc_input(args[3], m->nd, MP_QSTR_d, st_d);
    x_ref = mpc_input(args[4], m->nx, MP_QSTR_x_ref, st_xr);
    u_ref = mpc_input(args[5], m->nu, MP_QSTR_u_ref, st_ur);
    u0 = f32_buffer(args[6], (size_t)m->nu, MP_QSTR_u0, 1);
    info = f32_buffer(args[7], 3, MP_QSTR_mpc_info, 1);
    st = tp_mpc_solve(m, x0, u_prev, d, x_ref, u_ref);
    for (i = 0; i < m->nu; i++) {
        u0[i] = m->u0[i];
    }
    info[0] = (tp_float)m->iterations;
    info[1] = m->res_primal;
    info[2] = m->res_dual;
    return MP_OBJ_NEW_SMALL_INT(st);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tpcore_mpc_solve_obj, 8, 8, tpcore_mpc_solve);

/* ---- module --------------------------------------------------------------------------- */

mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args)
{
    MP_DYNRUNTIME_INIT_ENTRY

    mp_store_global(MP_QSTR_API, MP_OBJ_NEW_SMALL_INT(TPCORE_API));
    mp_store_global(MP_QSTR_PID_NFLOATS, MP_OBJ_NEW_SMALL_INT(TP_PID_NFLOATS));
    mp_store_global(MP_QSTR_PID_IO_NFLOATS, MP_OBJ_NEW_SMALL_INT(TPCORE_PID_IO_NFLOATS));
    mp_store_global(MP_QSTR_MPC_WORKSPACE_BYTES, mp_obj_new_int((mp_int_t)sizeof(tp_mpc_t)));
    mp_store_global(MP_QSTR_MPC_BLOB_VERSION, MP_OBJ_NEW_SMALL_INT(TP_MPC_BLOB_VERSION));
    mp_store_global(MP_QSTR_SOURCE_SHA256, LITERAL(TPCORE_SOURCE_SHA256));
    mp_store_global(MP_QSTR_pid_init, MP_OBJ_FROM_PTR(&tpcore_pid_init_obj));
    mp_store_global(MP_QSTR_pid_reset, MP_OBJ_FROM_PTR(&tpcore_pid_reset_obj));
    mp_store_global(MP_QSTR_pid_set_auto, MP_OBJ_FROM_PTR(&tpcore_pid_set_auto_obj));
    mp_store_global(MP_QSTR_pid_step, MP_OBJ_FROM_PTR(&tpcore_pid_step_obj));
    mp_store_global(MP_QSTR_mpc_load, MP_OBJ_FROM_PTR(&tpcore_mpc_load_obj));
    mp_store_global(MP_QSTR_mpc_reset, MP_OBJ_FROM_PTR(&tpcore_mpc_reset_obj));
    mp_store_global(MP_QSTR_mpc_solve, MP_OBJ_FROM_PTR(&tpcore_mpc_solve_obj));

    MP_DYNRUNTIME_INIT_EXIT
}
