/* Split-KV from C: partials over every split point of a causal and a band problem merge to
 * qkv_attention_f32's result; bad ranges, NULL lse, aliasing and NULL desc give their
 * statuses with out and lse untouched. Prints PASS on success. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "qkv.h"

#define QH 4
#define KVH 2
#define QL 3
#define KVL 50
#define D 16
#define OUT_N (QH * QL * D)
#define LSE_N (QH * QL)

static void check_problem(const qkv_desc *d, const float *q, const float *k, const float *v,
                          const char *name) {
    float want[OUT_N], want_lse[LSE_N];
    expect(qkv_attention_f32(d, q, k, v, want, want_lse) == QKV_OK, "one-shot");
    for (size_t cut = 0; cut <= KVL; cut += 7) {
        float oa[OUT_N], la[LSE_N], ob[OUT_N], lb[LSE_N];
        expect(qkv_partial_f32(d, q, k, v, 0, cut, oa, la) == QKV_OK, "partial a");
        expect(qkv_partial_f32(d, q, k, v, cut, KVL, ob, lb) == QKV_OK, "partial b");
        expect(qkv_merge_f32(d, oa, la, ob, lb) == QKV_OK, "merge");
        int ok = 1;
        for (int i = 0; i < OUT_N; i++) ok &= close_to(oa[i], want[i]);
        for (int i = 0; i < LSE_N; i++) ok &= close_to(la[i], want_lse[i]);
        if (!ok) printf("%s: cut %zu differs\n", name, cut);
        expect(ok, "merged == one-shot");
    }
}

int main(void) {
    static float q[QH * QL * D], k[KVH * KVL * D], v[KVH * KVL * D];
    unsigned seed = 7;
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = frand(&seed);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = frand(&seed);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) v[i] = frand(&seed);

    qkv_desc d = qkv_desc_planar(QH, KVH, QL, KVL, D, D);
    d.mask = QKV_MASK_CAUSAL;
    check_problem(&d, q, k, v, "causal");

    /* A band with the queries early in the sequence: late partials are fully masked. */
    qkv_desc band = d;
    band.mask = QKV_MASK_BAND;
    band.window_left = 5;
    band.window_right = 2;
    band.query_pos = QKV_QUERY_POS_OFFSET;
    band.query_offset = 10;
    check_problem(&band, q, k, v, "band");
    {
        float o[OUT_N], l[LSE_N];
        expect(qkv_partial_f32(&band, q, k, v, 20, KVL, o, l) == QKV_OK, "masked partial");
        int ok = 1;
        for (int i = 0; i < OUT_N; i++) ok &= o[i] == 0.0f;
        for (int i = 0; i < LSE_N; i++) ok &= isinf(l[i]) && l[i] < 0;
        expect(ok, "fully masked partial is (0, -inf)");
    }

    /* Streaming: pages of 7, then single tokens, in a shuffled-ish order. */
    {
        size_t n = 0;
        expect(qkv_stream_state_len(&d, &n) == QKV_OK, "state_len");
        expect(n == (size_t)QH * QL * (3 + 2 * D), "state_len value");
        float *state = malloc(n * sizeof(float));
        float want[OUT_N], want_lse[LSE_N], got[OUT_N], got_lse[LSE_N];
        expect(qkv_attention_f32(&band, q, k, v, want, want_lse) == QKV_OK, "one-shot band");
        expect(qkv_stream_init(&band, state, n - 1) == QKV_ERR_TOO_SHORT, "short state");
        expect(qkv_stream_init(&band, state, n) == QKV_OK, "init");
        /* Chunk buffers holding only their own rows (planar: [kv_heads][rows][D]). */
        size_t starts[] = {28, 0, 7, 14, 21, 35, 42, 49};
        size_t ends[] = {35, 7, 14, 21, 28, 42, 49, 50};
        for (int c = 0; c < 8; c++) {
            size_t s0 = starts[c], rows = ends[c] - starts[c];
            float *kc = malloc(KVH * rows * D * sizeof(float));
            float *vc = malloc(KVH * rows * D * sizeof(float));
            for (size_t h = 0; h < KVH; h++) {
                memcpy(kc + h * rows * D, k + (h * KVL + s0) * D, rows * D * sizeof(float));
                memcpy(vc + h * rows * D, v + (h * KVL + s0) * D, rows * D * sizeof(float));
            }
            qkv_desc chunk = band; /* k/v strides of the chunk buffers */
            chunk.k.head_stride = chunk.v.head_stride = rows * D;
            expect(qkv_stream_update(&chunk, state, n, q, kc, vc, s0, ends[c]) == QKV_OK,
                   "update");
            free(kc);
            free(vc);
        }
        expect(qkv_stream_update(&band, state, n, q, k, v, 40, KVL + 1) == QKV_ERR_TOO_SHORT,
               "update past kv_len");
        expect(qkv_stream_finish(&band, state, n, got, got_lse) == QKV_OK, "finish");
        int ok = 1;
        for (int i = 0; i < OUT_N; i++) ok &= close_to(got[i], want[i]);
        for (int i = 0; i < LSE_N; i++) ok &= close_to(got_lse[i], want_lse[i]);
        expect(ok, "streamed == one-shot");
        expect(qkv_stream_finish(&band, state, n, state, NULL) == QKV_ERR_ALIASING,
               "finish into the state");
        free(state);
    }

    /* Errors leave out and lse untouched. */
    float o[OUT_N], l[LSE_N], o2[OUT_N], l2[LSE_N];
    for (int i = 0; i < OUT_N; i++) o[i] = o2[i] = 7.0f;
    for (int i = 0; i < LSE_N; i++) l[i] = l2[i] = 7.0f;
    expect(qkv_partial_f32(&d, q, k, v, 0, KVL + 1, o, l) == QKV_ERR_TOO_SHORT, "end > kv_len");
    expect(qkv_partial_f32(&d, q, k, v, 9, 3, o, l) == QKV_ERR_TOO_SHORT, "start > end");
    expect(qkv_partial_f32(&d, q, k, v, 0, 3, o, NULL) == QKV_ERR_NULL_POINTER, "lse NULL");
    expect(qkv_partial_f32(NULL, q, k, v, 0, 3, o, l) == QKV_ERR_NULL_POINTER, "desc NULL");
    expect(qkv_partial_f32(&d, q, k, v, 0, 3, o, o + 1) == QKV_ERR_ALIASING, "lse in out");
    expect(qkv_merge_f32(&d, o, l, o, l2) == QKV_ERR_ALIASING, "merge a == b");
    expect(qkv_merge_f32(&d, o, l, o2, NULL) == QKV_ERR_NULL_POINTER, "merge lse_b NULL");
    qkv_desc short_out = d;
    short_out.out_count = OUT_N - 1;
    expect(qkv_merge_f32(&short_out, o, l, o2, l2) == QKV_ERR_TOO_SHORT, "merge short out");
    int untouched = 1;
    for (int i = 0; i < OUT_N; i++) untouched &= o[i] == 7.0f;
    for (int i = 0; i < LSE_N; i++) untouched &= l[i] == 7.0f;
    expect(untouched, "nothing written on error");
    expect(strlen(qkv_status_str(QKV_ERR_TOO_SHORT)) > 0, "status string");

    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
