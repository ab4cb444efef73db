// SPDX-License-Identifier: MIT
/*
 * numamove native core: pinned multi-threaded copy, move_pages and mbind wrappers.
 * See numamove.h for the contract of each function.
 */
#define _GNU_SOURCE
#include "numamove.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mempolicy.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NM_HUGE_SIZE (2UL << 20)
#define NM_CHUNK_ALIGN 64UL /* chunk boundaries on cache lines */

static int nm_fault_count;
static int nm_fault_err;
static int nm_fault_skip;

void nm_fault_inject_thread_create(int count, int err, int skip)
{
	__atomic_store_n(&nm_fault_err, err, __ATOMIC_SEQ_CST);
	__atomic_store_n(&nm_fault_skip, skip, __ATOMIC_SEQ_CST);
	__atomic_store_n(&nm_fault_count, count, __ATOMIC_SEQ_CST);
}

static int nm_fault_worker_kill;

void nm_fault_inject_worker_kill(int on)
{
	__atomic_store_n(&nm_fault_worker_kill, on, __ATOMIC_SEQ_CST);
}

static volatile sig_atomic_t nm_stop_sig;
static const int nm_stop_sigs[] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction nm_stop_saved[3];
static int nm_stop_installed;

static void nm_stop_handler(int sig)
{
	nm_stop_sig = sig;
}

int nm_stop_install(void)
{
	struct sigaction sa;
	int i;

	if (nm_stop_installed)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = nm_stop_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < 3; i++) {
		if (sigaction(nm_stop_sigs[i], &sa, &nm_stop_saved[i]) != 0) {
			int e = errno;

			while (--i >= 0)
				sigaction(nm_stop_sigs[i], &nm_stop_saved[i], NULL);
			return -e;
		}
	}
	nm_stop_installed = 1;
	return 0;
}

int nm_stop_restore(void)
{
	int i;

	if (!nm_stop_installed)
		return 0;
	for (i = 0; i < 3; i++)
		sigaction(nm_stop_sigs[i], &nm_stop_saved[i], NULL);
	nm_stop_installed = 0;
	return 0;
}

int nm_stop_signal(void)
{
	return nm_stop_sig;
}

void nm_stop_clear(void)
{
	nm_stop_sig = 0;
}

static uint64_t nm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int nm_current_cpu(void)
{
	int cpu = sched_getcpu();

	return cpu < 0 ? -errno : cpu;
}

int nm_die_with_parent(int parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
		return -errno;
	return getppid() == parent ? 0 : -ESRCH;  /* the parent died before the line above */
}

struct nm_work {
	const nm_item *items;
	size_t n_items;
	int mode;
	int index;   /* this worker's index */
	int threads; /* total workers */
	size_t first, count; /* NM_SPLIT_GROUP: items [first, first+count) */
	nm_worker_result *res;
};

static int nm_pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0 || cpu >= CPU_SETSIZE)
		return EINVAL;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Byte offset where chunk i of n starts inside an item of len bytes. */
static size_t nm_chunk_start(size_t len, int i, int n)
{
	size_t off;

	if (i >= n)
		return len;
	off = (size_t)(((unsigned __int128)len * (unsigned)i) / (unsigned)n);
	off &= ~(NM_CHUNK_ALIGN - 1);
	return off;
}

static void nm_do_work(struct nm_work *w)
{
	nm_worker_result *r = w->res;
	uint64_t t0;
	size_t k;

	r->pin_err = r->cpu >= 0 ? nm_pin_self(r->cpu) : 0;
	r->cpu_at_start = sched_getcpu();
	t0 = nm_now_ns();
	if (w->mode == NM_SPLIT_CHUNK) {
		for (k = 0; k < w->n_items; k++) {
			const nm_item *it = &w->items[k];
			size_t a = nm_chunk_start(it->len, w->index, w->threads);
			size_t b = nm_chunk_start(it->len, w->index + 1, w->threads);

			if (b > a) {
				memcpy((char *)it->dst + a, (const char *)it->src + a, b - a);
				r->bytes += b - a;
				r->pieces++;
			}
		}
	} else {
		size_t end = w->first + w->count;

		for (k = w->first; k < end;) {
			/*
			 * Coalesce items that are contiguous in both source and
			 * destination into one memcpy: a long copy lets libc switch
			 * to non-temporal stores, which a page-sized one never does.
			 */
			char *d = w->items[k].dst;
			const char *s = w->items[k].src;
			size_t len = w->items[k].len;

			for (k++; k < end && w->items[k].dst == d + len && w->items[k].src == s + len; k++) {
				len += w->items[k].len;
				r->pieces++;
			}
			memcpy(d, s, len);
			r->bytes += len;
			r->pieces++;
		}
	}
	r->ns = nm_now_ns() - t0;
	r->cpu_at_end = sched_getcpu();
}

typedef void (*nm_work_fn)(void *);

struct nm_thread_arg {
	nm_work_fn fn;
	void *work;
};

static void *nm_thread_main(void *p)
{
	struct nm_thread_arg *a = p;

	a->fn(a->work);
	return NULL;
}

/* the injected error for the next worker creation (thread or process), or 0 */
static int nm_injected_err(void)
{
	int left = __atomic_load_n(&nm_fault_count, __ATOMIC_SEQ_CST);

	if (left > 0 && __atomic_load_n(&nm_fault_skip, __ATOMIC_SEQ_CST) > 0)
		__atomic_sub_fetch(&nm_fault_skip, 1, __ATOMIC_SEQ_CST);
	else if (left > 0) {
		__atomic_store_n(&nm_fault_count, left - 1, __ATOMIC_SEQ_CST);
		return __atomic_load_n(&nm_fault_err, __ATOMIC_SEQ_CST);
	}
	return 0;
}

static int nm_thread_create(pthread_t *t, struct nm_thread_arg *a)
{
	int err = nm_injected_err();

	return err ? err : pthread_create(t, NULL, nm_thread_main, a);
}

/*
 * Run fn over n works (each `size` bytes apart in `works`).  One work runs on
 * the calling thread, whose affinity is saved and restored around it, so a
 * single-threaded retry never needs a new thread.  Returns the number of works
 * that ran in *started, and 0 or -errno of the first failed creation.
 */
