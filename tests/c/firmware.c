/* A bare-metal Cortex-M4F program that is not Rust: a vector table, a reset handler and a main
 * that calls the qkv C ABI, with no libc, no allocator and no Rust runtime. .ci/firmware.sh
 * runs it under qemu-system-arm -M mps2-an386 -semihosting -icount shift=0 and compares what
 * it prints with the reference (tests/firmware/src/bin/check.rs).
 *
 * Every measured call goes through MEASURE(): it paints the free stack below the call site,
 * reads the SysTick counter, makes the call, reads it again and finds the deepest word the
 * call overwrote. Inputs come from the LCG that tests/firmware/src/lib.rs also implements.
 *
 * QKV_GROUP selects which C entry points the program calls, so that .ci/firmware.sh can
 * measure the code each group adds: 1 qkv_attention_f32, 2 also qkv_partial_f32 and
 * qkv_merge_f32, 3 also qkv_stream_*, 4 also the _ws variants, 5 (default) also qkv_plan_*
 * (the tasks run one after another, as one thread would) and qkv_reference_f32. With
 * -DQKV_STUBS the qkv functions are
 * replaced by empty ones, which gives the size of the same program without the library.
 * With -DQKV_KV_TYPES it also runs the GQA case with K and V stored as IEEE half and as
 * q8_0 blocks (a library built with the kv-f16 and kv-q8_0 features), with and without a
 * workspace. */
#include "qkv.h"

#ifndef QKV_GROUP
#define QKV_GROUP 5
#endif

/* The largest case: 8 query heads, 2 kv heads, 5 queries, 37 keys, head_dim = v_dim = 64. */
#define GQA_Q_HEADS 8
#define GQA_KV_HEADS 2
#define GQA_Q_LEN 5
#define GQA_KV_LEN 37
#define GQA_DIM 64
#define GQA_SPLIT 20 /* partials and stream chunks: keys 0..20 and 20..37 */

static float q[GQA_Q_HEADS * GQA_Q_LEN * GQA_DIM];
static float k[GQA_KV_HEADS * GQA_KV_LEN * GQA_DIM];
static float v[GQA_KV_HEADS * GQA_KV_LEN * GQA_DIM];
static float out[GQA_Q_HEADS * GQA_Q_LEN * GQA_DIM];
static float lse[GQA_Q_HEADS * GQA_Q_LEN];
#if QKV_GROUP >= 2
static float out_b[GQA_Q_HEADS * GQA_Q_LEN * GQA_DIM];
static float lse_b[GQA_Q_HEADS * GQA_Q_LEN];
#endif
#if QKV_GROUP >= 3
static float state[GQA_Q_HEADS * GQA_Q_LEN * (3 + 2 * GQA_DIM)];
#endif
#if QKV_GROUP >= 5
/* The partials of a plan's tasks: room for two key splits (the GQA case has one). */
static float partial[GQA_Q_HEADS * GQA_Q_LEN * (GQA_DIM + 1) * 2];
#endif
#if QKV_GROUP >= 4 || defined(QKV_KV_TYPES)
/* The caller-owned workspace of the _ws calls: qkv_workspace_size() of the largest case
 * (narrow K/V add a tile their values are widened into). */
static float workspace[16384];
#endif
#ifdef QKV_KV_TYPES
/* K and V of the GQA case as half (2 bytes a value) and as q8_0 blocks (34 bytes per 32
 * values), in uint16_t storage: aligned to 2 as both need. */
#define GQA_KV_VALUES (GQA_KV_HEADS * GQA_KV_LEN * GQA_DIM)
static uint16_t k16[GQA_KV_VALUES], v16[GQA_KV_VALUES];
static uint16_t kq8[GQA_KV_VALUES / 32 * 17], vq8[GQA_KV_VALUES / 32 * 17];
#endif

/* ---- Semihosting (ARM DUI 0471): bkpt 0xAB with the operation in r0, its argument in r1. */
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* One output line, written with a single SYS_WRITE0. */
static char line[16 + 12 * GQA_DIM];
static unsigned line_len;

