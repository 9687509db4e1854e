/* One layer of the NNGP/NTK recursion over an in-cache tile, one pass per layer.
 *
 * The C twin of the plans in wideNN/_fused_layers.py (same scaled tiles, same per-input
 * vectors, same formulas; see that module for the math).  Compiled on first use by
 * wideNN/_native.py with the machine's C compiler (-O3 -march=native, no -ffast-math: IEEE
 * semantics are kept, so the compiler vectorises only what it may).  The transcendentals are
 * written out here (branch-free, so that the loops vectorise) because the C library's scalar
 * acos is ~15x slower than a vectorised loop:
 *
 *   asin(x), |x| <= 1/2:  x + x z P(z), z = x^2, P a degree-12 Chebyshev fit of
 *                         (asin(sqrt z) - sqrt z)/(z sqrt z) on [0, 1/4] (max error 1.5e-17);
 *   |x| > 1/2:            asin|x| = pi/2 - 2 asin(s), s = sqrt((1 - |x|)/2) (1 - |x| is exact);
 *   acos(x) = pi/2 - asin(x), = 2 asin(s) for x > 1/2, = pi - 2 asin(s) for x < -1/2;
 *   atan(t):              |t| > 1 -> pi/2 - atan(1/|t|); > tan(pi/8) -> pi/4 + atan((t-1)/(t+1));
 *                         then t + t u Q(u), u = t^2 (degree 11, max error 1.2e-18);
 *   expm1(x):             x = k ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2);
 *                         expm1(x) = 2^k expm1(r) + (2^k - 1), expm1(r) = r + r^2 E(r) (degree 12).
 * The polynomial coefficients were fitted for this file with mpmath.chebyfit at 50 digits.
 * Every function was checked against mpmath (tests/test_native.py): <= 1 ulp in the tested ranges.
 *
 * Arithmetic is in double for both tile types (float tiles are widened on load).
 */
#ifndef REAL
#include <math.h>
#include <stdint.h>
#include <string.h>

static const double ASIN_P[13] = {2.8757851367421565e-2, -1.4851887071247203e-2, 1.7400879442694022e-2, 5.4575067186403583e-3, 1.0322814350185779e-2, 1.1479177415184906e-2, 1.3971212973552933e-2, 1.7352392720869973e-2, 2.2372172942149888e-2, 3.0381944138531247e-2, 4.464285714635543e-2, 7.4999999999984329e-2, 1.6666666666666668e-1};
static const double ATAN_P[12] = {1.6285756855221028e-2, -3.4570561981427747e-2, 4.5515932206265492e-2, -5.2304542706502445e-2, 5.8789289978347751e-2, -6.6664248857382553e-2, 7.6922963750321424e-2, -9.0909087535008768e-2, 1.1111111105155447e-1, -1.4285714285659828e-1, 1.9999999999999805e-1, -3.3333333333333333e-1};
static const double EXPM1_P[13] = {1.1489793417913762e-11, 1.6089523400634992e-10, 2.087672780674591e-9, 2.5052061689452824e-8, 2.7557319245441484e-7, 2.7557319258319923e-6, 2.4801587301579633e-5, 1.984126984125757e-4, 1.388888888888889e-3, 8.3333333333333352e-3, 4.1666666666666667e-2, 1.6666666666666667e-1, 5.0e-1};

/* pi/2 and pi as a double plus the rounding residue */
#define PIO2_HI 1.5707963267948966
#define PIO2_LO 6.123233995736766e-17
#define PI_HI 3.141592653589793
#define PI_LO 1.2246467991473532e-16
#define PIO4_HI 0.7853981633974483
#define PIO4_LO 3.061616997868383e-17
#define TAN_PI_8 0.41421356237309503
/* ln 2 = LN2_HI + LN2_LO, LN2_HI with 32 trailing zero bits (k * LN2_HI exact for |k| < 2^20) */
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define INV_LN2 1.4426950408889634

static inline double poly_asin(double z) {
    double p = ASIN_P[0];
    for (int i = 1; i < 13; i++) p = p * z + ASIN_P[i];
    return p;
}

/* asin(s) for s = |x| <= 1/2 or s = sqrt((1 - |x|)/2); t and the selectors for both */
static inline double half_asin(double x, double *t_out) {
    double ax = fabs(x);
    int small = ax <= 0.5;
    double z = small ? x * x : 0.5 * (1.0 - ax);
    double s = small ? ax : sqrt(z);
    *t_out = s + s * z * poly_asin(z);
    return ax;
}