static int nm_run(nm_work_fn fn, void *works, size_t size, int n, int *started)
{
	struct nm_thread_arg args[NM_MAX_THREADS];
	pthread_t tids[NM_MAX_THREADS];
	int i, err = 0;

	*started = 0;
	if (n == 1) {
		cpu_set_t saved;

		/* on the caller's thread only when its affinity can be put back afterwards */
		if (pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) == 0) {
			fn(works);
			pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
			*started = 1;
			return 0;
		}
	}
	for (i = 0; i < n; i++) {
		args[i] = (struct nm_thread_arg){ fn, (char *)works + (size_t)i * size };
		err = nm_thread_create(&tids[i], &args[i]);
		if (err)
			break;
		(*started)++;
	}
	for (i = 0; i < *started; i++)
		pthread_join(tids[i], NULL);
	return -err;
}

static void nm_copy_work(void *w)
{
	nm_do_work(w);
}

int nm_copy(const nm_item *items, size_t n_items, const int *cpus, int n_threads,
	    int mode, nm_copy_report *report)
{
	struct nm_work work[NM_MAX_THREADS];
	size_t per, extra, next = 0;
	uint64_t t0;
	int i, err;

	if (!report || (!items && n_items) || n_threads < 1 || n_threads > NM_MAX_THREADS)
		return -EINVAL;
	if (mode != NM_SPLIT_GROUP && mode != NM_SPLIT_CHUNK)
		return -EINVAL;
	memset(report, 0, sizeof(*report));
	report->mode = mode;
	per = n_items / (size_t)n_threads;
	extra = n_items % (size_t)n_threads;
	for (i = 0; i < n_threads; i++) {
		work[i] = (struct nm_work){
			.items = items, .n_items = n_items, .mode = mode,
			.index = i, .threads = n_threads, .res = &report->workers[i],
		};
		work[i].first = next;
		work[i].count = per + ((size_t)i < extra ? 1 : 0);
		next += work[i].count;
		report->workers[i].cpu = cpus ? cpus[i] : -1;
		report->workers[i].cpu_at_start = -1;
		report->workers[i].cpu_at_end = -1;
	}
	t0 = nm_now_ns();
	err = nm_run(nm_copy_work, work, sizeof(work[0]), n_threads, &report->threads);
	report->wall_ns = nm_now_ns() - t0;
	return err;
}

struct nm_move_work {
	int pid, flags;
	void **pages;
	const int *nodes;
	int *status;
	size_t count, batch;
	size_t *next; /* shared: the next entry no worker has taken yet */
	nm_move_worker *res;
};

/*
 * One move_pages call of n entries, timed into r: 0, or -1 when the call failed whole (r->err).
 * A call that returns a positive count left the entries after the failed page unreached: they
 * are asked where they are, so that status always says.  So does a call that fails with ENOMEM:
 * the destination filled up part way (the kernel's do_pages_move gives up at the first page it
 * cannot place, and stores no status for the group it was moving), so the pages it moved are
 * on the destination and every other page still present says -ENOMEM.
 */
static int nm_move_batch(int pid, void **pages, const int *nodes, int *status, size_t n, int flags,
			 nm_move_worker *r)
{
	uint64_t t0 = nm_now_ns(), dt;
	long rc = syscall(SYS_move_pages, pid, (unsigned long)n, pages, nodes, status, flags);

	dt = nm_now_ns() - t0;
	r->ns += dt;
	if (dt > r->max_call_ns)
		r->max_call_ns = dt;
	r->calls++;
	if (rc < 0 && errno == ENOMEM &&
	    syscall(SYS_move_pages, pid, (unsigned long)n, pages, NULL, status, 0) == 0) {
		size_t i;

		for (i = 0, rc = 0; i < n; i++)
			if (status[i] >= 0 && status[i] != nodes[i]) {
				status[i] = -ENOMEM;
				rc++;
			}
	} else if (rc < 0) {
		r->err = -errno;
		return -1;
	} else if (rc > 0) {
		syscall(SYS_move_pages, pid, (unsigned long)n, pages, NULL, status, 0);
	}
	r->not_migrated += rc;
	r->done += n;
	return 0;
}

static void nm_move_do(void *p)
{
	struct nm_move_work *w = p;
	nm_move_worker *r = w->res;

	r->pin_err = r->cpu >= 0 ? nm_pin_self(r->cpu) : 0;
	r->cpu_at_start = sched_getcpu();
	while (!nm_stop_sig) { /* a recorded signal: no new batch, every page on its old or new node */
		size_t off = __atomic_fetch_add(w->next, w->batch, __ATOMIC_RELAXED), n;

		if (off >= w->count)
			break;
		n = w->count - off < w->batch ? w->count - off : w->batch;
		if (!r->count)
			r->first = off;
		r->count += n;
		if (nm_move_batch(w->pid, w->pages + off, w->nodes + off, w->status + off, n, w->flags, r))
			break;
	}
	r->cpu_at_end = sched_getcpu();
}

