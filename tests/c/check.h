/* What the C tests of split-KV (split_test.c) and plans (plan_test.c) share: a count of
 * failures, a check that counts them, a seeded generator of values in [-1, 1) and a float
 * comparison (NaN equals NaN, infinities compare exactly, others within 1e-5 relative). */
#ifndef QKV_TEST_CHECK_H
#define QKV_TEST_CHECK_H

#include <math.h>
#include <stdio.h>

static int failures = 0;

static void expect(int ok, const char *what) {
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 65536.0f * 2.0f - 1.0f;
}

static int close_to(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b)) return a == b;
    return fabsf(a - b) <= 1e-5f + 1e-5f * fabsf(b);
}

#endif /* QKV_TEST_CHECK_H */
