/* ThermoPilot MPC: interior-point iterations with a Riccati factorisation; see tp_mpc.h. */
#include "tp_mpc.h"
#ifdef TP_TRACE
#include <stdio.h>
#define TRACE(...) printf(__VA_ARGS__)
#else
#define TRACE(...)
#endif

/* no C library: the core builds freestanding (isfinite, sqrt, memset written out) */
#define TP_ISFINITE(x) ((x) - (x) == 0.0f)
#if defined(__GNUC__)
#define TP_RESTRICT __restrict__
#else
#define TP_RESTRICT restrict
#endif
#define TP_BIG 1e29f   /* a limit at or beyond this is "no limit" (the blob stores 1e30) */
#define TP_FLOOR 1e-2f /* initial slack: this fraction of the row's width (or of 1) */
#define TP_STEP 0.99f  /* fraction of the step to the boundary */
#ifndef TP_MU_TOL
#define TP_MU_TOL 0.001f /* complementarity stops at this * tol * row size * gradient size */
#endif
#ifndef TP_MU_FLOOR
#define TP_MU_FLOOR 0.5f /* centring target: at least this fraction of the stopping value */
#endif
#ifndef TP_PIVOT_REG
#define TP_PIVOT_REG 1e-6f /* smallest pivot of Quu relative to its diagonal entry */
#endif
#ifndef TP_RUNAWAY
#define TP_RUNAWAY 1e3f /* the iterate has run away when its merit is this times the best */
#endif
#ifndef TP_NEAR
#define TP_NEAR 100.0f /* run-away and stalls are judged once the best merit is this close */
#endif
#ifndef TP_STALL
#define TP_STALL 6 /* stalled: this many iterations without halving the merit */
#endif
#ifndef TP_DELTA
/* primal-dual regularisation of the constraint rows, relative to row size / gradient size:
 * a row's barrier weight l / t becomes l / (t + delta l), at most 1 / delta (see prepare) */
#define TP_DELTA 1e-5f
#endif
#ifndef TP_LAM0
#define TP_LAM0 0.1f /* first multipliers: this fraction of the cost gradient */
#endif
#ifndef TP_GAMMA
#define TP_GAMMA 1e-3f /* neighbourhood: every product at least this fraction of the mean */
#endif
#ifndef TP_DECR
#define TP_DECR 0.01f /* sufficient decrease of the complementarity per unit step */
#endif
#ifndef TP_SIGMA_SAFE
#define TP_SIGMA_SAFE 0.1f /* smallest centring of the safeguard step */
#endif
#ifndef TP_BACKTRACK
#define TP_BACKTRACK 30 /* halvings of the safeguard step */
#endif

enum { ROW_NONE = 0, ROW_LO = 1, ROW_HI = 2, ROW_SOFT = 4 };

uint32_t tp_crc32(const uint8_t *data, size_t len, uint32_t crc)
{
    size_t i;
    int b;
    crc = ~crc;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        for (b = 0; b < 8; b++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static uint32_t rd_u32(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
           ((uint32_t)b[3] << 24);
}

/* copy `count` little-endian float32 values from the blob; returns the new read pointer */
static const uint8_t *rd_floats(const uint8_t *b, tp_float *dst, int32_t count, int *finite)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        union {
            uint32_t u;
            float f;
        } w;
        w.u = rd_u32(b);
        dst[i] = w.f;
        if (!TP_ISFINITE(w.f)) {
            *finite = 0;
        }
        b += 4;
    }
    return b;
}

static tp_float absf(tp_float x)
{
    return x < 0.0f ? -x : x;
}

static tp_float maxf(tp_float a, tp_float b)
{
    return a > b ? a : b;
}

static tp_float minf(tp_float a, tp_float b)
{
    return a < b ? a : b;
}