static inline double wn_asin(double x) {
    double t;
    double ax = half_asin(x, &t);
    double r = ax <= 0.5 ? t : PIO2_HI - (2.0 * t - PIO2_LO);
    return copysign(r, x);
}

static inline double wn_acos(double x) {
    double t;
    double ax = half_asin(x, &t);
    double small = PIO2_HI - (copysign(t, x) - PIO2_LO);
    double big = x > 0.0 ? 2.0 * t : PI_HI - (2.0 * t - PI_LO);
    return ax <= 0.5 ? small : big;
}

static inline double wn_atan(double x) {
    double a = fabs(x);
    int inverted = a > 1.0;
    double b = inverted ? 1.0 / a : a;
    int shifted = b > TAN_PI_8;
    double t = shifted ? (b - 1.0) / (b + 1.0) : b;
    double u = t * t;
    double p = ATAN_P[0];
    for (int i = 1; i < 12; i++) p = p * u + ATAN_P[i];
    double r = t + t * u * p;
    r = shifted ? PIO4_HI + (r + PIO4_LO) : r;
    r = inverted ? PIO2_HI - (r - PIO2_LO) : r;
    return copysign(r, x);
}

static inline double wn_expm1(double x) {
    double k = floor(x * INV_LN2 + 0.5);
    k = k > 1000.0 ? 1000.0 : (k < -1000.0 ? -1000.0 : k);
    double r = (x - k * LN2_HI) - k * LN2_LO;
    double p = EXPM1_P[0];
    for (int i = 1; i < 13; i++) p = p * r + EXPM1_P[i];
    double em = r + r * r * p;
    int64_t bits = ((int64_t)k + 1023) << 52;
    double two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return two_k * em + (two_k - 1.0);
}

/* elementwise entry points (tests and NumPy-free callers) */
void wn_acos_array(const double *x, double *y, long n) { for (long i = 0; i < n; i++) y[i] = wn_acos(x[i]); }
void wn_asin_array(const double *x, double *y, long n) { for (long i = 0; i < n; i++) y[i] = wn_asin(x[i]); }
void wn_atan_array(const double *x, double *y, long n) { for (long i = 0; i < n; i++) y[i] = wn_atan(x[i]); }
void wn_expm1_array(const double *x, double *y, long n) { for (long i = 0; i < n; i++) y[i] = wn_expm1(x[i]); }

/* Mehler's series for rows i of a kernel tile (wideNN/_mehler.py), float64:
 *   t[i, j]  = sum_{k < terms} rho^k a1[i, k] a2[j, k]
 *   td[i, j] = sum_{1 <= k <= terms} k rho^(k-1) a1[i, k] a2[j, k]
 * by Horner's rule; a2t is a2 transposed (k-major, a2t[k * m + j]); columns in blocks that stay
 * in L1 across the terms. */
void mehler_rows(const double *restrict rho, long rows, long m, const double *restrict a1, long lda,
                 const double *restrict a2t, long terms, double *restrict t, double *restrict td) {
    const long block = 256;
    for (long i = 0; i < rows; i++) {
        const double *ai = a1 + i * lda;
        for (long j0 = 0; j0 < m; j0 += block) {
            const long j1 = j0 + block < m ? j0 + block : m;
            const double *restrict ri = rho + i * m;
            double *restrict ti = t + i * m;
            double *restrict di = td + i * m;
            for (long j = j0; j < j1; j++) ti[j] = di[j] = 0.0;
            for (long k = terms; k >= 0; k--) {
                const double *restrict ak = a2t + k * m;
                const double ct = k < terms ? ai[k] : 0.0, cd = (double)k * ai[k];
                for (long j = j0; j < j1; j++) {
                    ti[j] = ti[j] * ri[j] + ct * ak[j];
                    di[j] = k >= 1 ? di[j] * ri[j] + cd * ak[j] : di[j];
                }
            }
        }
    }
}

/* The coefficient gradients of Mehler's series for rows i (wideNN/_mehler.py):
 *   g1[i, k] = sum_j W_k[i, j] a2[j, k],  g2t[k, j] += W_k[i, j] a1[i, k]   (k <= terms)
 *   W_k = gt rho^k (k < terms) + r k rho^(k-1) (k >= 1);
 * p and pp are caller-provided rows of m doubles (rho^k, rho^(k-1)). */