int nm_move(int pid, void **pages, const int *nodes, int *status, size_t count, int flags,
	    const int *cpus, int n_threads, size_t batch, nm_move_report *report)
{
	struct nm_move_work work[NM_MAX_THREADS];
	size_t next = 0;
	uint64_t t0;
	int i, err;

	if (!report || (count && (!pages || !nodes || !status)) || n_threads < 1 ||
	    n_threads > NM_MAX_THREADS || batch < 1)
		return -EINVAL;
	memset(report, 0, sizeof(*report));
	for (i = 0; i < n_threads; i++) {
		nm_move_worker *r = &report->workers[i];

		work[i] = (struct nm_move_work){ pid, flags, pages, nodes, status, count, batch, &next, r };
		r->cpu = cpus ? cpus[i] : -1;
		r->cpu_at_start = r->cpu_at_end = -1;
	}
	t0 = nm_now_ns();
	err = nm_run(nm_move_do, work, sizeof(work[0]), n_threads, &report->threads);
	report->wall_ns = nm_now_ns() - t0;
	return report->threads ? 0 : err; /* started workers took every batch between them */
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

struct nm_own_shared {        /* in a MAP_SHARED region: numamove and its worker processes */
	size_t next;          /* the next entry no worker has taken yet */
	int stop;             /* set by numamove when it recorded a stop signal */
	nm_move_worker workers[NM_MAX_THREADS];
	int status[];         /* count entries */
};

/* the end of the run of entries page_size apart that starts at pages[i] (of n) */
static size_t nm_run_end(void *const *pages, size_t i, size_t n, size_t page_size)
{
	size_t e;

	for (e = i + 1; e < n && (char *)pages[e] == (char *)pages[e - 1] + page_size; e++)
		;
	return e;
}

/* madvise(advice) over pages[0..n), one call per run of entries page_size apart; errors ignored
 * (populating: the page's status says what became of it; unmapping: only slower) */
static void nm_runs(void **pages, size_t n, size_t page_size, int advice)
{
	size_t j, e;

	for (j = 0; j < n; j = e) {
		e = nm_run_end(pages, j, n, page_size);
		madvise(pages[j], (e - j) * page_size, advice);
	}
}

/* a worker process: only async-signal-safe calls after fork; never returns */
static void nm_own_worker(struct nm_own_shared *sh, int i, void **pages, const int *nodes, size_t count,
			  int flags, size_t batch, size_t page_size, pid_t parent)
{
	nm_move_worker *r = &sh->workers[i];
	sigset_t block;
	int k;

	sigemptyset(&block);
	for (k = 0; k < 3; k++)
		sigaddset(&block, nm_stop_sigs[k]);
	sigprocmask(SIG_BLOCK, &block, NULL);  /* numamove hears them and says stop */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)  /* numamove died before the line above */
		_exit(1);
	if (r->cpu >= 0 && r->cpu < CPU_SETSIZE) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(r->cpu, &set);
		r->pin_err = sched_setaffinity(0, sizeof(set), &set) ? errno : 0;
	}
	r->cpu_at_start = sched_getcpu();
	while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
		size_t off = __atomic_fetch_add(&sh->next, batch, __ATOMIC_RELAXED), n;

		if (off >= count)
			break;
		n = count - off < batch ? count - off : batch;
		if (!r->count)
			r->first = off;
		r->count += n;
		if (i == 0 && __atomic_load_n(&nm_fault_worker_kill, __ATOMIC_SEQ_CST))
			raise(SIGKILL);  /* test hook: killed holding a batch it has not begun */
		nm_runs(pages + off, n, page_size, MADV_POPULATE_READ);  /* map them here: failures, status says */
		if (nm_move_batch(0, pages + off, nodes + off, sh->status + off, n, flags, r))
			break;
	}
	r->cpu_at_end = sched_getcpu();
	_exit(0);
}