static tp_float clampf(tp_float x, tp_float lo, tp_float hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* 1 / sqrt(x) without libm or a division (x > 0): a first guess from the exponent bits,
 * then Newton's iteration r <- r (3 - x r^2) / 2, which doubles the correct digits */
static tp_float rsqrtf_(tp_float x)
{
    union {
        float f;
        uint32_t u;
    } g;
    tp_float r, h = 0.5f * x;
    g.f = x;
    g.u = 0x5F3759DFu - (g.u >> 1);
    r = g.f;
    r = r * (1.5f - h * r * r);
    r = r * (1.5f - h * r * r);
    r = r * (1.5f - h * r * r);
    return r;
}

void tp_mpc_reset(tp_mpc_t *m)
{
    int32_t i;
    for (i = 0; i < TP_MPC_N_MAX * TP_MPC_NU_MAX; i++) {
        m->v[i] = 0.0f;
    }
    m->warm = 0;
}

tp_mpc_blob_status_t tp_mpc_load(tp_mpc_t *m, const uint8_t *blob, size_t len)
{
    int32_t nx, nu, nd, ny, n, nb;
    uint32_t plen, crc, floats = 0;
    tp_float settings[2];
    const uint8_t *b;
    int finite = 1;

    m->loaded = 0;
    if (len < TP_MPC_HEADER_BYTES) {
        return TP_MPC_BLOB_BAD_LENGTH;
    }
    if (rd_u32(blob) != TP_MPC_BLOB_MAGIC) {
        return TP_MPC_BLOB_BAD_MAGIC;
    }
    if (((uint32_t)blob[4] | ((uint32_t)blob[5] << 8)) != TP_MPC_BLOB_VERSION) {
        return TP_MPC_BLOB_BAD_VERSION;
    }
    nx = blob[6];
    nu = blob[7];
    nd = blob[8];
    ny = blob[9];
    n = blob[10];
    nb = blob[11];
    if (nx < 1 || nx > TP_MPC_NX_MAX || nu < 1 || nu > TP_MPC_NU_MAX || nd > TP_MPC_ND_MAX ||
        ny > TP_MPC_NY_MAX || n < 1 || n > TP_MPC_N_MAX || nb < 1 || nb > n) {
        return TP_MPC_BLOB_BAD_DIMS;
    }
#define TP_COUNT(name, count) floats += (uint32_t)(count);
#define TP_COUNT1(name) floats += 1u;
    TP_MPC_BLOB_ARRAYS(TP_COUNT)
    TP_MPC_BLOB_SETTINGS(TP_COUNT1)
    TP_MPC_BLOB_FALLBACK(TP_COUNT)
#undef TP_COUNT
#undef TP_COUNT1
    plen = rd_u32(blob + 12);
    if (plen != 4u * floats || len != TP_MPC_HEADER_BYTES + (size_t)plen) {
        return TP_MPC_BLOB_BAD_LENGTH;
    }
    crc = tp_crc32(blob, 16, 0);
    crc = tp_crc32(blob + TP_MPC_HEADER_BYTES, plen, crc);
    if (crc != rd_u32(blob + 16)) {
        return TP_MPC_BLOB_BAD_CRC;
    }

    m->nx = nx;
    m->nu = nu;
    m->nd = nd;
    m->ny = ny;
    m->n = n;
    m->nxa = nx + nu;
    m->ng = ny + nu;
    b = blob + TP_MPC_HEADER_BYTES;
#define TP_READ(name, count) b = rd_floats(b, m->name, (count), &finite);
    TP_MPC_BLOB_ARRAYS(TP_READ)
#undef TP_READ
    (void)rd_floats(b, settings, 2, &finite);
    if (!finite || settings[0] < 1.0f || settings[0] > 100000.0f || !(settings[1] >= 0.0f)) {
        return TP_MPC_BLOB_BAD_MODEL;
    }
    m->max_iter = (int32_t)settings[0];
    m->tol = settings[1];
    tp_mpc_reset(m);
    m->iterations = 0;
    m->status = TP_MPC_SOLVED;
    m->loaded = 1;
    return TP_MPC_BLOB_OK;
}

/* ---------------------------------------------------------------------------- rows */

/* the rows of a stage: moves [0, nu), soft outputs [nu, nu + ny), inputs after; rows
 * without a finite limit take no part. Read from the limits at every solve (the caller may
 * change them between solves). */
static void setup_rows(tp_mpc_t *m, const tp_float *u_prev)
{
    int32_t nu = m->nu, ny = m->ny, nr = 2 * nu + ny, r;
    m->nact = 0;
    for (r = 0; r < nr; r++) {
        tp_float lo, hi;
        int kind = ROW_NONE;
        if (r < nu) {
            lo = m->du_min[r];
            hi = m->du_max[r];
        } else if (r < nu + ny) {
            lo = m->y_min[r - nu];
            hi = m->y_max[r - nu];
        } else {
            /* inputs relative to the held one (see tp_mpc_solve) */
            lo = m->u_min[r - nu - ny] - u_prev[r - nu - ny];
            hi = m->u_max[r - nu - ny] - u_prev[r - nu - ny];
        }
        if (lo > -TP_BIG) {
            kind |= ROW_LO;
        }
        if (hi < TP_BIG) {
            kind |= ROW_HI;
        }
        if (kind != ROW_NONE && r >= nu && r < nu + ny && m->w_lin[r - nu] < TP_BIG) {
            kind |= ROW_SOFT;
        }
        m->kind[r] = (int8_t)kind;
        m->lo[r] = lo;
        m->hi[r] = hi;
        if (kind != ROW_NONE) {
            m->act[m->nact++] = (int8_t)r;
        }
    }
}

/* values of the active rows at every stage, from moves vs and states xs (or directions) */
static void row_values(const tp_mpc_t *m, const tp_float *xs, const tp_float *vs, tp_float *out)
{
    const int32_t nx = m->nx, nu = m->nu, ny = m->ny, nxa = m->nxa, nr = 2 * nu + ny;
    int32_t k, ia, j;
    for (k = 0; k < m->n; k++) {
        const tp_float *x1 = &xs[(k + 1) * nxa];
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia];
            tp_float s;
            if (r < nu) {
                s = vs[k * nu + r];
            } else if (r < nu + ny) {
                const tp_float *ci = &m->C[(r - nu) * nx];
                s = 0.0f;
                for (j = 0; j < nx; j++) {
                    s += ci[j] * x1[j];
                }
            } else {
                s = x1[nx + (r - nu - ny)];
            }
            out[k * nr + r] = s;
        }
    }
}

/* out[0..nxa) += G' coef for the rows of stage k that act on xa_{k+1} */
static void add_gt(const tp_mpc_t *m, const tp_float *coef, tp_float *out)
{
    int32_t nx = m->nx, nu = m->nu, ny = m->ny, i, j;
    for (i = 0; i < ny; i++) {
        tp_float a = coef[nu + i];
        if (a != 0.0f) {
            const tp_float *ci = &m->C[i * nx];
            for (j = 0; j < nx; j++) {
                out[j] += ci[j] * a;
            }
        }
    }
    for (i = 0; i < nu; i++) {
        out[nx + i] += coef[nu + ny + i];
    }
}

/* ------------------------------------------------------------------------- Riccati */

/* solve (L L') x = b in place; l holds L below the diagonal and 1 / L_ii on it */
static void chol_solve(const tp_float *l, tp_float *b, int32_t nu)
{
    int32_t i, k;
    for (i = 0; i < nu; i++) {
        tp_float s = b[i];
        for (k = 0; k < i; k++) {
            s -= l[i * nu + k] * b[k];
        }
        b[i] = s * l[i * nu + i];
    }
    for (i = nu - 1; i >= 0; i--) {
        tp_float s = b[i];
        for (k = i + 1; k < nu; k++) {
            s -= l[k * nu + i] * b[k];
        }
        b[i] = s * l[i * nu + i];
    }
}

/* P += G' diag(w of stage k's x-rows) G */
static void add_gtwg(const tp_mpc_t *m, const tp_float *wk, tp_float *P)
{
    int32_t nx = m->nx, nu = m->nu, ny = m->ny, nxa = m->nxa, i, a, b;
    for (i = 0; i < ny; i++) {
        tp_float wi = wk[nu + i];
        if (wi != 0.0f) {
            const tp_float *ci = &m->C[i * nx];
            for (a = 0; a < nx; a++) {
                tp_float t = wi * ci[a];
                if (t != 0.0f) {
                    for (b = 0; b < nx; b++) {
                        P[a * nxa + b] += t * ci[b];
                    }
                }
            }
        }
    }
    for (i = 0; i < nu; i++) {
        P[(nx + i) * nxa + nx + i] += wk[nu + ny + i];
    }
}

/* Cholesky of the symmetric n x n matrix z (lower triangle read) into l, row-major.
 * Columns [0, strict) must have positive pivots (else 0 is returned); later columns may
 * be semidefinite: a pivot below `tiny` gives a zero column (P may be singular where the
 * cost has no weight). */
static int chol_psd(const tp_float *z, tp_float *l, tp_float *rinv, int32_t n, int32_t strict,
                    tp_float tiny)
{
    int32_t i, j, k;
    for (j = 0; j < n; j++) {
        tp_float d = z[j * n + j];
        for (k = 0; k < j; k++) {
            d -= l[j * n + k] * l[j * n + k];
        }
        if (!TP_ISFINITE(d)) {
            return 0;
        }
        if (j < strict && d <= TP_PIVOT_REG * z[j * n + j]) {
            /* float32 cancellation under large barrier weights: the true pivot is below
             * the precision of the diagonal, so it is raised to that precision (a
             * regularised, still descending Newton step; the residuals stay exact) */
            TRACE("    pivot %d regularised: %.3e of %.3e\n", (int)j, d, z[j * n + j]);
            d = TP_PIVOT_REG * z[j * n + j];
        }
        if (d <= tiny) {
            if (j < strict) {
                return 0;
            }
            for (i = j; i < n; i++) {
                l[i * n + j] = 0.0f;
            }
            rinv[j] = 0.0f;
            continue;
        }
        {
            tp_float r = rsqrtf_(d); /* no division in the factorisation */
            rinv[j] = r;
            l[j * n + j] = d * r;
            for (i = j + 1; i < n; i++) {
                tp_float s = z[i * n + j];
                for (k = 0; k < j; k++) {
                    s -= l[i * n + k] * l[j * n + k];
                }
                l[i * n + j] = s * r;
            }
        }
    }
    return 1;
}

