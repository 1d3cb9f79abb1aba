/* ThermoPilot MPC: a structured interior-point QP solver (float32, C99, no malloc).
 *
 * Plant: x+ = A x + B u + E d, outputs y = C x, d a measured disturbance held constant
 * over the horizon. Rate limits turn into box limits by augmenting the state with the
 * previous input: xa = [x; u_prev], the decision is the move v = du, and
 *   xa+ = Aa xa + Ba v + [E d; 0],  Aa = [[A, B], [0, I]],  Ba = [[B], [I]].
 * The QP over the horizon N (moves v_0..v_{N-1}, states xa_1..xa_N):
 *   min  sum_{k=1}^{N-1} 1/2 |xa_k - xa_ref|^2_Qa + 1/2 |xa_N - xa_ref|^2_PN
 *        + sum_{k<N} 1/2 |v_k|^2_S + sum_{k=1..N} sum_i (w_lin_i s_ki + 1/2 w_quad_i s_ki^2)
 *   s.t. dynamics, du_min <= v_k <= du_max, u_min <= u_k <= u_max,
 *        y_min - s_k <= C x_k <= y_max + s_k, s_k >= 0        (k = 1..N)
 * with Qa = blkdiag(Q, R). An output with w_lin >= 1e30 has a hard limit (no slack).
 *
 * The terminal cost PN is part of the model (the host chooses it; by default the LQR
 * cost-to-go), independent of any solver setting, so the QP is the same for every solver.
 *
 * Solver: Mehrotra predictor-corrector interior-point method. Each iteration factorises the
 * Newton system by a Riccati recursion over the horizon (O(N (nx + nu)^3), the structure of
 * Aa and Ba exploited) and solves it twice (predictor, corrector). Soft-limit slacks are
 * eliminated row by row. Each constraint row's barrier weight l / t is regularised to
 * l / (t + delta l) (primal-dual regularisation, delta 1e-5 of row size over gradient
 * size, the multiplier step taken from the same regularised equation), which keeps the
 * weights within float32's reach near the solution; the residuals are those of the
 * unregularised QP. Iterations stop when the scaled primal residual, the scaled reduced
 * dual residual and the complementarity are all below `tol` (the complementarity relative
 * to the cost gradient, not to the multipliers: a large soft-limit penalty must not loosen
 * it), or when float32 ends the progress (the merit runs away from the best, or does not
 * halve in 6 iterations; the status is then "iteration limit" and the move the best
 * iterate's). Iterations: 6-10 on the benchmarks' closed loops, median 9-14 and at most 35
 * on their cold starts (docs/benchmarks.md); on random plants (tests/test_native_mpc.py)
 * about 14 on average, 38 at the 99th percentile, "iteration limit" on about 0.3 %. Every
 * solve starts from the held input: a warm start from the previous solution shifted one
 * step, multipliers floored at 1e-1 to 1e-3 of the centred start's, saved at most one
 * iteration on the closed loops and at 1e-3 sent one step of the thermal chain 8e-2 astray.
 * Everything runs in the caller's tp_mpc_t.
 *
 * The model comes from the host as one versioned blob (layout: tp_mpc_blob.h, generated).
 */
#ifndef TP_MPC_H
#define TP_MPC_H

#include <stddef.h>

#include "tp_config.h"
#include "tp_mpc_blob.h"

/* rows per stage: moves, soft outputs, inputs */
#define TP_MPC_NR_MAX (2 * TP_MPC_NU_MAX + TP_MPC_NY_MAX)

typedef enum {
    TP_MPC_SOLVED = 0,     /* residuals and complementarity below tolerance */
    TP_MPC_MAX_ITER = 1,   /* tolerance not reached: the iteration budget was used up, or
                            * float32 ran out of precision (the iterate ran away from the
                            * best one, or the factorisation broke down); the move is the
                            * best iterate's, clamped into the hard limits */
    TP_MPC_INFEASIBLE = 2, /* the hard input limits cannot be met at the first step */
    TP_MPC_BAD_INPUT = 3,  /* non-finite input, or no model loaded */
    TP_MPC_NUMERIC = 4     /* a non-finite iterate (the move is the best finite iterate's,
                            * or the held input) */
} tp_mpc_status_t;

typedef enum {
    TP_MPC_BLOB_OK = 0,
    TP_MPC_BLOB_BAD_LENGTH = 1,
    TP_MPC_BLOB_BAD_MAGIC = 2,
    TP_MPC_BLOB_BAD_VERSION = 3,
    TP_MPC_BLOB_BAD_DIMS = 4,
    TP_MPC_BLOB_BAD_CRC = 5,
    TP_MPC_BLOB_BAD_MODEL = 6 /* non-finite values, or settings out of range */
} tp_mpc_blob_status_t;

