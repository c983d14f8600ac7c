// AVX512-BF16 micro-kernels of the fused attention in bf16 (docs/CONVENTIONS.md §15), in C because Swift cannot
// emit `vdpbf16ps`. Operands are bf16 *pairs* held in 32-bit words: `vdpbf16ps` multiplies two bf16 pairs and adds
// both products to one fp32 lane, so each kernel reads its reduction dimension two elements at a time.
// Call only when the CPU has AVX512-BF16 (`lt_cpu_has_avx512_bf16`).
#pragma once
#include <stdint.h>

// 1 when this CPU runs AVX512-F/BW and AVX512-BF16 instructions.
int lt_cpu_has_avx512_bf16(void);

// s[i·lds + c] = alpha · Σ_{p < d2} dot(a[i·lda + p], bt[p·ldb + c]) for i < m, c < 64: rows of A as bf16 pairs
// along the head dimension (d2 = d/2 words per row) times 64 columns of a pair-transposed matrix Bᵀ
// (word p of column c holds elements 2p, 2p+1 of B's row c).
void lt_bf16_scores64(int m, int d2, float alpha, const uint32_t *a, long lda, const uint32_t *bt, long ldb,
                      float *s, long lds);

// c[i·ldc + x] += Σ_{q < n2} dot(p[i·ldp + q·pcs], b[q·ldb + x]) for i < m, x < d (d a multiple of 16): pairs of
// P along its reduction dimension times row pairs of B (word x of pair row q holds B[2q][x], B[2q+1][x]).
void lt_bf16_accumulate(int m, int n2, int d, const uint32_t *p, long ldp, long pcs, const uint32_t *b, long ldb,
                        float *c, long ldc);

// Rounds to bf16 (nearest even) and pairs two fp32 rows: out[x] = bf16(lo[x]) | bf16(hi[x]) << 16, x < n
// (hi may be NULL: zeros).
void lt_bf16_pair_rows(const float *lo, const float *hi, int n, uint32_t *out);

// The number of CPUs in this thread's affinity mask (sched_getaffinity; `taskset`, cpusets, MPI binding), or 0 when
// it cannot be read.
int lt_affinity_cpu_count(void);

// Sets OpenMP's thread count for later parallel regions of the calling thread (oneDNN's bf16 GEMM runs on OpenMP)
// when an OpenMP runtime is loaded; returns 0 when none is.
int lt_set_openmp_threads(int n);

// *counter += 1, returning the value before (sequentially consistent): the work counter of `Parallel.forEach`.
long lt_fetch_increment(long *counter);