/* Factorise the Newton system by a square-root Riccati recursion: P_k = L L' is kept as
 * its factor, and each stage factorises [[Quu, Qux], [Qxu, Qxx]] (the cost-to-go of the
 * stage, built as M'M + blkdiag(R~, Q~) with M = L'[Ba, Aa]) by Cholesky. The Schur
 * complement that gives the next P comes out of the factorisation as a factor, so P stays
 * positive semidefinite however large the barrier weights grow (the explicit recursion
 * P = Q + A'PA - K'Quu K loses definiteness in float32 there). Stores K_k and the
 * Cholesky factor of Quu_k (m->L), k = N-1..0. */
static int factorise(tp_mpc_t *m)
{
    const int32_t nx = m->nx, nu = m->nu, nxa = m->nxa, n = m->n;
    const int32_t nr = 2 * nu + m->ny, nz = nu + nxa;
    const tp_float *TP_RESTRICT A = m->A, *TP_RESTRICT B = m->B;
    tp_float Lp[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX], Pt[TP_MPC_NXA_MAX * TP_MPC_NXA_MAX];
    tp_float M[TP_MPC_NXA_MAX * (TP_MPC_NU_MAX + TP_MPC_NXA_MAX)];
    tp_float Z[(TP_MPC_NU_MAX + TP_MPC_NXA_MAX) * (TP_MPC_NU_MAX + TP_MPC_NXA_MAX)];
    tp_float Lz[(TP_MPC_NU_MAX + TP_MPC_NXA_MAX) * (TP_MPC_NU_MAX + TP_MPC_NXA_MAX)];
    tp_float tiny = 0.0f, rinv[TP_MPC_NU_MAX + TP_MPC_NXA_MAX];
    int32_t i, j, r, c, k;

    for (i = 0; i < nxa * nxa; i++) {
        Pt[i] = m->PN[i];
        tiny = maxf(tiny, absf(m->PN[i]));
    }
    tiny = 1e-12f * (1.0f + tiny);
    add_gtwg(m, &m->w[(n - 1) * nr], Pt);
    if (!chol_psd(Pt, Lp, rinv, nxa, 0, tiny)) {
        return 0;
    }
    for (k = n - 1; k >= 0; k--) {
        tp_float *TP_RESTRICT Kk = &m->K[k * nu * nxa];
        tp_float *TP_RESTRICT Lk = &m->L[k * nu * nu];
        const int32_t nzk = nz;
        /* M = Lp' [Ba, Aa] with Ba = [B; I], Aa = [[A, B], [0, I]]: the input columns of
         * Aa are those of Ba, so M = [MB, MX, MB] and M'M has repeated blocks.
         * (Lp')[r][i] = Lp[i][r], zero for i < r. */
        for (r = 0; r < nxa; r++) {
            for (c = 0; c < nu; c++) {
                tp_float s = (nx + c >= r) ? Lp[(nx + c) * nxa + r] : 0.0f;
                for (i = r; i < nx; i++) {
                    s += Lp[i * nxa + r] * B[i * nu + c];
                }
                M[r * nz + c] = s;
            }
            for (c = 0; c < nx; c++) {
                tp_float s = 0.0f;
                for (i = r; i < nx; i++) {
                    s += Lp[i * nxa + r] * A[i * nx + c];
                }
                M[r * nz + nu + c] = s;
            }
        }
        /* Z = M'M (lower triangle): MB'MB, MX'MB, MX'MX, then the repeats */
        for (r = 0; r < nu; r++) {
            for (c = 0; c <= r; c++) {
                tp_float s = 0.0f;
                for (i = 0; i < nxa; i++) {
                    s += M[i * nz + r] * M[i * nz + c];
                }
                Z[r * nz + c] = s;
            }
        }
        {
            for (r = 0; r < nx; r++) {
                for (c = 0; c < nu; c++) {
                    tp_float s = 0.0f;
                    for (i = 0; i < nxa; i++) {
                        s += M[i * nz + nu + r] * M[i * nz + c];
                    }
                    Z[(nu + r) * nz + c] = s;                /* MX'MB */
                    Z[(nu + nx + c) * nz + nu + r] = s;      /* MB'MX */
                }
                for (c = 0; c <= r; c++) {
                    tp_float s = 0.0f;
                    for (i = 0; i < nxa; i++) {
                        s += M[i * nz + nu + r] * M[i * nz + nu + c];
                    }
                    Z[(nu + r) * nz + nu + c] = s;
                }
            }
            for (r = 0; r < nu; r++) {
                for (c = 0; c < nu; c++) {
                    Z[(nu + nx + r) * nz + c] = Z[(r >= c) ? r * nz + c : c * nz + r];
                }
                for (c = 0; c <= r; c++) {
                    Z[(nu + nx + r) * nz + nu + nx + c] = Z[r * nz + c];
                }
            }
        }
        for (i = 0; i < nu; i++) {
            for (j = 0; j <= i; j++) {
                Z[i * nz + j] += m->S[i * nu + j];
            }
            Z[i * nz + i] += m->w[k * nr + i];
        }
        if (k >= 1) {
            for (i = 0; i < nxa * nxa; i++) {
                Pt[i] = 0.0f;
            }
            add_gtwg(m, &m->w[(k - 1) * nr], Pt);
            for (i = 0; i < nxa; i++) {
                for (j = 0; j <= i; j++) {
                    tp_float q = Pt[i * nxa + j];
                    if (i < nx && j < nx) {
                        q += m->Q[i * nx + j];
                    } else if (i >= nx && j >= nx) {
                        q += m->R[(i - nx) * nu + j - nx];
                    }
                    Z[(nu + i) * nz + nu + j] += q;
                }
            }
        }
        /* chol_psd reads Z with row stride nz; factor the leading nzk x nzk block */
        for (r = 0; r < nzk; r++) {
            for (c = 0; c <= r; c++) {
                Lz[r * nzk + c] = Z[r * nz + c];
            }
        }
        for (r = 0; r < nzk; r++) {
            for (c = r + 1; c < nzk; c++) {
                Lz[r * nzk + c] = Lz[c * nzk + r];
            }
        }
        for (i = 0; i < nzk * nzk; i++) {
            Z[i] = Lz[i];
        }
        if (!chol_psd(Z, Lz, rinv, nzk, nu, tiny)) {
            return 0;
        }
        for (i = 0; i < nu; i++) {
            for (j = 0; j < nu; j++) {
                Lk[i * nu + j] = (j < i) ? Lz[i * nzk + j] : ((j == i) ? rinv[i] : 0.0f);
            }
        }
        /* K = Luu^-T Lxu^T (Qux = Luu Lxu'), by back substitution per column */
        for (j = 0; j < nxa; j++) {
            for (i = nu - 1; i >= 0; i--) {
                tp_float s = Lz[(nu + j) * nzk + i];
                for (r = i + 1; r < nu; r++) {
                    s -= Lk[r * nu + i] * Kk[r * nxa + j];
                }
                Kk[i * nxa + j] = s * Lk[i * nu + i];
            }
        }
        if (k == 0) {
            break;
        }
        /* the next P's factor: the trailing block */
        for (i = 0; i < nxa; i++) {
            for (j = 0; j < nxa; j++) {
                Lp[i * nxa + j] = (j <= i) ? Lz[(nu + i) * nzk + nu + j] : 0.0f;
            }
        }
    }
    return 1;
}

