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
#define NM_MAP_NOFAULT 2 /* leave pages unfaulted: the first writer (a pinned copy thread) faults them */
#define NM_MAP_NOHUGE 4 /* MADV_NOHUGEPAGE: base pages only, whatever the THP mode */

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
	int fill;           /* nm_copy_into_map: how the pages were allocated (NM_FILL_*) */
	int fill_err;       /* nm_copy_into_map: errno that ruled out NM_FILL_UFFD when asked for (0: none) */
	int fill_step;      /* nm_copy_into_map: the step that failed with fill_err (NM_UFFD_STEP_*) */
	nm_worker_result workers[NM_MAX_THREADS];
} nm_copy_report;

typedef struct nm_move_worker {
	int cpu;            /* CPU the worker was asked to run on (-1: not pinned) */
	int cpu_at_start;   /* sched_getcpu() before the first move_pages call */
	int cpu_at_end;     /* sched_getcpu() after the last */
	int pin_err;        /* 0, or the errno of pthread_setaffinity_np */
	int err;            /* 0, or -errno of the first move_pages call that failed whole */
	size_t first;       /* the first entry this worker took */
	size_t count;       /* entries it took, in batches */
	size_t done;        /* entries passed to calls that returned >= 0 */
	size_t calls;       /* move_pages calls made */
	long not_migrated;  /* sum of the calls' positive returns */
	uint64_t ns;        /* time in move_pages */
	uint64_t max_call_ns; /* the longest single call: the workload's worst pause */
} nm_move_worker;

typedef struct nm_move_report {
	int threads;
	uint64_t wall_ns;
	nm_move_worker workers[NM_MAX_THREADS];
} nm_move_report;

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

/* what nm_copy_into_map's error came from (*failed) */
#define NM_COPY_FAILED_POPULATE 0
#define NM_COPY_FAILED_READ 1
#define NM_COPY_FAILED_COMPARE 2

/* how nm_copy_into_map allocates the new file's pages (fill, report->fill) */
#define NM_FILL_POPULATE 0
#define NM_FILL_UFFD 1
/* which step of setting up userfaultfd failed (report->fill_step) */
#define NM_UFFD_STEP_OPEN 1
#define NM_UFFD_STEP_API 2
#define NM_UFFD_STEP_REGISTER 3

/*
 * Copy the file src_fd[0..len) to dst[0..len), a shared mapping of the new file, on
 * n_threads threads pinned to cpus[] (NULL: unpinned), in pieces of `chunk` bytes
 * (a multiple of 4096) taken from a shared cursor.  With extents (n_extents pairs
 * [start, end) of byte offsets, sorted, not overlapping, both multiples of 4096
 * but for an end at len), only those parts are copied: the source's data, its
 * holes left holes in the copy (NULL: all of [0, len)).  The kernel reads the source
 * (pread: no source mapping, so a source that shrinks is a short read, never a
 * SIGBUS), then each piece's pages are allocated on the file's policy node by the
 * thread that fills them, in parallel, and a full node or file system is an
 * error, never a SIGBUS; then the thread reads the piece again into its own
 * buffer and compares: one pass over memory, verified.
 *
 * fill says how the pages are allocated:
 *  - NM_FILL_UFFD: the piece is read into the thread's buffer and userfaultfd's
 *    UFFDIO_COPY allocates each page with its bytes in it, in one kernel step:
 *    no zeroing (a page fault clears every new tmpfs page before the copy
 *    overwrites it; write(2) skips that, but writers of one file serialize on its
 *    inode lock, and UFFDIO_COPY does not take it).  dst is registered for
 *    missing faults only during the call (with UFFD_FEATURE_SIGBUS: a stray
 *    fault there could never wait forever).  Where userfaultfd cannot be had (a
 *    seccomp filter, a kernel without shmem support: the errno and step are in
 *    report->fill_err/fill_step), the call falls back to NM_FILL_POPULATE;
 *  - NM_FILL_POPULATE: MADV_POPULATE_WRITE allocates (and zeroes) the piece, and
 *    the kernel copies the source into it (pread).  Keeps the mount's huge pages,
 *    which UFFDIO_COPY would not.
 * report->fill says which ran.  Returns 0; -errno of the first failure, with
 * *failed saying where: NM_COPY_FAILED_POPULATE (allocating: ENOMEM, ENOSPC;
 * -EINVAL from the populate: the kernel predates 5.14; every worker stops),
 * NM_COPY_FAILED_READ (-ENODATA: the source ended early, at *mismatch),
 * NM_COPY_FAILED_COMPARE (-EILSEQ: the source changed between the two reads;
 * *mismatch: the first differing offset; in both cases the lowest any thread
 * found); -EINVAL for bad arguments; or -EAGAIN/-ENOMEM when no worker could
 * start (workers that did start take every piece between them).
 */