static void put_str(const char *s) {
    while (*s && line_len < sizeof line - 2) line[line_len++] = *s++;
}

static void put_hex(unsigned long x) {
    int shift;
    for (shift = 28; shift >= 0 && line_len < sizeof line - 2; shift -= 4)
        line[line_len++] = "0123456789abcdef"[(x >> shift) & 0xF];
}

static void put_dec(unsigned long x) {
    char digits[10];
    int n = 0;
    do digits[n++] = (char)('0' + x % 10); while ((x /= 10) != 0);
    while (n > 0 && line_len < sizeof line - 2) line[line_len++] = digits[--n];
}

static void put_floats(const float *x, unsigned n) {
    unsigned i;
    for (i = 0; i < n; i++) {
        union { float f; unsigned long u; } bits;
        bits.f = x[i];
        put_str(" ");
        put_hex(bits.u);
    }
}

static void flush(void) {
    line[line_len++] = '\n';
    line[line_len] = 0;
    (void)semihost(SYS_WRITE0, line);
    line_len = 0;
}

/* ---- Measuring: SysTick counts down at the core clock, which -icount shift=0 advances once
 * per instruction divided by the clock's period in ns; the host turns ticks into instructions
 * with the calibration loop below. */
#define SYST_CSR (*(volatile unsigned long *)0xE000E010UL)
#define SYST_RVR (*(volatile unsigned long *)0xE000E014UL)
#define SYST_CVR (*(volatile unsigned long *)0xE000E018UL)
#define PAINT 0xA5A5A5A5UL
/* How far below the call site the stack is painted: more than any call used so far. */
#define PAINT_BYTES (256UL * 1024UL)

extern unsigned long _ebss;

typedef struct {
    qkv_status status;
    unsigned long stack; /* bytes below the stack pointer at the call site */
    unsigned long ticks; /* SysTick ticks the call took */
} sample;

/* Measures one call expression (a qkv_status). A macro, not a function taking a callback, so
 * that the stack pointer read here is the one at the call: the call's own arguments beyond r3
 * are stored above it, everything the callee pushes below it. Nothing runs below the stack
 * pointer on this machine (no interrupt is enabled), so painting there is safe. */
#define MEASURE(s, call)                                                                 \
    do {                                                                                 \
        unsigned long sp_, t0_, t1_;                                                     \
        volatile unsigned long *lo_, *p_;                                                \
        __asm__ volatile("mov %0, sp" : "=r"(sp_)::"memory");                           \
        lo_ = (volatile unsigned long *)(sp_ - PAINT_BYTES);                             \
        if (lo_ < (volatile unsigned long *)&_ebss) lo_ = (volatile unsigned long *)&_ebss; \
        for (p_ = lo_; p_ < (volatile unsigned long *)sp_; p_++) *p_ = PAINT;            \
        t0_ = SYST_CVR;                                                                  \
        (s).status = (call);                                                             \
        t1_ = SYST_CVR;                                                                  \
        for (p_ = lo_; p_ < (volatile unsigned long *)sp_ && *p_ == PAINT; p_++) {        \
        }                                                                                \
        (s).stack = sp_ - (unsigned long)p_;                                             \
        (s).ticks = (t0_ - t1_) & 0xFFFFFFUL;                                            \
    } while (0)

/* "case <call>/<case> status <status> stack <bytes> ticks <ticks>" */
static void report(const char *call, const char *name, const sample *s) {
    put_str("case ");
    put_str(call);
    put_str("/");
    put_str(name);
    put_str(" status ");
    put_dec((unsigned long)s->status);
    put_str(" stack ");
    put_dec(s->stack);
    put_str(" ticks ");
    put_dec(s->ticks);
    flush();
}

/* MEASURE, then report the sample as `call_name` of the gqa case. */
#define MEASURE_GQA(s, call_name, call)  \
    do {                                 \
        MEASURE(s, call);                \
        report(call_name, "gqa", &(s)); \
    } while (0)