/* Solve the factorised Newton system for the row coefficients m->q: directions dx, dv */
static void newton_solve(tp_mpc_t *m)
{
    const int32_t nx = m->nx, nu = m->nu, nxa = m->nxa, n = m->n, nr = 2 * nu + m->ny;
    const tp_float *A = m->A, *B = m->B;
    tp_float p[TP_MPC_NXA_MAX], pn[TP_MPC_NXA_MAX], g[TP_MPC_NU_MAX], gv[TP_MPC_NU_MAX];
    int32_t i, j, k;

    for (i = 0; i < nxa; i++) {
        p[i] = m->gx[n * nxa + i];
    }
    add_gt(m, &m->q[(n - 1) * nr], p);
    for (k = n - 1; k >= 0; k--) {
        const tp_float *Kk = &m->K[k * nu * nxa];
        for (i = 0; i < nu; i++) {
            tp_float s = m->q[k * nr + i];
            for (j = 0; j < nu; j++) {
                s += m->S[i * nu + j] * m->v[k * nu + j];
            }
            gv[i] = s;
            s += p[nx + i];
            for (j = 0; j < nx; j++) {
                s += B[j * nu + i] * p[j];
            }
            g[i] = s;
        }
        for (i = 0; i < nu; i++) {
            m->dv[k * nu + i] = g[i];
        }
        chol_solve(&m->L[k * nu * nu], &m->dv[k * nu], nu); /* feed-forward d_k, for now */
        if (k == 0) {
            break;
        }
        /* p <- gx_k + G' q_{k-1} + Aa' p - K' g, Aa' p = [A' p_x; g - gv] */
        for (i = 0; i < nx; i++) {
            tp_float s = m->gx[k * nxa + i];
            for (j = 0; j < nx; j++) {
                s += A[j * nx + i] * p[j];
            }
            pn[i] = s;
        }
        for (i = 0; i < nu; i++) {
            pn[nx + i] = m->gx[k * nxa + nx + i] + g[i] - gv[i];
        }
        for (i = 0; i < nxa; i++) {
            tp_float s = pn[i];
            for (j = 0; j < nu; j++) {
                s -= Kk[j * nxa + i] * g[j];
            }
            p[i] = s;
        }
        add_gt(m, &m->q[(k - 1) * nr], p);
    }
    /* forward: dv_k = -K dx_k - d_k; dx_{k+1} = Aa dx_k + Ba dv_k */
    for (i = 0; i < nxa; i++) {
        m->dx[i] = 0.0f;
    }
    for (k = 0; k < n; k++) {
        const tp_float *Kk = &m->K[k * nu * nxa], *xk = &m->dx[k * nxa];
        tp_float *x1 = &m->dx[(k + 1) * nxa];
        for (i = 0; i < nu; i++) {
            tp_float s = -m->dv[k * nu + i];
            for (j = 0; j < nxa; j++) {
                s -= Kk[i * nxa + j] * xk[j];
            }
            m->dv[k * nu + i] = s;
            x1[nx + i] = xk[nx + i] + s;
        }
        for (i = 0; i < nx; i++) {
            tp_float s = 0.0f;
            for (j = 0; j < nx; j++) {
                s += A[i * nx + j] * xk[j];
            }
            for (j = 0; j < nu; j++) {
                s += B[i * nu + j] * x1[nx + j];
            }
            x1[i] = s;
        }
    }
    row_values(m, m->dx, m->dv, m->dh);
}

/* Row terms of the Newton right-hand side. corr = 0: predictor (rc = l t); corr = 1:
 * corrector (rc = l t + dt_aff dl_aff - sigma mu). Fills m->q (and m->gs for soft rows). */
static void row_rhs(tp_mpc_t *m, int corr, tp_float smu)
{
    const int32_t nu = m->nu, ny = m->ny, n = m->n, nr = 2 * nu + ny;
    int32_t k, ia;
    for (k = 0; k < n; k++) {
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = k * nr + r;
            tp_float lo = m->lo[r], hi = m->hi[r], h = m->hv[a], plo = 0.0f, phi = 0.0f;
            int kind = m->kind[r];
            if (kind & ROW_SOFT) {
                int32_t o = k * ny + r - nu;
                tp_float s = m->s[o], ls = m->ls[o], gs;
                tp_float rcs = ls * s + (corr ? m->ps[o] - smu : 0.0f);
                gs = m->w_lin[r - nu] + m->w_quad[r - nu] * s - (ls - rcs / s);
                if (kind & ROW_LO) {
                    tp_float t = m->tlo[a], l = m->llo[a];
                    tp_float rl = -h - s + lo + t, rc = l * t + (corr ? m->plo[a] - smu : 0.0f);
                    plo = l + (l * rl - rc) / (t + l * m->delta);
                }
                if (kind & ROW_HI) {
                    tp_float t = m->thi[a], l = m->lhi[a];
                    tp_float rh = h - s - hi + t, rc = l * t + (corr ? m->phi[a] - smu : 0.0f);
                    phi = l + (l * rh - rc) / (t + l * m->delta);
                }
                gs -= plo + phi;
                m->gs[o] = gs;
                m->q[a] = phi - plo - m->m12[o] / m->m22[o] * gs;
            } else {
                if (kind & ROW_LO) {
                    tp_float t = m->tlo[a], l = m->llo[a];
                    tp_float rl = -h + lo + t, rc = l * t + (corr ? m->plo[a] - smu : 0.0f);
                    plo = l + (l * rl - rc) / (t + l * m->delta);
                }
                if (kind & ROW_HI) {
                    tp_float t = m->thi[a], l = m->lhi[a];
                    tp_float rh = h - hi + t, rc = l * t + (corr ? m->phi[a] - smu : 0.0f);
                    phi = l + (l * rh - rc) / (t + l * m->delta);
                }
                m->q[a] = phi - plo;
            }
        }
    }
}

