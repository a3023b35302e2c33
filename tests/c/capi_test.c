/* The C ABI from C: results against qkv_reference_f32 at every available level, with K and
 * V stored as float, half, bfloat16 and q8_0 blocks, and every status code reached (with out
 * and lse left untouched on error). Run by tests/capi.rs;
 * prints "reached <status>" for each status it saw and "PASS" at the end, exits 1 on any
 * failure. */
#include "qkv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static int reached[64];

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static void note(qkv_status s) {
    if (s >= 0 && s < 64) reached[s] = 1;
}

static uint32_t rng = 12345u;
static float rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill(float *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) p[i] = rnd();
}

static void fill_value(float *p, size_t n, float x) {
    size_t i;
    for (i = 0; i < n; i++) p[i] = x;
}

static int all_equal(const float *p, size_t n, float x) {
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != x) return 0;
    return 1;
}

/* Buffers large enough for every case below. */
#define BIG 65536
static float Q[BIG], K[BIG], V[BIG], B[BIG];
static float OUT[BIG], REF[BIG], LSE[4096], REF_LSE[4096];
/* Workspace of the _ws calls: more than qkv_workspace_size() of any descriptor here. */
#define WS_LEN 16384
static float WS[WS_LEN];

static int close_enough(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b)) return a == b;
    return fabsf(a - b) <= 1e-4f + 1e-4f * fabsf(b);
}

/* Runs desc at the detected level, at every available one, and in a caller-owned workspace
 * of the full and the least size, on Q and k, v (of desc's k_type and v_type); compares out
 * and lse with the reference element by element over the whole buffers (padding
 * included). */
static void compare_kv(const char *name, const qkv_desc *d, const void *k, const void *v,
                       int with_lse) {
    size_t i;
    int isa;
    qkv_status s;
    size_t ws_full = qkv_workspace_size(d), ws_min = qkv_workspace_min_size(d);
    CHECK(ws_min > 0 && ws_min <= ws_full && ws_full <= WS_LEN, "%s: workspace %zu, %zu", name,
          ws_min, ws_full);
    fill_value(REF, BIG, 3.0f);
    fill_value(REF_LSE, 4096, 3.0f);
    s = qkv_reference_f32(d, Q, k, v, REF, with_lse ? REF_LSE : NULL);
    note(s);
    CHECK(s == QKV_OK, "%s: reference: %s", name, qkv_status_str(s));
    /* isa -3 and -2: the detected level in a workspace of the least and the full size. */
    for (isa = -3; isa <= QKV_ISA_NEON; isa++) {
        float *lse = with_lse ? LSE : NULL;
        if (isa >= 0 && !qkv_isa_available(isa)) continue;
        fill_value(OUT, BIG, 3.0f);
        fill_value(LSE, 4096, 3.0f);
        fill_value(WS, WS_LEN, NAN);
        if (isa == -3)
            s = qkv_attention_f32_ws(d, Q, k, v, OUT, lse, WS, ws_min);
        else if (isa == -2)
            s = qkv_attention_f32_ws(d, Q, k, v, OUT, lse, WS, ws_full);
        else if (isa == -1)
            s = qkv_attention_f32(d, Q, k, v, OUT, lse);
        else
            s = qkv_attention_f32_isa(isa, d, Q, k, v, OUT, lse);
        note(s);
        CHECK(s == QKV_OK, "%s at %s: %s", name, isa < 0 ? "detected" : qkv_isa_name(isa),
              qkv_status_str(s));
        for (i = 0; i < BIG; i++) {
            if (!close_enough(OUT[i], REF[i])) {
                CHECK(0, "%s at %s: out[%zu] = %g, reference %g", name,
                      isa < 0 ? "detected" : qkv_isa_name(isa), i, OUT[i], REF[i]);
                break;
            }
        }
        for (i = 0; i < 4096; i++) {
            if (!close_enough(LSE[i], REF_LSE[i])) {
                CHECK(0, "%s at %s: lse[%zu] = %g, reference %g", name,
                      isa < 0 ? "detected" : qkv_isa_name(isa), i, LSE[i], REF_LSE[i]);
                break;
            }
        }
    }
}

static void compare(const char *name, const qkv_desc *d, int with_lse) {
    compare_kv(name, d, K, V, with_lse);
}

/* ---- K and V in 16 and 8 bits. The values are chosen exactly representable, so that the
 * float copies K32 and V32 hold the same numbers and the reference on them must give the
 * same bits as on the stored types. */

/* The bits of x as IEEE half (or bfloat16), for an x that is exactly one: zero or normal. */
static uint16_t half_bits(float x) {
    union {
        float f;
        uint32_t u;
    } b;
    uint32_t sign, e;
    b.f = x;
    sign = (b.u >> 16) & 0x8000u;
    e = (b.u >> 23) & 0xffu;
    if (e == 0) return (uint16_t)sign;
    return (uint16_t)(sign | ((e - 127u + 15u) << 10) | ((b.u & 0x7fffffu) >> 13));
}

static uint16_t bf16_bits(float x) {
    union {
        float f;
        uint32_t u;
    } b;
    b.f = x;
    return (uint16_t)(b.u >> 16);
}

/* k/1024 for k in -1024..1023: exact in half and bfloat16 alike (11 significant bits are
 * too many for bfloat16, so bfloat16 gets k/128 for k in -128..127). */
static float small_value(int bits) {
    rng = rng * 1664525u + 1013904223u;
    return bits == 16 ? (float)((int)(rng >> 21) - 1024) / 1024.0f
                      : (float)((int)(rng >> 24) - 128) / 128.0f;
}

#define KV_ELEMS 4096
static uint16_t K16[KV_ELEMS], V16[KV_ELEMS];
/* q8_0 blocks: 34 bytes each, in uint16_t storage aligned to 4 (a float over them is
 * aligned for the aliasing check). */
#define BLOCKS 128
static union {
    float align;
    uint16_t h[BLOCKS * 17];
} KQ_, VQ_;
#define KQ KQ_.h
#define VQ VQ_.h
static float K32[KV_ELEMS], V32[KV_ELEMS];

/* n values of type t (QKV_TYPE_F16 or QKV_TYPE_BF16) in dst, their floats in f32. */
static void fill16(uint16_t *dst, float *f32, size_t n, uint32_t t) {
    size_t i;
    for (i = 0; i < n; i++) {
        f32[i] = small_value(t == QKV_TYPE_F16 ? 16 : 8);
        dst[i] = t == QKV_TYPE_F16 ? half_bits(f32[i]) : bf16_bits(f32[i]);
    }
}

