// oneDNN's C API (Debian: libdnnl-dev), the library PyTorch's CPU bf16 matmul runs on, and a small
// wrapper for the one primitive LongTune uses: a bf16 × bf16 → fp32 matrix product (docs/CONVENTIONS.md §15).
// oneDNN 2.x describes a product by memory descriptors; building them takes C arrays, which is why
// this lives in C rather than Swift.
#include <oneapi/dnnl/dnnl.h>
#include <stdint.h>

// One product shape, created once and run many times on different buffers.
typedef struct {
    dnnl_primitive_t primitive;
    dnnl_memory_t a, b, c;
} lt_bf16_matmul;

// C[m, n] = op(A)[m, k] · op(B)[k, n] (+ C when `accumulate`), row-major with row strides lda, ldb, ldc as
// stored; op transposes when asked (A stored [k, m], B stored [n, k]). A and B bf16, C fp32.
// Returns dnnl_success or oneDNN's status; on failure nothing needs freeing.
static inline dnnl_status_t lt_bf16_matmul_create(lt_bf16_matmul *out, dnnl_engine_t engine, int64_t m, int64_t n,
                                                  int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int trans_a,
                                                  int trans_b, int accumulate) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t a_dims = {m, k}, b_dims = {k, n}, c_dims = {m, n};
    dnnl_dims_t a_strides = {trans_a ? 1 : lda, trans_a ? lda : 1};
    dnnl_dims_t b_strides = {trans_b ? 1 : ldb, trans_b ? ldb : 1};
    dnnl_dims_t c_strides = {ldc, 1};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_strides)) != dnnl_success) return s;
    if ((s = dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, b_strides)) != dnnl_success) return s;
    if ((s = dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides)) != dnnl_success) return s;
    dnnl_matmul_desc_t desc;
    if ((s = dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md)) != dnnl_success) return s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
    if (accumulate) {
        if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success) return s;
        if ((s = dnnl_post_ops_create(&post_ops)) == dnnl_success
            && (s = dnnl_post_ops_append_sum(post_ops, 1.0f)) == dnnl_success)
            s = dnnl_primitive_attr_set_post_ops(attr, post_ops);
        if (post_ops) dnnl_post_ops_destroy(post_ops);
        if (s != dnnl_success) { dnnl_primitive_attr_destroy(attr); return s; }
    }
    dnnl_primitive_desc_t pd;
    s = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success) return s;
    s = dnnl_primitive_create(&out->primitive, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) return s;
    out->a = out->b = out->c = NULL;
    if ((s = dnnl_memory_create(&out->a, &a_md, engine, DNNL_MEMORY_NONE)) != dnnl_success
        || (s = dnnl_memory_create(&out->b, &b_md, engine, DNNL_MEMORY_NONE)) != dnnl_success
        || (s = dnnl_memory_create(&out->c, &c_md, engine, DNNL_MEMORY_NONE)) != dnnl_success) {
        if (out->a) dnnl_memory_destroy(out->a);
        if (out->b) dnnl_memory_destroy(out->b);
        dnnl_primitive_destroy(out->primitive);
        return s;
    }
    return dnnl_success;
}

// Runs a created product on these buffers and waits for it.
static inline dnnl_status_t lt_bf16_matmul_run(lt_bf16_matmul *mm, dnnl_stream_t stream, const uint16_t *a,
                                               const uint16_t *b, float *c) {
    dnnl_status_t s;
    if ((s = dnnl_memory_set_data_handle(mm->a, (void *)a)) != dnnl_success) return s;
    if ((s = dnnl_memory_set_data_handle(mm->b, (void *)b)) != dnnl_success) return s;
    if ((s = dnnl_memory_set_data_handle(mm->c, c)) != dnnl_success) return s;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mm->a}, {DNNL_ARG_WEIGHTS, mm->b}, {DNNL_ARG_DST, mm->c}};
    if ((s = dnnl_primitive_execute(mm->primitive, stream, 3, args)) != dnnl_success) return s;
    return dnnl_stream_wait(stream);
}

// The product's implementation name (e.g. "brg:avx512_core_bf16"), for bench output.
static inline const char *lt_bf16_matmul_impl(lt_bf16_matmul *mm) {
    const_dnnl_primitive_desc_t pd;
    const char *name = "";
    if (dnnl_primitive_get_primitive_desc(mm->primitive, &pd) != dnnl_success) return name;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
    return name;
}