int nm_move_own(void **pages, const int *nodes, int *status, size_t count, int flags,
		const int *cpus, int n_workers, size_t batch, size_t page_size, int remap, nm_move_report *report)
{
	struct nm_own_shared *sh;
	size_t shlen = sizeof(*sh) + count * sizeof(int);
	pid_t kids[NM_MAX_THREADS], parent = getpid();
	int i, started = 0, alive, err = 0, reaped[NM_MAX_THREADS] = {0};
	uint64_t t0;

	if (!report || (count && (!pages || !nodes || !status)) || n_workers < 1 || n_workers > NM_MAX_THREADS ||
	    batch < 1 || !page_size || page_size % 4096)
		return -EINVAL;
	if (n_workers == 1 || !count) {  /* on the calling thread, its pages mapped here (again) */
		if (remap)
			nm_runs(pages, count, page_size, MADV_POPULATE_READ);
		return nm_move(0, pages, nodes, status, count, flags, cpus, 1, batch, report);
	}
	memset(report, 0, sizeof(*report));
	sh = mmap(NULL, shlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	memcpy(sh->status, status, count * sizeof(int));
	for (i = 0; i < n_workers; i++) {
		sh->workers[i].cpu = cpus ? cpus[i] : -1;
		sh->workers[i].cpu_at_start = sh->workers[i].cpu_at_end = -1;
	}
	t0 = nm_now_ns();
	/* numamove maps no page it hands over: each migration then flushes the workers' TLBs only */
	nm_runs(pages, count, page_size, MADV_DONTNEED);
	for (i = 0; i < n_workers; i++) {
		int inj = nm_injected_err();
		pid_t c = inj ? (errno = inj, -1) : fork();

		if (c == 0)
			nm_own_worker(sh, i, pages, nodes, count, flags, batch, page_size, parent);
		if (c < 0) {
			err = errno;
			break;
		}
		kids[started++] = c;
	}
	/* wait for them, passing a recorded stop signal on: they finish their batch and leave */
	for (alive = started; alive > 0;) {
		struct timespec tick = { 0, 1000000 };

		if (nm_stop_sig)
			__atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
		for (i = 0; i < started; i++) {
			int st;
			pid_t w;

			if (reaped[i])
				continue;
			w = waitpid(kids[i], &st, WNOHANG);
			if (w == 0 || (w < 0 && errno == EINTR))
				continue;
			reaped[i] = 1;
			alive--;
			if (w < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
				sh->workers[i].err = -ECHILD;  /* killed: what it had not reached is unreached */
		}
		if (alive)
			nanosleep(&tick, NULL);
	}
	report->wall_ns = nm_now_ns() - t0;
	if (started) {
		memcpy(status, sh->status, count * sizeof(int));
		memcpy(report->workers, sh->workers, (size_t)started * sizeof(sh->workers[0]));
		report->threads = started;
	}
	munmap(sh, shlen);
	return started ? 0 : -err; /* started workers took every batch between them */
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

struct nm_map_work {
	char *dst;
	int src_fd;
	int uffd;             /* >= 0: fill with UFFDIO_COPY through it; -1: populate */
	size_t len, chunk;
	const size_t *pieces; /* the pieces' offsets (each chunk bytes, or less up to the extent's end) */
	const size_t *ends;   /* where each piece's extent ends */
	size_t n_pieces;
	size_t *next;         /* shared cursor: the next piece */
	int *err;             /* shared: the first error, 0 while none */
	int *failed;          /* shared: what failed first (NM_COPY_FAILED_*) */
	long long *mismatch;  /* shared: the first differing offset found, or where the source ended */
	nm_worker_result *res;
};

/* pread until n bytes or the end of the file: bytes read, or -errno */
static ssize_t nm_pread_full(int fd, char *buf, size_t n, size_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* *p = v where *p is unset (-1) or larger: the lowest offset any thread found wins */
static void nm_store_min(long long *p, long long v)
{
	long long cur = __atomic_load_n(p, __ATOMIC_SEQ_CST);

	while ((cur < 0 || v < cur) &&
	       !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		;
}

static void nm_map_fail(struct nm_map_work *w, int rc, int what)
{
	int none = 0;

	if (__atomic_compare_exchange_n(w->err, &none, rc, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		__atomic_store_n(w->failed, what, __ATOMIC_SEQ_CST);
}

/* UFFDIO_COPY of n bytes (a multiple of the page size) from src to dst: 0 or -errno */
static int nm_uffd_copy(int uffd, char *dst, const char *src, size_t n)
{
	size_t done = 0;
	int idle = 0;

	while (done < n) {
		struct uffdio_copy c = { .dst = (uintptr_t)(dst + done), .src = (uintptr_t)(src + done),
					 .len = n - done, .mode = 0 };
		int e;

		if (ioctl(uffd, UFFDIO_COPY, &c) == 0)
			return 0;
		e = errno;
		/* EAGAIN: the mappings changed under the call; what it copied stays copied */
		if (e != EAGAIN && e != EINTR)
			return -e;
		if (c.copy > 0)
			done += (size_t)c.copy, idle = 0;
		else if (++idle > 1000)
			return -e;
	}
	return 0;
}

static void nm_map_do(void *p)
{
	struct nm_map_work *w = p;
	nm_worker_result *r = w->res;
	char *check = malloc(w->chunk);  /* this thread's second read of each piece */
	/* UFFDIO_COPY's source: the piece as first read */
	char *first = w->uffd >= 0 ? aligned_alloc(4096, w->chunk) : NULL;
	uint64_t t0;

	r->pin_err = r->cpu >= 0 ? nm_pin_self(r->cpu) : 0;
	r->cpu_at_start = sched_getcpu();
	t0 = nm_now_ns();
	if (!check || (w->uffd >= 0 && !first))
		nm_map_fail(w, -ENOMEM, NM_COPY_FAILED_READ);
	while (!__atomic_load_n(w->err, __ATOMIC_RELAXED) && !nm_stop_sig) {
		size_t i = __atomic_fetch_add(w->next, 1, __ATOMIC_RELAXED), off, n;
		ssize_t got;

		if (i >= w->n_pieces)
			break;
		off = w->pieces[i];
		n = w->ends[i] - off < w->chunk ? w->ends[i] - off : w->chunk;
		if (w->uffd >= 0) {
			/* the kernel reads the source (a source that shrinks is a short read, never a
			 * SIGBUS); UFFDIO_COPY allocates each page on the file's node with its bytes */
			size_t whole = (n + 4095) & ~(size_t)4095;
			int rc;

			got = nm_pread_full(w->src_fd, first, n, off);
			if (got == (ssize_t)n) {
				memset(first + n, 0, whole - n);  /* the last page's tail, past the end */
				rc = nm_uffd_copy(w->uffd, w->dst + off, first, whole);
				if (rc) {
					nm_map_fail(w, rc, NM_COPY_FAILED_POPULATE);
					break;
				}
			}
		} else {
			/* allocate the piece's pages first: a full node or file system fails here, never SIGBUS */
			if (madvise(w->dst + off, n, MADV_POPULATE_WRITE) != 0) {
				nm_map_fail(w, -errno, NM_COPY_FAILED_POPULATE);
				break;
			}
			/* the kernel copies the source into the mapping (no source mapping: a source that
			 * shrinks is a short read, never a SIGBUS) */
			got = nm_pread_full(w->src_fd, w->dst + off, n, off);
		}
		/* then reads it again, to compare */
		if (got == (ssize_t)n)
			got = nm_pread_full(w->src_fd, check, n, off);
		if (got < 0) {
			nm_map_fail(w, (int)got, NM_COPY_FAILED_READ);
			break;
		}
		if (got < (ssize_t)n) {
			nm_store_min(w->mismatch, (long long)(off + (size_t)got));
			nm_map_fail(w, -ENODATA, NM_COPY_FAILED_READ);
			break;
		}
		if (memcmp(w->dst + off, check, n) != 0) {
			size_t k = 0;

			while (k < n && w->dst[off + k] == check[k])
				k++;
			nm_store_min(w->mismatch, (long long)(off + k));
			nm_map_fail(w, -EILSEQ, NM_COPY_FAILED_COMPARE);
			break;
		}
		r->bytes += n;
		r->pieces++;
	}
	free(check);
	free(first);
	r->ns = nm_now_ns() - t0;
	r->cpu_at_end = sched_getcpu();
}

/*
 * A userfaultfd with dst[0..len) registered for missing faults, shmem included,
 * any stray fault a SIGBUS (nothing reads this descriptor): the descriptor, or -1
 * with report->fill_err and fill_step saying what failed.
 */
static int nm_uffd_open(char *dst, size_t len, nm_copy_report *report)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_SIGBUS };
	struct uffdio_register reg = { .range = { (uintptr_t)dst, (len + 4095) & ~(size_t)4095 },
				       .mode = UFFDIO_REGISTER_MODE_MISSING };
	/* user-mode faults only: all an unprivileged caller may ask for (vm.unprivileged_userfaultfd) */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0 && errno == EINVAL)  /* a kernel before 5.11 knows no UFFD_USER_MODE_ONLY */
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		report->fill_err = errno, report->fill_step = NM_UFFD_STEP_OPEN;
		return -1;
	}
	errno = 0;  /* an ioctl that succeeds without the feature leaves it 0: EOPNOTSUPP below */
	if (ioctl(fd, UFFDIO_API, &api) != 0 || !(api.ioctls & (1ULL << _UFFDIO_REGISTER))) {
		report->fill_err = errno ? errno : EOPNOTSUPP, report->fill_step = NM_UFFD_STEP_API;
		close(fd);
		return -1;
	}
	errno = 0;
	if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0 || !(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
		report->fill_err = errno ? errno : EOPNOTSUPP, report->fill_step = NM_UFFD_STEP_REGISTER;
		close(fd);
		return -1;
	}
	return fd;
}

int nm_copy_into_map(void *dst, int src_fd, size_t len, const uint64_t *extents, size_t n_extents,
		     size_t chunk, const int *cpus, int n_threads, int fill, nm_copy_report *report,
		     long long *mismatch, int *failed)
{
	struct nm_map_work work[NM_MAX_THREADS];
	uint64_t whole[2] = { 0, len };
	size_t next = 0, n_pieces = 0, k, e, *pieces, *ends;
	uint64_t t0;
	int i, err = 0, rc, uffd = -1;

	if (!report || !mismatch || !failed || (len && (!dst || src_fd < 0)) || !chunk || chunk % 4096 ||
	    n_threads < 1 || n_threads > NM_MAX_THREADS || (fill != NM_FILL_POPULATE && fill != NM_FILL_UFFD) ||
	    ((uintptr_t)dst & 4095) || (n_extents && !extents))
		return -EINVAL;
	if (!extents)
		extents = whole, n_extents = len ? 1 : 0;
	for (e = 0; e < n_extents; e++) {
		const uint64_t lo = extents[2 * e], hi = extents[2 * e + 1];

		if (lo % 4096 || hi <= lo || hi > len || (hi % 4096 && hi != len) || (e && lo < extents[2 * e - 1]))
			return -EINVAL;
		n_pieces += (hi - lo + chunk - 1) / chunk;
	}
	memset(report, 0, sizeof(*report));
	*mismatch = -1;
	*failed = 0;
	pieces = malloc((n_pieces ? n_pieces : 1) * sizeof(*pieces));
	ends = malloc((n_pieces ? n_pieces : 1) * sizeof(*ends));
	if (!pieces || !ends) {
		free(pieces);
		free(ends);
		return -ENOMEM;
	}
	for (e = 0, k = 0; e < n_extents; e++) {
		uint64_t off;

		for (off = extents[2 * e]; off < extents[2 * e + 1]; off += chunk, k++)
			pieces[k] = off, ends[k] = extents[2 * e + 1];
	}
	if (fill == NM_FILL_UFFD && n_pieces)
		uffd = nm_uffd_open(dst, len, report);
	report->fill = uffd >= 0 ? NM_FILL_UFFD : NM_FILL_POPULATE;
	for (i = 0; i < n_threads; i++) {
		nm_worker_result *r = &report->workers[i];

		work[i] = (struct nm_map_work){ dst, src_fd, uffd, len, chunk, pieces, ends, n_pieces, &next, &err,
						failed, mismatch, r };
		r->cpu = cpus ? cpus[i] : -1;
		r->cpu_at_start = r->cpu_at_end = -1;
	}
	t0 = nm_now_ns();
	rc = nm_run(nm_map_do, work, sizeof(work[0]), n_threads, &report->threads);
	report->wall_ns = nm_now_ns() - t0;
	if (uffd >= 0)
		close(uffd);  /* unregisters dst: faults there are ordinary faults again */
	free(pieces);
	free(ends);
	if (err)
		return err;
	return report->threads ? 0 : rc; /* started workers took every piece between them */
}

void nm_fill_int(int *arr, size_t n, int value)
{
	size_t i;

	for (i = 0; i < n; i++)
		arr[i] = value;
}

long long nm_compare(const void *a, const void *b, size_t len)
{
	const char *x = a, *y = b;
	size_t off = 0, step = 1UL << 16;

	while (off < len) {
		size_t n = len - off < step ? len - off : step;

		if (memcmp(x + off, y + off, n) != 0) {
			size_t k = off;

			/* bounded: a writer may have made the block equal again since memcmp looked */
			while (k < off + n && x[k] == y[k])
				k++;
			return (long long)(k < off + n ? k : off);
		}
		off += n;
	}
	return -1;
}

void nm_fill(void *dst, int byte, size_t len)
{
	memset(dst, byte, len);
}

uint64_t nm_memcpy_ns(void *dst, const void *src, size_t len)
{
	uint64_t t0 = nm_now_ns();

	memcpy(dst, src, len);
	return nm_now_ns() - t0;
}

/*
 * Map len bytes of anonymous memory at an address congruent to `phase`
 * modulo `align` (a power of two), THP-advised when huge, bound to node.
 */
/* huge: 1 MADV_HUGEPAGE, -1 MADV_NOHUGEPAGE, 0 the system default */
static int nm_map_window(size_t len, size_t align, uintptr_t phase, int huge, int node, char **out)
{
	unsigned long mask[16] = {0};
	size_t maplen = len + (align > 4096 ? align : 0);
	char *raw, *addr;

	if (!len || node < 0 || node >= (int)(sizeof(mask) * 8))
		return -EINVAL;
	raw = mmap(NULL, maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return -errno;
	addr = (char *)(((uintptr_t)raw & ~(align - 1)) + (phase & (align - 1)));
	if (addr < raw)
		addr += align;
	if (addr > raw)
		munmap(raw, (size_t)(addr - raw));
	if (raw + maplen > addr + len)
		munmap(addr + len, (size_t)(raw + maplen - (addr + len)));
	if (huge > 0)
		madvise(addr, len, MADV_HUGEPAGE);
	else if (huge < 0) /* base pages only, whatever the THP mode */
		madvise(addr, len, MADV_NOHUGEPAGE);
	mask[node / 64] = 1UL << (node % 64);
	if (syscall(SYS_mbind, addr, len, MPOL_BIND, mask, sizeof(mask) * 8 + 1, 0) != 0) {
		int e = errno;

		munmap(addr, len);
		return -e;
	}
	*out = addr;
	return 0;
}

int nm_map_on_node(size_t len, int node, int flags, void **out)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t align = (flags & NM_MAP_HUGE) ? NM_HUGE_SIZE : page, off;
	char *addr;
	int rc;

	if (!out || !len)
		return -EINVAL;
	len = (len + align - 1) & ~(align - 1);
	/* huge: a 2 MiB aligned window so THPs can back all of it */
	rc = nm_map_window(len, align, 0, (flags & NM_MAP_HUGE) ? 1 : (flags & NM_MAP_NOHUGE) ? -1 : 0,
			   node, &addr);
	if (rc)
		return rc;
	if (!(flags & NM_MAP_NOFAULT)) /* every base page, so those a THP could not back fault too */
		for (off = 0; off < len; off += page)
			((volatile char *)addr)[off] = 0;
	*out = addr;
	return 0;
}

int nm_map_like(size_t len, int node, unsigned long like, void **out)
{
	char *addr;
	int rc;

	if (!out)
		return -EINVAL;
	rc = nm_map_window(len, NM_HUGE_SIZE, like, 1, node, &addr);
	if (!rc)
		*out = addr;
	return rc;
}

int nm_remap(void *src, size_t len, void *dst)
{
	void *p = mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);

	return p == MAP_FAILED ? -errno : 0;
}

int nm_unmap(void *addr, size_t len)
{
	return munmap(addr, len) ? -errno : 0;
}

size_t nm_fill_items(void *dst, const void *src, size_t len, size_t item_size,
		     nm_item *items, size_t n)
{
	size_t i, off;

	if (!item_size)
		return 0;
	for (i = 0, off = 0; i < n && off < len; i++, off += item_size) {
		items[i].dst = (char *)dst + off;
		items[i].src = (const char *)src + off;
		items[i].len = len - off < item_size ? len - off : item_size;
	}
	return i;
}

size_t nm_fill_pages(void *start, size_t len, size_t page_size, void **pages, size_t n)
{
	size_t i, want;

	if (!page_size)
		return 0;
	want = (len + page_size - 1) / page_size;
	if (want > n)
		want = n;
	for (i = 0; i < want; i++)
		pages[i] = (char *)start + i * page_size;
	return want;
}

long nm_move_pages(int pid, unsigned long count, void **pages, const int *nodes,
		   int *status, int flags)
{
	long rc = syscall(SYS_move_pages, pid, count, pages, nodes, status, flags);

	return rc < 0 ? -errno : rc;
}

long nm_populate_list(void **pages, size_t count, size_t page_size)
{
	size_t i, j, p, k = 0;

	if (!page_size || page_size % 4096)
		return -EINVAL;
	for (i = 0; i < count; i = j) {
		j = nm_run_end(pages, i, count, page_size);
		if (madvise(pages[i], (j - i) * page_size, MADV_POPULATE_READ) == 0) {
			memmove(pages + k, pages + i, (j - i) * sizeof(*pages));
			k += j - i;
		} else if (errno == EINVAL) {  /* before Linux 5.14: read each page to map it */
			for (p = i; p < j; p++) {
				(void)((volatile char *)pages[p])[0];
				pages[k++] = pages[p];
			}
		} else if (errno == EFAULT) {  /* a page past the file's end now: the others, one by one */
			for (p = i; p < j; p++) {
				if (madvise(pages[p], page_size, MADV_POPULATE_READ) == 0)
					pages[k++] = pages[p];
				else if (errno != EFAULT)
					return -errno;
			}
		} else {
			return -errno;
		}
	}
	return (long)k;
}

long nm_resident_pages(void *addr, size_t len, size_t page_size, unsigned char *vec, void **out,
		       size_t cap)
{
	size_t off, k = 0;

	if (!page_size || page_size % 4096)
		return -EINVAL;
	if (mincore(addr, len, vec) != 0)
		return -errno;
	for (off = 0; off < len && k < cap; off += page_size) {
		if (vec[off / 4096] & 1)
			out[k++] = (char *)addr + off;
	}
	return nm_populate_list(out, k, page_size);
}

static int nm_policy(void *addr, size_t len, int mode, int node)
{
	unsigned long mask[16] = {0};

	if (node < 0 || node >= (int)(sizeof(mask) * 8))
		return -EINVAL;
	mask[node / 64] = 1UL << (node % 64);
	if (syscall(SYS_mbind, addr, len, mode, mask, sizeof(mask) * 8 + 1, 0) != 0)
		return -errno;
	return 0;
}

int nm_prefer_node(void *addr, size_t len, int node)
{
	return nm_policy(addr, len, MPOL_PREFERRED, node);
}

int nm_bind_node(void *addr, size_t len, int node)
{
	return nm_policy(addr, len, MPOL_BIND, node);
}

#define NM_PM_PRESENT (1ULL << 63)
#define NM_PM_PFN_MASK ((1ULL << 55) - 1)
#define NM_KPF_COMPOUND_HEAD 15
#define NM_KPF_THP 22
#define NM_BASE 4096UL
#define NM_THP_ENTRIES (NM_HUGE_SIZE / NM_BASE)

/* Node of a PFN: binary search of the sorted ranges, remembering the last hit. */
static int nm_pfn_node(const nm_scan_ctx *c, uint64_t pfn, size_t *hint)
{
	size_t lo = 0, hi = c->n_ranges;

	if (pfn == 0 || !c->ranges)
		return NM_NODE_UNKNOWN;
	if (c->zero_pfn && pfn == c->zero_pfn)
		return -EFAULT;
	if (c->huge_zero_pfn && pfn >= c->huge_zero_pfn && pfn < c->huge_zero_pfn + NM_THP_ENTRIES)
		return -EFAULT;
	if (*hint < c->n_ranges && pfn >= c->ranges[*hint].start && pfn < c->ranges[*hint].end)
		return c->ranges[*hint].node;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pfn < c->ranges[mid].start)
			hi = mid;
		else if (pfn >= c->ranges[mid].end)
			lo = mid + 1;
		else {
			*hint = mid;
			return c->ranges[mid].node;
		}
	}
	return NM_NODE_UNKNOWN;
}