/* n blocks of q8_0 in dst (scales 1/64, 1/32, 1/16, 1/8 by turns), their 32 n floats in
 * f32. */
static void fill_q8(uint16_t *dst, float *f32, size_t n) {
    size_t b, i;
    unsigned char *bytes = (unsigned char *)dst;
    for (b = 0; b < n; b++) {
        float d = (float)(1u << (b % 4)) / 64.0f;
        uint16_t h = half_bits(d);
        unsigned char *block = bytes + 34 * b;
        memcpy(block, &h, 2); /* little-endian host, as ggml */
        for (i = 0; i < 32; i++) {
            int q;
            rng = rng * 1664525u + 1013904223u;
            q = (int)(rng >> 24) - 128;
            if (q == -128) q = -127;
            block[2 + i] = (unsigned char)(signed char)q;
            f32[32 * b + i] = d * (float)q;
        }
    }
}

/* desc with K and V stored as k_type and v_type: results at every level against the
 * reference, and the reference on the stored types bit for bit that on their floats. */
static void compare_types(const char *name, qkv_desc d, uint32_t kt, uint32_t vt) {
    size_t nk = d.kv_heads * d.kv_len * d.head_dim, nv = d.kv_heads * d.kv_len * d.v_dim;
    const void *k = K32, *v = V32;
    qkv_desc typed = qkv_desc_kv_types(d, kt, vt);
    qkv_status s;
    size_t i;
    static float ref32[4096], lse32[64];
    if (kt == QKV_TYPE_Q8_0) fill_q8(KQ, K32, nk / 32), k = KQ;
    else if (kt != QKV_TYPE_F32) fill16(K16, K32, nk, kt), k = K16;
    else fill(K32, nk);
    if (vt == QKV_TYPE_Q8_0) fill_q8(VQ, V32, nv / 32), v = VQ;
    else if (vt != QKV_TYPE_F32) fill16(V16, V32, nv, vt), v = V16;
    else fill(V32, nv);
    compare_kv(name, &typed, k, v, 1);
    s = qkv_reference_f32(&d, Q, K32, V32, ref32, lse32);
    note(s);
    CHECK(s == QKV_OK, "%s: reference on floats: %s", name, qkv_status_str(s));
    for (i = 0; i < d.q_heads * d.q_len * d.v_dim; i++) {
        if (memcmp(&ref32[i], &REF[i], sizeof(float)) != 0) {
            CHECK(0, "%s: reference out[%zu] = %g on the types, %g on floats", name, i, REF[i],
                  ref32[i]);
            break;
        }
    }
    CHECK(memcmp(lse32, REF_LSE, d.q_heads * d.q_len * sizeof(float)) == 0,
          "%s: reference lse differs between the types and floats", name);
}

static void types(void) {
    qkv_desc d = qkv_desc_planar(4, 2, 3, 9, 32, 64);
    d.mask = QKV_MASK_CAUSAL;
    compare_types("f16 k and v", d, QKV_TYPE_F16, QKV_TYPE_F16);
    compare_types("q8_0 k and v", d, QKV_TYPE_Q8_0, QKV_TYPE_Q8_0);
    compare_types("f16 k, q8_0 v", d, QKV_TYPE_F16, QKV_TYPE_Q8_0);
    compare_types("q8_0 k, bf16 v", d, QKV_TYPE_Q8_0, QKV_TYPE_BF16);
    compare_types("f32 k, f16 v", d, QKV_TYPE_F32, QKV_TYPE_F16);
    /* Interleaved [seq][heads][dim] q8_0 cache: strides in blocks. */
    d = qkv_desc_interleaved(4, 2, 1, 11, 64, 32);
    compare_types("interleaved q8_0 decode", d, QKV_TYPE_Q8_0, QKV_TYPE_Q8_0);
}

static void results(void) {
    qkv_desc d;
    size_t i;
    fill(Q, BIG);
    fill(K, BIG);
    fill(V, BIG);
    fill(B, BIG);

    d = qkv_desc_planar(2, 2, 7, 13, 16, 16);
    compare("planar", &d, 1);

    /* A hand-checked value: one query, keys with equal scores -> mean of the values. */
    {
        float q1[2] = {1.0f, 0.0f}, k1[6] = {1.0f, 5.0f, 1.0f, -5.0f, 1.0f, 0.0f};
        float v1[6] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, o1[2], l1[1];
        qkv_status s;
        d = qkv_desc_planar(1, 1, 1, 3, 2, 2);
        s = qkv_attention_f32(&d, q1, k1, v1, o1, l1);
        note(s);
        CHECK(s == QKV_OK, "mean: %s", qkv_status_str(s));
        CHECK(fabsf(o1[0] - 3.0f) < 1e-6f && fabsf(o1[1] - 4.0f) < 1e-6f, "mean: %g %g",
              o1[0], o1[1]);
        CHECK(fabsf(l1[0] - (1.0f / sqrtf(2.0f) + logf(3.0f))) < 1e-5f, "mean lse: %g", l1[0]);
    }

    /* Grouped-query, causal, explicit scale, different v_dim. */
    d = qkv_desc_planar(8, 2, 9, 21, 32, 24);
    d.mask = QKV_MASK_CAUSAL;
    d.flags = QKV_FLAG_SCALE;
    d.scale = 0.3f;
    compare("gqa causal scaled", &d, 1);

    /* Interleaved [seq][heads][dim] layouts, sliding window aligned top-left. */
    d = qkv_desc_planar(4, 4, 11, 11, 8, 8);
    d.q.head_stride = 8;
    d.q.row_stride = 4 * 8;
    d.k = d.q;
    d.v = d.q;
    d.out = d.q;
    d.mask = QKV_MASK_BAND;
    d.window_left = 3;
    d.window_right = 0;
    d.query_pos = QKV_QUERY_POS_TOP_LEFT;
    compare("interleaved window", &d, 1);

    /* Band with an explicit negative offset, unbounded on the left, and a per-head bias
     * with padded rows and -inf entries. */
    d = qkv_desc_planar(3, 3, 6, 17, 12, 12);
    d.mask = QKV_MASK_BAND;
    d.window_left = QKV_UNBOUNDED;
    d.window_right = 2;
    d.query_pos = QKV_QUERY_POS_OFFSET;
    d.query_offset = -2;
    d.bias = B;
    d.bias_layout.head_stride = 6 * 20;
    d.bias_layout.row_stride = 20;
    for (i = 0; i < 3 * 6 * 20; i += 7) B[i] = -INFINITY;
    compare("offset band bias", &d, 1);

    /* Broadcast bias, no lse, counts given explicitly (larger than needed). */
    d = qkv_desc_planar(2, 1, 5, 9, 4, 4);
    d.bias = B;
    d.bias_layout.head_stride = 0;
    d.bias_layout.row_stride = 9;
    d.q_count = d.k_count = d.v_count = d.out_count = d.bias_count = 1000;
    compare("broadcast bias counts", &d, 0);

    /* kv_len = 0: out is 0, lse is -inf; k and v may be NULL. */
    {
        float o[8], l[2];
        qkv_status s;
        d = qkv_desc_planar(2, 2, 1, 0, 4, 4);
        s = qkv_attention_f32(&d, Q, NULL, NULL, o, l);
        note(s);
        CHECK(s == QKV_OK && all_equal(o, 8, 0.0f) && isinf(l[0]) && l[0] < 0, "kv_len 0: %s",
              qkv_status_str(s));
    }
    /* q_len = 0: a no-op; q, out and lse may be NULL, but not k and v, whose extents do not
     * depend on q_len. */
    d = qkv_desc_planar(2, 2, 0, 5, 4, 4);
    {
        qkv_status s = qkv_attention_f32(&d, NULL, K, V, NULL, NULL);
        note(s);
        CHECK(s == QKV_OK, "q_len 0: %s", qkv_status_str(s));
        s = qkv_attention_f32(&d, NULL, NULL, V, NULL, NULL);
        note(s);
        CHECK(s == QKV_ERR_NULL_POINTER, "q_len 0, k NULL: %s", qkv_status_str(s));
    }
}