/* largest step in (0, 1] keeping x + a dx >= 0 */
static tp_float max_step(tp_float a, tp_float x, tp_float dx)
{
    if (dx < 0.0f && -x / dx < a) {
        return -x / dx;
    }
    return a;
}

/* One slack/multiplier pair (x, l) of a constraint row with its directions (dx, dl), for
 * row_step's mode: widen the step bound *amax (0), store the predictor product in *prod and add
 * the complementarity at `alpha` to *gap (1), take the step into *xn, *ln (2), or add the
 * trial complementarity to *gap and its smallest product to *cmin (3). */
static inline void pair_step(int mode, tp_float alpha, tp_float x, tp_float l, tp_float dx,
                             tp_float dl, tp_float *prod, tp_float *xn, tp_float *ln,
                             tp_float *amax, tp_float *gap, tp_float *cmin)
{
    if (mode == 0) {
        *amax = max_step(max_step(*amax, x, dx), l, dl);
    } else if (mode == 1) {
        *prod = dx * dl;
        *gap += (x + alpha * dx) * (l + alpha * dl);
    } else if (mode == 3) {
        tp_float c = (x + alpha * dx) * (l + alpha * dl);
        *gap += c;
        *cmin = minf(*cmin, c);
    } else {
        *xn = x + alpha * dx;
        *ln = l + alpha * dl;
    }
}

/* Walk the directions of every constraint. mode 0: return the largest feasible step;
 * mode 1: store the predictor products dt * dl (at step `alpha`) and return the
 * complementarity there; mode 2: take the step `alpha`; mode 3: return the complementarity
 * at step `alpha` and its smallest product in *pmin (a trial, nothing changes). */
static tp_float row_step(tp_mpc_t *m, int mode, tp_float alpha, int corr, tp_float smu,
                         tp_float *pmin)
{
    const int32_t nu = m->nu, ny = m->ny, n = m->n, nr = 2 * nu + ny;
    tp_float amax = 1.0f, gap = 0.0f, cmin = TP_BIG;
    int32_t k, ia;
    for (k = 0; k < n; k++) {
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = k * nr + r, o = k * ny + r - nu;
            tp_float lo = m->lo[r], hi = m->hi[r], h = m->hv[a], dh = m->dh[a], ds = 0.0f;
            tp_float s_new = 0.0f, ls_new = 0.0f;
            int kind = m->kind[r];
            if (kind & ROW_SOFT) {
                tp_float s = m->s[o], ls = m->ls[o];
                tp_float rcs = ls * s + (corr ? m->ps[o] - smu : 0.0f), dls;
                ds = -(m->gs[o] + m->m12[o] * dh) / m->m22[o];
                dls = (-rcs - ls * ds) / s;
                /* a step's new s is stored after the rows below used the old one */
                pair_step(mode, alpha, s, ls, ds, dls, &m->ps[o], &s_new, &ls_new, &amax, &gap,
                          &cmin);
            }
            if (kind & ROW_LO) {
                tp_float t = m->tlo[a], l = m->llo[a];
                tp_float rl = -h - ((kind & ROW_SOFT) ? m->s[o] : 0.0f) + lo + t;
                tp_float rc = l * t + (corr ? m->plo[a] - smu : 0.0f), dt, dl;
                dt = dh + ds - rl;
                dl = (-rc - l * dt) / (t + l * m->delta);
                dt += m->delta * dl;
                pair_step(mode, alpha, t, l, dt, dl, &m->plo[a], &m->tlo[a], &m->llo[a], &amax,
                          &gap, &cmin);
            }
            if (kind & ROW_HI) {
                tp_float t = m->thi[a], l = m->lhi[a];
                tp_float rh = h - ((kind & ROW_SOFT) ? m->s[o] : 0.0f) - hi + t;
                tp_float rc = l * t + (corr ? m->phi[a] - smu : 0.0f), dt, dl;
                dt = -dh + ds - rh;
                dl = (-rc - l * dt) / (t + l * m->delta);
                dt += m->delta * dl;
                pair_step(mode, alpha, t, l, dt, dl, &m->phi[a], &m->thi[a], &m->lhi[a], &amax,
                          &gap, &cmin);
            }
            if ((kind & ROW_SOFT) && mode == 2) {
                m->s[o] = s_new;
                m->ls[o] = ls_new;
            }
        }
    }
    if (pmin) {
        *pmin = cmin;
    }
    return mode == 0 ? amax : gap;
}

/* forget the predictor products: the next corrector is a plain centred Newton step */
static void clear_products(tp_mpc_t *m)
{
    int32_t i;
    for (i = 0; i < m->n * (2 * m->nu + m->ny); i++) {
        m->plo[i] = 0.0f;
        m->phi[i] = 0.0f;
    }
    for (i = 0; i < m->n * m->ny; i++) {
        m->ps[i] = 0.0f;
    }
}

/* cost gradient at the iterate (m->gx), the weights of the Newton system (m->w, m->m12,
 * m->m22), and the residuals; returns the number of one-sided constraints */
static int32_t prepare(tp_mpc_t *m, tp_float *rp, tp_float *mu, tp_float *hmax, tp_float *gmax,
                       tp_float *comp)
{
    const int32_t nx = m->nx, nu = m->nu, ny = m->ny, nxa = m->nxa, n = m->n;
    const int32_t nr = 2 * nu + ny;
    tp_float gap = 0.0f, cmax = 0.0f, rpm = 0.0f, hm = 1.0f, gm = 1.0f, dl_ = m->delta;
    int32_t count = 0, i, j, k, ia;

    row_values(m, m->x, m->v, m->hv);
    /* gradient of the cost: Qa (xa_k - xr) for k < N, PN (xa_N - xr) */
    for (k = 1; k <= n; k++) {
        const tp_float *xk = &m->x[k * nxa];
        tp_float *gk = &m->gx[k * nxa];
        if (k < n) {
            for (i = 0; i < nx; i++) {
                tp_float s = 0.0f;
                for (j = 0; j < nx; j++) {
                    s += m->Q[i * nx + j] * (xk[j] - m->xr[j]);
                }
                gk[i] = s;
            }
            for (i = 0; i < nu; i++) {
                tp_float s = 0.0f;
                for (j = 0; j < nu; j++) {
                    s += m->R[i * nu + j] * (xk[nx + j] - m->xr[nx + j]);
                }
                gk[nx + i] = s;
            }
        } else {
            for (i = 0; i < nxa; i++) {
                tp_float s = 0.0f;
                for (j = 0; j < nxa; j++) {
                    s += m->PN[i * nxa + j] * (xk[j] - m->xr[j]);
                }
                gk[i] = s;
            }
        }
        for (i = 0; i < nxa; i++) {
            gm = maxf(gm, absf(gk[i]));
        }
    }
    /* per-row weights, residuals, complementarity */
    for (k = 0; k < n; k++) {
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = k * nr + r, o = k * ny + r - nu;
            tp_float lo = m->lo[r], hi = m->hi[r], h = m->hv[a], wl = 0.0f, wh = 0.0f, sv = 0.0f;
            int kind = m->kind[r];
            hm = maxf(hm, absf(h));
            if (kind & ROW_SOFT) {
                sv = m->s[o];
                gap += sv * m->ls[o];
                cmax = maxf(cmax, sv * m->ls[o]);
                count++;
            }
            if (kind & ROW_LO) {
                wl = m->llo[a] / (m->tlo[a] + m->llo[a] * dl_);
                rpm = maxf(rpm, absf(-h - sv + lo + m->tlo[a]));
                gap += m->llo[a] * m->tlo[a];
                cmax = maxf(cmax, m->llo[a] * m->tlo[a]);
                hm = maxf(hm, absf(lo));
                count++;
            }
            if (kind & ROW_HI) {
                wh = m->lhi[a] / (m->thi[a] + m->lhi[a] * dl_);
                rpm = maxf(rpm, absf(h - sv - hi + m->thi[a]));
                gap += m->lhi[a] * m->thi[a];
                cmax = maxf(cmax, m->lhi[a] * m->thi[a]);
                hm = maxf(hm, absf(hi));
                count++;
            }
            if (kind & ROW_SOFT) {
                tp_float m11 = wl + wh, m12 = wl - wh;
                tp_float m22 = m11 + m->ls[o] / sv + m->w_quad[r - nu];
                m->m12[o] = m12;
                m->m22[o] = m22;
                m->w[a] = m11 - m12 * m12 / m22;
            } else {
                m->w[a] = wl + wh;
            }
        }
    }
    *rp = rpm;
    *mu = count ? gap / (tp_float)count : 0.0f;
    *hmax = hm;
    *gmax = gm;
    *comp = cmax;
    return count;
}