#if QKV_GROUP >= 4 || defined(QKV_KV_TYPES)
/* The length to pass with `workspace`: qkv_workspace_size(), or 0 where `workspace` is
 * smaller (the call then returns QKV_ERR_WORKSPACE_TOO_SMALL). */
static size_t workspace_len(const qkv_desc *d) {
    size_t len = qkv_workspace_size(d);
    return len > sizeof workspace / sizeof workspace[0] ? 0 : len;
}
#endif

/* "out <case> <hex bits of each float of the row>" per output row, then "lse <case> ...". */
static void print_result(const char *name, const qkv_desc *d) {
    unsigned r, rows = (unsigned)(d->q_heads * d->q_len);
    for (r = 0; r < rows; r++) {
        put_str("out ");
        put_str(name);
        put_floats(out + r * d->v_dim, (unsigned)d->v_dim);
        flush();
    }
    put_str("lse ");
    put_str(name);
    put_floats(lse, rows);
    flush();
}

/* ---- Inputs: the LCG of tests/firmware/src/lib.rs, values in [-1, 1) exactly. */
static void fill(float *x, unsigned n, unsigned long seed) {
    unsigned i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525UL + 1013904223UL;
        x[i] = (float)(seed >> 8) * (1.0f / 8388608.0f) - 1.0f;
    }
}

static void fill_inputs(const qkv_desc *d) {
    fill(q, (unsigned)(d->q_heads * d->q_len * d->head_dim), 1);
    fill(k, (unsigned)(d->kv_heads * d->kv_len * d->head_dim), 2);
    fill(v, (unsigned)(d->kv_heads * d->kv_len * d->v_dim), 3);
}

static void fill_sentinel(float *x, unsigned n) {
    unsigned i;
    for (i = 0; i < n; i++) x[i] = 12345.0f;
}

static int untouched(const float *x, unsigned n) {
    unsigned i;
    for (i = 0; i < n; i++)
        if (x[i] != 12345.0f) return 0;
    return 1;
}

static void clear_outputs(void) {
    fill_sentinel(out, sizeof out / sizeof out[0]);
    fill_sentinel(lse, sizeof lse / sizeof lse[0]);
}

static qkv_desc gqa_desc(void) {
    qkv_desc d = qkv_desc_planar(GQA_Q_HEADS, GQA_KV_HEADS, GQA_Q_LEN, GQA_KV_LEN, GQA_DIM,
                                 GQA_DIM);
    d.mask = QKV_MASK_CAUSAL;
    return d;
}

/* qkv_attention_f32 on one case; its outputs go to the host. */
static void run_attention(const char *name, const qkv_desc *d) {
    sample s;
    fill_inputs(d);
    clear_outputs();
    MEASURE(s, qkv_attention_f32(d, q, k, v, out, lse));
    report("attention", name, &s);
    print_result(name, d);
#if QKV_GROUP >= 4
    {
        char ws_name[16];
        unsigned n = 0;
        size_t len = workspace_len(d);
        while (name[n] && n < sizeof ws_name - 4) ws_name[n] = name[n], n++;
        ws_name[n++] = '-', ws_name[n++] = 'w', ws_name[n++] = 's', ws_name[n] = 0;
        clear_outputs();
        MEASURE(s, qkv_attention_f32_ws(d, q, k, v, out, lse, workspace, len));
        report("attention_ws", name, &s);
        print_result(ws_name, d);
    }
#endif
}

#ifdef QKV_KV_TYPES
/* ---- K and V in 16 and 8 bits, from the LCG as tests/firmware/src/lib.rs does it: half
 * values n/1024 for n in -1024..1023, q8_0 blocks with scales 2^(b%4)/64 and values
 * -127..127, all exact. */

/* The half bits of x, which is zero or a normal half exactly. */
static uint16_t half_bits(float x) {
    union { float f; unsigned long u; } b;
    unsigned long e;
    b.f = x;
    e = (b.u >> 23) & 0xFFUL;
    if (e == 0) return (uint16_t)((b.u >> 16) & 0x8000UL);
    return (uint16_t)(((b.u >> 16) & 0x8000UL) | ((e - 112UL) << 10) | ((b.u & 0x7FFFFFUL) >> 13));
}

