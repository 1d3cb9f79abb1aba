/* ThermoPilot MPC: ADMM iterations over the host-precomputed cache; see tp_mpc.h. */
#include "tp_mpc.h"

/* no C library: the core builds freestanding (isfinite, memset, memmove written out) */
#if defined(__GNUC__)
#define TP_RESTRICT __restrict__
#else
#define TP_RESTRICT restrict
#endif
#define TP_ISFINITE(x) ((x) - (x) == 0.0f)

static void zero(tp_float *a, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        a[i] = 0.0f;
    }
}

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
static const uint8_t *rd_floats(const uint8_t *b, tp_float *dst, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        union {
            uint32_t u;
            float f;
        } w;
        w.u = rd_u32(b);
        dst[i] = w.f;
        b += 4;
    }
    return b;
}

static int32_t payload_floats(int32_t nx, int32_t nu, int32_t nd, int32_t ny)
{
    int32_t nxa = nx + nu;
    return 2 * nu + ny + 5 * nxa * nxa + nxa * nu + nx * nd + nu * nxa + 2 * nu * nu + ny * nx +
           4 * nu + 4 * ny + 4;
}

/* the solver relies on Aa = [[A, B], [0, I]] and Ba = [B; I] (rate-limit augmentation) */
static int augmented_structure(const tp_mpc_t *m)
{
    int32_t i, j, nx = m->nx, nu = m->nu, nxa = m->nxa;
    for (i = 0; i < nxa; i++) {
        for (j = 0; j < nu; j++) {
            tp_float want = (i < nx) ? m->A[i * nxa + nx + j] : (tp_float)(i - nx == j);
            if (m->B[i * nu + j] != want) {
                return 0;
            }
        }
    }
    for (i = nx; i < nxa; i++) {
        for (j = 0; j < nxa; j++) {
            if (m->A[i * nxa + j] != (tp_float)(i == j)) {
                return 0;
            }
        }
    }
    return 1;
}

void tp_mpc_reset(tp_mpc_t *m)
{
    zero(m->v, TP_MPC_N_MAX * TP_MPC_NU_MAX);
    zero(m->zv, TP_MPC_N_MAX * TP_MPC_NU_MAX);
    zero(m->yv, TP_MPC_N_MAX * TP_MPC_NU_MAX);
    zero(m->zg, TP_MPC_N_MAX * TP_MPC_NG_MAX);
    zero(m->yg, TP_MPC_N_MAX * TP_MPC_NG_MAX);
    m->warm = 0;
}