int nm_copy_into_map(void *dst, int src_fd, size_t len, const uint64_t *extents, size_t n_extents,
		     size_t chunk, const int *cpus, int n_threads, int fill, nm_copy_report *report,
		     long long *mismatch, int *failed);

/* Offset of the first byte where a and b differ, or -1 when equal. */
long long nm_compare(const void *a, const void *b, size_t len);

/* memset, for benchmarks that must clear a destination between runs. */
void nm_fill(void *dst, int byte, size_t len);

/* Plain single-threaded memcpy on the calling thread: the baseline. Returns ns. */
uint64_t nm_memcpy_ns(void *dst, const void *src, size_t len);

/*
 * Map len bytes of anonymous memory bound (MPOL_BIND) to node, and fault
 * every page in.  flags: NM_MAP_HUGE, NM_MAP_NOFAULT, NM_MAP_NOHUGE.  *out receives the address.
 */
int nm_map_on_node(size_t len, int node, int flags, void **out);
int nm_unmap(void *addr, size_t len);

/*
 * Like nm_map_on_node(len, node, NM_MAP_NOFAULT), THP-advised, at an address
 * congruent to `like` modulo 2 MiB: after an mremap onto `like`, every whole
 * 2 MiB block keeps its huge page (page tables move a PMD at a time).
 */
int nm_map_like(size_t len, int node, unsigned long like, void **out);

/*
 * mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst): the pages of src
 * (and its memory policy) replace whatever was mapped at dst, atomically.
 */
int nm_remap(void *src, size_t len, void *dst);

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

/*
 * move_pages(2) of pages[0..count) to nodes[0..count) for pid, on n_threads
 * threads pinned to cpus[] (NULL: unpinned): the kernel copies on the calling
 * thread's CPU, so the pinning decides push or pull.  Workers take the next
 * `batch` entries from a shared cursor until none are left, one move_pages call
 * each: a worker slowed by anything else on its CPU takes fewer batches instead
 * of holding everyone up (batch = ceil(count / n_threads) gives the patch's
 * static split).  A call that fails whole stops that
 * worker (its err says why; the status of entries it did not reach is left as
 * the caller pre-filled it).  n_threads == 1 runs on the calling thread.
 * A call that returns a positive count (the kernel aborted the rest of its
 * batch and left their status unset) is followed by a nodes=NULL query of
 * the same entries, so that status[] always holds where each reached page
 * is, or why not.  Returns 0, -EINVAL, or -EAGAIN/-ENOMEM when no worker could
 * be created (workers that did start take every batch between them; the caller
 * retries single-threaded).
 */
int nm_move(int pid, void **pages, const int *nodes, int *status, size_t count, int flags,
	    const int *cpus, int n_threads, size_t batch, nm_move_report *report);

/*
 * nm_move for pages of this process's own shared file mapping (numamove file, in
 * place), on n_workers forked worker processes instead of threads.  Migrating a
 * page unmaps it from every mm that maps it and flushes those mms' TLBs: with
 * threads, numamove's one mm is live on every worker's CPU, so each page costs an
 * IPI to the others (in a two-vCPU guest two threads were no faster than one).
 * A worker process has an mm of its own, live on its CPU only.  Fork copies no
 * page tables of a shared file mapping, so each worker maps its batch's pages
 * first (MADV_POPULATE_READ on each run of consecutive entries, page_size apart:
 * only the listed pages, so holes stay holes; a page truncated away is an error
 * in status, never a SIGBUS).  numamove's own page tables of the listed pages are
 * dropped first (MADV_DONTNEED), so that it is no mapper either.  Workers hold the
 * stop signals blocked and die with numamove (PR_SET_PDEATHSIG); a stop signal
 * numamove records (nm_stop_install) stops them between batches.  status, batch,
 * the report and the return value are nm_move's; a worker that died (killed) has
 * err -ECHILD.  n_workers == 1 is nm_move on the calling thread, after mapping the
 * listed pages here again (MADV_POPULATE_READ) when remap says an earlier call with
 * several workers dropped them (re-populating mapped pages costs 20-65 ms a GiB).
 */