static void fill_f16(uint16_t *x, unsigned n, unsigned long seed) {
    unsigned i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525UL + 1013904223UL;
        x[i] = half_bits((float)((long)(seed >> 21) - 1024) * (1.0f / 1024.0f));
    }
}

static void fill_q8_0(uint16_t *blocks, unsigned n, unsigned long seed) {
    unsigned char *bytes = (unsigned char *)blocks;
    unsigned b, i;
    for (b = 0; b < n; b++) {
        unsigned char *block = bytes + 34 * b;
        uint16_t d = half_bits((float)(1UL << (b % 4)) * (1.0f / 64.0f));
        block[0] = (unsigned char)(d & 0xFF); /* little-endian, as ggml */
        block[1] = (unsigned char)(d >> 8);
        for (i = 0; i < 32; i++) {
            long q;
            seed = seed * 1664525UL + 1013904223UL;
            q = (long)(seed >> 24) - 128;
            block[2 + i] = (unsigned char)(signed char)(q == -128 ? -127 : q);
        }
    }
}

/* The GQA case with K and V of one type: qkv_attention_f32 and qkv_attention_f32_ws, their
 * outputs printed as the cases `name` and `name`-ws. */
static void run_typed(const char *name, const char *ws_name, uint32_t type, const void *kp,
                      const void *vp) {
    sample s;
    qkv_desc d = qkv_desc_kv_types(gqa_desc(), type, type);
    fill(q, (unsigned)(d.q_heads * d.q_len * d.head_dim), 1);
    clear_outputs();
    MEASURE(s, qkv_attention_f32(&d, q, kp, vp, out, lse));
    report("attention", name, &s);
    print_result(name, &d);
    clear_outputs();
    MEASURE(s, qkv_attention_f32_ws(&d, q, kp, vp, out, lse, workspace, workspace_len(&d)));
    report("attention_ws", name, &s);
    print_result(ws_name, &d);
}

static void run_types(void) {
    fill_f16(k16, GQA_KV_VALUES, 2);
    fill_f16(v16, GQA_KV_VALUES, 3);
    run_typed("gqa_f16", "gqa_f16-ws", QKV_TYPE_F16, k16, v16);
    fill_q8_0(kq8, GQA_KV_VALUES / 32, 2);
    fill_q8_0(vq8, GQA_KV_VALUES / 32, 3);
    run_typed("gqa_q8_0", "gqa_q8_0-ws", QKV_TYPE_Q8_0, kq8, vq8);
}
#endif

/* qkv_attention_f32 on a descriptor it must refuse: the sample as case `name`, then
 * "untouched <name> 1" when out and lse were left as they were. */
static void run_refused(const char *name, const qkv_desc *d) {
    sample s;
    clear_outputs();
    MEASURE(s, qkv_attention_f32(d, q, k, v, out, lse));
    report("attention", name, &s);
    put_str("untouched ");
    put_str(name);
    put_str(" ");
    put_dec((unsigned long)(untouched(out, sizeof out / sizeof out[0]) &&
                            untouched(lse, sizeof lse / sizeof lse[0])));
    flush();
}

/* Bad input (3 query heads over 2 kv heads): an error status and nothing written. */
static void run_error(void) {
    qkv_desc d = gqa_desc();
    d.q_heads = 3;
    run_refused("error", &d);
    /* A softcap, left out of a firmware build (no feature softmax-variants): refused. */
    d = gqa_desc();
    d.softcap = 2.0f;
    run_refused("variant", &d);
}

