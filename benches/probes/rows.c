// How decode's read pattern meets the hardware prefetchers: two 128 MiB tensors (K and V)
// of 512-byte rows (head_dim 128, f32), read in alternating blocks of B rows as decode
// reads them, X rows at a time side by side one 64-byte vector each (as a dot tile of X
// keys reads K: X = 1 is a plain sequential read), with `prefetcht1` A rows ahead for each
// line read (A = 0: none). Prints GB/s, the best of 7 passes. benches/NOTES.md 32.
//
//   gcc -O2 -march=native rows.c -o rows && taskset -c 1 ./rows X B A
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTES (128u << 20)
#define ROW 512

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

// X is a constant in each instance, so the accumulators stay in registers.
#define PASS(X)                                                                    \
	for (size_t b = 0; b < rows; b += block)                                   \
		for (int t = 0; t < 2; t++) {                                      \
			const char *base = t ? v : k;                              \
			for (size_t r = b; r < b + block && r < rows; r += X)      \
				for (size_t o = 0; o < ROW; o += 64)               \
					for (int x = 0; x < X; x++) {              \
						const char *p = base + (r + x) * ROW + o; \
						if (ahead)                         \
							_mm_prefetch(p + ahead * ROW, _MM_HINT_T1); \
						__m512 e = _mm512_load_ps((const float *)p); \
						acc[x] = _mm512_fmadd_ps(e, e, acc[x]); \
					}                                          \
		}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: rows X(1, 2 or 4) BLOCK_ROWS AHEAD_ROWS\n");
		return 2;
	}
	int xs = atoi(argv[1]);
	size_t block = strtoul(argv[2], 0, 10), ahead = strtoul(argv[3], 0, 10);
	size_t rows = BYTES / ROW;
	if ((xs != 1 && xs != 2 && xs != 4) || block == 0 || block % 4) {
		fprintf(stderr, "X is 1, 2 or 4; BLOCK_ROWS a multiple of 4\n");
		return 2;
	}
	char *k = aligned_alloc(4096, BYTES + ahead * ROW), *v = aligned_alloc(4096, BYTES + ahead * ROW);
	memset(k, 1, BYTES + ahead * ROW);
	memset(v, 1, BYTES + ahead * ROW);
	__m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
	double best = 1e9;
	for (int pass = 0; pass < 7; pass++) {
		double t0 = now();
		if (xs == 1) {
			PASS(1)
		} else if (xs == 2) {
			PASS(2)
		} else {
			PASS(4)
		}
		double dt = now() - t0;
		best = dt < best ? dt : best;
	}
	float s[16];
	_mm512_storeu_ps(s, _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
	printf("rows side by side %d, blocks of %zu rows, prefetch %zu rows ahead: %.2f GB/s%s\n", xs,
	       block, ahead, 2.0 * BYTES / best / 1e9, s[0] == 1234.5f ? " " : "");
	return 0;
}