/* Expects status want from every entry point (attention, reference, and each available
 * level), with out and lse untouched. */
static void expect_at(int line, qkv_status want, const qkv_desc *d, const float *q,
                      const void *k, const void *v, float *out, float *lse) {
    int isa;
    for (isa = -2; isa <= QKV_ISA_NEON; isa++) {
        qkv_status s;
        if (isa >= 0 && !qkv_isa_available(isa)) continue;
        fill_value(OUT, BIG, 7.0f);
        fill_value(LSE, 4096, 7.0f);
        s = isa == -2   ? qkv_reference_f32(d, q, k, v, out, lse)
            : isa == -1 ? qkv_attention_f32(d, q, k, v, out, lse)
                        : qkv_attention_f32_isa(isa, d, q, k, v, out, lse);
        note(s);
        CHECK(s == want, "line %d, entry %d: got %d (%s), want %d (%s)", line, isa, (int)s,
              qkv_status_str(s), (int)want, qkv_status_str(want));
        if (want != QKV_OK)
            CHECK(all_equal(OUT, BIG, 7.0f) && all_equal(LSE, 4096, 7.0f),
                  "line %d: an error wrote its output", line);
    }
}
#define EXPECT(want, d, q, k, v, out, lse) expect_at(__LINE__, want, d, q, k, v, out, lse)