void mehler_grad_rows(const double *restrict rho, const double *restrict gt, const double *restrict r,
                      long rows, long m, const double *restrict a1, long lda, const double *restrict a2t,
                      long terms, double *restrict g1, long ldg, double *restrict g2t,
                      double *restrict p, double *restrict pp) {
    for (long i = 0; i < rows; i++) {
        const double *restrict ri = rho + i * m, *restrict gi = gt + i * m, *restrict qi = r + i * m;
        const double *ai = a1 + i * lda;
        for (long j = 0; j < m; j++) { p[j] = 1.0; pp[j] = 0.0; }
        for (long k = 0; k <= terms; k++) {
            const double *restrict ak = a2t + k * m;
            double *restrict gk = g2t + k * m;
            const double wt = k < terms ? 1.0 : 0.0, wk = (double)k, aik = ai[k];
            double acc[8] = {0};
            long j = 0;
            for (; j + 8 <= m; j += 8)
                for (int l = 0; l < 8; l++) {
                    const double w = wt * gi[j + l] * p[j + l] + wk * qi[j + l] * pp[j + l];
                    acc[l] += w * ak[j + l];
                    gk[j + l] += w * aik;
                    pp[j + l] = p[j + l];
                    p[j + l] *= ri[j + l];
                }
            double total = 0.0;
            for (; j < m; j++) {
                const double w = wt * gi[j] * p[j] + wk * qi[j] * pp[j];
                total += w * ak[j];
                gk[j] += w * aik;
                pp[j] = p[j];
                p[j] *= ri[j];
            }
            for (int l = 0; l < 8; l++) total += acc[l];
            g1[i * ldg + k] = total;
        }
    }
}

#define REAL double
#define SFX(name) name##_f64
#include "fused_layers.c"
#undef REAL
#undef SFX
#define REAL float
#define SFX(name) name##_f32
#include "fused_layers.c"
#undef REAL
#undef SFX

#else  /* the tile layers, once per tile type */

/* arc-cosine family (relu, leaky relu, abs) on m = -c:
 *   out = [kappa (sqrt(1 - m^2) - acos(m) m) - slope m] rv0_i cv1_j + rv2_i cv3_j   (slope 0: no kappa)
 *   q   = out - (kappa acos(m) + slope) rv0_i cv1_j q                                (slope 0: acos(m))
 * m is clamped to <= 1 and snapped to -1 within tol of it (coincident points). */
static inline void SFX(arccos_rows)(const REAL *restrict c, REAL *restrict q, REAL *restrict out,
                                    long h, long w, const REAL *rv0, const REAL *rv2,
                                    const REAL *cv1, const REAL *cv3, double kappa, double slope,
                                    double tol, const int with_q, const int leaky) {
    for (long i = 0; i < h; i++) {
        const double a = rv0[i], bb = rv2[i];
        const REAL *restrict ci = c + i * w;
        REAL *restrict oi = out + i * w;
        REAL *restrict qi = q + (with_q ? i * w : 0);
        for (long j = 0; j < w; j++) {
            double m = ci[j];
            m = m > 1.0 ? 1.0 : m;
            m = m <= -1.0 + tol ? -1.0 : m;
            double p = wn_acos(m);
            double s = sqrt(1.0 - m * m) - p * m;
            if (leaky) s = s * kappa - slope * m;
            double amat = a * (double)cv1[j];
            double o = s * amat + bb * (double)cv3[j];
            oi[j] = (REAL)o;
            if (with_q) {
                double pp = leaky ? p * kappa + slope : p;
                qi[j] = (REAL)(o - pp * amat * (double)qi[j]);
            }
        }
    }
}

void SFX(arccos_layer)(const REAL *restrict c, REAL *restrict q, REAL *restrict out, long h, long w,
                       const REAL *rv0, const REAL *rv2, const REAL *cv1, const REAL *cv3,
                       double kappa, double slope, double tol) {
    /* one specialised loop per case: the vectoriser needs them unswitched */
    if (q && slope != 0.0) SFX(arccos_rows)(c, q, out, h, w, rv0, rv2, cv1, cv3, kappa, slope, tol, 1, 1);
    else if (q) SFX(arccos_rows)(c, q, out, h, w, rv0, rv2, cv1, cv3, kappa, slope, tol, 1, 0);
    else if (slope != 0.0) SFX(arccos_rows)(c, out, out, h, w, rv0, rv2, cv1, cv3, kappa, slope, tol, 0, 1);
    else SFX(arccos_rows)(c, out, out, h, w, rv0, rv2, cv1, cv3, kappa, slope, tol, 0, 0);
}