tp_mpc_blob_status_t tp_mpc_load(tp_mpc_t *m, const uint8_t *blob, size_t len)
{
    int32_t nx, nu, nd, ny, n;
    uint32_t plen, crc;
    tp_float tmp[1];
    const uint8_t *b;

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
    if (nx < 1 || nx > TP_MPC_NX_MAX || nu < 1 || nu > TP_MPC_NU_MAX || nd > TP_MPC_ND_MAX ||
        ny > TP_MPC_NY_MAX || n < 1 || n > TP_MPC_N_MAX) {
        return TP_MPC_BLOB_BAD_DIMS;
    }
    plen = rd_u32(blob + 12);
    if (plen != 4u * (uint32_t)payload_floats(nx, nu, nd, ny) ||
        len != TP_MPC_HEADER_BYTES + (size_t)plen) {
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
    b = rd_floats(b, m->rho_v, nu);
    b = rd_floats(b, m->rho_g, ny + nu);
    b = rd_floats(b, m->A, m->nxa * m->nxa);
    b = rd_floats(b, m->B, m->nxa * nu);
    b = rd_floats(b, m->E, nx * nd);
    b = rd_floats(b, m->K, nu * m->nxa);
    b = rd_floats(b, m->P, m->nxa * m->nxa);
    b = rd_floats(b, m->Quu_inv, nu * nu);
    b = rd_floats(b, m->AmBKt, m->nxa * m->nxa);
    b = rd_floats(b, m->Qa, m->nxa * m->nxa);
    b = rd_floats(b, m->PN, m->nxa * m->nxa);
    b = rd_floats(b, m->S, nu * nu);
    b = rd_floats(b, m->C, ny * nx);
    b = rd_floats(b, m->u_min, nu);
    b = rd_floats(b, m->u_max, nu);
    b = rd_floats(b, m->du_min, nu);
    b = rd_floats(b, m->du_max, nu);
    b = rd_floats(b, m->y_min, ny);
    b = rd_floats(b, m->y_max, ny);
    b = rd_floats(b, m->w_lin, ny);
    b = rd_floats(b, m->w_quad, ny);
    b = rd_floats(b, tmp, 1);
    m->max_iter = (int32_t)tmp[0];
    b = rd_floats(b, &m->tol_primal, 1);
    b = rd_floats(b, &m->tol_dual, 1);
    (void)rd_floats(b, &m->alpha, 1);
    if (!augmented_structure(m)) {
        return TP_MPC_BLOB_BAD_MODEL;
    }
    tp_mpc_reset(m);
    m->iterations = 0;
    m->status = TP_MPC_SOLVED;
    m->loaded = 1;
    return TP_MPC_BLOB_OK;
}

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

static tp_float maxf(tp_float a, tp_float b)
{
    return a > b ? a : b;
}

static tp_float absf(tp_float x)
{
    return x < 0.0f ? -x : x;
}

/* out[0..ng) = G xa: soft outputs C x, then the input part of xa */
static void g_mul(const tp_mpc_t *m, const tp_float *xa, tp_float *out)
{
    int32_t i, j;
    for (i = 0; i < m->ny; i++) {
        tp_float s = 0.0f;
        for (j = 0; j < m->nx; j++) {
            s += m->C[i * m->nx + j] * xa[j];
        }
        out[i] = s;
    }
    for (i = 0; i < m->nu; i++) {
        out[m->ny + i] = xa[m->nx + i];
    }
}

/* out[0..nxa) = base + G' diag(rho_g) (yg - zg) */
static void gt_dual(const tp_mpc_t *m, const tp_float *base, const tp_float *yg,
                    const tp_float *zg, tp_float *out)
{
    int32_t i, j;
    const tp_float *rho = m->rho_g;
    tp_float diff[TP_MPC_NY_MAX];
    for (i = 0; i < m->ny; i++) {
        diff[i] = rho[i] * (yg[i] - zg[i]);
    }
    for (j = 0; j < m->nx; j++) {
        tp_float s = 0.0f;
        for (i = 0; i < m->ny; i++) {
            s += m->C[i * m->nx + j] * diff[i];
        }
        out[j] = base[j] + s;
    }
    for (i = 0; i < m->nu; i++) {
        out[m->nx + i] = base[m->nx + i] + rho[m->ny + i] * (yg[m->ny + i] - zg[m->ny + i]);
    }
}

static void shift(tp_float *a, int32_t n, int32_t width)
{
    int32_t i;
    for (i = 0; i < (n - 1) * width; i++) {
        a[i] = a[i + width];
    }
}

tp_mpc_status_t tp_mpc_solve(tp_mpc_t *m, const tp_float *x0, const tp_float *u_prev,
                             const tp_float *d, const tp_float *x_ref, const tp_float *u_ref)
{
    const int32_t nx = m->nx, nu = m->nu, ny = m->ny, nxa = m->nxa, ng = m->ng, n = m->n;
    int32_t i, j, k, it;
    tp_float alpha = m->alpha;
    tp_float t[TP_MPC_NXA_MAX], r[TP_MPC_NU_MAX], g[TP_MPC_NG_MAX], xr[TP_MPC_NXA_MAX];
    tp_float w[TP_MPC_NU_MAX];
    const tp_float *TP_RESTRICT Ab = m->A, *TP_RESTRICT Kg = m->K, *TP_RESTRICT AmBKt = m->AmBKt;
    const tp_float *TP_RESTRICT Quu_inv = m->Quu_inv, *TP_RESTRICT Pc = m->Pc;
    const tp_float *TP_RESTRICT c = m->c, *TP_RESTRICT rho_v = m->rho_v;
    int infeasible = 0;

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

    if (m->warm) {
        shift(m->zv, n, nu);
        shift(m->yv, n, nu);
        shift(m->zg, n, ng);
        shift(m->yg, n, ng);
    }

    /* per-solve constants: c = [E d; 0], Pc = Pinf c, qref = -Qa xr, pref = -PN xr */
    for (i = 0; i < nxa; i++) {
        tp_float s = 0.0f;
        if (i < nx) {
            for (j = 0; j < m->nd; j++) {
                s += m->E[i * m->nd + j] * d[j];
            }
        }
        m->c[i] = s;
        xr[i] = (i < nx) ? x_ref[i] : u_ref[i - nx];
    }
    for (i = 0; i < nxa; i++) {
        tp_float s = 0.0f, sq = 0.0f, sp = 0.0f;
        for (j = 0; j < nxa; j++) {
            s += m->P[i * nxa + j] * m->c[j];
            sq += m->Qa[i * nxa + j] * xr[j];
            sp += m->PN[i * nxa + j] * xr[j];
        }
        m->Pc[i] = s;
        m->qref[i] = -sq;
        m->pref[i] = -sp;
    }
    for (i = 0; i < nx; i++) {
        m->x[i] = x0[i];
    }
    for (i = 0; i < nu; i++) {
        m->x[nx + i] = u_prev[i];
    }

    m->status = TP_MPC_MAX_ITER;
    m->iterations = 0;
    for (it = 1; it <= m->max_iter; it++) {
        tp_float rp = 0.0f, rd = 0.0f, zmax = 1.0f;

        /* backward pass on the linear terms only (the gains are cached) */
        gt_dual(m, m->pref, &m->yg[(n - 1) * ng], &m->zg[(n - 1) * ng], &m->p[n * nxa]);
        for (k = n - 1; k >= 0; k--) {
            const tp_float *TP_RESTRICT pk1 = &m->p[(k + 1) * nxa];
            const tp_float *TP_RESTRICT yvk = &m->yv[k * nu];
            const tp_float *TP_RESTRICT zvk = &m->zv[k * nu];
            tp_float *TP_RESTRICT dk = &m->dff[k * nu];
            for (i = 0; i < nxa; i++) {
                t[i] = pk1[i] + Pc[i];
            }
            /* g = r + Ba' t with Ba = [B; I] */
            for (i = 0; i < nu; i++) {
                tp_float s = rho_v[i] * (yvk[i] - zvk[i]);
                r[i] = s;
                s += t[nx + i];
                for (j = 0; j < nx; j++) {
                    s += Ab[j * nxa + nx + i] * t[j];
                }
                g[i] = s;
            }
            for (i = 0; i < nu; i++) {
                const tp_float *TP_RESTRICT qi = &Quu_inv[i * nu];
                tp_float s = 0.0f;
                for (j = 0; j < nu; j++) {
                    s += qi[j] * g[j];
                }
                dk[i] = s;
            }
            if (k >= 1) {
                tp_float *TP_RESTRICT pk = &m->p[k * nxa];
                gt_dual(m, m->qref, &m->yg[(k - 1) * ng], &m->zg[(k - 1) * ng], pk);
                for (i = 0; i < nxa; i++) {
                    const tp_float *TP_RESTRICT ai = &AmBKt[i * nxa];
                    tp_float s = 0.0f;
                    for (j = 0; j < nxa; j++) {
                        s += ai[j] * t[j];
                    }
                    for (j = 0; j < nu; j++) {
                        s -= Kg[j * nxa + i] * r[j];
                    }
                    pk[i] += s;
                }
            }
        }

        /* forward rollout with the cached gain; Aa = [[A, B], [0, I]], Ba = [B; I] */
        for (k = 0; k < n; k++) {
            const tp_float *TP_RESTRICT xk = &m->x[k * nxa];
            tp_float *TP_RESTRICT xk1 = &m->x[(k + 1) * nxa];
            tp_float *TP_RESTRICT vk = &m->v[k * nu];
            const tp_float *TP_RESTRICT dk = &m->dff[k * nu];
            for (i = 0; i < nu; i++) {
                const tp_float *TP_RESTRICT ki = &Kg[i * nxa];
                tp_float s = -dk[i];
                for (j = 0; j < nxa; j++) {
                    s -= ki[j] * xk[j];
                }
                vk[i] = s;
                w[i] = xk[nx + i] + s; /* the input applied at step k */
                xk1[nx + i] = w[i];
            }
            for (i = 0; i < nx; i++) {
                const tp_float *TP_RESTRICT ai = &Ab[i * nxa];
                tp_float s = c[i];
                for (j = 0; j < nx; j++) {
                    s += ai[j] * xk[j];
                }
                for (j = 0; j < nu; j++) {
                    s += ai[nx + j] * w[j];
                }
                xk1[i] = s;
            }
        }

        /* projection (hard boxes), prox (soft outputs), dual update */
        for (k = 0; k < n; k++) {
            for (i = 0; i < nu; i++) {
                int32_t a = k * nu + i;
                tp_float vi = m->v[a];
                tp_float vh = alpha * vi + (1.0f - alpha) * m->zv[a]; /* over-relaxation */
                tp_float zn = clampf(vh + m->yv[a], m->du_min[i], m->du_max[i]);
                rp = maxf(rp, absf(vi - zn));
                rd = maxf(rd, absf(zn - m->zv[a]));
                m->yv[a] += vh - zn;
                m->zv[a] = zn;
                zmax = maxf(zmax, absf(zn));
            }
            g_mul(m, &m->x[(k + 1) * nxa], g);
            for (i = 0; i < ng; i++) {
                int32_t a = k * ng + i;
                tp_float gh = alpha * g[i] + (1.0f - alpha) * m->zg[a];
                tp_float w = gh + m->yg[a];
                tp_float zn;
                if (i < ny) {
                    tp_float lo = m->y_min[i], hi = m->y_max[i];
                    tp_float rho = m->rho_g[i];
                    tp_float den = rho + m->w_quad[i];
                    if (w > hi) {
                        zn = (rho * w - m->w_lin[i] + m->w_quad[i] * hi) / den;
                        zn = zn < hi ? hi : zn;
                    } else if (w < lo) {
                        zn = (rho * w + m->w_lin[i] + m->w_quad[i] * lo) / den;
                        zn = zn > lo ? lo : zn;
                    } else {
                        zn = w;
                    }
                } else {
                    zn = clampf(w, m->u_min[i - ny], m->u_max[i - ny]);
                }
                rp = maxf(rp, absf(g[i] - zn));
                rd = maxf(rd, absf(zn - m->zg[a]));
                m->yg[a] += gh - zn;
                m->zg[a] = zn;
                zmax = maxf(zmax, absf(zn));
            }
        }
        m->iterations = it;
        m->res_primal = rp;
        m->res_dual = rd;
        if (!TP_ISFINITE(rp) || !TP_ISFINITE(rd)) {
            tp_mpc_reset(m);
            m->status = TP_MPC_NUMERIC;
            for (i = 0; i < nu; i++) {
                m->u0[i] = clampf(u_prev[i], m->u_min[i], m->u_max[i]);
            }
            return TP_MPC_NUMERIC;
        }
        /* relative to the size of the solution: float32 resolution is relative */
        if (rp < m->tol_primal * zmax && rd < m->tol_dual * zmax) {
            m->status = TP_MPC_SOLVED;
            break;
        }
    }

    for (i = 0; i < nu; i++) {
        m->u0[i] = clampf(u_prev[i] + m->zv[i], m->u_min[i], m->u_max[i]);
    }
    m->warm = 1;
    return (tp_mpc_status_t)m->status;
}
