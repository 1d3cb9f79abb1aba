/* ThermoPilot PID step (float32, C99, no malloc, no printf).
 *
 * Discrete PID after Astrom & Hagglund ("Advanced PID Control", ch. 3):
 *   P = kp * (beta*r - y)
 *   D = tf/(tf+dt) * D - kd/(tf+dt) * ((y - gamma*r) - (y_prev - gamma*r_prev))
 *       derivative on measurement (gamma = 0) with a first-order filter (tf_s)
 *   I = I + ki*(r - y)*dt                       integrate first, then
 *   v = P + I + D + ff                           unsaturated output
 *   u = clamp(clamp(v, u_prev -/+ rate_max*dt), out_min, out_max)
 *   I = I + min(dt/tt_s, 1) * (u_applied - v)   back-calculation anti-windup
 * u_applied is u, or the caller's tracking input (the actuator's real command
 * after the safety supervisor). With ki == 0 the integrator is a fixed bias.
 * In manual mode the output is manual_output and I tracks it exactly while steps run; on
 * the first auto step after manual, I is set so that the step starts from the held output
 * (and D restarts from 0), so the switch back to auto is bumpless even when no steps ran
 * in manual. reverse != 0 negates r and y (a cooling
 * pump: more output lowers the measurement).
 *
 * The struct holds only floats so that a MicroPython array('f') of
 * TP_PID_NFLOATS elements can be handed to the C module as the same memory.
 */
#ifndef TP_PID_H
#define TP_PID_H

#include "tp_config.h"

typedef enum {
    TP_PID_OK = 0,
    TP_PID_BAD_DT = 1,    /* dt_s not finite or <= 0: nothing changed */
    TP_PID_BAD_INPUT = 2  /* setpoint, measurement, ff or track not finite: nothing changed */
} tp_pid_status_t;

typedef struct {
    /* parameters, written by the caller */
    tp_float kp, ki, kd;     /* ki in 1/s, kd in s (times output per measurement unit) */
    tp_float tf_s;           /* derivative filter time constant, s (0 = unfiltered) */
    tp_float beta;           /* setpoint weight on P (1 = classic) */
    tp_float gamma;          /* setpoint weight on D (0 = derivative on measurement) */
    tp_float out_min, out_max;
    tp_float rate_max;       /* output rate limit, output units per s (<= 0: none) */
    tp_float tt_s;           /* anti-windup tracking time constant, s (<= 0: dt) */
    tp_float reverse;        /* != 0: error = measurement - setpoint */
    tp_float auto_mode;      /* != 0: auto, 0: manual */
    tp_float manual_output;  /* output used in manual mode */
    /* state and telemetry, written by tp_pid_step */
    tp_float p, i, d, ff;    /* components of the last step */
    tp_float v;              /* unsaturated output p + i_before_correction + d + ff */
    tp_float output;         /* last output (after limits) */
    tp_float y_prev, r_prev; /* last measurement and setpoint (raw sign) */
    tp_float primed;         /* 0 until the first step since reset */
    tp_float resume;         /* != 0: manual -> auto pending, the next step starts at output */
} tp_pid_t;

#define TP_PID_NFLOATS 23

/* compile-time check: the struct is exactly TP_PID_NFLOATS floats */
typedef char tp_pid_layout_check[(sizeof(tp_pid_t) == TP_PID_NFLOATS * sizeof(tp_float)) ? 1 : -1];

/* Fill defaults: gains given, beta 1, gamma 0, tf 0, limits [out_min, out_max], auto. */
void tp_pid_init(tp_pid_t *c, tp_float kp, tp_float ki, tp_float kd, tp_float out_min,
                 tp_float out_max);

/* Clear the state; the output restarts at `output` (clamped to the limits). */
void tp_pid_reset(tp_pid_t *c, tp_float output);

/* Switch auto/manual. has_output != 0: the output continues from `output` (it becomes the
 * manual output, and the integrator is set so that auto resumes from it without a bump). */
void tp_pid_set_auto(tp_pid_t *c, int auto_mode, tp_float output, int has_output);

/* One control step. use_track != 0: the integrator tracks `track` instead of the output. */
tp_pid_status_t tp_pid_step(tp_pid_t *c, tp_float setpoint, tp_float measurement, tp_float dt_s,
                            tp_float ff, tp_float track, int use_track);

#endif /* TP_PID_H */