/* Heaviside: out = acos(m) rv0_i cv1_j + rv2_i cv3_j (Theta = K: no q) */
void SFX(step_layer)(const REAL *restrict c, REAL *restrict out, long h, long w,
                     const REAL *rv0, const REAL *rv2, const REAL *cv1, const REAL *cv3, double tol) {
    for (long i = 0; i < h; i++) {
        const double a = rv0[i], bb = rv2[i];
        const REAL *restrict ci = c + i * w;
        REAL *restrict oi = out + i * w;
        for (long j = 0; j < w; j++) {
            double m = ci[j];
            m = m > 1.0 ? 1.0 : m;
            m = m <= -1.0 + tol ? -1.0 : m;
            oi[j] = (REAL)(wn_acos(m) * a * (double)cv1[j] + bb * (double)cv3[j]);
        }
    }
}

/* erf on rho = clamp(c, -1, 1): out = asin(rho) A + rv2_i cv3_j, q = out + q A / sqrt(1 - rho^2),
 * A = rv0_i cv1_j */
void SFX(erf_layer)(const REAL *restrict c, REAL *restrict q, REAL *restrict out, long h, long w,
                    const REAL *rv0, const REAL *rv2, const REAL *cv1, const REAL *cv3) {
    for (long i = 0; i < h; i++) {
        const double a = rv0[i], bb = rv2[i];
        const REAL *restrict ci = c + i * w;
        REAL *restrict oi = out + i * w;
        REAL *restrict qi = q ? q + i * w : 0;
        for (long j = 0; j < w; j++) {
            double rho = ci[j];
            rho = rho > 1.0 ? 1.0 : (rho < -1.0 ? -1.0 : rho);
            double amat = a * (double)cv1[j];
            double o = wn_asin(rho) * amat + bb * (double)cv3[j];
            oi[j] = (REAL)o;
            if (qi) qi[j] = (REAL)(o + (double)qi[j] * (amat / sqrt(1.0 - rho * rho)));
        }
    }
}

/* sin / cos on k12 = c: with e = expm1(c), e^c - e^-c = e (2 + e)/(1 + e), e^c + e^-c = (1 + e) + 1/(1 + e);
 * sin: T = difference, T' = sum (cos swaps them); out = T A + b, q = out + T' A q, A = rv0_i cv1_j */
void SFX(sin_layer)(const REAL *restrict c, REAL *restrict q, REAL *restrict out, long h, long w,
                    const REAL *rv0, const REAL *cv1, double b, int cosine) {
    for (long i = 0; i < h; i++) {
        const double a = rv0[i];
        const REAL *restrict ci = c + i * w;
        REAL *restrict oi = out + i * w;
        REAL *restrict qi = q ? q + i * w : 0;
        for (long j = 0; j < w; j++) {
            double e = wn_expm1((double)ci[j]);
            double z = 1.0 / (e + 1.0);
            double diff = (e + 2.0) * e * z;
            double sum = (e + 1.0) + z;
            double t = cosine ? sum : diff;
            double td = cosine ? diff : sum;
            double amat = a * (double)cv1[j];
            double o = t * amat + b;
            oi[j] = (REAL)o;
            if (qi) qi[j] = (REAL)(o + td * amat * (double)qi[j]);
        }
    }
}

/* identity: out = wv c + b, q = out + wv q */
void SFX(identity_layer)(const REAL *restrict c, REAL *restrict q, REAL *restrict out, long n,
                         double wv, double b) {
    for (long i = 0; i < n; i++) {
        double o = wv * (double)c[i] + b;
        out[i] = (REAL)o;
        if (q) q[i] = (REAL)(o + wv * (double)q[i]);
    }
}

/* GELU (the closed form of wideNN/_gelu.py): with k_i = rv0_i, k'_j = cv0_j,
 * D = max((1 + k)(1 + k') - c^2, 1/2), P = 1/4 + atan(c/sqrt D)/2pi, R = rv3_i cv4_j / sqrt D,
 * T = c P + (k k' D + c^2) R,  T' = P + c ((3 + k + k') D + c^2) R / D;
 * out = wv T + b, q = out + wv T' q */
