// How close an AVX-512 register tile of the kernel's kind can come to the FMA probe on this
// core, with every operand in L1: `acc[x][n] += b[x][d] · a[d][n]` for NV vectors of `a`
// (loaded) × NB values of `b` (broadcast), over STEPS values of d per call, the accumulators
// loaded and stored once per call. The Q·Kᵀ tile is 3×8 over head_dim steps; the P·V tile
// 6 rows × 4 vectors over a key block (48 steps). Prints each tile's flop rate as a
// percentage of the probe (12 independent FMA chains) measured just before, three rounds.
// benches/NOTES.md 33.
//
//   gcc -O2 -march=native tiles.c -o tiles && taskset -c 1 ./tiles
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

// NV and NB are constants in each instance, so the accumulators stay in registers.
#define TILE(NV, NB)                                                                   \
	__attribute__((noinline)) static void tile_##NV##_##NB(                        \
		const float *b, int b_stride, const float *a, float *s, int steps) {   \
		__m512 acc[NB][NV];                                                    \
		for (int x = 0; x < NB; x++)                                           \
			for (int n = 0; n < NV; n++)                                   \
				acc[x][n] = _mm512_load_ps(s + (x * NV + n) * 16);     \
		for (int d = 0; d < steps; d++) {                                      \
			__m512 av[NV];                                                 \
			_Pragma("GCC unroll 8") for (int n = 0; n < NV; n++)           \
				av[n] = _mm512_load_ps(a + (d * NV + n) * 16);         \
			_Pragma("GCC unroll 16") for (int x = 0; x < NB; x++) {        \
				__m512 bb = _mm512_set1_ps(b[x * b_stride + d]);       \
				_Pragma("GCC unroll 8") for (int n = 0; n < NV; n++)   \
					acc[x][n] = _mm512_fmadd_ps(bb, av[n], acc[x][n]); \
			}                                                              \
		}                                                                      \
		for (int x = 0; x < NB; x++)                                           \
			for (int n = 0; n < NV; n++)                                   \
				_mm512_store_ps(s + (x * NV + n) * 16, acc[x][n]);     \
	}
TILE(3, 8) TILE(4, 6) TILE(6, 4) TILE(2, 12) TILE(3, 9) TILE(2, 14)

__attribute__((noinline)) static void probe(long n, float *out) {
	__m512 a[12];
	for (int i = 0; i < 12; i++)
		a[i] = _mm512_set1_ps(i);
	__m512 b = _mm512_set1_ps(1.0000001f), c = _mm512_set1_ps(1e-7f);
	for (long i = 0; i < n; i++) {
		_Pragma("GCC unroll 12") for (int k = 0; k < 12; k++) a[k] = _mm512_fmadd_ps(a[k], b, c);
	}
	for (int i = 1; i < 12; i++)
		a[0] = _mm512_add_ps(a[0], a[i]);
	_mm512_storeu_ps(out, a[0]);
}

static float *A, *B, *S;

#define RUN(NV, NB, STEPS)                                                             \
	{                                                                              \
		long calls = 200000L * 128 / STEPS;                                    \
		double t = now();                                                      \
		for (long r = 0; r < calls; r++)                                       \
			tile_##NV##_##NB(B, STEPS, A, S, STEPS);                       \
		double flops = calls * 2.0 * 16 * NV * NB * STEPS;                     \
		printf("  %dx%d@%d %.0f%%", NV, NB, STEPS, 100 * flops / (now() - t) / peak); \
	}

int main(void) {
	A = aligned_alloc(64, 128 * 6 * 16 * 4);
	B = aligned_alloc(64, 14 * 128 * 4);
	S = aligned_alloc(64, 24 * 16 * 4);
	for (int i = 0; i < 128 * 6 * 16; i++)
		A[i] = 0.001f;
	for (int i = 0; i < 14 * 128; i++)
		B[i] = 0.001f;
	for (int i = 0; i < 24 * 16; i++)
		S[i] = 0;
	float sink[16];
	for (int round = 0; round < 3; round++) {
		long n = 20000000;
		double t = now();
		probe(n, sink);
		double peak = 12.0 * 32 * n / (now() - t);
		printf("probe %.0f GFLOP/s:", peak / 1e9);
		RUN(3, 8, 128) RUN(4, 6, 128) RUN(2, 12, 128) RUN(3, 9, 128) RUN(2, 14, 128)
		RUN(3, 8, 64) RUN(3, 8, 48) RUN(6, 4, 48) RUN(4, 6, 48)
		printf("\n");
	}
	return (int)sink[0] & 1;
}