/* reduced dual residual: the Lagrangian's gradient with the dynamics eliminated (one
 * backward pass), and the size of the terms it sums (for its scale) */
static void dual_residual(tp_mpc_t *m, tp_float *rd, tp_float *lmax, tp_float *rsoft)
{
    const int32_t nx = m->nx, nu = m->nu, ny = m->ny, nxa = m->nxa, n = m->n;
    const int32_t nr = 2 * nu + ny;
    const tp_float *B = m->B, *A = m->A;
    tp_float nuv[TP_MPC_NXA_MAX], nn[TP_MPC_NXA_MAX], lam[TP_MPC_NR_MAX];
    tp_float rdm = 0.0f, lm = 0.0f, rsm = 0.0f;
    int32_t i, j, k, ia;

    /* reduced dual residual: the Lagrangian's gradient with the dynamics eliminated */
    for (i = 0; i < nr; i++) {
        lam[i] = 0.0f;
    }
    for (i = 0; i < nxa; i++) {
        nuv[i] = m->gx[n * nxa + i];
    }
    for (k = n - 1; k >= 0; k--) {
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = k * nr + r;
            int kind = m->kind[r];
            lam[r] = ((kind & ROW_HI) ? m->lhi[a] : 0.0f) - ((kind & ROW_LO) ? m->llo[a] : 0.0f);
            if (kind & ROW_SOFT) {
                int32_t o = k * ny + r - nu;
                tp_float e = m->w_lin[r - nu] + m->w_quad[r - nu] * m->s[o] - m->ls[o] -
                             ((kind & ROW_HI) ? m->lhi[a] : 0.0f) -
                             ((kind & ROW_LO) ? m->llo[a] : 0.0f);
                /* each slack's stationarity relative to the largest of its terms (the
                 * penalty may be far larger than the rest of the cost) */
                tp_float te = maxf(maxf(m->w_lin[r - nu], m->ls[o]),
                                   maxf(m->w_quad[r - nu] * m->s[o],
                                        ((kind & ROW_HI) ? m->lhi[a] : 0.0f) +
                                            ((kind & ROW_LO) ? m->llo[a] : 0.0f)));
                if (absf(e) > rsm * te) {
                    rsm = absf(e) / te;
                }
            }
        }
        if (k == n - 1) {
            add_gt(m, lam, nuv);
        }
        for (i = 0; i < nxa; i++) {
            lm = maxf(lm, absf(nuv[i])); /* the size of the terms summed, for the scale */
        }
        for (i = 0; i < nu; i++) {
            tp_float s = lam[i] + nuv[nx + i];
            for (j = 0; j < nu; j++) {
                s += m->S[i * nu + j] * m->v[k * nu + j];
            }
            for (j = 0; j < nx; j++) {
                s += B[j * nu + i] * nuv[j];
            }
            rdm = maxf(rdm, absf(s));
            lm = maxf(lm, absf(lam[i]));
        }
        if (k == 0) {
            break;
        }
        /* nu_k = gx_k + G' lam_{k-1} + Aa' nu_{k+1} */
        for (i = 0; i < nx; i++) {
            tp_float s = m->gx[k * nxa + i];
            for (j = 0; j < nx; j++) {
                s += A[j * nx + i] * nuv[j];
            }
            nn[i] = s;
        }
        for (i = 0; i < nu; i++) {
            tp_float s = m->gx[k * nxa + nx + i] + nuv[nx + i];
            for (j = 0; j < nx; j++) {
                s += B[j * nu + i] * nuv[j];
            }
            nn[nx + i] = s;
        }
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = (k - 1) * nr + r;
            int kind = m->kind[r];
            lam[r] = ((kind & ROW_HI) ? m->lhi[a] : 0.0f) - ((kind & ROW_LO) ? m->llo[a] : 0.0f);
            lm = maxf(lm, absf(lam[r]));
        }
        add_gt(m, lam, nn);
        for (i = 0; i < nxa; i++) {
            nuv[i] = nn[i];
        }
    }
    *rd = rdm;
    *lmax = lm;
    *rsoft = rsm;
}

/* Starting point: the primal point is the held input; each constraint's slack is its
 * distance to the limit there, raised to a floor (a fraction of the row's width) where the
 * held input is at, near or beyond the limit; each multiplier is mu0 / slack, so that every
 * product slack * multiplier equals mu0 (a perfectly centred start, as HPIPM's). */
static void init_point(tp_mpc_t *m, tp_float mu0)
{
    const int32_t nu = m->nu, ny = m->ny, n = m->n, nr = 2 * nu + ny;
    int32_t k, ia;
    for (k = 0; k < n; k++) {
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = k * nr + r, o = k * ny + r - nu;
            tp_float lo = m->lo[r], hi = m->hi[r], h = m->hv[a], fl, sv = 0.0f;
            int kind = m->kind[r];
            m->tlo[a] = m->thi[a] = 1.0f;
            m->llo[a] = m->lhi[a] = 0.0f;
            fl = ((kind & ROW_LO) && (kind & ROW_HI)) ? TP_FLOOR * (hi - lo) : TP_FLOOR;
            fl = maxf(fl, 1e-6f);
            if (kind & ROW_SOFT) {
                sv = fl;
                if ((kind & ROW_LO) && lo - h > 0.0f) {
                    sv += lo - h;
                }
                if ((kind & ROW_HI) && h - hi > 0.0f) {
                    sv += h - hi;
                }
                m->s[o] = sv;
                m->ls[o] = mu0 / sv;
            }
            if (kind & ROW_LO) {
                m->tlo[a] = maxf(h + sv - lo, fl);
                m->llo[a] = mu0 / m->tlo[a];
            }
            if (kind & ROW_HI) {
                m->thi[a] = maxf(hi - h + sv, fl);
                m->lhi[a] = mu0 / m->thi[a];
            }
        }
    }
}

