// See include/CKernels.h. Every entry point but the CPU and thread helpers needs AVX512-BF16.
#define _GNU_SOURCE
#include "CKernels.h"
#include <dlfcn.h>
#include <sched.h>
#include <immintrin.h>
#include <cpuid.h>

int lt_cpu_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int f = (b >> 16) & 1, bw = (b >> 30) & 1;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return f && bw && ((a >> 5) & 1);
}

int lt_affinity_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

int lt_set_openmp_threads(int n) {
    void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (!set) return 0;
    set(n);
    return 1;
}

long lt_fetch_increment(long *counter) { return __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST); }

#define BH(x) ((__m512bh)(x))
// Only these functions use AVX-512 (the CPU check above must run anywhere).
#define KERNEL __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

KERNEL void lt_bf16_scores64(int m, int d2, float alpha, const uint32_t *a, long lda, const uint32_t *bt, long ldb,
                      float *s, long lds) {
    const __m512 al = _mm512_set1_ps(alpha);
    int i = 0;
    for (; i + 4 <= m; i += 4) {
        __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        const uint32_t *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        for (int p = 0; p < d2; p++) {
            const uint32_t *b = bt + p * ldb;
            __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 16);
            __m512i b2 = _mm512_loadu_si512(b + 32), b3 = _mm512_loadu_si512(b + 48);
            __m512i x = _mm512_set1_epi32((int)a0[p]);
            c00 = _mm512_dpbf16_ps(c00, BH(x), BH(b0)); c01 = _mm512_dpbf16_ps(c01, BH(x), BH(b1));
            c02 = _mm512_dpbf16_ps(c02, BH(x), BH(b2)); c03 = _mm512_dpbf16_ps(c03, BH(x), BH(b3));
            x = _mm512_set1_epi32((int)a1[p]);
            c10 = _mm512_dpbf16_ps(c10, BH(x), BH(b0)); c11 = _mm512_dpbf16_ps(c11, BH(x), BH(b1));
            c12 = _mm512_dpbf16_ps(c12, BH(x), BH(b2)); c13 = _mm512_dpbf16_ps(c13, BH(x), BH(b3));
            x = _mm512_set1_epi32((int)a2[p]);
            c20 = _mm512_dpbf16_ps(c20, BH(x), BH(b0)); c21 = _mm512_dpbf16_ps(c21, BH(x), BH(b1));
            c22 = _mm512_dpbf16_ps(c22, BH(x), BH(b2)); c23 = _mm512_dpbf16_ps(c23, BH(x), BH(b3));
            x = _mm512_set1_epi32((int)a3[p]);
            c30 = _mm512_dpbf16_ps(c30, BH(x), BH(b0)); c31 = _mm512_dpbf16_ps(c31, BH(x), BH(b1));
            c32 = _mm512_dpbf16_ps(c32, BH(x), BH(b2)); c33 = _mm512_dpbf16_ps(c33, BH(x), BH(b3));
        }
        float *r = s + i * lds;
        _mm512_storeu_ps(r, _mm512_mul_ps(c00, al)); _mm512_storeu_ps(r + 16, _mm512_mul_ps(c01, al));
        _mm512_storeu_ps(r + 32, _mm512_mul_ps(c02, al)); _mm512_storeu_ps(r + 48, _mm512_mul_ps(c03, al));
        r += lds;
        _mm512_storeu_ps(r, _mm512_mul_ps(c10, al)); _mm512_storeu_ps(r + 16, _mm512_mul_ps(c11, al));
        _mm512_storeu_ps(r + 32, _mm512_mul_ps(c12, al)); _mm512_storeu_ps(r + 48, _mm512_mul_ps(c13, al));
        r += lds;
        _mm512_storeu_ps(r, _mm512_mul_ps(c20, al)); _mm512_storeu_ps(r + 16, _mm512_mul_ps(c21, al));
        _mm512_storeu_ps(r + 32, _mm512_mul_ps(c22, al)); _mm512_storeu_ps(r + 48, _mm512_mul_ps(c23, al));
        r += lds;
        _mm512_storeu_ps(r, _mm512_mul_ps(c30, al)); _mm512_storeu_ps(r + 16, _mm512_mul_ps(c31, al));
        _mm512_storeu_ps(r + 32, _mm512_mul_ps(c32, al)); _mm512_storeu_ps(r + 48, _mm512_mul_ps(c33, al));
    }
    for (; i < m; i++) {
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        const uint32_t *a0 = a + i * lda;
        for (int p = 0; p < d2; p++) {
            const uint32_t *b = bt + p * ldb;
            __m512i x = _mm512_set1_epi32((int)a0[p]);
            c0 = _mm512_dpbf16_ps(c0, BH(x), BH(_mm512_loadu_si512(b)));
            c1 = _mm512_dpbf16_ps(c1, BH(x), BH(_mm512_loadu_si512(b + 16)));
            c2 = _mm512_dpbf16_ps(c2, BH(x), BH(_mm512_loadu_si512(b + 32)));
            c3 = _mm512_dpbf16_ps(c3, BH(x), BH(_mm512_loadu_si512(b + 48)));
        }
        float *r = s + i * lds;
        _mm512_storeu_ps(r, _mm512_mul_ps(c0, al)); _mm512_storeu_ps(r + 16, _mm512_mul_ps(c1, al));
        _mm512_storeu_ps(r + 32, _mm512_mul_ps(c2, al)); _mm512_storeu_ps(r + 48, _mm512_mul_ps(c3, al));
    }
}