static int nm_is_thp_head(const nm_scan_ctx *c, uint64_t pfn)
{
	uint64_t flags;

	if (c->kpageflags_fd < 0 || pfn == 0)
		return 0;
	if (pread(c->kpageflags_fd, &flags, sizeof(flags), (off_t)(pfn * 8)) != sizeof(flags))
		return 0;
	return (flags >> NM_KPF_THP & 1) && (flags >> NM_KPF_COMPOUND_HEAD & 1);
}

static void nm_put(nm_page_out *o, unsigned long addr, int node)
{
	o->pages[o->count] = (void *)addr;
	o->nodes[o->count] = node;
	o->count++;
}

/* What ctx->scratch holds: pagemap entries [start, start + n) (page indexes), read ahead for the ranges
 * that follow (valid within one nm_scan_ranges call) */
struct nm_pm_cache {
	uint64_t start;
	size_t n;
};

/*
 * Up to want pagemap entries from page index idx: from the cache when it holds all of them, else read
 * into ctx->scratch (ahead entries when more than want, at most NM_PAGEMAP_CHUNK), which the cache then
 * describes.  *ent points at the first; returns how many (fewer than want at the end of the address
 * space), or -errno.
 */
static ssize_t nm_pm_entries(const nm_scan_ctx *ctx, struct nm_pm_cache *cache, uint64_t idx, size_t want,
			     size_t ahead, const uint64_t **ent)
{
	size_t n = ahead > want ? ahead : want;
	ssize_t rd;

	if (cache->n && idx >= cache->start && idx + want <= cache->start + cache->n) {
		*ent = ctx->scratch + (idx - cache->start);
		return (ssize_t)want;
	}
	if (n > NM_PAGEMAP_CHUNK)
		n = NM_PAGEMAP_CHUNK;
	cache->n = 0;
	rd = pread(ctx->pagemap_fd, ctx->scratch, n * 8, (off_t)(idx * 8));
	if (rd < 0)
		return -errno;
	cache->start = idx;
	cache->n = (size_t)rd / 8;
	*ent = ctx->scratch;
	return (ssize_t)(cache->n < want ? cache->n : want);
}

