/* ThermoPilot MPC: ADMM over a host-precomputed Riccati cache (float32, C99, no malloc).
 *
 * Plant: x+ = A x + B u + E d, outputs y = C x, d a measured disturbance held constant
 * over the horizon. Rate limits turn into box limits by augmenting the state with the
 * previous input: xa = [x; u_prev], the decision is the move v = du, and
 *   xa+ = Aa xa + Ba v + [E d; 0],  Aa = [[A, B], [0, I]],  Ba = [[B], [I]].
 * The QP over the horizon N (moves v_0..v_{N-1}, states xa_1..xa_N):
 *   min  sum_{k<N} 1/2 |xa_k - xa_ref|^2_Qa + 1/2 |v_k|^2_S + 1/2 |xa_N - xa_ref|^2_PN
 *        + sum_{k=1..N} sum_i (w_lin_i s_ki + 1/2 w_quad_i s_ki^2)
 *   s.t. dynamics, du_min <= v_k <= du_max, u_min <= u_k <= u_max,
 *        y_min - s_k <= C x_k <= y_max + s_k, s_k >= 0        (k = 1..N)
 * with Qa = blkdiag(Q, R), PN = Pinf - G' diag(rho_g) G and G = [[C, 0], [0, I]]; this
 * terminal cost makes the cached stationary gain Kinf exact at every stage.
 * ADMM (scaled form; one penalty per constraint row, rho_v for the moves and rho_g for the
 * rows of G, folded into the cache as S + diag(rho_v) and Qa + G' diag(rho_g) G): LQR
 * primal step with the cached
 * Kinf, Pinf, Quu_inv, AmBKt = (Aa - Ba Kinf)'; over-relaxation (alpha, as OSQP);
 * projection / soft-limit prox; dual update. A step ends early when |Gx - z| <
 * tol_primal * max(1, |z|) and |z - z_prev| < tol_dual * max(1, |z|) (max-norms; the dual
 * residual rho (z - z_prev) divided by each row's rho, as the rows' penalties differ).
 *
 * Everything heavy comes from the host as one versioned blob (see tp_mpc_load).
 */
#ifndef TP_MPC_H
#define TP_MPC_H

#include <stddef.h>

#include "tp_config.h"

#define TP_MPC_BLOB_MAGIC 0x434D5054u /* "TPMC" little-endian */
#define TP_MPC_BLOB_VERSION 1u
#define TP_MPC_HEADER_BYTES 20u

typedef enum {
    TP_MPC_SOLVED = 0,     /* primal and dual residuals below tolerance */
    TP_MPC_MAX_ITER = 1,   /* iteration budget used up; the move is the best so far */
    TP_MPC_INFEASIBLE = 2, /* the hard input limits cannot be met at the first step */
    TP_MPC_BAD_INPUT = 3,  /* non-finite input, or no model loaded */
    TP_MPC_NUMERIC = 4     /* a non-finite iterate; the warm start was cleared */
} tp_mpc_status_t;

typedef enum {
    TP_MPC_BLOB_OK = 0,
    TP_MPC_BLOB_BAD_LENGTH = 1,
    TP_MPC_BLOB_BAD_MAGIC = 2,
    TP_MPC_BLOB_BAD_VERSION = 3,
    TP_MPC_BLOB_BAD_DIMS = 4,
    TP_MPC_BLOB_BAD_CRC = 5,
    TP_MPC_BLOB_BAD_MODEL = 6 /* Aa, Ba not of the form [[A, B], [0, I]], [B; I] */
} tp_mpc_blob_status_t;

