/*
 * numamove: the native core.
 *
 * A copy engine that runs a list of (dst, src, len) items on T threads, each
 * pinned to one CPU, split exactly as in the seed patch (mm/copy_pages.c of
 * "Accelerate page migration with batching and multi threads"), plus thin
 * wrappers over move_pages(2) and mbind(2).
 *
 * Conventions: every exported function returns 0 (or a count) on success and
 * -errno on failure.  Nothing here prints, exits, or holds policy: the Python
 * side decides thread counts, CPUs and split modes and passes them in.
 * Worker threads report through the caller-owned nm_copy_report, never errno.
 *
 * The block between the cffi markers is parsed by cffi (csrc/build_ffi.py):
 * it holds only declarations and integer #defines.
 */
#ifndef NUMAMOVE_H
#define NUMAMOVE_H

#include <stddef.h>
#include <stdint.h>

/* cffi-begin */
#define NM_MAX_THREADS 32

/* Split modes (the seed patch's two branches). */
#define NM_SPLIT_GROUP 0 /* items dealt out in contiguous groups: n/t each, first n%t one more */
#define NM_SPLIT_CHUNK 1 /* every item cut into one chunk per thread (items < threads) */

/* nm_map_on_node flags */
#define NM_MAP_HUGE 1 /* 2 MiB aligned, MADV_HUGEPAGE */

typedef struct nm_item {
	void *dst;
	const void *src;
	size_t len;
} nm_item;

typedef struct nm_worker_result {
	int cpu;            /* CPU the worker was asked to run on (-1: not pinned) */
	int cpu_at_start;   /* sched_getcpu() before copying */
	int cpu_at_end;     /* sched_getcpu() after copying */
	int pin_err;        /* 0, or the errno of pthread_setaffinity_np */
	size_t pieces;      /* (parts of) items copied */
	size_t bytes;       /* bytes copied */
	uint64_t ns;        /* time spent copying */
} nm_worker_result;

typedef struct nm_copy_report {
	int threads;        /* workers that ran */
	int mode;           /* split mode used */
	uint64_t wall_ns;   /* from the first worker's start to the last one's join */
	nm_worker_result workers[NM_MAX_THREADS];
} nm_copy_report;

/*
 * Copy items on n_threads threads, worker i pinned to cpus[i] (cpus may be
 * NULL: no pinning).  n_threads == 1 runs on the calling thread, pinned for
 * the duration of the call and restored afterwards, so the single-threaded
 * retry never needs a new thread.  Returns 0, -EINVAL for bad arguments, or
 * -EAGAIN/-ENOMEM when workers could not be created (the caller retries with
 * one thread; workers already started finish their share first, and copying
 * an unchanged source twice is harmless).
 */
int nm_copy(const nm_item *items, size_t n_items, const int *cpus, int n_threads,
	    int mode, nm_copy_report *report);

/* Offset of the first byte where a and b differ, or -1 when equal. */
long long nm_compare(const void *a, const void *b, size_t len);

/* memset, for benchmarks that must clear a destination between runs. */
void nm_fill(void *dst, int byte, size_t len);

/* Plain single-threaded memcpy on the calling thread: the baseline. Returns ns. */
uint64_t nm_memcpy_ns(void *dst, const void *src, size_t len);

/*
 * Map len bytes of anonymous memory bound (MPOL_BIND) to node, and fault
 * every page in.  flags: NM_MAP_HUGE.  *out receives the address.
 */
int nm_map_on_node(size_t len, int node, int flags, void **out);
int nm_unmap(void *addr, size_t len);

/* Cut [dst, dst+len) and [src, src+len) into items of item_size (the last may be
 * shorter) in items[0..n). Returns the number written. */
size_t nm_fill_items(void *dst, const void *src, size_t len, size_t item_size,
		     nm_item *items, size_t n);

/* Fill pages[0..n) with start, start+page_size, ... (n = ceil(len/page_size)). */
size_t nm_fill_pages(void *start, size_t len, size_t page_size, void **pages, size_t n);

/*
 * move_pages(2) for pid (0 = self).  nodes == NULL queries where each page
 * is.  Returns the syscall's result (>= 0: pages not migrated) or -errno.
 * The kernel writes status[]; the caller pre-fills it so that entries the
 * kernel never reached can be told apart.
 */
long nm_move_pages(int pid, unsigned long count, void **pages, const int *nodes,
		   int *status, int flags);

/* Test hook: the next `count` worker creations fail with err (0 clears). */
void nm_fault_inject_thread_create(int count, int err);

/* CPU the calling thread runs on, or -errno. */
int nm_current_cpu(void);
/* cffi-end */

#endif
