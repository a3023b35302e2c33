/*
 * qkv against ggml's CPU flash attention (the one llama.cpp runs), on the same bytes,
 * called alternately in one process, one thread each: decode of 32 query heads over 8 kv
 * heads (GQA 4), d128, one query, kv_len keys, K and V stored as f16, q8_0 or f32.
 *
 * K and V are ggml tensors ([128, kv_len, 8], contiguous) and qkv reads the same memory:
 * ggml's f16 is IEEE binary16 and its block_q8_0 is qkv's BlockQ8_0, so both read exactly
 * the same cache. Each round times one call of each (the order swaps every round); the
 * output gives the median time of each, the median (min-max) of the per-round ratios
 * ggml time / qkv time (above 1: qkv is faster), and each output's largest difference from
 * qkv_reference_f32 (f64, on the same stored values).
 *
 * Build (see benches/peers/README.md): ggml's CPU backend, then
 *   cc -O2 benches/peers/ggml_vs_qkv.c -Iinclude -I$GGML/include \
 *      -L$GGML/build/src -lggml -lggml-base -lggml-cpu -Ltarget/release -lqkv -lm \
 *      -Wl,-rpath,$GGML/build/src:$PWD/target/release -o ggml_vs_qkv
 *   ./ggml_vs_qkv [kv_len] [rounds]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-cpu.h"
#include "ggml.h"
#include "qkv.h"

enum { HEAD_DIM = 128, Q_HEADS = 32, KV_HEADS = 8 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, n, sizeof *x, cmp);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* A deterministic sample of [-1, 1). */
static float sample(unsigned long long *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

static void run(enum ggml_type type, const char *name, size_t kv_len, int rounds) {
    size_t n_kv = kv_len * HEAD_DIM * KV_HEADS;
    size_t row_bytes = ggml_row_size(type, HEAD_DIM);
    size_t mem = 2 * row_bytes * kv_len * KV_HEADS + ((size_t)64 << 20);
    struct ggml_init_params ip = {mem, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    struct ggml_tensor *q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, HEAD_DIM, 1, Q_HEADS);
    struct ggml_tensor *k = ggml_new_tensor_3d(ctx, type, HEAD_DIM, kv_len, KV_HEADS);
    struct ggml_tensor *v = ggml_new_tensor_3d(ctx, type, HEAD_DIM, kv_len, KV_HEADS);
    unsigned long long s = 1;
    float *tmp = malloc(n_kv * sizeof(float));
    for (size_t i = 0; i < (size_t)HEAD_DIM * Q_HEADS; i++) ((float *)q->data)[i] = sample(&s);
    for (int t = 0; t < 2; t++) {
        for (size_t i = 0; i < n_kv; i++) tmp[i] = sample(&s);
        void *dst = t == 0 ? k->data : v->data;
        if (type == GGML_TYPE_F32) {
            memcpy(dst, tmp, n_kv * sizeof(float));
        } else {
            ggml_quantize_chunk(type, tmp, dst, 0, kv_len * KV_HEADS, HEAD_DIM, NULL);
        }
    }
    free(tmp);
    struct ggml_tensor *fa =
        ggml_flash_attn_ext(ctx, q, k, v, NULL, 1.0f / sqrtf((float)HEAD_DIM), 0.0f, 0.0f);
    ggml_flash_attn_ext_set_prec(fa, GGML_PREC_F32);
    struct ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, fa);

    qkv_desc d = qkv_desc_planar(Q_HEADS, KV_HEADS, 1, kv_len, HEAD_DIM, HEAD_DIM);
    uint32_t qtype = type == GGML_TYPE_F16 ? QKV_TYPE_F16
                     : type == GGML_TYPE_Q8_0 ? QKV_TYPE_Q8_0
                                              : QKV_TYPE_F32;
    size_t per_row = type == GGML_TYPE_Q8_0 ? HEAD_DIM / 32 : HEAD_DIM; /* elements */
    d.k_type = d.v_type = qtype;
    d.k.head_stride = d.v.head_stride = kv_len * per_row;
    d.k.row_stride = d.v.row_stride = per_row;
    float out[Q_HEADS * HEAD_DIM];

    double tg[64], tq[64], ratio[64];
    if (rounds > 64) rounds = 64;
    /* A warm-up call of each. */
    ggml_graph_compute_with_ctx(ctx, gf, 1);
    if (qkv_attention_f32(&d, (const float *)q->data, k->data, v->data, out, NULL) != QKV_OK) {
        fprintf(stderr, "qkv_attention_f32 failed\n");
        exit(1);
    }
    for (int r = 0; r < rounds; r++) {
        for (int side = 0; side < 2; side++) {
            double t0 = now();
            if ((side ^ (r & 1)) == 0) {
                ggml_graph_compute_with_ctx(ctx, gf, 1);
                tg[r] = now() - t0;
            } else {
                qkv_attention_f32(&d, (const float *)q->data, k->data, v->data, out, NULL);
                tq[r] = now() - t0;
            }
        }
        ratio[r] = tg[r] / tq[r];
    }
    /* Both against qkv's f64 reference on the same stored K and V. ggml's result is
     * [128, n_head, n_batch]: with one query, qkv's [heads][1][128]. */
    static float want[Q_HEADS * HEAD_DIM];
    if (qkv_reference_f32(&d, (const float *)q->data, k->data, v->data, want, NULL) != QKV_OK) {
        fprintf(stderr, "qkv_reference_f32 failed\n");
        exit(1);
    }
    float err_ggml = 0.0f, err_qkv = 0.0f;
    for (int i = 0; i < Q_HEADS * HEAD_DIM; i++) {
        float e = fabsf(((float *)fa->data)[i] - want[i]);
        if (e > err_ggml) err_ggml = e;
        e = fabsf(out[i] - want[i]);
        if (e > err_qkv) err_qkv = e;
    }
    double lo = ratio[0], hi = ratio[0];
    for (int r = 1; r < rounds; r++) {
        if (ratio[r] < lo) lo = ratio[r];
        if (ratio[r] > hi) hi = ratio[r];
    }
    printf("| decode 32/8 x %zu d128, %s | %.2f | %.2f | %.2fx (%.2f-%.2f) | %.1e | %.1e |\n",
           kv_len, name, 1e3 * median(tg, rounds), 1e3 * median(tq, rounds),
           median(ratio, rounds), lo, hi, err_ggml, err_qkv);
    ggml_free(ctx);
}

int main(int argc, char **argv) {
    size_t kv_len = argc > 1 ? (size_t)atol(argv[1]) : 32768;
    int rounds = argc > 2 ? atoi(argv[2]) : 11;
    printf("qkv level %d (QKV_ISA_*), one thread each; %d rounds, alternating\n\n",
           qkv_detected_isa(), rounds);
    printf("| shape, K/V | ggml ms | qkv ms | qkv speed vs ggml | ggml max err | qkv max err |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    run(GGML_TYPE_F16, "f16", kv_len, rounds);
    run(GGML_TYPE_Q8_0, "q8_0", kv_len, rounds);
    run(GGML_TYPE_F32, "f32", kv_len, rounds);
    return 0;
}