/* Base pages of [addr, end) from pagemap, in chunks, reading ahead up to ahead_end (the end of the run
 * of adjacent ranges this one starts) into cache: nm_scan_range's loop */
static int nm_scan_chunks(const nm_scan_ctx *ctx, unsigned long addr, unsigned long end, nm_page_out *out,
			  nm_page_out *thp, unsigned long *next, struct nm_pm_cache *cache, unsigned long ahead_end,
			  size_t *hint)
{
	while (addr < end) {
		/* a chunk of whole pages (and, with thp, whole 2 MiB blocks) */
		size_t want = (end - addr) / NM_BASE, got, i;
		size_t ahead = ahead_end > addr ? (ahead_end - addr) / NM_BASE : 0;
		const uint64_t *ent = NULL;  /* set whenever rd >= 0; gcc -O2 cannot tell */
		ssize_t rd;

		if (want > NM_PAGEMAP_CHUNK)
			want = NM_PAGEMAP_CHUNK;
		rd = nm_pm_entries(ctx, cache, addr / NM_BASE, want, ahead, &ent);
		if (rd < 0) {
			*next = addr;
			return (int)rd;
		}
		got = (size_t)rd;
		if (got == 0)
			break;
		for (i = 0; i < got;) {
			unsigned long a = addr + i * NM_BASE;
			uint64_t e = ent[i];

			if (thp && a % NM_HUGE_SIZE == 0 && a + NM_HUGE_SIZE <= end && i + NM_THP_ENTRIES <= got &&
			    (e & NM_PM_PRESENT) && nm_is_thp_head(ctx, e & NM_PM_PFN_MASK)) {
				if (thp->count >= thp->cap) {
					*next = a;
					return 0;
				}
				nm_put(thp, a, nm_pfn_node(ctx, e & NM_PM_PFN_MASK, hint));
				i += NM_THP_ENTRIES;
				continue;
			}
			if (thp && a % NM_HUGE_SIZE == 0 && a + NM_HUGE_SIZE <= end && i + NM_THP_ENTRIES > got &&
			    i > 0) {
				got = i; /* read this 2 MiB block whole in the next chunk */
				break;
			}
			if (e & NM_PM_PRESENT) {
				if (out->count >= out->cap) {
					*next = a;
					return 0;
				}
				nm_put(out, a, nm_pfn_node(ctx, e & NM_PM_PFN_MASK, hint));
			}
			i++;
		}
		addr += i * NM_BASE;
	}
	*next = end;
	return 0;
}