static void statuses(void) {
    qkv_desc base = qkv_desc_planar(4, 2, 5, 6, 8, 8), d;
    int isa;
    /* A descriptor from a "newer" caller: ours plus a tail the library does not know. */
    struct {
        qkv_desc d;
        uint64_t extra[2];
    } newer;

    EXPECT(QKV_OK, &base, Q, K, V, OUT, LSE);

    /* A workspace below the least; one that overlaps out; NULL with a length. */
    {
        size_t least = qkv_workspace_min_size(&base);
        qkv_status s;
        fill_value(OUT, BIG, 5.0f);
        s = qkv_attention_f32_ws(&base, Q, K, V, OUT, LSE, WS, least - 1);
        note(s);
        CHECK(s == QKV_ERR_WORKSPACE_TOO_SMALL && all_equal(OUT, BIG, 5.0f), "small: %s",
              qkv_status_str(s));
        s = qkv_attention_f32_ws(&base, Q, K, V, OUT, LSE, OUT + 8, least);
        note(s);
        CHECK(s == QKV_ERR_ALIASING, "workspace over out: %s", qkv_status_str(s));
        s = qkv_attention_f32_ws(&base, Q, K, V, OUT, LSE, NULL, least);
        note(s);
        CHECK(s == QKV_ERR_NULL_POINTER, "NULL workspace: %s", qkv_status_str(s));
        CHECK(qkv_workspace_size(NULL) == 0 && qkv_workspace_min_size(NULL) == 0, "NULL desc");
    }

    d = base;
    d.head_dim = 0;
    EXPECT(QKV_ERR_ZERO_DIM, &d, Q, K, V, OUT, LSE);
    d = base;
    d.kv_heads = 0;
    EXPECT(QKV_ERR_ZERO_DIM, &d, Q, K, V, OUT, LSE);

    d = base;
    d.kv_heads = 3;
    EXPECT(QKV_ERR_HEADS_NOT_DIVISIBLE, &d, Q, K, V, OUT, LSE);

    d = base;
    d.q_count = 4 * 5 * 8 - 1;
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, K, V, OUT, LSE);
    d = base;
    d.lse_count = 4 * 5 - 1;
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, K, V, OUT, LSE);
    d = base;
    d.bias = B;
    d.bias_layout.row_stride = 6;
    d.bias_layout.head_stride = 30;
    d.bias_count = 3 * 30 + 4 * 6 + 6 - 1;
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, K, V, OUT, LSE);

    d = base;
    d.k.head_stride = SIZE_MAX / 2 + 1; /* (kv_heads - 1) * stride wraps */
    EXPECT(QKV_ERR_OVERFLOW, &d, Q, K, V, OUT, LSE);
    d = base;
    d.v.row_stride = SIZE_MAX; /* (kv_len - 1) * stride overflows */
    EXPECT(QKV_ERR_OVERFLOW, &d, Q, K, V, OUT, LSE);
    d = base;
    d.q.head_stride = SIZE_MAX / 8; /* fits size_t, but is more than PTRDIFF_MAX bytes */
    EXPECT(QKV_ERR_OVERFLOW, &d, Q, K, V, OUT, LSE);
    d = base;
    d.out_count = SIZE_MAX; /* a count that no buffer can hold */
    EXPECT(QKV_ERR_OVERFLOW, &d, Q, K, V, OUT, LSE);
    d = base;
    d.q_heads = SIZE_MAX; /* lse extent q_heads * q_len overflows */
    d.kv_heads = 1;
    d.q.head_stride = d.out.head_stride = 0;
    EXPECT(QKV_ERR_OVERFLOW, &d, Q, K, V, OUT, LSE);

    d = base;
    d.out.row_stride = 4; /* rows of 8 floats, 4 apart */
    EXPECT(QKV_ERR_OVERLAP, &d, Q, K, V, OUT, LSE);
    d = base;
    d.out.head_stride = 0;
    EXPECT(QKV_ERR_OVERLAP, &d, Q, K, V, OUT, LSE);

    d = base;
    d.flags = QKV_FLAG_SCALE;
    d.scale = INFINITY;
    EXPECT(QKV_ERR_INVALID_SCALE, &d, Q, K, V, OUT, LSE);
    d.scale = NAN;
    EXPECT(QKV_ERR_INVALID_SCALE, &d, Q, K, V, OUT, LSE);

    /* Some level is always missing: NEON on x86, AVX2 and AVX-512 elsewhere. */
    for (isa = QKV_ISA_SCALAR; isa <= QKV_ISA_NEON; isa++) {
        if (!qkv_isa_available(isa)) {
            qkv_status s;
            fill_value(OUT, BIG, 7.0f);
            s = qkv_attention_f32_isa(isa, &base, Q, K, V, OUT, LSE);
            note(s);
            CHECK(s == QKV_ERR_UNSUPPORTED && all_equal(OUT, BIG, 7.0f), "%s: %s",
                  qkv_isa_name(isa), qkv_status_str(s));
            /* Other errors come first. */
            d = base;
            d.head_dim = 0;
            s = qkv_attention_f32_isa(isa, &d, Q, K, V, OUT, LSE);
            note(s);
            CHECK(s == QKV_ERR_ZERO_DIM, "%s: %s", qkv_isa_name(isa), qkv_status_str(s));
        }
    }

    EXPECT(QKV_ERR_NULL_POINTER, NULL, Q, K, V, OUT, LSE);
    EXPECT(QKV_ERR_NULL_POINTER, &base, NULL, K, V, OUT, LSE);
    EXPECT(QKV_ERR_NULL_POINTER, &base, Q, NULL, V, OUT, LSE);
    EXPECT(QKV_ERR_NULL_POINTER, &base, Q, K, NULL, OUT, LSE);
    EXPECT(QKV_ERR_NULL_POINTER, &base, Q, K, V, NULL, LSE);

    EXPECT(QKV_ERR_MISALIGNED, &base, (const float *)((const char *)Q + 1), K, V, OUT, LSE);
    EXPECT(QKV_ERR_MISALIGNED, &base, Q, K, V, (float *)((char *)OUT + 2), LSE);
    EXPECT(QKV_ERR_MISALIGNED, &base, Q, K, V, OUT, (float *)((char *)LSE + 3));

    EXPECT(QKV_ERR_ALIASING, &base, OUT, K, V, OUT, LSE);      /* in place: out = q */
    EXPECT(QKV_ERR_ALIASING, &base, Q, K, OUT + 100, OUT, LSE); /* v inside out */
    EXPECT(QKV_ERR_ALIASING, &base, Q, K, V, OUT, OUT + 4 * 5 * 8 - 1); /* lse meets out */
    EXPECT(QKV_ERR_ALIASING, &base, Q, K, V, OUT, K);
    d = base;
    d.bias = OUT;
    d.bias_layout.row_stride = 6;
    EXPECT(QKV_ERR_ALIASING, &d, Q, K, V, OUT, LSE);
    /* Inputs may share memory. */
    EXPECT(QKV_OK, &base, Q, Q, Q, OUT, LSE);

    d = base;
    d.struct_size = 0;
    EXPECT(QKV_ERR_STRUCT_SIZE, &d, Q, K, V, OUT, LSE);
    d.struct_size = QKV_DESC_SIZE_V1 - 1;
    EXPECT(QKV_ERR_STRUCT_SIZE, &d, Q, K, V, OUT, LSE);
    d.struct_size = QKV_DESC_MAX_SIZE + 1;
    EXPECT(QKV_ERR_STRUCT_SIZE, &d, Q, K, V, OUT, LSE);
    d.struct_size = SIZE_MAX;
    EXPECT(QKV_ERR_STRUCT_SIZE, &d, Q, K, V, OUT, LSE);
    newer.d = base;
    newer.d.struct_size = sizeof newer;
    newer.extra[0] = 0;
    newer.extra[1] = 0;
    EXPECT(QKV_OK, &newer.d, Q, K, V, OUT, LSE); /* unknown tail, all zero: accepted */
    newer.extra[1] = 1;
    EXPECT(QKV_ERR_STRUCT_SIZE, &newer.d, Q, K, V, OUT, LSE); /* nonzero: refused */
    /* The descriptor need not be aligned. */
    {
        static unsigned char raw[sizeof(qkv_desc) + 1];
        memcpy(raw + 1, &base, sizeof base);
        EXPECT(QKV_OK, (const qkv_desc *)(const void *)(raw + 1), Q, K, V, OUT, LSE);
    }

    d = base;
    d.flags = 2;
    EXPECT(QKV_ERR_UNKNOWN_FLAGS, &d, Q, K, V, OUT, LSE);
    d.flags = 0x80000000u | QKV_FLAG_SCALE;
    EXPECT(QKV_ERR_UNKNOWN_FLAGS, &d, Q, K, V, OUT, LSE);

    d = base;
    d.mask = 3;
    EXPECT(QKV_ERR_UNKNOWN_MASK, &d, Q, K, V, OUT, LSE);
    d.mask = -1;
    EXPECT(QKV_ERR_UNKNOWN_MASK, &d, Q, K, V, OUT, LSE);

    d = base;
    d.mask = QKV_MASK_CAUSAL;
    d.query_pos = 3;
    EXPECT(QKV_ERR_UNKNOWN_QUERY_POS, &d, Q, K, V, OUT, LSE);
    d.query_pos = INT32_MIN;
    EXPECT(QKV_ERR_UNKNOWN_QUERY_POS, &d, Q, K, V, OUT, LSE);

    {
        int32_t bad[4] = {-1, 4, 255, INT32_MAX};
        int j;
        for (j = 0; j < 4; j++) {
            qkv_status s;
            fill_value(OUT, BIG, 7.0f);
            s = qkv_attention_f32_isa(bad[j], &base, Q, K, V, OUT, LSE);
            note(s);
            CHECK(s == QKV_ERR_UNKNOWN_ISA && all_equal(OUT, BIG, 7.0f), "isa %d: %s",
                  (int)bad[j], qkv_status_str(s));
            CHECK(!qkv_isa_available(bad[j]), "isa %d available", (int)bad[j]);
            CHECK(strcmp(qkv_isa_name(bad[j]), "unknown") == 0, "isa %d named", (int)bad[j]);
        }
    }

    /* QKV_ERR_INTERNAL is unreachable by design; it and every other code has a text. */
    {
        int s;
        for (s = QKV_OK; s <= QKV_ERR_VARIANT; s++)
            CHECK(strcmp(qkv_status_str(s), "unknown status") != 0, "status %d", s);
        CHECK(strcmp(qkv_status_str(QKV_ERR_VARIANT + 1), "unknown status") == 0, "23");
        CHECK(strcmp(qkv_status_str(-1), "unknown status") == 0, "-1");
    }
}