/* mean of the slacks (the scale of mu0) */
static tp_float slack_mean(const tp_mpc_t *m)
{
    const int32_t nu = m->nu, ny = m->ny, n = m->n, nr = 2 * nu + ny;
    tp_float sum = 0.0f;
    int32_t k, ia, count = 0;
    for (k = 0; k < n; k++) {
        for (ia = 0; ia < m->nact; ia++) {
            int32_t r = m->act[ia], a = k * nr + r;
            int kind = m->kind[r];
            if (kind & ROW_SOFT) {
                sum += m->s[k * ny + r - nu];
                count++;
            }
            if (kind & ROW_LO) {
                sum += m->tlo[a];
                count++;
            }
            if (kind & ROW_HI) {
                sum += m->thi[a];
                count++;
            }
        }
    }
    return count ? sum / (tp_float)count : 1.0f;
}

static void rollout(tp_mpc_t *m)
{
    const int32_t nx = m->nx, nu = m->nu, nxa = m->nxa;
    int32_t i, j, k;
    for (k = 0; k < m->n; k++) {
        const tp_float *xk = &m->x[k * nxa];
        tp_float *x1 = &m->x[(k + 1) * nxa];
        for (i = 0; i < nu; i++) {
            x1[nx + i] = xk[nx + i] + m->v[k * nu + i];
        }
        for (i = 0; i < nx; i++) {
            tp_float s = m->c[i];
            for (j = 0; j < nx; j++) {
                s += m->A[i * nx + j] * xk[j];
            }
            for (j = 0; j < nu; j++) {
                s += m->B[i * nu + j] * x1[nx + j];
            }
            x1[i] = s;
        }
    }
}

/* the move: the first planned move (none after a numeric failure without a finite
 * iterate), clamped into the rate and input limits in every case */
static tp_mpc_status_t finish(tp_mpc_t *m, const tp_float *u_prev, tp_mpc_status_t st, int hold)
{
    int32_t i, k;
    for (k = 0; k <= m->n; k++) { /* the plan's inputs back to absolute values */
        for (i = 0; i < m->nu; i++) {
            m->x[k * m->nxa + m->nx + i] += u_prev[i];
        }
    }
    for (i = 0; i < m->nu; i++) {
        tp_float v = hold ? 0.0f : m->v[i];
        v = clampf(v, m->du_min[i], m->du_max[i]);
        m->u0[i] = clampf(u_prev[i] + v, m->u_min[i], m->u_max[i]);
    }
    m->status = st;
    return st;
}

/* the best iterate so far becomes the plan (a solve that ends without meeting tol) */
static void restore_best(tp_mpc_t *m)
{
    int32_t i;
    for (i = 0; i < m->n * m->nu; i++) {
        m->v[i] = m->vbest[i];
    }
    rollout(m);
}