#if QKV_GROUP >= 2
/* Split-KV: two partials merged. */
static void run_split(void) {
    sample s;
    qkv_desc d = gqa_desc();
    fill_inputs(&d);
    clear_outputs();
    MEASURE_GQA(s, "partial", qkv_partial_f32(&d, q, k, v, 0, GQA_SPLIT, out, lse));
    MEASURE_GQA(s, "partial",
                qkv_partial_f32(&d, q, k, v, GQA_SPLIT, GQA_KV_LEN, out_b, lse_b));
    MEASURE_GQA(s, "merge", qkv_merge_f32(&d, out, lse, out_b, lse_b));
    print_result("gqa-split", &d);
#if QKV_GROUP >= 4
    {
        size_t len = workspace_len(&d);
        clear_outputs();
        MEASURE_GQA(s, "partial_ws",
                    qkv_partial_f32_ws(&d, q, k, v, 0, GQA_SPLIT, out, lse, workspace, len));
        MEASURE_GQA(s, "partial_ws",
                    qkv_partial_f32_ws(&d, q, k, v, GQA_SPLIT, GQA_KV_LEN, out_b, lse_b,
                                       workspace, len));
        MEASURE(s, qkv_merge_f32(&d, out, lse, out_b, lse_b));
        print_result("gqa-ws-split", &d);
    }
#endif
}
#endif

#if QKV_GROUP >= 3
/* Streaming: two chunks of keys into a caller-owned state. */
static void run_stream(void) {
    sample s;
    size_t len = 0;
    qkv_desc d = gqa_desc();
    fill_inputs(&d);
    clear_outputs();
    MEASURE_GQA(s, "stream_state_len", qkv_stream_state_len(&d, &len));
    if (len > sizeof state / sizeof state[0]) len = 0; /* init then fails: TOO_SHORT */
    MEASURE_GQA(s, "stream_init", qkv_stream_init(&d, state, len));
    MEASURE_GQA(s, "stream_update", qkv_stream_update(&d, state, len, q, k, v, 0, GQA_SPLIT));
    MEASURE_GQA(s, "stream_update",
                qkv_stream_update(&d, state, len, q, k + GQA_SPLIT * GQA_DIM,
                                  v + GQA_SPLIT * GQA_DIM, GQA_SPLIT, GQA_KV_LEN));
    MEASURE_GQA(s, "stream_finish", qkv_stream_finish(&d, state, len, out, lse));
    print_result("gqa-stream", &d);
#if QKV_GROUP >= 4
    {
        size_t ws = workspace_len(&d);
        clear_outputs();
        MEASURE(s, qkv_stream_init(&d, state, len));
        MEASURE_GQA(s, "stream_update_ws",
                    qkv_stream_update_ws(&d, state, len, q, k, v, 0, GQA_SPLIT, workspace, ws));
        MEASURE_GQA(s, "stream_update_ws",
                    qkv_stream_update_ws(&d, state, len, q, k + GQA_SPLIT * GQA_DIM,
                                         v + GQA_SPLIT * GQA_DIM, GQA_SPLIT, GQA_KV_LEN,
                                         workspace, ws));
        MEASURE(s, qkv_stream_finish(&d, state, len, out, lse));
        print_result("gqa-ws-stream", &d);
    }
#endif
}
#endif

#if QKV_GROUP >= 5
/* A plan for two threads, its tasks run here one after another (without and with a
 * workspace), then qkv_reference_f32 on the same case. */
static void run_plan(void) {
    sample s;
    qkv_plan plan = {0, 0, 0, 0};
    size_t t;
    qkv_desc d = gqa_desc();
    fill_inputs(&d);
    clear_outputs();
    MEASURE_GQA(s, "plan_make", qkv_plan_make(&d, 2, &plan));
    if (plan.partial_len > sizeof partial / sizeof partial[0]) plan.partial_len = 0; /* TOO_SHORT */
    for (t = 0; t < plan.tasks; t++)
        MEASURE_GQA(s, "plan_run_task",
                    qkv_plan_run_task(&plan, &d, q, k, v, t, partial, (float *)0, 0));
    MEASURE_GQA(s, "plan_finish", qkv_plan_finish(&plan, &d, partial, out, lse));
    print_result("gqa-plan", &d);
    clear_outputs();
    for (t = 0; t < plan.tasks; t++)
        MEASURE_GQA(s, "plan_run_task_ws",
                    qkv_plan_run_task(&plan, &d, q, k, v, t, partial, workspace,
                                      workspace_len(&d)));
    MEASURE(s, qkv_plan_finish(&plan, &d, partial, out, lse));
    print_result("gqa-ws-plan", &d);
    clear_outputs();
    MEASURE_GQA(s, "reference", qkv_reference_f32(&d, q, k, v, out, lse));
    print_result("gqa-reference", &d);
}
#endif

