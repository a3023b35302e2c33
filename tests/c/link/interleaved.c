/* Links against an installed qkv (pkg-config or CMake, see tests/c_link.rs) and checks
 * qkv_desc_interleaved(): attention over [seq][heads][dim] tensors must equal
 * qkv_desc_planar() over the same data transposed to [heads][seq][dim], for GQA with
 * head_dim != v_dim and a causal mask. Prints the qkv version and PASS. */
#include <stdio.h>

#include "qkv.h"

enum { QH = 4, KVH = 2, QL = 5, KVL = 11, HD = 12, VD = 8 };

/* [seq][heads][dim] -> [heads][seq][dim] */
static void to_planar(const float *src, float *dst, size_t seq, size_t heads, size_t dim) {
    size_t s, h, c;
    for (s = 0; s < seq; s++)
        for (h = 0; h < heads; h++)
            for (c = 0; c < dim; c++)
                dst[(h * seq + s) * dim + c] = src[(s * heads + h) * dim + c];
}

static float q[QL * QH * HD], k[KVL * KVH * HD], v[KVL * KVH * VD];
static float qp[QL * QH * HD], kp[KVL * KVH * HD], vp[KVL * KVH * VD];
static float out[QL * QH * VD], outp[QL * QH * VD], expect[QL * QH * VD];
static float lse[QH * QL], lsep[QH * QL];

/* Strides change no sum's order today; the margin keeps this a test of the layout only. */
static int near(const float *a, const float *b, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        float d = a[i] - b[i];
        if (!(d <= 1e-5f && d >= -1e-5f))
            return 0;
    }
    return 1;
}

int main(void) {
    unsigned seed = 12345u;
    size_t i;
    qkv_desc di, dp;
    qkv_status s;

    for (i = 0; i < sizeof q / sizeof q[0]; i++)
        q[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0xff) / 128.0f - 1.0f;
    for (i = 0; i < sizeof k / sizeof k[0]; i++)
        k[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0xff) / 128.0f - 1.0f;
    for (i = 0; i < sizeof v / sizeof v[0]; i++)
        v[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 0xff) / 64.0f - 2.0f;
    to_planar(q, qp, QL, QH, HD);
    to_planar(k, kp, KVL, KVH, HD);
    to_planar(v, vp, KVL, KVH, VD);

    di = qkv_desc_interleaved(QH, KVH, QL, KVL, HD, VD);
    dp = qkv_desc_planar(QH, KVH, QL, KVL, HD, VD);
    di.mask = dp.mask = QKV_MASK_CAUSAL;
    if (di.q.row_stride != QH * HD || di.k.row_stride != KVH * HD ||
        di.v.row_stride != KVH * VD || di.out.row_stride != QH * VD ||
        di.q.head_stride != HD || di.k.head_stride != HD || di.v.head_stride != VD ||
        di.out.head_stride != VD) {
        printf("FAIL: qkv_desc_interleaved strides\n");
        return 1;
    }

    s = qkv_attention_f32(&di, q, k, v, out, lse);
    if (s != QKV_OK) {
        printf("FAIL: interleaved call: %s\n", qkv_status_str(s));
        return 1;
    }
    s = qkv_attention_f32(&dp, qp, kp, vp, outp, lsep);
    if (s != QKV_OK) {
        printf("FAIL: planar call: %s\n", qkv_status_str(s));
        return 1;
    }
    to_planar(out, expect, QL, QH, VD);
    if (!near(expect, outp, QL * QH * VD) || !near(lse, lsep, QH * QL)) {
        printf("FAIL: interleaved and planar results differ\n");
        return 1;
    }
    printf("qkv %u.%u.%u (header %d.%d.%d)\n", qkv_version() >> 16, qkv_version() >> 8 & 0xff,
           qkv_version() & 0xff, QKV_VERSION_MAJOR, QKV_VERSION_MINOR, QKV_VERSION_PATCH);
    printf("PASS\n");
    return qkv_version() == QKV_VERSION ? 0 : 1;
}