static void isas(void) {
    int32_t best = qkv_detected_isa();
    CHECK(qkv_isa_available(best), "detected %d not available", (int)best);
    CHECK(qkv_isa_available(QKV_ISA_SCALAR), "scalar not available");
    CHECK(strcmp(qkv_isa_name(QKV_ISA_SCALAR), "scalar") == 0, "scalar name");
    CHECK(strcmp(qkv_isa_name(QKV_ISA_AVX2), "avx2") == 0, "avx2 name");
    CHECK(strcmp(qkv_isa_name(QKV_ISA_AVX512), "avx512") == 0, "avx512 name");
    CHECK(strcmp(qkv_isa_name(QKV_ISA_NEON), "neon") == 0, "neon name");
    printf("detected isa: %s\n", qkv_isa_name(best));
}

/* The statuses of the K/V types. */
static void type_statuses(void) {
    qkv_desc base = qkv_desc_planar(4, 2, 5, 6, 32, 32), d;
    /* A descriptor of the first version: float K and V, whatever follows it in memory. */
    d = base;
    d.struct_size = QKV_DESC_SIZE_V1;
    d.k_type = QKV_TYPE_Q8_0; /* past struct_size: never read */
    d.v_type = 77;
    EXPECT(QKV_OK, &d, Q, K, V, OUT, LSE);
    CHECK(qkv_workspace_size(&d) == qkv_workspace_size(&base), "V1 workspace size");

    d = base;
    d.k_type = 4;
    EXPECT(QKV_ERR_TYPE, &d, Q, K, V, OUT, LSE);
    d.k_type = QKV_TYPE_F32;
    d.v_type = 0xffffffffu;
    EXPECT(QKV_ERR_TYPE, &d, Q, K, V, OUT, LSE);
    CHECK(qkv_workspace_size(&d) == 0 && qkv_workspace_min_size(&d) == 0, "bad type size");
    /* The type is checked before the pointers. */
    EXPECT(QKV_ERR_TYPE, &d, Q, NULL, NULL, OUT, LSE);

    /* Plans (tests/c/plan_test.c runs them on threads): a task index past the last. */
    {
        qkv_plan plan;
        CHECK(qkv_plan_make(&base, 1, &plan) == QKV_OK, "plan");
        float *partial = malloc(plan.partial_len * sizeof(float));
        qkv_status s = qkv_plan_run_task(&plan, &base, Q, K, V, plan.tasks, partial, NULL, 0);
        note(s);
        CHECK(s == QKV_ERR_TASK, "task past the last: %d", s);
        free(partial);
    }

    /* q8_0 needs head_dim (for k) and v_dim (for v) multiples of 32. */
    d = qkv_desc_kv_types(qkv_desc_planar(4, 2, 5, 6, 48, 32), QKV_TYPE_Q8_0, QKV_TYPE_F32);
    d.k.head_stride = 6 * 2;
    d.k.row_stride = 2;
    EXPECT(QKV_ERR_BLOCK_SIZE, &d, Q, KQ, V, OUT, LSE);
    d = qkv_desc_kv_types(qkv_desc_planar(4, 2, 5, 6, 32, 40), QKV_TYPE_F16, QKV_TYPE_Q8_0);
    d.v.head_stride = 6 * 2;
    d.v.row_stride = 2;
    EXPECT(QKV_ERR_BLOCK_SIZE, &d, Q, K16, VQ, OUT, LSE);

    /* 16-bit and q8_0 pointers need 2-byte alignment only. */
    d = qkv_desc_kv_types(base, QKV_TYPE_F16, QKV_TYPE_Q8_0);
    EXPECT(QKV_OK, &d, Q, K16 + 1, VQ + 17, OUT, LSE);
    EXPECT(QKV_ERR_MISALIGNED, &d, Q, (const char *)K16 + 1, VQ, OUT, LSE);
    EXPECT(QKV_ERR_MISALIGNED, &d, Q, K16, (const char *)VQ + 3, OUT, LSE);
    /* Counts are in elements: 2 kv heads x 6 keys x 1 block of v is 12 blocks. */
    d.v_count = 11;
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, K16, VQ, OUT, LSE);
    d.v_count = 12;
    EXPECT(QKV_OK, &d, Q, K16, VQ, OUT, LSE);
    /* out over the 12 blocks (408 bytes) of v: aliasing counts bytes. */
    EXPECT(QKV_ERR_ALIASING, &d, Q, K16, VQ, (float *)(void *)(VQ + 2 * 17), LSE);
}

/* ---- The softmax variants: sinks, ALiBi and the softcap (descriptor version 3). */

static float SINKS[16], SLOPES[16];

/* d with all three variants: these sinks and ALiBi slopes (one per query head) and this
 * softcap. */
static qkv_desc with_variants(qkv_desc d, const float *sinks, const float *alibi, float softcap) {
    d.sinks = sinks;
    d.alibi = alibi;
    d.softcap = softcap;
    return d;
}

/* Each variant and their composition against the reference at every level (compare()),
 * one worked by hand, split partials merged with the sinks added once, and their statuses. */