typedef struct {
    /* dimensions of the loaded model */
    int32_t nx, nu, nd, ny, nxa, ng, n;
    int32_t loaded;
    /* cache from the blob (row-major) */
    tp_float rho_v[TP_MPC_NU_MAX];  /* ADMM penalty per move row */
    tp_float rho_g[TP_MPC_NG_MAX];  /* ADMM penalty per G row (soft outputs, then inputs) */
    tp_float A[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];      /* Aa */
    tp_float B[TP_MPC_NXA_MAX * TP_MPC_NU_MAX];       /* Ba */
    tp_float E[TP_MPC_NX_MAX * TP_MPC_ND_MAX];        /* plant E */
    tp_float K[TP_MPC_NU_MAX * TP_MPC_NXA_MAX];       /* Kinf */
    tp_float P[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];      /* Pinf */
    tp_float Quu_inv[TP_MPC_NU_MAX * TP_MPC_NU_MAX];  /* (S + diag(rho_v) + Ba'Pinf Ba)^-1 */
    tp_float AmBKt[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];  /* (Aa - Ba Kinf)' */
    tp_float Qa[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];     /* stage cost on xa */
    tp_float PN[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];     /* terminal cost on xa */
    tp_float S[TP_MPC_NU_MAX * TP_MPC_NU_MAX];        /* move weight (in the cache already) */
    tp_float C[TP_MPC_NY_MAX * TP_MPC_NX_MAX];        /* soft-limited outputs */
    /* limits and settings (from the blob; the caller may change them between solves) */
    tp_float u_min[TP_MPC_NU_MAX], u_max[TP_MPC_NU_MAX];
    tp_float du_min[TP_MPC_NU_MAX], du_max[TP_MPC_NU_MAX]; /* per control step */
    tp_float y_min[TP_MPC_NY_MAX], y_max[TP_MPC_NY_MAX];
    tp_float w_lin[TP_MPC_NY_MAX], w_quad[TP_MPC_NY_MAX];  /* slack penalty */
    int32_t max_iter;
    tp_float tol_primal, tol_dual;
    tp_float alpha; /* ADMM over-relaxation, (0, 2); 1 = plain ADMM */
    /* workspace; kept between solves for the warm start */
    tp_float x[(TP_MPC_N_MAX + 1) * TP_MPC_NXA_MAX];
    tp_float v[TP_MPC_N_MAX * TP_MPC_NU_MAX];
    tp_float dff[TP_MPC_N_MAX * TP_MPC_NU_MAX];
    tp_float p[(TP_MPC_N_MAX + 1) * TP_MPC_NXA_MAX];
    tp_float zv[TP_MPC_N_MAX * TP_MPC_NU_MAX], yv[TP_MPC_N_MAX * TP_MPC_NU_MAX];
    tp_float zg[TP_MPC_N_MAX * TP_MPC_NG_MAX], yg[TP_MPC_N_MAX * TP_MPC_NG_MAX];
    tp_float c[TP_MPC_NXA_MAX], Pc[TP_MPC_NXA_MAX];
    tp_float qref[TP_MPC_NXA_MAX], pref[TP_MPC_NXA_MAX];
    /* results of the last solve */
    tp_float u0[TP_MPC_NU_MAX];
    tp_float res_primal, res_dual;
    int32_t iterations;
    int32_t status;
    int32_t warm; /* != 0: start from the previous solution, shifted one step */
} tp_mpc_t;

/* CRC-32 (IEEE 802.3, as zlib.crc32) */
uint32_t tp_crc32(const uint8_t *data, size_t len, uint32_t crc);

/* Check and copy a blob made by thermopilot.host.control.mpc_precompute; cold start. */
tp_mpc_blob_status_t tp_mpc_load(tp_mpc_t *m, const uint8_t *blob, size_t len);

/* Forget the previous solution (the next solve starts cold). */
void tp_mpc_reset(tp_mpc_t *m);

/* One MPC step: x0 (nx), u_prev (nu), d (nd), x_ref (nx), u_ref (nu); result in m->u0. */
tp_mpc_status_t tp_mpc_solve(tp_mpc_t *m, const tp_float *x0, const tp_float *u_prev,
                             const tp_float *d, const tp_float *x_ref, const tp_float *u_ref);

#endif /* TP_MPC_H */
