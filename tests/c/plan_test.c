/* Plans from C: the tasks of qkv_plan_make() run on two pthreads (one with a workspace of
 * its own, one without), in opposite orders, then qkv_plan_finish() gives
 * qkv_attention_f32()'s result, for a causal prefill and a GQA decode long enough for key
 * splits; bad task indices, short partial buffers and NULL plans give their statuses with
 * nothing written. Prints PASS on success. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "qkv.h"

/* One worker: every task t with t % 2 == id, forwards for thread 0, backwards for 1. */
struct worker {
    int id;
    const qkv_plan *plan;
    const qkv_desc *desc;
    const float *q, *k, *v;
    float *partial;
    float *workspace;
    size_t workspace_len;
    qkv_status status;
};

static void *work(void *arg) {
    struct worker *w = arg;
    size_t n = w->plan->tasks;
    w->status = QKV_OK;
    for (size_t i = 0; i < n; i++) {
        size_t t = w->id == 0 ? i : n - 1 - i;
        if (t % 2 != (size_t)w->id) continue;
        qkv_status s = qkv_plan_run_task(w->plan, w->desc, w->q, w->k, w->v, t, w->partial,
                                         w->workspace, w->workspace_len);
        if (s != QKV_OK) w->status = s;
    }
    return NULL;
}

static void check_problem(const qkv_desc *d, const char *name) {
    size_t nq = d->q_heads * d->q_len * d->head_dim;
    size_t nk = d->kv_heads * d->kv_len * d->head_dim;
    size_t nv = d->kv_heads * d->kv_len * d->v_dim;
    size_t no = d->q_heads * d->q_len * d->v_dim, nl = d->q_heads * d->q_len;
    float *q = malloc(nq * sizeof(float)), *k = malloc(nk * sizeof(float));
    float *v = malloc(nv * sizeof(float));
    float *want = malloc(no * sizeof(float)), *want_lse = malloc(nl * sizeof(float));
    float *got = malloc(no * sizeof(float)), *got_lse = malloc(nl * sizeof(float));
    unsigned seed = 11;
    for (size_t i = 0; i < nq; i++) q[i] = frand(&seed);
    for (size_t i = 0; i < nk; i++) k[i] = frand(&seed);
    for (size_t i = 0; i < nv; i++) v[i] = frand(&seed);
    expect(qkv_attention_f32(d, q, k, v, want, want_lse) == QKV_OK, "one-shot");

    qkv_plan plan;
    expect(qkv_plan_make(d, 2, &plan) == QKV_OK, "plan");
    expect(plan.tasks >= 2, "at least two tasks");
    float *partial = malloc(plan.partial_len * sizeof(float));
    size_t ws_len = qkv_workspace_size(d);
    float *ws = malloc(ws_len * sizeof(float));
    struct worker w[2] = {
        {0, &plan, d, q, k, v, partial, ws, ws_len, QKV_OK},
        {1, &plan, d, q, k, v, partial, NULL, 0, QKV_OK},
    };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, work, &w[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    expect(w[0].status == QKV_OK && w[1].status == QKV_OK, "tasks");

    for (size_t i = 0; i < no; i++) got[i] = NAN;
    for (size_t i = 0; i < nl; i++) got_lse[i] = NAN;
    expect(qkv_plan_finish(&plan, d, partial, got, got_lse) == QKV_OK, "finish");
    int ok = 1;
    for (size_t i = 0; i < no; i++) ok &= close_to(got[i], want[i]);
    for (size_t i = 0; i < nl; i++) ok &= close_to(got_lse[i], want_lse[i]);
    if (!ok) printf("%s: the planned result differs\n", name);
    expect(ok, "planned == one-shot");

    /* Errors write nothing. */
    float keep = partial[0];
    expect(qkv_plan_run_task(&plan, d, q, k, v, plan.tasks, partial, NULL, 0) == QKV_ERR_TASK,
           "task past the last");
    expect(qkv_plan_run_task(NULL, d, q, k, v, 0, partial, NULL, 0) == QKV_ERR_NULL_POINTER,
           "NULL plan");
    qkv_plan small = plan;
    small.partial_len -= 1;
    expect(qkv_plan_run_task(&small, d, q, k, v, 0, partial, NULL, 0) == QKV_ERR_TOO_SHORT,
           "short partial");
    expect(partial[0] == keep, "nothing written by refused tasks");
    for (size_t i = 0; i < no; i++) got[i] = NAN;
    expect(qkv_plan_finish(&small, d, partial, got, NULL) == QKV_ERR_TOO_SHORT,
           "finish with a short partial");
    expect(qkv_plan_finish(&plan, d, partial, partial, NULL) == QKV_ERR_ALIASING,
           "finish into the partial");
    ok = 1;
    for (size_t i = 0; i < no; i++) ok &= isnan(got[i]);
    expect(ok, "nothing written by a refused finish");
    expect(qkv_plan_make(d, 2, NULL) == QKV_ERR_NULL_POINTER, "plan into NULL");

    free(q), free(k), free(v), free(want), free(want_lse), free(got), free(got_lse);
    free(partial), free(ws);
}

int main(void) {
    qkv_desc prefill = qkv_desc_planar(4, 2, 200, 200, 32, 32);
    prefill.mask = QKV_MASK_CAUSAL;
    check_problem(&prefill, "causal prefill");
    /* One query row and 8 heads over 2 kv heads: too few blocks, so the keys are split. */
    qkv_desc decode = qkv_desc_planar(8, 2, 1, 3000, 64, 64);
    check_problem(&decode, "decode");
    if (failures == 0) printf("PASS\n");
    return failures != 0;
}