int nm_move_own(void **pages, const int *nodes, int *status, size_t count, int flags,
		const int *cpus, int n_workers, size_t batch, size_t page_size, int remap,
		nm_move_report *report);

/*
 * The pages of [addr, addr+len) that are resident (mincore), mapped here
 * (nm_populate_list), into out[0..cap): one address per page_size page.
 * vec needs one byte per 4 KiB of len.  Returns the count, or -errno.
 */
long nm_resident_pages(void *addr, size_t len, size_t page_size, unsigned char *vec, void **out,
		       size_t cap);

/*
 * Map pages[0..count) (page_size pages of a shared file mapping) into this
 * mapping: MADV_POPULATE_READ, one call per run of consecutive entries (half the
 * cost of reading each page: no fault taken per 16 pages).  A page past the
 * file's end (truncated by someone else since it was listed) is dropped from the
 * list, never a SIGBUS; the list is compacted in place.  Before Linux 5.14 (no
 * MADV_POPULATE_READ) each page is read instead.  Returns the pages kept, or -errno.
 */
long nm_populate_list(void **pages, size_t count, size_t page_size);

/* mbind(addr, len, MPOL_PREFERRED, node, flags 0): on a tmpfs mapping this sets the file's
 * shared policy, so pages it gets later come from node. Returns 0 or -errno. */
int nm_prefer_node(void *addr, size_t len, int node);

/* mbind(addr, len, MPOL_BIND, node, flags 0): a tmpfs file's shared policy binds to node. */
int nm_bind_node(void *addr, size_t len, int node);

/* arr[0..n) = value (the per-page target node array for move_pages). */
void nm_fill_int(int *arr, size_t n, int value);

/*
 * Stopping between batches.  nm_stop_install() points SIGINT, SIGTERM and SIGHUP at a
 * handler that only records the signal (saving the caller's handlers); nm_move and
 * nm_copy_into_map workers take no new batch once one is recorded, so a long call returns
 * within one batch with every page on its old or its new node.  nm_stop_restore() puts the
 * caller's handlers back; nm_stop_signal() says which signal arrived (0: none), and
 * nm_stop_clear() forgets it.  Returns 0 or -errno.
 */
int nm_stop_install(void);
int nm_stop_restore(void);
int nm_stop_signal(void);
void nm_stop_clear(void);

/* Test hook: after `skip` more successful worker creations, the next `count` fail with err
 * (count 0 clears). */
void nm_fault_inject_thread_create(int count, int err, int skip);

/* Test hook: while on, the first worker process of nm_move_own kills itself (SIGKILL) once it has taken
 * its first batch, before it maps or moves any of it. */
void nm_fault_inject_worker_kill(int on);

/* CPU the calling thread runs on, or -errno. */
int nm_current_cpu(void);

/*
 * In a process forked to help numamove (a scanner of numamove file's own
 * mapping): be killed (SIGKILL) when the parent dies.  Returns 0, -ESRCH when
 * the parent has already gone (the caller exits), or -errno.
 */
int nm_die_with_parent(int parent);
/*
 * Page scanning: present pages of a range from /proc/PID/pagemap, each with
 * the node its PFN belongs to (no move_pages query), counted in C.
 */
#define NM_PAGEMAP_CHUNK 8192 /* pagemap entries read per pread: 64 KiB of scratch */
#define NM_NODE_UNKNOWN -4096 /* PFN hidden (no CAP_SYS_ADMIN) or in no known memory block */
#define NM_HIST_MAX 64        /* distinct values nm_tally reports at most */

/* PFNs [start, end) belong to node (sorted, not overlapping). */
typedef struct nm_pfn_range {
	uint64_t start;
	uint64_t end;
	int node;
} nm_pfn_range;

/* One output array: page addresses with the node of each. */
typedef struct nm_page_out {
	void **pages;
	int *nodes;
	size_t cap;
	size_t count;
} nm_page_out;

typedef struct nm_scan_ctx {
	int pagemap_fd;
	int kpageflags_fd;            /* -1: no THP detection (THPs go out as base pages) */
	const nm_pfn_range *ranges;   /* PFN -> node; NULL: every node unknown */
	size_t n_ranges;
	uint64_t zero_pfn;            /* the shared zero page: -EFAULT, as move_pages says (0: unknown) */
	uint64_t huge_zero_pfn;       /* the huge zero page's first PFN (0: unknown) */
	uint64_t *scratch;            /* NM_PAGEMAP_CHUNK entries, caller-owned */
} nm_scan_ctx;