static void variants(void) {
    qkv_desc base = qkv_desc_planar(4, 2, 5, 37, 16, 16), d;
    size_t i;
    for (i = 0; i < 16; i++) {
        SINKS[i] = rnd() * 3.0f;
        SLOPES[i] = 1.0f / (float)(1u << (i % 8));
    }
    d = base;
    d.sinks = SINKS;
    compare("sinks", &d, 1);
    d = base;
    d.alibi = SLOPES;
    d.mask = QKV_MASK_CAUSAL;
    compare("alibi causal", &d, 1);
    d = base;
    d.softcap = 0.5f;
    compare("softcap", &d, 1);
    d = with_variants(base, SINKS, SLOPES, 2.0f);
    d.bias = B;
    d.bias_layout.head_stride = 5 * 37;
    d.bias_layout.row_stride = 37;
    d.mask = QKV_MASK_BAND;
    d.window_left = 9;
    d.window_right = 0;
    compare("all three with bias and a window", &d, 1);
    d.q_len = 1; /* decode */
    compare("all three, decode", &d, 1);

    /* By hand: one key of score 6 (softcapped at 4: 4 tanh 1.5), bias 0.5, ALiBi slope 0.25
     * at distance 0 - (query at position 2) = -2, value 5, beside a sink of -1:
     * out = e^s 5 / (e^s + e^-1), lse = ln(e^s + e^-1). */
    {
        float q1[1] = {2.0f}, k1[1] = {3.0f}, v1[1] = {5.0f}, b1[1] = {0.5f};
        float sink[1] = {-1.0f}, slope[1] = {0.25f}, o1[1], l1[1];
        double sc = 4.0 * tanh(6.0 / 4.0) + 0.5 - 0.5, want, want_lse;
        qkv_status st;
        d = with_variants(qkv_desc_planar(1, 1, 1, 1, 1, 1), sink, slope, 4.0f);
        d.flags = QKV_FLAG_SCALE;
        d.scale = 1.0f;
        d.bias = b1;
        d.query_pos = QKV_QUERY_POS_OFFSET;
        d.query_offset = 2;
        want = exp(sc) * 5.0 / (exp(sc) + exp(-1.0));
        want_lse = log(exp(sc) + exp(-1.0));
        st = qkv_attention_f32(&d, q1, k1, v1, o1, l1);
        CHECK(st == QKV_OK && fabs(o1[0] - want) < 1e-5 && fabs(l1[0] - want_lse) < 1e-5,
              "by hand: %g %g, want %g %g", o1[0], l1[0], want, want_lse);
    }

    /* Split: partials leave the sinks out, qkv_add_sinks_f32 adds them once. */
    {
        static float OA[BIG / 8], LA[64], OB[BIG / 8], LB[64];
        d = with_variants(base, SINKS, SLOPES, 3.0f);
        CHECK(qkv_attention_f32(&d, Q, K, V, REF, REF_LSE) == QKV_OK, "one-shot");
        CHECK(qkv_partial_f32(&d, Q, K, V, 0, 20, OA, LA) == QKV_OK, "partial a");
        CHECK(qkv_partial_f32(&d, Q, K, V, 20, 37, OB, LB) == QKV_OK, "partial b");
        CHECK(qkv_merge_f32(&d, OA, LA, OB, LB) == QKV_OK, "merge");
        CHECK(qkv_add_sinks_f32(&d, OA, LA) == QKV_OK, "add sinks");
        for (i = 0; i < 4 * 5 * 16; i++)
            if (!close_enough(OA[i], REF[i])) {
                CHECK(0, "split out[%zu] = %g, one-shot %g", i, OA[i], REF[i]);
                break;
            }
        for (i = 0; i < 4 * 5; i++)
            CHECK(close_enough(LA[i], REF_LSE[i]), "split lse[%zu] = %g, one-shot %g", i,
                  LA[i], REF_LSE[i]);
        /* Aliasing: sinks inside out. */
        d.sinks = OA + 4;
        note(qkv_add_sinks_f32(&d, OA, LA));
        CHECK(qkv_add_sinks_f32(&d, OA, LA) == QKV_ERR_ALIASING, "sinks in out");
    }

    /* Statuses. */
    d = base;
    d.softcap = -1.0f;
    EXPECT(QKV_ERR_INVALID_SOFTCAP, &d, Q, K, V, OUT, LSE);
    d.softcap = (float)INFINITY;
    EXPECT(QKV_ERR_INVALID_SOFTCAP, &d, Q, K, V, OUT, LSE);
    d.softcap = (float)NAN;
    EXPECT(QKV_ERR_INVALID_SOFTCAP, &d, Q, K, V, OUT, LSE);
    d.softcap = -0.0f; /* zero of either sign: none */
    EXPECT(QKV_OK, &d, Q, K, V, OUT, LSE);
    d = base;
    d.sinks = SINKS;
    d.sinks_count = 3; /* 4 query heads */
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, K, V, OUT, LSE);
    d.sinks_count = 4;
    EXPECT(QKV_OK, &d, Q, K, V, OUT, LSE);
    d.sinks = (const float *)(const void *)((const char *)SINKS + 1);
    EXPECT(QKV_ERR_MISALIGNED, &d, Q, K, V, OUT, LSE);
    d = base;
    d.alibi = SLOPES;
    d.alibi_count = 1;
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, K, V, OUT, LSE);
    d.alibi_count = 0;
    EXPECT(QKV_ERR_ALIASING, &d, Q, K, V, OUT, (float *)SLOPES);
    /* A version-2 descriptor: the variant fields past its size are never read. */
    d = base;
    d.struct_size = QKV_DESC_SIZE_V2;
    d.softcap = -1.0f;
    d.sinks = SINKS + 1;
    EXPECT(QKV_OK, &d, Q, K, V, OUT, LSE);
    /* A plan's statuses: the softcap is checked when the plan is made. */
    {
        qkv_plan plan;
        d = base;
        d.softcap = -2.0f;
        note(qkv_plan_make(&d, 2, &plan));
        CHECK(qkv_plan_make(&d, 2, &plan) == QKV_ERR_INVALID_SOFTCAP, "plan softcap");
    }
}

/* ---- Paged K and V: the keys of K and V copied into pools of pages in reverse order (page
 * 0 unused and NaN, so a read of the wrong page shows), read through a block table, against
 * the reference on the keys in order; split partials and a stream over the pools; the
 * statuses of a table that does not fit. */

#define PAGE_LEN 8
#define PAGES 5 /* 37 keys */
#define PAGE_FLOATS (2 * PAGE_LEN * 16) /* HND: kv_heads * page_len * head_dim */
static float KP[(PAGES + 1) * PAGE_FLOATS], VP[(PAGES + 1) * PAGE_FLOATS];
static uint32_t TABLE[PAGES];

/* out and lse against the in-order reference in REF and REF_LSE (4 heads, 5 rows, 16). */
static void compare_ref(const char *name, const float *out, const float *lse) {
    size_t i;
    for (i = 0; i < 4 * 5 * 16; i++)
        if (!close_enough(out[i], REF[i])) {
            CHECK(0, "%s: out[%zu] = %g, reference %g", name, i, out[i], REF[i]);
            break;
        }
    for (i = 0; i < 4 * 5; i++)
        CHECK(close_enough(lse[i], REF_LSE[i]), "%s: lse[%zu] = %g, reference %g", name, i,
              lse[i], REF_LSE[i]);
}