// One row, `width` (16 or 64) columns from col.
KERNEL static inline void accumulate_row(int n2, int width, const uint32_t *p, long pcs, const uint32_t *b, long ldb,
                                  float *c) {
    for (int v = 0; v < width; v += 16) {
        __m512 acc = _mm512_loadu_ps(c + v);
        for (int q = 0; q < n2; q++) {
            __m512i x = _mm512_set1_epi32((int)p[q * pcs]);
            acc = _mm512_dpbf16_ps(acc, BH(x), BH(_mm512_loadu_si512(b + q * ldb + v)));
        }
        _mm512_storeu_ps(c + v, acc);
    }
}

KERNEL void lt_bf16_accumulate(int m, int n2, int d, const uint32_t *p, long ldp, long pcs, const uint32_t *b, long ldb,
                        float *c, long ldc) {
    int col = 0;
    for (; col + 64 <= d; col += 64) {
        int i = 0;
        for (; i + 4 <= m; i += 4) {
            const uint32_t *p0 = p + i * ldp, *p1 = p0 + ldp, *p2 = p1 + ldp, *p3 = p2 + ldp;
            float *r0 = c + i * ldc + col, *r1 = r0 + ldc, *r2 = r1 + ldc, *r3 = r2 + ldc;
            __m512 c00 = _mm512_loadu_ps(r0), c01 = _mm512_loadu_ps(r0 + 16), c02 = _mm512_loadu_ps(r0 + 32),
                   c03 = _mm512_loadu_ps(r0 + 48);
            __m512 c10 = _mm512_loadu_ps(r1), c11 = _mm512_loadu_ps(r1 + 16), c12 = _mm512_loadu_ps(r1 + 32),
                   c13 = _mm512_loadu_ps(r1 + 48);
            __m512 c20 = _mm512_loadu_ps(r2), c21 = _mm512_loadu_ps(r2 + 16), c22 = _mm512_loadu_ps(r2 + 32),
                   c23 = _mm512_loadu_ps(r2 + 48);
            __m512 c30 = _mm512_loadu_ps(r3), c31 = _mm512_loadu_ps(r3 + 16), c32 = _mm512_loadu_ps(r3 + 32),
                   c33 = _mm512_loadu_ps(r3 + 48);
            for (int q = 0; q < n2; q++) {
                const uint32_t *br = b + q * ldb + col;
                __m512i b0 = _mm512_loadu_si512(br), b1 = _mm512_loadu_si512(br + 16);
                __m512i b2 = _mm512_loadu_si512(br + 32), b3 = _mm512_loadu_si512(br + 48);
                long pq = q * pcs;
                __m512i x = _mm512_set1_epi32((int)p0[pq]);
                c00 = _mm512_dpbf16_ps(c00, BH(x), BH(b0)); c01 = _mm512_dpbf16_ps(c01, BH(x), BH(b1));
                c02 = _mm512_dpbf16_ps(c02, BH(x), BH(b2)); c03 = _mm512_dpbf16_ps(c03, BH(x), BH(b3));
                x = _mm512_set1_epi32((int)p1[pq]);
                c10 = _mm512_dpbf16_ps(c10, BH(x), BH(b0)); c11 = _mm512_dpbf16_ps(c11, BH(x), BH(b1));
                c12 = _mm512_dpbf16_ps(c12, BH(x), BH(b2)); c13 = _mm512_dpbf16_ps(c13, BH(x), BH(b3));
                x = _mm512_set1_epi32((int)p2[pq]);
                c20 = _mm512_dpbf16_ps(c20, BH(x), BH(b0)); c21 = _mm512_dpbf16_ps(c21, BH(x), BH(b1));
                c22 = _mm512_dpbf16_ps(c22, BH(x), BH(b2)); c23 = _mm512_dpbf16_ps(c23, BH(x), BH(b3));
                x = _mm512_set1_epi32((int)p3[pq]);
                c30 = _mm512_dpbf16_ps(c30, BH(x), BH(b0)); c31 = _mm512_dpbf16_ps(c31, BH(x), BH(b1));
                c32 = _mm512_dpbf16_ps(c32, BH(x), BH(b2)); c33 = _mm512_dpbf16_ps(c33, BH(x), BH(b3));
            }
            _mm512_storeu_ps(r0, c00); _mm512_storeu_ps(r0 + 16, c01); _mm512_storeu_ps(r0 + 32, c02);
            _mm512_storeu_ps(r0 + 48, c03);
            _mm512_storeu_ps(r1, c10); _mm512_storeu_ps(r1 + 16, c11); _mm512_storeu_ps(r1 + 32, c12);
            _mm512_storeu_ps(r1 + 48, c13);
            _mm512_storeu_ps(r2, c20); _mm512_storeu_ps(r2 + 16, c21); _mm512_storeu_ps(r2 + 32, c22);
            _mm512_storeu_ps(r2 + 48, c23);
            _mm512_storeu_ps(r3, c30); _mm512_storeu_ps(r3 + 16, c31); _mm512_storeu_ps(r3 + 32, c32);
            _mm512_storeu_ps(r3 + 48, c33);
        }
        for (; i < m; i++) accumulate_row(n2, 64, p + i * ldp, pcs, b + col, ldb, c + i * ldc + col);
    }
    for (; col < d; col += 16)
        for (int i = 0; i < m; i++) accumulate_row(n2, 16, p + i * ldp, pcs, b + col, ldb, c + i * ldc + col);
}

// Round to nearest even, keeping NaN quiet: the bf16 bits in the high half of each 32-bit lane.
KERNEL static inline __m512i round_bf16_high(__m512 x) {
    __m512i b = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(b, _mm512_set1_epi32(0x00400000)));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000));
}

KERNEL void lt_bf16_pair_rows(const float *lo, const float *hi, int n, uint32_t *out) {
    int x = 0;
    for (; x + 16 <= n; x += 16) {
        __m512i l = _mm512_srli_epi32(round_bf16_high(_mm512_loadu_ps(lo + x)), 16);
        __m512i h = hi ? round_bf16_high(_mm512_loadu_ps(hi + x)) : _mm512_setzero_si512();
        _mm512_storeu_si512(out + x, _mm512_or_si512(l, h));
    }
    if (x < n) {
        __mmask16 k = (__mmask16)((1u << (n - x)) - 1);
        __m512i l = _mm512_srli_epi32(round_bf16_high(_mm512_maskz_loadu_ps(k, lo + x)), 16);
        __m512i h = hi ? round_bf16_high(_mm512_maskz_loadu_ps(k, hi + x)) : _mm512_setzero_si512();
        _mm512_mask_storeu_epi32(out + x, k, _mm512_or_si512(l, h));
    }
}