typedef struct {
    /* dimensions of the loaded model */
    int32_t nx, nu, nd, ny, nxa, ng, n;
    int32_t loaded;
    /* model (row-major), from the blob */
    tp_float A[TP_MPC_NX_MAX * TP_MPC_NX_MAX];
    tp_float B[TP_MPC_NX_MAX * TP_MPC_NU_MAX];
    tp_float E[TP_MPC_NX_MAX * TP_MPC_ND_MAX];
    tp_float C[TP_MPC_NY_MAX * TP_MPC_NX_MAX];
    tp_float Q[TP_MPC_NX_MAX * TP_MPC_NX_MAX];
    tp_float R[TP_MPC_NU_MAX * TP_MPC_NU_MAX];
    tp_float S[TP_MPC_NU_MAX * TP_MPC_NU_MAX];
    tp_float PN[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];
    /* limits (from the blob; the caller may change them between solves) */
    tp_float u_min[TP_MPC_NU_MAX], u_max[TP_MPC_NU_MAX];
    tp_float du_min[TP_MPC_NU_MAX], du_max[TP_MPC_NU_MAX]; /* per control step */
    tp_float y_min[TP_MPC_NY_MAX], y_max[TP_MPC_NY_MAX];
    tp_float w_lin[TP_MPC_NY_MAX], w_quad[TP_MPC_NY_MAX]; /* slack penalty */
    /* settings */
    int32_t max_iter;
    tp_float tol;
    /* primal iterate: states xa_0..xa_N, moves v_0..v_{N-1}; kept for the warm start */
    tp_float x[(TP_MPC_N_MAX + 1) * TP_MPC_NXA_MAX];
    tp_float v[TP_MPC_N_MAX * TP_MPC_NU_MAX], vbest[TP_MPC_N_MAX * TP_MPC_NU_MAX];
    /* constraint slacks and multipliers per stage and row (lower side, upper side) */
    tp_float tlo[TP_MPC_N_MAX * TP_MPC_NR_MAX], llo[TP_MPC_N_MAX * TP_MPC_NR_MAX];
    tp_float thi[TP_MPC_N_MAX * TP_MPC_NR_MAX], lhi[TP_MPC_N_MAX * TP_MPC_NR_MAX];
    tp_float s[TP_MPC_N_MAX * TP_MPC_NY_MAX], ls[TP_MPC_N_MAX * TP_MPC_NY_MAX];
    /* Newton system: row weights, predictor products, Riccati factors, directions */
    tp_float w[TP_MPC_N_MAX * TP_MPC_NR_MAX], q[TP_MPC_N_MAX * TP_MPC_NR_MAX];
    tp_float gs[TP_MPC_N_MAX * TP_MPC_NY_MAX];
    tp_float plo[TP_MPC_N_MAX * TP_MPC_NR_MAX], phi[TP_MPC_N_MAX * TP_MPC_NR_MAX];
    tp_float ps[TP_MPC_N_MAX * TP_MPC_NY_MAX];
    tp_float m12[TP_MPC_N_MAX * TP_MPC_NY_MAX], m22[TP_MPC_N_MAX * TP_MPC_NY_MAX];
    tp_float delta; /* regularisation of the rows' barrier weights this iteration */
    tp_float K[TP_MPC_N_MAX * TP_MPC_NU_MAX * TP_MPC_NXA_MAX];
    tp_float L[TP_MPC_N_MAX * TP_MPC_NU_MAX * TP_MPC_NU_MAX]; /* Cholesky of Quu, 1/diag */
    tp_float dx[(TP_MPC_N_MAX + 1) * TP_MPC_NXA_MAX];
    tp_float dv[TP_MPC_N_MAX * TP_MPC_NU_MAX];
    tp_float gx[(TP_MPC_N_MAX + 1) * TP_MPC_NXA_MAX]; /* cost gradient at the iterate */
    tp_float hv[TP_MPC_N_MAX * TP_MPC_NR_MAX], dh[TP_MPC_N_MAX * TP_MPC_NR_MAX]; /* rows */
    tp_float lo[TP_MPC_NR_MAX], hi[TP_MPC_NR_MAX]; /* limits of the rows of a stage */
    int8_t kind[TP_MPC_NR_MAX], act[TP_MPC_NR_MAX]; /* row kinds; the rows with limits */
    int32_t nact;
    tp_float c[TP_MPC_NXA_MAX];                        /* [E d; 0] */
    tp_float xr[TP_MPC_NXA_MAX];                       /* [x_ref; u_ref] */
    /* results of the last solve */
    tp_float u0[TP_MPC_NU_MAX];
    tp_float res_primal, res_dual, mu;
    int32_t iterations;
    int32_t status;
    int32_t warm; /* != 0 after a solve; kept for the API (every solve starts cold) */
} tp_mpc_t;

/* CRC-32 (IEEE 802.3, as zlib.crc32) */
uint32_t tp_crc32(const uint8_t *data, size_t len, uint32_t crc);

/* Check and copy a blob made by thermopilot.host.control.design.mpc_precompute; cold start. */
tp_mpc_blob_status_t tp_mpc_load(tp_mpc_t *m, const uint8_t *blob, size_t len);

/* Forget the previous solution (the next solve starts cold). */
void tp_mpc_reset(tp_mpc_t *m);

/* One MPC step: x0 (nx), u_prev (nu), d (nd), x_ref (nx), u_ref (nu); result in m->u0. */
tp_mpc_status_t tp_mpc_solve(tp_mpc_t *m, const tp_float *x0, const tp_float *u_prev,
                             const tp_float *d, const tp_float *x_ref, const tp_float *u_ref);

#endif /* TP_MPC_H */