/* Writes one word 1024 bytes below the stack pointer it is called with and nothing else:
 * MEASURE must report 1024 bytes (the host checks), which checks the painting and the scan. */
__attribute__((naked, noinline)) static qkv_status touch_1k(void) {
    __asm__ volatile("movs r0, #0\n\tsub sp, sp, #1024\n\tstr r0, [sp]\n\t"
                     "add sp, sp, #1024\n\tbx lr");
}

static void stack_selftest(void) {
    sample s;
    MEASURE(s, touch_1k());
    report("selftest", "stack", &s);
}

/* Times a loop of exactly 2 * n instructions (subs, bne), so the host can check that a tick
 * is a fixed number of instructions. */
static void calibrate(void) {
    unsigned long t0, t1, n = 100000;
    t0 = SYST_CVR;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n)::"cc");
    t1 = SYST_CVR;
    put_str("calib ");
    put_dec((t0 - t1) & 0xFFFFFFUL);
    put_str(" 200000");
    flush();
}

int main(void) {
    qkv_desc tiny = qkv_desc_planar(1, 1, 1, 1, 1, 1);
    qkv_desc gqa = gqa_desc();
    SYST_RVR = 0xFFFFFFUL;
    SYST_CVR = 0;
    SYST_CSR = 5; /* enabled, core clock, no interrupt */
    calibrate();
    stack_selftest();
    run_attention("tiny", &tiny);
    run_attention("gqa", &gqa);
    run_error();
#if QKV_GROUP >= 2
    run_split();
#endif
#if QKV_GROUP >= 3
    run_stream();
#endif
#if QKV_GROUP >= 5
    run_plan();
#endif
#ifdef QKV_KV_TYPES
    run_types();
#endif
    put_str("done");
    flush();
    return 0;
}

