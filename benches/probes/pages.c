// What scattered pages cost the memory itself: a 256 MiB pool read as chunks of C bytes
// (one head's rows of one page: page_len × head_dim × element size), in order or in a
// shuffled order (the permutation examples/paged_cost.rs uses for its pages), each line
// paired with a `prefetcht1` of the same line D chunks ahead (D = 0: none). Prints GB/s, the
// best of 7 passes. benches/NOTES.md 32.
//
//   gcc -O2 -march=native pages.c -o pages && taskset -c 1 ./pages C D SHUFFLED(0|1)
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTES (256u << 20)

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: pages CHUNK_BYTES AHEAD_CHUNKS SHUFFLED\n");
		return 2;
	}
	size_t chunk = strtoul(argv[1], 0, 10), ahead = strtoul(argv[2], 0, 10);
	int shuffled = atoi(argv[3]);
	if (chunk < 64 || chunk % 64 || BYTES % chunk) {
		fprintf(stderr, "CHUNK_BYTES: a multiple of 64 dividing 256 MiB\n");
		return 2;
	}
	size_t n = BYTES / chunk;
	char *pool = aligned_alloc(4096, BYTES);
	memset(pool, 1, BYTES);
	uint32_t *order = malloc(n * sizeof *order);
	for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
	if (shuffled) { // xorshift64 Fisher–Yates, as examples/paged_cost.rs
		uint64_t s = 0x2545F4914F6CDD1DULL;
		for (size_t i = n - 1; i > 0; i--) {
			s ^= s << 13, s ^= s >> 7, s ^= s << 17;
			size_t j = s % (i + 1);
			uint32_t t = order[i];
			order[i] = order[j], order[j] = t;
		}
	}
	__m512 acc = _mm512_setzero_ps();
	double best = 1e9;
	for (int pass = 0; pass < 7; pass++) {
		double t0 = now();
		for (size_t c = 0; c < n; c++) {
			const char *p = pool + (size_t)order[c] * chunk;
			const char *q = c + ahead < n ? pool + (size_t)order[c + ahead] * chunk : p;
			for (size_t o = 0; o < chunk; o += 64) {
				if (ahead) _mm_prefetch(q + o, _MM_HINT_T1);
				__m512 e = _mm512_load_ps((const float *)(p + o));
				acc = _mm512_fmadd_ps(e, e, acc);
			}
		}
		double dt = now() - t0;
		best = dt < best ? dt : best;
	}
	float s[16];
	_mm512_storeu_ps(s, acc);
	printf("chunks of %zu bytes, %s, prefetch %zu chunks ahead: %.2f GB/s%s\n", chunk,
	       shuffled ? "shuffled" : "in order", ahead, BYTES / best / 1e9, s[0] == 1234.5f ? " " : "");
	return 0;
}
