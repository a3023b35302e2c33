/* A minimal Cortex-M4F firmware image that is not Rust: a vector table, a reset handler and
 * a main that calls the qkv C ABI. Linked by .ci/firmware.sh with arm-none-eabi-gcc against
 * the no_std static library (features panic-handler) to prove that the library links into
 * bare-metal C with no libc, no allocator and no Rust runtime. Built with -DQKV_BASELINE it
 * leaves qkv out, so the difference in size is what the library costs. */
#include "qkv.h"

#define HEADS 2
#define Q_LEN 4
#define KV_LEN 16
#define DIM 8

static float q[HEADS * Q_LEN * DIM];
static float k[HEADS * KV_LEN * DIM];
static float v[HEADS * KV_LEN * DIM];
static float out[HEADS * Q_LEN * DIM];
static float lse[HEADS * Q_LEN];

/* Results a debugger (or a test harness on real hardware) can read. */
volatile qkv_status qkv_result = -1;
volatile float qkv_checksum;

int main(void) {
    unsigned i;
    float sum = 0.0f;
    for (i = 0; i < sizeof q / sizeof q[0]; i++) q[i] = (float)(i % 7) * 0.125f;
    for (i = 0; i < sizeof k / sizeof k[0]; i++) k[i] = (float)(i % 5) * 0.25f - 0.5f;
    for (i = 0; i < sizeof v / sizeof v[0]; i++) v[i] = (float)(i % 3);
#ifndef QKV_BASELINE
    {
        qkv_desc d = qkv_desc_planar(HEADS, HEADS, Q_LEN, KV_LEN, DIM, DIM);
        d.mask = QKV_MASK_CAUSAL;
        qkv_result = qkv_attention_f32(&d, q, k, v, out, lse);
    }
#else
    qkv_result = 0;
#endif
    for (i = 0; i < sizeof out / sizeof out[0]; i++) sum += out[i];
    for (i = 0; i < sizeof lse / sizeof lse[0]; i++) sum += lse[i];
    qkv_checksum = sum;
    return 0;
}

/* Start-up: symbols from firmware.ld. */
extern unsigned long _sidata, _sdata, _edata, _sbss, _ebss, _estack;

void Reset_Handler(void);
void Reset_Handler(void) {
    unsigned long *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    /* Enable the FPU (CP10 and CP11 full access) before any float instruction. */
    *(volatile unsigned long *)0xE000ED88UL |= 0xFUL << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    (void)main();
    for (;;) {
    }
}

static void Default_Handler(void) {
    for (;;) {
    }
}

/* Initial stack pointer, reset, and the 14 other core exceptions. */
__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler,   Default_Handler, Default_Handler,
    Default_Handler,            Default_Handler, Default_Handler, 0,
    0,                          0,               0,               Default_Handler,
    Default_Handler,            0,               Default_Handler, Default_Handler,
};
