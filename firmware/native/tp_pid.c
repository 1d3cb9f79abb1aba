/* ThermoPilot PID step; see tp_pid.h for the equations. */
#include "tp_pid.h"

/* no C library needed: finite test without math.h (the core builds freestanding) */
#define TP_ISFINITE(x) ((x) - (x) == 0.0f)

static tp_float clampf(tp_float x, tp_float lo, tp_float hi)
{
    if (x < lo) {
        return lo;
    }
    if (x > hi) {
        return hi;
    }
    return x;
}

void tp_pid_init(tp_pid_t *c, tp_float kp, tp_float ki, tp_float kd, tp_float out_min,
                 tp_float out_max)
{
    c->kp = kp;
    c->ki = ki;
    c->kd = kd;
    c->tf_s = 0.0f;
    c->beta = 1.0f;
    c->gamma = 0.0f;
    c->out_min = out_min;
    c->out_max = out_max;
    c->rate_max = 0.0f;
    c->tt_s = 0.0f;
    c->reverse = 0.0f;
    c->auto_mode = 1.0f;
    c->manual_output = out_min;
    tp_pid_reset(c, out_min);
}

void tp_pid_reset(tp_pid_t *c, tp_float output)
{
    c->p = 0.0f;
    c->i = 0.0f;
    c->d = 0.0f;
    c->ff = 0.0f;
    c->output = clampf(output, c->out_min, c->out_max);
    c->v = c->output;
    c->y_prev = 0.0f;
    c->r_prev = 0.0f;
    c->primed = 0.0f;
    c->resume = 0.0f;
}

void tp_pid_set_auto(tp_pid_t *c, int auto_mode, tp_float output, int has_output)
{
    if (has_output) {
        c->manual_output = output;
        c->output = clampf(output, c->out_min, c->out_max);
        c->i = c->output - c->p - c->d - c->ff;
    } else if (!auto_mode && c->auto_mode != 0.0f) {
        c->manual_output = c->output; /* to manual: hold the last output */
    }
    if (auto_mode && c->auto_mode == 0.0f) {
        c->resume = 1.0f; /* manual -> auto: the next step starts from the held output */
    }
    c->auto_mode = auto_mode ? 1.0f : 0.0f;
}

tp_pid_status_t tp_pid_step(tp_pid_t *c, tp_float setpoint, tp_float measurement, tp_float dt_s,
                            tp_float ff, tp_float track, int use_track)
{
    tp_float s, r, y, e, pterm, dterm, iterm, v, u, applied, lo, hi, ao;

    if (!TP_ISFINITE(dt_s) || dt_s <= 0.0f) {
        return TP_PID_BAD_DT;
    }
    if (!TP_ISFINITE(setpoint) || !TP_ISFINITE(measurement) || !TP_ISFINITE(ff) ||
        (use_track && !TP_ISFINITE(track))) {
        return TP_PID_BAD_INPUT;
    }
    s = (c->reverse != 0.0f) ? -1.0f : 1.0f;
    r = s * setpoint;
    y = s * measurement;
    e = r - y;

    pterm = c->kp * (c->beta * r - y);
    if (c->primed != 0.0f && !(c->resume != 0.0f && c->auto_mode != 0.0f)) {
        tp_float yd = y - c->gamma * r;
        tp_float yd_prev = s * c->y_prev - c->gamma * (s * c->r_prev);
        tp_float den = c->tf_s + dt_s;
        dterm = (c->tf_s / den) * c->d - (c->kd / den) * (yd - yd_prev);
    } else {
        dterm = 0.0f; /* no derivative kick on the first step */
    }
    if (c->resume != 0.0f && c->auto_mode != 0.0f) {
        iterm = c->output - pterm - dterm - ff; /* bumpless: v equals the held output */
        c->resume = 0.0f;
    } else {
        iterm = c->i + c->ki * e * dt_s;
    }
    v = pterm + iterm + dterm + ff;

    if (c->auto_mode != 0.0f) {
        u = v;
        if (c->rate_max > 0.0f) {
            lo = c->output - c->rate_max * dt_s;
            hi = c->output + c->rate_max * dt_s;
            u = clampf(u, lo, hi);
        }
        /* the box wins over the rate limit: the limits are the actuator's */
        u = clampf(u, c->out_min, c->out_max);
        applied = use_track ? track : u;
        if (c->ki != 0.0f) {
            ao = (c->tt_s > 0.0f) ? dt_s / c->tt_s : 1.0f;
            if (ao > 1.0f) {
                ao = 1.0f;
            }
            iterm += ao * (applied - v);
        } else {
            iterm = c->i; /* P/PD control: the integrator is a bias set by bumpless transfer */
        }
    } else {
        u = clampf(c->manual_output, c->out_min, c->out_max);
        applied = use_track ? track : u;
        iterm = applied - pterm - dterm - ff; /* exact tracking: bumpless back to auto */
    }

    c->p = pterm;
    c->i = iterm;
    c->d = dterm;
    c->ff = ff;
    c->v = v;
    c->output = u;
    c->y_prev = measurement;
    c->r_prev = setpoint;
    c->primed = 1.0f;
    return TP_PID_OK;
}