/* PAGEMAP_SCAN (Linux 6.7): where a range has present pages, its page table walk skipping empty tables
 * whole; defined here, as the build's headers may predate it */
struct nm_page_region {
	uint64_t start, end, categories;
};

struct nm_pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};

#define NM_PAGEMAP_SCAN _IOWR('f', 16, struct nm_pm_scan_arg)
#define NM_PAGE_IS_PRESENT (1ULL << 3)
#define NM_SCAN_REGIONS 256

static int nm_pmscan_missing;  /* set once the kernel refused PAGEMAP_SCAN (before 6.7): not asked again */
static long nm_pmscan_calls;   /* PAGEMAP_SCAN calls that answered (nm_pagemap_scan_calls) */

long nm_pagemap_scan_calls(void)
{
	return __atomic_load_n(&nm_pmscan_calls, __ATOMIC_RELAXED);
}

void nm_pagemap_scan_refuse(int refuse)
{
	nm_pmscan_missing = refuse;
}

/*
 * The base pages of the sparse range [addr, end): PAGEMAP_SCAN finds where present pages are, and only
 * there (each region widened to whole 2 MiB blocks, so a THP is seen whole, as a plain scan sees it) is
 * pagemap read.  Returns 1 where the kernel has no PAGEMAP_SCAN (the caller scans plainly from *next),
 * else nm_scan_chunks' result.
 */
static int nm_scan_sparse(const nm_scan_ctx *ctx, unsigned long addr, unsigned long end, nm_page_out *out,
			  nm_page_out *thp, unsigned long *next, struct nm_pm_cache *cache, size_t *hint)
{
	struct nm_page_region reg[NM_SCAN_REGIONS];

	while (addr < end) {
		struct nm_pm_scan_arg a = { .size = sizeof(a), .start = addr, .end = end, .vec = (uintptr_t)reg,
					    .vec_len = NM_SCAN_REGIONS, .category_mask = NM_PAGE_IS_PRESENT,
					    .return_mask = NM_PAGE_IS_PRESENT };
		unsigned long upto = end, done = addr;
		long n = ioctl(ctx->pagemap_fd, NM_PAGEMAP_SCAN, &a), k;

		if (n < 0) {
			*next = addr;
			if (errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP) {
				nm_pmscan_missing = 1;
				return 1;
			}
			return -errno;
		}
		__atomic_fetch_add(&nm_pmscan_calls, 1, __ATOMIC_RELAXED);
		if (n == NM_SCAN_REGIONS && a.walk_end > addr && a.walk_end < end) {
			/* stopped with the regions full: go on from the last whole 2 MiB block it finished */
			upto = a.walk_end & ~(NM_HUGE_SIZE - 1);
			if (upto <= addr)
				upto = a.walk_end;
		}
		for (k = 0; k < n; k++) {
			unsigned long lo = reg[k].start & ~(NM_HUGE_SIZE - 1);
			unsigned long hi = (reg[k].end + NM_HUGE_SIZE - 1) & ~(NM_HUGE_SIZE - 1);
			int rc;

			lo = lo < done ? done : lo;
			hi = hi > upto ? upto : hi;
			if (lo >= hi)
				continue;
			rc = nm_scan_chunks(ctx, lo, hi, out, thp, next, cache, hi, hint);
			if (rc || *next < hi)  /* failed, or an output is full */
				return rc;
			done = hi;
		}
		addr = upto;
	}
	*next = end;
	return 0;
}

