/* MicroPython binding `tpcore` for the ThermoPilot C control core.
 *
 * Values travel through caller-owned buffers (array('f'), bytearray) made once by the
 * firmware, so a control step allocates nothing in here. Built only inside a MicroPython
 * firmware build (USER_C_MODULES, see boards/custom-firmware.md); the host build skips it.
 *
 *   pid_init(buf, kp, ki, kd, out_min, out_max)   buf: array('f', PID_NFLOATS)
 *   pid_reset(buf, output)
 *   pid_set_auto(buf, auto[, output])
 *   pid_step(buf, io) -> status                    io: array('f') [sp, y, dt_s, ff, track, use]
 *   mpc_load(ws, blob) -> blob status              ws: bytearray(MPC_WORKSPACE_BYTES)
 *   mpc_reset(ws)
 *   mpc_solve(ws, inp, u0, info) -> status         inp: [x0, u_prev, d, x_ref, u_ref]
 *                                                  u0: array('f', nu); info: [iters, rp, rd]
 */
#include "py/obj.h"
#include "py/runtime.h"

#include "tp_mpc.h"
#include "tp_pid.h"

static void *get_buf(mp_obj_t obj, size_t min_len, size_t align)
{
    mp_buffer_info_t info;
    mp_get_buffer_raise(obj, &info, MP_BUFFER_RW);
    if (info.len < min_len) {
        mp_raise_ValueError(MP_ERROR_TEXT("tpcore: buffer too small"));
    }
    if (((uintptr_t)info.buf) % align != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("tpcore: buffer not aligned"));
    }
    return info.buf;
}

static tp_pid_t *pid_buf(mp_obj_t obj)
{
    return (tp_pid_t *)get_buf(obj, sizeof(tp_pid_t), sizeof(tp_float));
}

static tp_mpc_t *mpc_buf(mp_obj_t obj)
{
    return (tp_mpc_t *)get_buf(obj, sizeof(tp_mpc_t), sizeof(int32_t));
}

static mp_obj_t tpcore_pid_init(size_t n_args, const mp_obj_t *args)
{
    (void)n_args;
    tp_pid_init(pid_buf(args[0]), (tp_float)mp_obj_get_float(args[1]),
                (tp_float)mp_obj_get_float(args[2]), (tp_float)mp_obj_get_float(args[3]),
                (tp_float)mp_obj_get_float(args[4]), (tp_float)mp_obj_get_float(args[5]));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tpcore_pid_init_obj, 6, 6, tpcore_pid_init);

static mp_obj_t tpcore_pid_reset(mp_obj_t buf, mp_obj_t output)
{
    tp_pid_reset(pid_buf(buf), (tp_float)mp_obj_get_float(output));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(tpcore_pid_reset_obj, tpcore_pid_reset);

static mp_obj_t tpcore_pid_set_auto(size_t n_args, const mp_obj_t *args)
{
    int has_output = n_args > 2;
    tp_float output = has_output ? (tp_float)mp_obj_get_float(args[2]) : 0.0f;
    tp_pid_set_auto(pid_buf(args[0]), mp_obj_is_true(args[1]), output, has_output);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tpcore_pid_set_auto_obj, 2, 3, tpcore_pid_set_auto);

static mp_obj_t tpcore_pid_step(mp_obj_t buf, mp_obj_t io_obj)
{
    const tp_float *io = (const tp_float *)get_buf(io_obj, 6 * sizeof(tp_float), sizeof(tp_float));
    tp_pid_status_t st = tp_pid_step(pid_buf(buf), io[0], io[1], io[2], io[3], io[4],
                                     io[5] != 0.0f);
    return MP_OBJ_NEW_SMALL_INT(st);
}
static MP_DEFINE_CONST_FUN_OBJ_2(tpcore_pid_step_obj, tpcore_pid_step);

static mp_obj_t tpcore_mpc_load(mp_obj_t ws, mp_obj_t blob_obj)
{
    mp_buffer_info_t blob;
    mp_get_buffer_raise(blob_obj, &blob, MP_BUFFER_READ);
    return MP_OBJ_NEW_SMALL_INT(tp_mpc_load(mpc_buf(ws), (const uint8_t *)blob.buf, blob.len));
}
static MP_DEFINE_CONST_FUN_OBJ_2(tpcore_mpc_load_obj, tpcore_mpc_load);

static mp_obj_t tpcore_mpc_reset(mp_obj_t ws)
{
    tp_mpc_reset(mpc_buf(ws));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(tpcore_mpc_reset_obj, tpcore_mpc_reset);

static mp_obj_t tpcore_mpc_solve(size_t n_args, const mp_obj_t *args)
{
    tp_mpc_t *m = mpc_buf(args[0]);
    const tp_float *in;
    tp_float *u0, *info;
    tp_mpc_status_t st;
    int32_t i;
    (void)n_args;
    if (!m->loaded) {
        mp_raise_ValueError(MP_ERROR_TEXT("tpcore: no MPC model loaded"));
    }
    in = (const tp_float *)get_buf(args[1], sizeof(tp_float) * (size_t)(2 * m->nx + 2 * m->nu + m->nd),
                                   sizeof(tp_float));
    u0 = (tp_float *)get_buf(args[2], sizeof(tp_float) * (size_t)m->nu, sizeof(tp_float));
    info = (tp_float *)get_buf(args[3], 3 * sizeof(tp_float), sizeof(tp_float));
    st = tp_mpc_solve(m, in, in + m->nx, in + m->nx + m->nu, in + m->nx + m->nu + m->nd,
                      in + 2 * m->nx + m->nu + m->nd);
    for (i = 0; i < m->nu; i++) {
        u0[i] = m->u0[i];
    }
    info[0] = (tp_float)m->iterations;
    info[1] = m->res_primal;
    info[2] = m->res_dual;
    return MP_OBJ_NEW_SMALL_INT(st);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tpcore_mpc_solve_obj, 4, 4, tpcore_mpc_solve);

static const mp_rom_map_elem_t tpcore_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_tpcore)},
    {MP_ROM_QSTR(MP_QSTR_pid_init), MP_ROM_PTR(&tpcore_pid_init_obj)},
    {MP_ROM_QSTR(MP_QSTR_pid_reset), MP_ROM_PTR(&tpcore_pid_reset_obj)},
    {MP_ROM_QSTR(MP_QSTR_pid_set_auto), MP_ROM_PTR(&tpcore_pid_set_auto_obj)},
    {MP_ROM_QSTR(MP_QSTR_pid_step), MP_ROM_PTR(&tpcore_pid_step_obj)},
    {MP_ROM_QSTR(MP_QSTR_mpc_load), MP_ROM_PTR(&tpcore_mpc_load_obj)},
    {MP_ROM_QSTR(MP_QSTR_mpc_reset), MP_ROM_PTR(&tpcore_mpc_reset_obj)},
    {MP_ROM_QSTR(MP_QSTR_mpc_solve), MP_ROM_PTR(&tpcore_mpc_solve_obj)},
    {MP_ROM_QSTR(MP_QSTR_PID_NFLOATS), MP_ROM_INT(TP_PID_NFLOATS)},
    {MP_ROM_QSTR(MP_QSTR_MPC_WORKSPACE_BYTES), MP_ROM_INT(sizeof(tp_mpc_t))},
};
static MP_DEFINE_CONST_DICT(tpcore_globals, tpcore_globals_table);

const mp_obj_module_t tpcore_user_cmodule = {
    .base = {&mp_type_module},
    .globals = (mp_obj_dict_t *)&tpcore_globals,
};

MP_REGISTER_MODULE(MP_QSTR_tpcore, tpcore_user_cmodule);