static void pages(void) {
    qkv_desc base = qkv_desc_planar(4, 2, 5, 37, 16, 16), d;
    size_t g, j, e, state_len = 0;
    int isa;
    static float STATE[4096], OA[4 * 5 * 16], LA[4 * 5], OB[4 * 5 * 16], LB[4 * 5];
    fill(Q, 4 * 5 * 16);
    fill(K, 2 * 37 * 16);
    fill(V, 2 * 37 * 16);
    fill_value(KP, sizeof KP / sizeof KP[0], NAN);
    fill_value(VP, sizeof VP / sizeof VP[0], NAN);
    for (e = 0; e < PAGES; e++) TABLE[e] = (uint32_t)(PAGES - e);
    for (g = 0; g < 2; g++)
        for (j = 0; j < 37; j++) {
            size_t at = TABLE[j / PAGE_LEN] * PAGE_FLOATS + (g * PAGE_LEN + j % PAGE_LEN) * 16;
            memcpy(KP + at, K + (g * 37 + j) * 16, 16 * sizeof(float));
            memcpy(VP + at, V + (g * 37 + j) * 16, 16 * sizeof(float));
        }
    base.mask = QKV_MASK_CAUSAL;
    CHECK(qkv_reference_f32(&base, Q, K, V, REF, REF_LSE) == QKV_OK, "in-order reference");
    d = base;
    d.block_table = TABLE;
    d.page_len = PAGE_LEN;
    d.k_page_stride = d.v_page_stride = PAGE_FLOATS;
    d.k.head_stride = d.v.head_stride = PAGE_LEN * 16;
    d.k.row_stride = d.v.row_stride = 16;
    for (isa = -1; isa <= QKV_ISA_NEON; isa++) {
        qkv_status s;
        if (isa >= 0 && !qkv_isa_available(isa)) continue;
        fill_value(OUT, BIG, 3.0f);
        s = isa < 0 ? qkv_attention_f32(&d, Q, KP, VP, OUT, LSE)
                    : qkv_attention_f32_isa(isa, &d, Q, KP, VP, OUT, LSE);
        note(s);
        CHECK(s == QKV_OK, "paged at %s: %s", isa < 0 ? "detected" : qkv_isa_name(isa),
              qkv_status_str(s));
        compare_ref(isa < 0 ? "paged" : qkv_isa_name(isa), OUT, LSE);
    }
    /* Split partials over the pages, the cut inside a page. */
    CHECK(qkv_partial_f32(&d, Q, KP, VP, 0, 13, OA, LA) == QKV_OK, "paged partial a");
    CHECK(qkv_partial_f32(&d, Q, KP, VP, 13, 37, OB, LB) == QKV_OK, "paged partial b");
    CHECK(qkv_merge_f32(&d, OA, LA, OB, LB) == QKV_OK, "paged merge");
    compare_ref("paged split", OA, LA);
    /* A stream fed the whole pools, two chunks. */
    CHECK(qkv_stream_state_len(&d, &state_len) == QKV_OK && state_len <= 4096, "state len");
    CHECK(qkv_stream_init(&d, STATE, state_len) == QKV_OK, "stream init");
    CHECK(qkv_stream_update(&d, STATE, state_len, Q, KP, VP, 0, 21) == QKV_OK, "update a");
    CHECK(qkv_stream_update(&d, STATE, state_len, Q, KP, VP, 21, 37) == QKV_OK, "update b");
    CHECK(qkv_stream_finish(&d, STATE, state_len, OA, LA) == QKV_OK, "stream finish");
    compare_ref("paged stream", OA, LA);

    /* Statuses. */
    d.page_len = 0;
    EXPECT(QKV_ERR_ZERO_DIM, &d, Q, KP, VP, OUT, LSE);
    d.page_len = PAGE_LEN;
    d.block_table_count = PAGES - 1;
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, KP, VP, OUT, LSE);
    d.block_table_count = 0;
    d.k_count = PAGES * PAGE_FLOATS; /* page 5 is the pool's sixth */
    EXPECT(QKV_ERR_TOO_SHORT, &d, Q, KP, VP, OUT, LSE);
    d.k_count = 0;
    d.block_table = (const uint32_t *)(const void *)((const char *)TABLE + 2);
    EXPECT(QKV_ERR_MISALIGNED, &d, Q, KP, VP, OUT, LSE);
    d.block_table = TABLE;
    EXPECT(QKV_ERR_ALIASING, &d, Q, KP, VP, (float *)(void *)TABLE, LSE);
    EXPECT(QKV_OK, &d, Q, KP, VP, OUT, LSE);
    /* A version-3 descriptor never reads the page fields: k and v are in order. */
    d.struct_size = QKV_DESC_SIZE_V3;
    d.block_table = (const uint32_t *)(const void *)1;
    EXPECT(QKV_OK, &d, Q, K, V, OUT, LSE);
}

/* ---- Ragged batches: three sequences of different lengths packed [total][heads][dim],
 * causal, 4 query heads over 2 kv heads; each sequence's rows of out and lse must be the
 * bits qkv_attention_f32 gives for the sequence alone. Then the statuses of offsets that do
 * not describe the tensors or break the pointer contract, with out and lse untouched. */

#define R_SEQS 3
#define R_HEADS 4
#define R_KV_HEADS 2
#define R_DIM 16
static const size_t CU_Q[R_SEQS + 1] = {0, 3, 4, 9}, CU_K[R_SEQS + 1] = {0, 7, 12, 21};

/* qkv_attention_ragged_f32 on Q, K, V into OUT and LSE (filled with 7 first). */
static qkv_status ragged_call(const qkv_desc *d, const size_t *cu_q, const size_t *cu_k,
                              size_t len, float *out) {
    qkv_status s;
    fill_value(OUT, BIG, 7.0f);
    fill_value(LSE, 4096, 7.0f);
    s = qkv_attention_ragged_f32(d, cu_q, cu_k, len, Q, K, V, out, LSE);
    note(s);
    return s;
}