#ifdef QKV_STUBS
/* The same program without the library: each entry point does nothing. */
qkv_status qkv_attention_f32(const qkv_desc *desc, const float *q_, const void *k_,
                             const void *v_, float *out_, float *lse_) {
    (void)desc, (void)q_, (void)k_, (void)v_, (void)out_, (void)lse_;
    return QKV_OK;
}
#if QKV_GROUP >= 2
qkv_status qkv_partial_f32(const qkv_desc *desc, const float *q_, const void *k_,
                           const void *v_, size_t key_start, size_t key_end, float *out_,
                           float *lse_) {
    (void)desc, (void)q_, (void)k_, (void)v_, (void)key_start, (void)key_end, (void)out_,
        (void)lse_;
    return QKV_OK;
}
qkv_status qkv_merge_f32(const qkv_desc *desc, float *out_a, float *lse_a, const float *out_b_,
                         const float *lse_b_) {
    (void)desc, (void)out_a, (void)lse_a, (void)out_b_, (void)lse_b_;
    return QKV_OK;
}
#endif
#if QKV_GROUP >= 3
qkv_status qkv_stream_state_len(const qkv_desc *desc, size_t *len) {
    (void)desc, (void)len;
    return QKV_OK;
}
qkv_status qkv_stream_init(const qkv_desc *desc, float *state_, size_t state_len) {
    (void)desc, (void)state_, (void)state_len;
    return QKV_OK;
}
qkv_status qkv_stream_update(const qkv_desc *desc, float *state_, size_t state_len,
                             const float *q_, const void *k_, const void *v_,
                             size_t key_start, size_t key_end) {
    (void)desc, (void)state_, (void)state_len, (void)q_, (void)k_, (void)v_, (void)key_start,
        (void)key_end;
    return QKV_OK;
}
qkv_status qkv_stream_finish(const qkv_desc *desc, float *state_, size_t state_len,
                             float *out_, float *lse_) {
    (void)desc, (void)state_, (void)state_len, (void)out_, (void)lse_;
    return QKV_OK;
}
#endif
#if QKV_GROUP >= 4
size_t qkv_workspace_size(const qkv_desc *desc) {
    (void)desc;
    return 0;
}
qkv_status qkv_attention_f32_ws(const qkv_desc *desc, const float *q_, const void *k_,
                                const void *v_, float *out_, float *lse_, float *ws,
                                size_t ws_len) {
    (void)desc, (void)q_, (void)k_, (void)v_, (void)out_, (void)lse_, (void)ws, (void)ws_len;
    return QKV_OK;
}
qkv_status qkv_partial_f32_ws(const qkv_desc *desc, const float *q_, const void *k_,
                              const void *v_, size_t key_start, size_t key_end, float *out_,
                              float *lse_, float *ws, size_t ws_len) {
    (void)desc, (void)q_, (void)k_, (void)v_, (void)key_start, (void)key_end, (void)out_,
        (void)lse_, (void)ws, (void)ws_len;
    return QKV_OK;
}
qkv_status qkv_stream_update_ws(const qkv_desc *desc, float *state_, size_t state_len,
                                const float *q_, const void *k_, const void *v_,
                                size_t key_start, size_t key_end, float *ws, size_t ws_len) {
    (void)desc, (void)state_, (void)state_len, (void)q_, (void)k_, (void)v_, (void)key_start,
        (void)key_end, (void)ws, (void)ws_len;
    return QKV_OK;
}
#endif
#if QKV_GROUP >= 5
qkv_status qkv_plan_make(const qkv_desc *desc, size_t threads, qkv_plan *plan) {
    (void)desc, (void)threads, (void)plan;
    return QKV_OK;
}
qkv_status qkv_plan_run_task(const qkv_plan *plan, const qkv_desc *desc, const float *q_,
                             const void *k_, const void *v_, size_t task, float *partial_,
                             float *ws, size_t ws_len) {
    (void)plan, (void)desc, (void)q_, (void)k_, (void)v_, (void)task, (void)partial_, (void)ws,
        (void)ws_len;
    return QKV_OK;
}
qkv_status qkv_plan_finish(const qkv_plan *plan, const qkv_desc *desc, const float *partial_,
                           float *out_, float *lse_) {
    (void)plan, (void)desc, (void)partial_, (void)out_, (void)lse_;
    return QKV_OK;
}
qkv_status qkv_reference_f32(const qkv_desc *desc, const float *q_, const void *k_,
                             const void *v_, float *out_, float *lse_) {
    (void)desc, (void)q_, (void)k_, (void)v_, (void)out_, (void)lse_;
    return QKV_OK;
}
#endif
#endif

/* ---- Start-up: symbols from firmware.ld. */
extern unsigned long _sidata, _sdata, _edata, _sbss;

void Reset_Handler(void);
void Reset_Handler(void) {
    unsigned long *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    /* Enable the FPU (CP10 and CP11 full access) before any float instruction. */
    *(volatile unsigned long *)0xE000ED88UL |= 0xFUL << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    (void)semihost(SYS_EXIT, (const void *)(main() == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                         : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}

/* A fault (or any other exception) ends the run with an error instead of hanging qemu. */
static void Default_Handler(void) {
    (void)semihost(SYS_EXIT, (const void *)ADP_STOPPED_RUNTIME_ERROR);
    for (;;) {
    }
}

/* Reset and the 14 other core exceptions; firmware.ld puts the initial stack pointer first. */
__attribute__((section(".isr_vector"), used)) static void (*const vectors[15])(void) = {
    Reset_Handler,   Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, 0,               0,               0,               0,
    Default_Handler, Default_Handler, 0,               Default_Handler, Default_Handler,
};