tp_mpc_status_t tp_mpc_solve(tp_mpc_t *m, const tp_float *x0, const tp_float *u_prev,
                             const tp_float *d, const tp_float *x_ref, const tp_float *u_ref)
{
    const int32_t nx = m->nx, nu = m->nu, nxa = m->nxa, n = m->n;
    int32_t i, j, it, since = 0;
    int infeasible = 0;
    tp_float best = TP_BIG, ref = TP_BIG;
    tp_mpc_status_t st = TP_MPC_MAX_ITER;

    if (!m->loaded) {
        m->status = TP_MPC_BAD_INPUT;
        return TP_MPC_BAD_INPUT;
    }
    for (i = 0; i < nx; i++) {
        if (!TP_ISFINITE(x0[i]) || !TP_ISFINITE(x_ref[i])) {
            m->status = TP_MPC_BAD_INPUT;
            return TP_MPC_BAD_INPUT;
        }
    }
    for (i = 0; i < nu; i++) {
        if (!TP_ISFINITE(u_prev[i]) || !TP_ISFINITE(u_ref[i])) {
            m->status = TP_MPC_BAD_INPUT;
            return TP_MPC_BAD_INPUT;
        }
    }
    for (i = 0; i < m->nd; i++) {
        if (!TP_ISFINITE(d[i])) {
            m->status = TP_MPC_BAD_INPUT;
            return TP_MPC_BAD_INPUT;
        }
    }
    /* the first move must reach the input box within one rate step */
    for (i = 0; i < nu; i++) {
        tp_float lo = u_prev[i] + m->du_min[i], hi = u_prev[i] + m->du_max[i];
        if (m->u_min[i] > m->u_max[i] || m->du_min[i] > m->du_max[i] || lo > m->u_max[i] ||
            hi < m->u_min[i]) {
            infeasible = 1;
        }
    }
    if (infeasible) {
        /* move toward the box as fast as the rate limit allows; the caller decides */
        for (i = 0; i < nu; i++) {
            tp_float target = clampf(u_prev[i], m->u_min[i], m->u_max[i]);
            m->u0[i] = clampf(target, u_prev[i] + m->du_min[i], u_prev[i] + m->du_max[i]);
        }
        m->iterations = 0;
        m->status = TP_MPC_INFEASIBLE;
        return TP_MPC_INFEASIBLE;
    }

    /* The input part of the state is kept relative to the held input, u - u_prev (its
     * limits and reference shifted alike, B u_prev moved into the constant term): an
     * input resting at its limit then has a row value and a slack near zero, which float32
     * resolves, instead of a slack far below the resolution of the limit's value. */
    for (i = 0; i < nxa; i++) {
        tp_float s = 0.0f;
        if (i < nx) {
            for (j = 0; j < m->nd; j++) {
                s += m->E[i * m->nd + j] * d[j];
            }
            for (j = 0; j < nu; j++) {
                s += m->B[i * nu + j] * u_prev[j];
            }
        }
        m->c[i] = s;
        m->xr[i] = (i < nx) ? x_ref[i] : u_ref[i - nx] - u_prev[i - nx];
    }
    for (i = 0; i < nx; i++) {
        m->x[i] = x0[i];
    }
    for (i = 0; i < nu; i++) {
        m->x[nx + i] = 0.0f;
    }
    /* primal start: hold the inputs. Starting from the previous plan shifted one step
     * saved no iterations on average (an interior-point method restarts its slacks anyway)
     * and sent some ill-conditioned steps astray, so every solve starts the same way. */
    for (i = 0; i < n * nu; i++) {
        m->v[i] = 0.0f;
        m->vbest[i] = 0.0f;
    }
    setup_rows(m, u_prev);
    rollout(m);
    row_values(m, m->x, m->v, m->hv);
    {
        /* centred start: every product slack * multiplier at mu0, the mean slack times a
         * multiplier of the size of the cost gradient */
        tp_float rp, mu, hmax, gmax, comp;
        m->delta = 0.0f;
        init_point(m, 1.0f);
        (void)prepare(m, &rp, &mu, &hmax, &gmax, &comp);
        init_point(m, TP_LAM0 * gmax * slack_mean(m));
        m->delta = TP_DELTA * hmax / gmax;
    }

    m->iterations = 0;
    for (it = 0;; it++) {
        tp_float rp, rd, mu, hmax, gmax, lmax, comp, merit, scale, rsoft;
        tp_float alpha, mu_aff, sigma, smu, gap, pmin, mu_floor;
        int32_t count = prepare(m, &rp, &mu, &hmax, &gmax, &comp);
        dual_residual(m, &rd, &lmax, &rsoft);
        m->res_primal = rp;
        m->res_dual = rd;
        m->mu = comp;
        m->iterations = it;
        /* progress: each residual over its tolerance, the largest (<= 1: converged). The
         * dual residual is judged against the largest term it sums (a hard limit, or a
         * soft limit's penalty, makes large multipliers); the complementarity against the
         * cost gradient only: a row's product slack * multiplier near a weakly active
         * limit moves the plan by about its square root, whatever the size of the other
         * rows' multipliers (scaled by those, the thermal chain's cold starts stopped with
         * first moves 2.7e-3 off) */
        scale = maxf(gmax, lmax);
        merit = maxf(maxf(rp / (m->tol * hmax), rsoft / m->tol),
                     maxf(rd / (m->tol * scale), comp / (TP_MU_TOL * m->tol * gmax * hmax)));
        TRACE("it %2d rp %.2e rd %.2e mu %.2e comp %.2e merit %.2e g %.1e l %.1e h %.1e v0 %.5f\n",
              it, rp, rd, mu, comp, merit, gmax, lmax, hmax, m->v[0]);
        if (!TP_ISFINITE(merit)) {
            st = TP_MPC_NUMERIC;
            break;
        }
        if (merit < 0.5f * ref) {
            ref = merit;
            since = it;
        }
        if (merit < best) {
            best = merit;
            for (i = 0; i < n * nu; i++) {
                m->vbest[i] = m->v[i];
            }
        }
        if (merit <= 1.0f) {
            m->warm = 1;
            return finish(m, u_prev, TP_MPC_SOLVED, 0);
        }
        /* float32 ends the progress when the barrier weights outgrow its precision: near
         * the solution the directions turn inaccurate and the iterate runs away from the
         * best one (early iterates may raise the merit as its scales settle), or the
         * factorisation breaks down, or the merit stalls a little above 1 (a residual
         * at the rounding level of the terms it sums). The best iterate is then the plan,
         * and the status says that the tolerance was not reached. */
        if (it >= m->max_iter ||
            (best <= TP_NEAR && (merit > TP_RUNAWAY * best || it - since >= TP_STALL))) {
            break;
        }
        if (!factorise(m)) {
            TRACE("factorise failed\n");
            break;
        }
        /* predictor (affine scaling) */
        row_rhs(m, 0, 0.0f);
        newton_solve(m);
        alpha = row_step(m, 0, 1.0f, 0, 0.0f, 0);
        mu_aff = count ? row_step(m, 1, alpha, 0, 0.0f, 0) / (tp_float)count : 0.0f;
        sigma = mu > 0.0f ? minf(1.0f, mu_aff / mu) : 0.0f;
        sigma = sigma * sigma * sigma;
        /* complementarity far below the tolerance buys nothing in float32 and runs into
         * subnormal numbers: keep the centring target above a floor */
        mu_floor = TP_MU_FLOOR * TP_MU_TOL * m->tol * gmax * hmax;
        if (sigma * mu < mu_floor) {
            sigma = mu_floor / mu;
        }
        smu = sigma * mu;
        /* corrector (Mehrotra): centred, with the predictor's second-order term */
        row_rhs(m, 1, smu);
        newton_solve(m);
        alpha = minf(1.0f, TP_STEP * row_step(m, 0, 1.0f, 1, smu, 0));
        gap = row_step(m, 3, alpha, 1, smu, &pmin);
        if (count && (pmin < TP_GAMMA * gap / (tp_float)count ||
                      gap > maxf((1.0f - TP_DECR * alpha) * mu, 2.0f * mu_floor) *
                                (tp_float)count)) {
            /* the corrector leaves the neighbourhood of the central path or does not
             * reduce the complementarity: a plain centred Newton step instead, shortened
             * until the new point is central and the complementarity falls */
            int32_t back;
            TRACE("    safeguard: sigma %.2e alpha %.2e gap %.2e pmin %.2e\n", sigma, alpha, gap, pmin);
            sigma = maxf(sigma, TP_SIGMA_SAFE);
            smu = sigma * mu;
            clear_products(m);
            row_rhs(m, 1, smu);
            newton_solve(m);
            alpha = minf(1.0f, TP_STEP * row_step(m, 0, 1.0f, 1, smu, 0));
            for (back = 0; back < TP_BACKTRACK; back++) {
                gap = row_step(m, 3, alpha, 1, smu, &pmin);
                if (pmin >= TP_GAMMA * gap / (tp_float)count &&
                    gap <= maxf((1.0f - TP_DECR * alpha) * mu, 2.0f * mu_floor) *
                               (tp_float)count) {
                    break;
                }
                alpha *= 0.5f;
            }
        }
        TRACE("    sigma %.2e alpha %.2e mu_aff %.2e gap %.2e pmin %.2e\n", sigma, alpha, mu_aff, gap, pmin);
        if (!TP_ISFINITE(gap) || !TP_ISFINITE(alpha)) {
            /* a non-finite direction (a slack rounded to zero under a huge barrier weight):
             * float32 has run out of precision; the finite best iterate is the plan */
            TRACE("non-finite step\n");
            break;
        }
        row_step(m, 2, alpha, 1, smu, 0);
        for (i = 0; i < n * nu; i++) {
            m->v[i] += alpha * m->dv[i];
        }
        for (i = nxa; i < (n + 1) * nxa; i++) {
            m->x[i] += alpha * m->dx[i];
        }
        /* the next iteration's regularisation (prepare, row_rhs and row_step of one
         * iteration must use the same) */
        m->delta = TP_DELTA * hmax / scale;
    }
    /* not converged: the best iterate is the plan, its first move clamped to the limits */
    m->warm = 1;
    if (best < TP_BIG) {
        restore_best(m);
        return finish(m, u_prev, st, 0);
    }
    tp_mpc_reset(m);
    rollout(m);
    return finish(m, u_prev, st, 1);
}