/*
 * Append the present pages of [start, start+len) to out (one address per
 * page_size page), or, where thp is non-NULL, each 2 MiB block whose first
 * page is a THP head to thp (one address) and the other pages to out.
 * Reads pagemap in chunks: memory does not grow with the range's size.
 * Stops early when an output is full: *next receives the address to resume
 * from (start+len when done).  Returns 0 or -errno (of pread).
 */
int nm_scan_range(const nm_scan_ctx *ctx, unsigned long start, size_t len, size_t page_size,
		  nm_page_out *out, nm_page_out *thp, unsigned long *next);

/*
 * nm_scan_range over n ranges in one call (a process may have tens of
 * thousands of mappings): range i is [starts[i], ends[i]) of sizes[i] pages,
 * into outs[i] (THP heads into thps[i] where that is not NULL).  got[i] and
 * got_thp[i] are increased by the entries range i appended to each.
 * Starts at range *done, and inside it at *next when *next lies within it.
 * Returns 0 with *done == n when every range is scanned; 0 with *done < n
 * when an output is full (grow it and call again: *next says where range
 * *done resumes); -errno (of pread) with *done at the range that failed.
 * Adjacent ranges of one page size share their pagemap reads.  Where
 * sparse[i] (sparse may be NULL) says few of range i's pages are present,
 * PAGEMAP_SCAN (Linux 6.7) finds where they are and pagemap is read only
 * there, a 2 MiB block at least (a sanitizer's or an allocator's reserved
 * gigabytes cost a page table walk that skips empty tables, not 8 bytes of
 * pagemap a page); without it, the range is read whole.
 */
int nm_scan_ranges(const nm_scan_ctx *ctx, size_t n, const unsigned long *starts, const unsigned long *ends,
		   const size_t *sizes, const unsigned char *sparse, nm_page_out *const *outs,
		   nm_page_out *const *thps, size_t *got, size_t *got_thp, size_t *done, unsigned long *next);

/* How many PAGEMAP_SCAN calls nm_scan_ranges has made that the kernel answered (0 before Linux 6.7). */
long nm_pagemap_scan_calls(void);

/* Test hook: refuse != 0 scans sparse ranges as a kernel without PAGEMAP_SCAN makes them (read whole);
 * 0 asks the kernel again. */
void nm_pagemap_scan_refuse(int refuse);

/*
 * Histogram of values[0..n): up to NM_HIST_MAX distinct values into keys[] and
 * counts[] (in first-seen order).  Returns the number of distinct values, or
 * -E2BIG when there are more (counts then cover only those listed).
 */
int nm_tally(const int *values, size_t n, int *keys, size_t *counts);

/*
 * Copy the entries of pages[0..n) whose value is one of want[0..n_want) into
 * out, idx[k] receiving the index of out[k].  Returns the count.
 */
size_t nm_select_values(void **pages, const int *values, size_t n, const int *want, size_t n_want,
			void **out, size_t *idx);

/*
 * PFNs of the shared zero page and of the huge zero page (0 where not found),
 * read from this process's own pagemap (PFNs need CAP_SYS_ADMIN): pages
 * mapping them cannot migrate.  Returns 0 or -errno.
 */
int nm_zero_pfns(int self_pagemap_fd, uint64_t *zero, uint64_t *huge_zero);

/* The file system type (statfs f_type, e.g. 0x01021994 for tmpfs) of an open file, or -errno. */
long nm_fs_type(int fd);

/* renameat2(2): flags such as RENAME_EXCHANGE (2) or RENAME_NOREPLACE (1). Returns 0 or -errno. */
int nm_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

/* flock(2) with LOCK_EX, LOCK_NB, LOCK_UN (numamove's lock files; the fcntl module costs ~0.1 ms of
 * start-up to import). Returns 0 or -errno (-EWOULDBLOCK: held by another, with LOCK_NB). */
#define NM_LOCK_EX 2
#define NM_LOCK_NB 4
#define NM_LOCK_UN 8
int nm_flock(int fd, int op);

/* dst[idx[k]] = src[k] for k < n. */
void nm_scatter_int(int *dst, const size_t *idx, const int *src, size_t n);
/* cffi-end */

#endif