static void ragged(void) {
    const size_t total_q = CU_Q[R_SEQS], total_k = CU_K[R_SEQS];
    qkv_desc d = qkv_desc_interleaved(R_HEADS, R_KV_HEADS, total_q, total_k, R_DIM, R_DIM);
    static size_t offsets[2 * (R_SEQS + 1) + 1];
    size_t b, h, i;
    qkv_status s;
    d.mask = QKV_MASK_CAUSAL;
    fill(Q, total_q * R_HEADS * R_DIM);
    fill(K, total_k * R_KV_HEADS * R_DIM);
    fill(V, total_k * R_KV_HEADS * R_DIM);
    s = ragged_call(&d, CU_Q, CU_K, R_SEQS + 1, OUT);
    CHECK(s == QKV_OK, "ragged: %s", qkv_status_str(s));
    for (b = 0; b < R_SEQS; b++) {
        size_t lq = CU_Q[b + 1] - CU_Q[b], lk = CU_K[b + 1] - CU_K[b];
        qkv_desc one = qkv_desc_interleaved(R_HEADS, R_KV_HEADS, lq, lk, R_DIM, R_DIM);
        one.mask = QKV_MASK_CAUSAL;
        fill_value(REF, BIG, 3.0f);
        s = qkv_attention_f32(&one, Q + CU_Q[b] * R_HEADS * R_DIM,
                              K + CU_K[b] * R_KV_HEADS * R_DIM, V + CU_K[b] * R_KV_HEADS * R_DIM,
                              REF, REF_LSE);
        CHECK(s == QKV_OK, "sequence %zu alone: %s", b, qkv_status_str(s));
        CHECK(memcmp(OUT + CU_Q[b] * R_HEADS * R_DIM, REF, lq * R_HEADS * R_DIM * sizeof(float)) ==
                  0,
              "ragged: sequence %zu's out is not its own call's", b);
        for (h = 0; h < R_HEADS; h++)
            for (i = 0; i < lq; i++)
                CHECK(memcmp(&LSE[h * total_q + CU_Q[b] + i], &REF_LSE[h * lq + i],
                             sizeof(float)) == 0,
                      "ragged: lse of sequence %zu, head %zu, row %zu: %g, alone %g", b, h, i,
                      LSE[h * total_q + CU_Q[b] + i], REF_LSE[h * lq + i]);
    }
    CHECK(all_equal(OUT + total_q * R_HEADS * R_DIM, BIG - total_q * R_HEADS * R_DIM, 7.0f) &&
              all_equal(LSE + R_HEADS * total_q, 4096 - R_HEADS * total_q, 7.0f),
          "ragged: wrote past out or lse");
    /* lse may be NULL. */
    fill_value(OUT, BIG, 7.0f);
    s = qkv_attention_ragged_f32(&d, CU_Q, CU_K, R_SEQS + 1, Q, K, V, OUT, NULL);
    CHECK(s == QKV_OK && !all_equal(OUT, total_q * R_HEADS * R_DIM, 7.0f), "ragged, no lse: %s",
          qkv_status_str(s));

    /* Statuses, nothing written. The offsets in `offsets`, cu_q then cu_k. */
#define RAGGED_EXPECT(want, d, cu_q, cu_k, len, out)                                         \
    do {                                                                                   \
        qkv_status got_ = ragged_call(d, cu_q, cu_k, len, out);                            \
        CHECK(got_ == (want), "ragged: got %s, want %s", qkv_status_str(got_),             \
              qkv_status_str(want));                                                       \
        CHECK(all_equal(OUT, BIG, 7.0f) && all_equal(LSE, 4096, 7.0f),                     \
              "ragged: an error wrote its output");                                        \
    } while (0)
    memcpy(offsets, CU_Q, sizeof CU_Q);
    memcpy(offsets + R_SEQS + 1, CU_K, sizeof CU_K);
    offsets[R_SEQS] = total_q - 1; /* cu_q does not end at q_len */
    RAGGED_EXPECT(QKV_ERR_TOO_SHORT, &d, offsets, offsets + R_SEQS + 1, R_SEQS + 1, OUT);
    offsets[R_SEQS] = total_q;
    offsets[1] = 5; /* decreasing: 5 then 4 */
    RAGGED_EXPECT(QKV_ERR_TOO_SHORT, &d, offsets, offsets + R_SEQS + 1, R_SEQS + 1, OUT);
    offsets[1] = CU_Q[1];
    offsets[R_SEQS + 1] = 1; /* cu_k does not start at 0 */
    RAGGED_EXPECT(QKV_ERR_TOO_SHORT, &d, offsets, offsets + R_SEQS + 1, R_SEQS + 1, OUT);
    offsets[R_SEQS + 1] = 0;
    /* One entry short: the last ones are not the totals. */
    RAGGED_EXPECT(QKV_ERR_TOO_SHORT, &d, offsets, offsets + R_SEQS + 1, R_SEQS, OUT);
    RAGGED_EXPECT(QKV_ERR_TOO_SHORT, &d, NULL, NULL, 0, OUT); /* no sequence at all */
    RAGGED_EXPECT(QKV_ERR_NULL_POINTER, &d, offsets, NULL, R_SEQS + 1, OUT);
    RAGGED_EXPECT(QKV_ERR_MISALIGNED, &d, (const size_t *)(const void *)((const char *)offsets + 1),
                  offsets + R_SEQS + 1, R_SEQS + 1, OUT);
    {
        /* cu_q inside out (at a size_t boundary). */
        const char *in_out = (const char *)(OUT + 8);
        in_out += (sizeof(size_t) - (uintptr_t)in_out % sizeof(size_t)) % sizeof(size_t);
        RAGGED_EXPECT(QKV_ERR_ALIASING, &d, (const size_t *)(const void *)in_out,
                      offsets + R_SEQS + 1, R_SEQS + 1, OUT);
    }
    /* The descriptor's own checks come before the offsets'. */
    offsets[R_SEQS] = total_q - 1;
    d.kv_heads = 3;
    RAGGED_EXPECT(QKV_ERR_HEADS_NOT_DIVISIBLE, &d, offsets, offsets + R_SEQS + 1, R_SEQS + 1,
                  OUT);
    RAGGED_EXPECT(QKV_ERR_NULL_POINTER, NULL, offsets, offsets + R_SEQS + 1, R_SEQS + 1, OUT);
#undef RAGGED_EXPECT
}

int main(void) {
    int s;
    CHECK(qkv_version() == QKV_VERSION, "library %x, header %x", (unsigned)qkv_version(),
          (unsigned)QKV_VERSION);
    isas();
    results();
    types();
    statuses();
    type_statuses();
    variants();
    pages();
    ragged();
    for (s = 0; s < 64; s++)
        if (reached[s]) printf("reached %d\n", s);
    if (failures) {
        printf("FAILED: %d checks\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