/* nm_scan_range, reading pagemap ahead up to ahead_end into cache; sparse: few of its pages are present */
static int nm_scan_range_in(const nm_scan_ctx *ctx, unsigned long start, size_t len, size_t page_size,
			    nm_page_out *out, nm_page_out *thp, unsigned long *next, struct nm_pm_cache *cache,
			    unsigned long ahead_end, int sparse)
{
	unsigned long end = start + len, addr = start;
	size_t stride, hint = 0;

	if (!ctx || !out || !next || !ctx->scratch || !page_size || page_size % NM_BASE ||
	    start % NM_BASE)
		return -EINVAL;
	stride = page_size / NM_BASE;
	if (stride > 1) { /* hugetlb: one entry per page tells whether it is present */
		for (; addr + page_size <= end; addr += page_size) {
			uint64_t e;

			if (pread(ctx->pagemap_fd, &e, sizeof(e), (off_t)(addr / NM_BASE * 8)) != sizeof(e)) {
				*next = addr;
				return -EIO;
			}
			if (!(e & NM_PM_PRESENT))
				continue;
			if (out->count >= out->cap) {
				*next = addr;
				return 0;
			}
			nm_put(out, addr, nm_pfn_node(ctx, e & NM_PM_PFN_MASK, &hint));
		}
		*next = end;
		return 0;
	}
	if (sparse && !nm_pmscan_missing) {
		int rc = nm_scan_sparse(ctx, addr, end, out, thp, next, cache, &hint);

		if (rc != 1)
			return rc;
		addr = *next;
	}
	return nm_scan_chunks(ctx, addr, end, out, thp, next, cache, ahead_end, &hint);
}

int nm_scan_range(const nm_scan_ctx *ctx, unsigned long start, size_t len, size_t page_size,
		  nm_page_out *out, nm_page_out *thp, unsigned long *next)
{
	struct nm_pm_cache cache = { 0, 0 };

	return nm_scan_range_in(ctx, start, len, page_size, out, thp, next, &cache, start + len, 0);
}

int nm_scan_ranges(const nm_scan_ctx *ctx, size_t n, const unsigned long *starts, const unsigned long *ends,
		   const size_t *sizes, const unsigned char *sparse, nm_page_out *const *outs,
		   nm_page_out *const *thps, size_t *got, size_t *got_thp, size_t *done, unsigned long *next)
{
	struct nm_pm_cache cache = { 0, 0 };
	unsigned long ahead_end = 0;
	size_t i, j = 0;

	if (!done || !next || (n && (!starts || !ends || !sizes || !outs || !thps || !got || !got_thp)))
		return -EINVAL;
	for (i = *done; i < n; i++) {
		unsigned long from = starts[i];
		nm_page_out *out = outs[i], *thp = thps[i];
		size_t a, b;
		int rc;

		if (i == *done && *next > from && *next < ends[i])
			from = *next;
		if (!out || ends[i] < from)
			return -EINVAL;
		if (j <= i) {  /* the run of adjacent ranges of base pages from i: one pagemap read can serve them */
			for (j = i + 1; j < n && sizes[j] == sizes[i] && starts[j] == ends[j - 1]; j++)
				;
			ahead_end = ends[j - 1];
		}
		a = out->count;
		b = thp ? thp->count : 0;
		rc = nm_scan_range_in(ctx, from, ends[i] - from, sizes[i], out, thp, next, &cache, ahead_end,
				      sparse && sparse[i]);
		got[i] += out->count - a;
		if (thp)
			got_thp[i] += thp->count - b;
		if (rc || *next < ends[i]) { /* failed, or an output is full */
			*done = i;
			return rc;
		}
	}
	*done = n;
	return 0;
}

int nm_tally(const int *values, size_t n, int *keys, size_t *counts)
{
	size_t i;
	int k = 0, j, last = -1;

	for (i = 0; i < n; i++) {
		int v = values[i];

		if (last >= 0 && keys[last] == v) { /* runs of one value are the common case */
			counts[last]++;
			continue;
		}
		for (j = 0; j < k && keys[j] != v; j++)
			;
		if (j == k) {
			if (k == NM_HIST_MAX)
				return -E2BIG;
			keys[k] = v;
			counts[k] = 0;
			k++;
		}
		counts[j]++;
		last = j;
	}
	return k;
}

size_t nm_select_values(void **pages, const int *values, size_t n, const int *want, size_t n_want,
			void **out, size_t *idx)
{
	size_t i, j, k = 0;

	for (i = 0; i < n; i++) {
		for (j = 0; j < n_want && values[i] != want[j]; j++)
			;
		if (j < n_want) {
			out[k] = pages[i];
			if (idx)
				idx[k] = i;
			k++;
		}
	}
	return k;
}

void nm_scatter_int(int *dst, const size_t *idx, const int *src, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		dst[idx[k]] = src[k];
}

static uint64_t nm_self_pfn(int fd, const void *addr)
{
	uint64_t e = 0;

	if (pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / NM_BASE * 8)) != sizeof(e))
		return 0;
	return (e & NM_PM_PRESENT) ? (e & NM_PM_PFN_MASK) : 0;
}

int nm_zero_pfns(int self_pagemap_fd, uint64_t *zero, uint64_t *huge_zero)
{
	size_t maplen = 2 * NM_HUGE_SIZE;
	char *small, *raw, *blk;
	uint64_t a, b;

	*zero = *huge_zero = 0;
	/* a read fault of untouched private memory maps the zero page; 4 KiB cannot hold a THP */
	small = mmap(NULL, NM_BASE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (small == MAP_FAILED)
		return -errno;
	(void)((volatile char *)small)[0];
	*zero = nm_self_pfn(self_pagemap_fd, small);
	munmap(small, NM_BASE);
	raw = mmap(NULL, maplen, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return -errno;
	blk = (char *)(((uintptr_t)raw + NM_HUGE_SIZE - 1) & ~(NM_HUGE_SIZE - 1));
	madvise(blk, NM_HUGE_SIZE, MADV_HUGEPAGE);
	(void)((volatile char *)blk)[0];
	(void)((volatile char *)blk)[NM_BASE];
	a = nm_self_pfn(self_pagemap_fd, blk);
	b = nm_self_pfn(self_pagemap_fd, blk + NM_BASE);
	/* a huge zero page maps the whole block: consecutive PFNs from a 2 MiB aligned one */
	if (a && b == a + 1 && a % NM_THP_ENTRIES == 0 && a != *zero)
		*huge_zero = a;
	munmap(raw, maplen);
	return 0;
}

long nm_fs_type(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) != 0)
		return -errno;
	return (long)sf.f_type;
}

int nm_flock(int fd, int op)
{
	_Static_assert(NM_LOCK_EX == LOCK_EX && NM_LOCK_NB == LOCK_NB && NM_LOCK_UN == LOCK_UN, "flock flags");
	return flock(fd, op) ? -errno : 0;
}

int nm_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
	return syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags) ? -errno : 0;
}