void SFX(gelu_layer)(const REAL *restrict c, REAL *restrict q, REAL *restrict out, long h, long w,
                     const REAL *rv0, const REAL *rv1, const REAL *rv2, const REAL *rv3,
                     const REAL *cv0, const REAL *cv4, double wv, double b) {
    const double inv_2pi = 0.15915494309189535;
    for (long i = 0; i < h; i++) {
        const double k = rv0[i], k1 = rv1[i], k3 = rv2[i], r3 = rv3[i];
        const REAL *restrict ci = c + i * w;
        REAL *restrict oi = out + i * w;
        REAL *restrict qi = q ? q + i * w : 0;
        for (long j = 0; j < w; j++) {
            double x = ci[j], kj = cv0[j];
            double sq = x * x;
            double prod = k * kj;
            double d = (prod - sq) + k1 + kj;
            d = d < 0.5 ? 0.5 : d;
            double sd = sqrt(d);
            double p = wn_atan(x / sd) * inv_2pi + 0.25;
            double r = r3 * (double)cv4[j] / sd;
            double t = x * p + (prod * d + sq) * r;
            double o = wv * t + b;
            oi[j] = (REAL)o;
            if (qi) {
                double td = p + ((k3 + kj) * d + sq) * x * r / d;
                qi[j] = (REAL)(o + wv * td * (double)qi[j]);
            }
        }
    }
}

/* out_i = sum_j x[i, j]^2 (row stride ld); returns 0 when an entry is NaN or inf */
int SFX(row_sumsq)(const REAL *restrict x, long n, long d, long ld, REAL *restrict out) {
    double bad = 0.0;
    for (long i = 0; i < n; i++) {
        const REAL *restrict xi = x + i * ld;
        /* eight independent partial sums (lanes), so that the loop vectorises without
         * reassociating one sum */
        double acc[8] = {0}, mask[8] = {0};
        long j = 0;
        for (; j + 8 <= d; j += 8)
            for (int l = 0; l < 8; l++) {
                double v = xi[j + l];
                acc[l] += v * v;
                mask[l] += v - v;  /* 0 for finite entries, NaN otherwise */
            }
        double total = 0.0, m = 0.0;
        for (; j < d; j++) {
            double v = xi[j];
            total += v * v;
            m += v - v;
        }
        for (int l = 0; l < 8; l++) {
            total += acc[l];
            m += mask[l];
        }
        out[i] = (REAL)total;
        bad += m;
    }
    return bad == 0.0;
}

/* the first layer's scaled tile from the inputs' GEMM G (in place): c = sign (r1_i r2_j G + t1_i t2_j);
 * returns how many entries have r1_i r2_j G + t1_i t2_j >= thresh (the diagonal left out when
 * skip_diagonal) */
long SFX(first_layer)(REAL *restrict c, long h, long w, const REAL *r1, const REAL *r2,
                      const REAL *t1, const REAL *t2, double sign, double thresh, int skip_diagonal) {
    long count = 0;
    for (long i = 0; i < h; i++) {
        const double a = r1[i], bb = t1[i];
        REAL *restrict ci = c + i * w;
        long row = 0;
        for (long j = 0; j < w; j++) {
            double v = a * (double)r2[j] * (double)ci[j] + bb * (double)t2[j];
            row += v >= thresh;
            ci[j] = (REAL)(sign * v);
        }
        if (skip_diagonal && i < w) row -= sign * (double)ci[i] >= thresh;
        count += row;
    }
    return count;
}

/* how many entries of an h x w tile are >= t, the diagonal (i == j) left out when skip_diagonal */
long SFX(count_at_least)(const REAL *restrict c, long h, long w, double t, int skip_diagonal) {
    long count = 0;
    for (long i = 0; i < h; i++) {
        const REAL *restrict ci = c + i * w;
        for (long j = 0; j < w; j++) count += (double)ci[j] >= t;
        if (skip_diagonal && i < w) count -= (double)ci[i] >= t;
    }
    return count;
}

/* dst[i, j] = tile[i, j] u1_i u2_j (row stride ld), and mirror[j, i] the same when mirror != 0;
 * a diagonal tile (mirror == dst) copies its upper triangle onto its lower one, so that the
 * output is exactly symmetric (the tile's GEMM need not be) */
void SFX(unscale_store)(const REAL *restrict tile, long h, long w, const REAL *u1, const REAL *u2,
                        double sign, REAL *dst, REAL *mirror, long ld) {
    const int diagonal = mirror == dst;
    for (long i = 0; i < h; i++) {
        const double a = sign * (double)u1[i];
        const REAL *restrict ti = tile + i * w;
        REAL *restrict di = dst + i * ld;
        for (long j = 0; j < w; j++) di[j] = (REAL)((double)ti[j] * a * (double)u2[j]);
    }
    if (mirror) {
        for (long j = 0; j < w; j++) {
            REAL *restrict mj = mirror + j * ld;
            const long rows = diagonal ? (j < h ? j : h) : h;
            for (long i = 0; i < rows; i++)
                mj[i] = (REAL)((double)tile[i * w + j] * (sign * (double)u1[i]) * (double)u2[j]);
        }
    }
}

#endif
