// SPDX-License-Identifier: MIT
/*
 * nmbench: the copy engine alone, without Python, against one memcpy.
 *
 *   nmbench [SIZE_MIB] [THREADS...]        e.g. nmbench 1024 1 2 4 8 16
 *
 * For machines where the Python package cannot be installed (a bare box, a
 * sandbox): copies SIZE_MIB between two faulted-in regions with a plain memcpy
 * and with nm_copy on 1..N threads pinned to CPUs 0..N-1 (2 MiB items, the
 * patch's group split), verifies every byte, and prints the median of 5 runs of
 * each, interleaved, as GB/s and as a ratio to the memcpy.  Build: make nmbench.
 */
#define _GNU_SOURCE
#include "numamove.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define REPEATS 5
#define MAXCONF 16

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

static void *region(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(p, len, MADV_HUGEPAGE);
	memset(p, 1, len);
	return p;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024, len = mib << 20;
	size_t item = 2UL << 20, n_items = (len + item - 1) / item, i;
	int threads[MAXCONF], nconf = 0, c, r, k, ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t base[REPEATS], t[MAXCONF][REPEATS];
	nm_item *items;
	char *src, *dst;

	for (k = 2; k < argc && nconf < MAXCONF; k++)
		threads[nconf++] = atoi(argv[k]);
	if (!nconf)
		for (k = 1; k <= ncpu && k <= NM_MAX_THREADS && nconf < MAXCONF; k *= 2)
			threads[nconf++] = k;
	if (!len) {
		fprintf(stderr, "nmbench: SIZE_MIB must be > 0\n");
		return 2;
	}
	src = region(len);
	dst = region(len);
	for (i = 0; i < len; i += 8)
		*(uint64_t *)(src + i) = i * 0x9E3779B97F4A7C15ULL;
	items = calloc(n_items, sizeof(*items));
	if (!items)
		return 1;
	nm_fill_items(dst, src, len, item, items, n_items);
	for (r = 0; r < REPEATS; r++) {
		memset(dst, 0, len);
		base[r] = nm_memcpy_ns(dst, src, len);
		for (c = 0; c < nconf; c++) {
			int cpus[NM_MAX_THREADS], nt = threads[c];
			nm_copy_report rep;

			if (nt < 1 || nt > NM_MAX_THREADS) {
				fprintf(stderr, "nmbench: thread count %d out of 1..%d\n", nt, NM_MAX_THREADS);
				return 2;
			}
			for (k = 0; k < nt; k++)
				cpus[k] = k % ncpu;
			memset(dst, 0, len);
			if (nm_copy(items, n_items, cpus, nt, NM_SPLIT_GROUP, &rep) != 0) {
				fprintf(stderr, "nmbench: nm_copy failed with %d threads\n", nt);
				return 1;
			}
			t[c][r] = rep.wall_ns;
			if (nm_compare(src, dst, len) != -1) {
				fprintf(stderr, "nmbench: verification failed with %d threads\n", nt);
				return 1;
			}
		}
	}
	printf("nmbench: %zu MiB, 2 MiB items, median of %d, %d online CPUs\n", mib, REPEATS, ncpu);
	printf("memcpy (1 thread): %.2f GB/s\n", (double)len / (double)median(base, REPEATS));
	for (c = 0; c < nconf; c++) {
		double g = (double)len / (double)median(t[c], REPEATS);

		printf("engine %2d threads: %6.2f GB/s  %.2fx memcpy\n", threads[c], g,
		       g / ((double)len / (double)median(base, REPEATS)));
	}
	return 0;
}
