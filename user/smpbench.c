/* Page faults on several processors, will-it-scale's page_fault1/2/3 in its
 * shape, the same binary on our kernel and on Linux:
 *
 *   pf1  a private anonymous mapping of 128 MiB, one byte written per page
 *        (a zero-fill fault each), munmap; in a loop
 *   pf2  a private mapping of 32 MiB of a file, one byte written per page
 *        (a copy-on-write fault from the file's page each), munmap
 *   pf3  a shared mapping of 32 MiB of a file, one byte written per page
 *        (the file's own page, made writable and dirty), munmap
 *
 * each with 1, 2 and 4 workers, once as processes (fork; each its own
 * mapping) and once as threads of one process (each its own mapping).
 *
 * Unlike will-it-scale, whose every worker of page_fault2/3 maps 128 MiB
 * of a file of its own, pf2 and pf3 share one 128 MiB file
 * (`<dir>/smpbench-file`, made once before the timing, written to its full
 * size with write(2), removed at the end), and worker i maps its own
 * quarter of it, at offset i x 32 MiB, in every configuration: four files
 * of 128 MiB and their private copies are 1 GiB, more than both kernels
 * get here (ours boots with at most 1020 MiB, and Linux's tmpfs root, as
 * /init, holds at most half of RAM). The workers still fault on pages of
 * their own, as with files of their own.
 *
 * Each worker counts the pages it wrote in a word of a shared anonymous
 * page; after a warm-up (WARMUP_MS, and until every worker has been once
 * over its whole mapping, so that the file runs start with the file in
 * memory) the counts are read over DURATION_MS and the sum over the workers
 * is printed per second:
 *
 *   bench: smp.pf1_procs_<N> <pages/s> pages/s
 *   bench: smp.pf1_threads_<N> <pages/s> pages/s     (and pf2, pf3)
 *
 * They count pages written, as will-it-scale does, not faults: a kernel
 * that maps a fault's resident neighbours writable in a shared mapping
 * (ours maps 4 on each side, vm/src/fault/prefault.rs; Linux maps none on
 * a write fault) takes a fault per few pages in pf3.
 *
 * Last, the cost of munmap of one page in a process of four threads, TLB
 * shootdown as a program pays for it: three threads write their own pages
 * in a loop, so they run (on other processors when there are some) with the
 * address space loaded, while the main thread maps a page, writes it and
 * unmaps it, over DURATION_MS; only the munmap call is timed:
 *
 *   bench: smp.munmap_4threads <ns> ns               the mean per call
 *   bench: smp.munmap_4threads_median <ns> ns        the median
 *
 * With four threads on fewer processors, a munmap preempted on its way back
 * to the program waits for the spinners' turns, milliseconds, and a few of
 * those make the mean; the median is the call itself.
 *
 * Every lap checks a sample of the pages it wrote: the byte written, and
 * the rest of the page zero (pf1) or the file's bytes (pf2, pf3); a worker
 * that stops checks the file through pread: untouched by its private
 * writes (pf2), holding its last shared write (pf3).
 *
 *   smpbench [dir]      the file's directory (default "/": the ext2 root on
 *                       our kernel, the initramfs's tmpfs as Linux's /init)
 *   smpbench dir only   one part only: pf1_procs, pf1_threads, pf2_procs,
 *                       ..., or munmap (to look at one, e.g. with the
 *                       kernel's lock contention report, run.report=on)
 *
 * It needs 512 MiB of RAM for pf1's four workers and 128 MiB of free space
 * for the file: the harness (tests/benches/kernel.rs) runs it with 768 MiB
 * and our root file system grown to 512 MiB. A run takes 50 to 90 s under
 * TCG.
 *
 * System calls: mmap, munmap, open, write, pread64, close, unlink, fork,
 * wait4, clone and futex (threads), clock_gettime, nanosleep, exit,
 * exit_group, and reboot when it runs as PID 1 (Linux's /init): it powers
 * the machine off when done. Exits 0 when every check held, else the
 * number of the first failure (the numbers the functions below return). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
/* pf1's mapping per worker. */
#define ANON_SIZE (128UL << 20)
#define MAX_WORKERS 4
/* The file of pf2 and pf3, and each worker's part of it. */
#define FILE_SIZE (128UL << 20)
#define SLICE_SIZE (FILE_SIZE / MAX_WORKERS)
/* Each configuration's measured time, and the warm-up before it. */
#define DURATION_MS 2000
#define WARMUP_MS 500
/* A worker that has not finished its first lap by then has failed. */
#define WARMUP_MAX_MS 60000

enum test { PF1, PF2, PF3 };
static const char *const test_name[] = { "pf1", "pf2", "pf3" };

/* One worker's counters, each on a cache line of its own. */
struct slot {
	unsigned long pages; /* pages written so far */
	unsigned long laps;  /* whole mappings written and checked */
	int failed;          /* the worker's failure number, 0 if none */
	char pad[64 - 2 * sizeof(unsigned long) - sizeof(int)];
};

/* In a shared anonymous page: seen by worker processes and threads alike. */
struct control {
	int stop;
	char pad[60];
	struct slot slot[MAX_WORKERS];
};

static struct control *ctl;
static const char *dir = "/";
/* The one part to run ("pf1_procs", ..., "munmap"), or NULL: all. */
static const char *only;

/* Whether the part `name` (of test t, mode "procs" or "threads", or NULL
 * for munmap) is to run. */
static int wanted(const char *test, const char *mode)
{
	char name[32];
	if (!only)
		return 1;
	snprintf(name, sizeof name, "%s%s%s", test, mode ? "_" : "", mode ? mode : "");
	return strcmp(name, only) == 0;
}

static unsigned long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* One line straight to fd 1 with write: nothing is left in a stdio buffer
 * for fork to duplicate. */
static void say(const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf)
		n = sizeof buf - 1;
	for (int off = 0; off < n;) {
		ssize_t w = write(1, buf + off, n - off);
		if (w <= 0)
			return;
		off += w;
	}
}

static int stopping(void)
{
	return __atomic_load_n(&ctl->stop, __ATOMIC_RELAXED);
}

static char file[256];

/* Every byte of page `page` of the file, as written. */
static unsigned char file_byte(unsigned long page)
{
	return (unsigned char)(page * 7 + 3);
}

/* Page `k` of worker `slot`'s part of the file. */
static unsigned long file_page(int slot, unsigned long k)
{
	return (unsigned long)slot * (SLICE_SIZE / PAGE) + k;
}

/* The file, written to its full size. */
static int make_file(void)
{
	static char chunk[64 << 10];
	const char *sep = dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/";
	snprintf(file, sizeof file, "%s%ssmpbench-file", dir, sep);
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		say("smpbench: cannot create %s\n", file);
		return 20;
	}
	for (unsigned long off = 0; off < FILE_SIZE; off += sizeof chunk) {
		for (unsigned long p = 0; p < sizeof chunk / PAGE; p++)
			memset(chunk + p * PAGE, file_byte(off / PAGE + p), PAGE);
		if (write(fd, chunk, sizeof chunk) != (ssize_t)sizeof chunk) {
			say("smpbench: cannot write %s (file system full?)\n", file);
			close(fd);
			return 21;
		}
	}
	close(fd);
	return 0;
}

/* Page `k` of a lap's mapping, just written with `v`: the byte written
 * there, the rest of the page zero (pf1) or the file's (pf2, pf3). */
static int page_ok(const volatile unsigned char *p, unsigned long k, unsigned char v, enum test t, int slot)
{
	const volatile unsigned char *pg = p + k * PAGE;
	unsigned char rest = t == PF1 ? 0 : file_byte(file_page(slot, k));
	return pg[0] == v && pg[1] == rest && pg[PAGE / 2] == rest && pg[PAGE - 1] == rest;
}

/* Worker `slot` of test `t`: laps over a fresh mapping until told to stop.
 * Returns 0, or a failure number. */
static int work(enum test t, int slot)
{
	struct slot *s = &ctl->slot[slot];
	int fd = -1;
	if (t != PF1) {
		fd = open(file, O_RDWR);
		if (fd < 0) {
			say("smpbench: %s worker %d cannot open %s\n", test_name[t], slot, file);
			return 30;
		}
	}
	int flags = t == PF1 ? MAP_PRIVATE | MAP_ANONYMOUS : t == PF2 ? MAP_PRIVATE : MAP_SHARED;
	unsigned long size = t == PF1 ? ANON_SIZE : SLICE_SIZE, pages = size / PAGE;
	off_t offset = t == PF1 ? 0 : (off_t)(slot * SLICE_SIZE);
	unsigned long n = 0, lap = 0;
	/* The value this worker last wrote to page 0 (0: none yet). */
	unsigned char v = 0, last = 0;
	while (!stopping()) {
		v = (unsigned char)(v % 255 + 1);
		volatile unsigned char *p = mmap(0, size, PROT_READ | PROT_WRITE, flags, fd, offset);
		if (p == MAP_FAILED) {
			say("smpbench: %s worker %d: mmap of %lu bytes failed\n", test_name[t], slot, size);
			return 31;
		}
		unsigned long i;
		for (i = 0; i < pages && !stopping(); i++) {
			p[i * PAGE] = v;
			__atomic_store_n(&s->pages, ++n, __ATOMIC_RELAXED);
		}
		if (i > 0) {
			last = v;
			unsigned long k = (lap * 7919 + (unsigned long)slot * 131) % i;
			if (!page_ok(p, 0, v, t, slot) || !page_ok(p, k, v, t, slot) || !page_ok(p, i - 1, v, t, slot)) {
				say("smpbench: %s worker %d: a page of lap %lu reads back wrong (page 0, %lu or %lu)\n",
				    test_name[t], slot, lap, k, i - 1);
				return 32;
			}
		}
		if (munmap((void *)p, size) != 0) {
			say("smpbench: %s worker %d: munmap failed\n", test_name[t], slot);
			return 33;
		}
		if (i == pages)
			__atomic_store_n(&s->laps, ++lap, __ATOMIC_RELAXED);
	}
	if (fd >= 0) {
		/* Private writes stay out of the file; shared ones are in it. */
		unsigned char b[2], want1 = file_byte(file_page(slot, 0));
		if (pread(fd, b, 2, offset) != 2) {
			say("smpbench: %s worker %d: pread of %s failed\n", test_name[t], slot, file);
			return 34;
		}
		/* (pf3 runs after pf2: pf2 finds the bytes as written.) */
		unsigned char want0 = t == PF3 ? last : want1;
		if ((want0 && b[0] != want0) || b[1] != want1) {
			say("smpbench: %s worker %d: the file holds %#x %#x at %lu, not %#x %#x\n", test_name[t], slot,
			    b[0], b[1], (unsigned long)offset, want0, want1);
			return 35;
		}
		close(fd);
	}
	return 0;
}

struct thread_arg {
	enum test t;
	int slot;
	int status;
};

static void *worker_thread(void *arg)
{
	struct thread_arg *a = arg;
	a->status = work(a->t, a->slot);
	if (a->status)
		__atomic_store_n(&ctl->slot[a->slot].failed, a->status, __ATOMIC_RELAXED);
	return 0;
}

/* Pages written so far by workers 0 to n - 1. */
static unsigned long pages_written(int n)
{
	unsigned long total = 0;
	for (int i = 0; i < n; i++)
		total += __atomic_load_n(&ctl->slot[i].pages, __ATOMIC_RELAXED);
	return total;
}

/* When the last measure() began and ended its counting. */
static unsigned long long counted_from, counted_to;

/* Waits out the warm-up, then counts pages over DURATION_MS. Returns the
 * rate in pages per second, or 0 when a worker failed or never finished a
 * lap (*status then says why). */
static unsigned long long measure(int n, int *status)
{
	unsigned long long start = now_ns();
	for (;;) {
		for (int i = 0; i < n; i++)
			if (__atomic_load_n(&ctl->slot[i].failed, __ATOMIC_RELAXED)) {
				*status = __atomic_load_n(&ctl->slot[i].failed, __ATOMIC_RELAXED);
				return 0;
			}
		int all = 1;
		for (int i = 0; i < n; i++)
			all &= __atomic_load_n(&ctl->slot[i].laps, __ATOMIC_RELAXED) > 0;
		unsigned long long ms = (now_ns() - start) / 1000000;
		if (all && ms >= WARMUP_MS)
			break;
		if (ms > WARMUP_MAX_MS) {
			say("smpbench: a worker has not finished a lap in %d ms\n", WARMUP_MAX_MS);
			*status = 40;
			return 0;
		}
		sleep_ms(10);
	}
	unsigned long c0 = pages_written(n);
	unsigned long long t0 = now_ns();
	sleep_ms(DURATION_MS);
	unsigned long c1 = pages_written(n);
	unsigned long long t1 = now_ns();
	counted_from = t0;
	counted_to = t1;
	return (unsigned long long)((double)(c1 - c0) * 1e9 / (double)(t1 - t0) + 0.5);
}

static void reset(void)
{
	memset(ctl, 0, sizeof *ctl);
}

/* Where a configuration's time went, from `start` (before its workers
 * were made) to now (all of them gone). */
static void say_times(enum test t, const char *mode, int n, unsigned long long start)
{
	unsigned long long end = now_ns();
	say("smpbench: %s_%s_%d: warm-up %llu ms, counted over %llu ms, stopped in %llu ms\n", test_name[t], mode, n,
	    (counted_from - start) / 1000000, (counted_to - counted_from) / 1000000, (end - counted_to) / 1000000);
}

/* Test `t` with `n` worker processes. Returns 0 or a failure number. */
static int run_procs(enum test t, int n)
{
	reset();
	unsigned long long start = now_ns();
	pid_t pid[MAX_WORKERS];
	int started = 0, status = 0;
	for (; started < n; started++) {
		pid[started] = fork();
		if (pid[started] < 0) {
			say("smpbench: fork failed\n");
			status = 41;
			break;
		}
		if (pid[started] == 0) {
			int r = work(t, started);
			if (r)
				__atomic_store_n(&ctl->slot[started].failed, r, __ATOMIC_RELAXED);
			_exit(r);
		}
	}
	unsigned long long rate = status ? 0 : measure(n, &status);
	__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < started; i++) {
		int st;
		if (waitpid(pid[i], &st, 0) != pid[i]) {
			say("smpbench: waitpid failed\n");
			status = status ? status : 42;
		} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			say("smpbench: %s worker process %d failed (wait status %#x)\n", test_name[t], i, st);
			status = status ? status : (WIFEXITED(st) ? WEXITSTATUS(st) : 43);
		}
	}
	if (status == 0) {
		say_times(t, "procs", n, start);
		say("bench: smp.%s_procs_%d %llu pages/s\n", test_name[t], n, rate);
	}
	return status;
}

/* Test `t` with `n` worker threads in this process. */
static int run_threads(enum test t, int n)
{
	reset();
	unsigned long long start = now_ns();
	pthread_t th[MAX_WORKERS];
	struct thread_arg arg[MAX_WORKERS];
	int started = 0, status = 0;
	for (; started < n; started++) {
		arg[started] = (struct thread_arg){ t, started, 0 };
		if (pthread_create(&th[started], NULL, worker_thread, &arg[started]) != 0) {
			say("smpbench: pthread_create failed\n");
			status = 44;
			break;
		}
	}
	unsigned long long rate = status ? 0 : measure(n, &status);
	__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < started; i++) {
		if (pthread_join(th[i], NULL) != 0) {
			say("smpbench: pthread_join failed\n");
			status = status ? status : 45;
		} else if (arg[i].status) {
			status = status ? status : arg[i].status;
		}
	}
	if (status == 0) {
		say_times(t, "threads", n, start);
		say("bench: smp.%s_threads_%d %llu pages/s\n", test_name[t], n, rate);
	}
	return status;
}

/* ---- munmap of one page with three other threads running ----------------- */

#define SPINNERS 3
#define MAX_SAMPLES (1 << 19)
static unsigned samples[MAX_SAMPLES];

static void *spinner(void *arg)
{
	struct slot *s = arg;
	volatile unsigned char *pg = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED) {
		__atomic_store_n(&s->failed, 50, __ATOMIC_RELAXED);
		return 0;
	}
	unsigned long n = 0;
	while (!stopping()) {
		pg[0]++;
		if ((++n & 1023) == 0)
			__atomic_store_n(&s->pages, n, __ATOMIC_RELAXED);
	}
	__atomic_store_n(&s->pages, n, __ATOMIC_RELAXED);
	munmap((void *)pg, PAGE);
	return 0;
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return x < y ? -1 : x > y;
}

static int munmap_4threads(void)
{
	reset();
	pthread_t th[SPINNERS];
	int started = 0, status = 0;
	for (; started < SPINNERS; started++)
		if (pthread_create(&th[started], NULL, spinner, &ctl->slot[started]) != 0) {
			say("smpbench: pthread_create failed\n");
			status = 51;
			break;
		}
	/* Every spinner running before the timing. */
	unsigned long long start = now_ns();
	while (status == 0) {
		int all = 1;
		for (int i = 0; i < SPINNERS; i++) {
			if (__atomic_load_n(&ctl->slot[i].failed, __ATOMIC_RELAXED))
				status = 50;
			all &= __atomic_load_n(&ctl->slot[i].pages, __ATOMIC_RELAXED) > 0;
		}
		if (all)
			break;
		if (now_ns() - start > WARMUP_MAX_MS * 1000000ULL) {
			say("smpbench: a spinner never ran\n");
			status = 52;
		}
		sleep_ms(10);
	}
	unsigned long long total = 0, calls = 0;
	unsigned long long warm_end = now_ns() + WARMUP_MS * 1000000ULL;
	unsigned long long end = warm_end + DURATION_MS * 1000000ULL;
	while (status == 0) {
		volatile unsigned char *p = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			say("smpbench: mmap of a page failed\n");
			status = 53;
			break;
		}
		p[0] = (unsigned char)(calls | 1);
		if (p[0] != (unsigned char)(calls | 1) || p[1] != 0) {
			say("smpbench: a fresh page reads back wrong\n");
			status = 54;
			break;
		}
		unsigned long long t0 = now_ns();
		int r = munmap((void *)p, PAGE);
		unsigned long long t1 = now_ns();
		if (r != 0) {
			say("smpbench: munmap of a page failed\n");
			status = 55;
			break;
		}
		if (t0 < warm_end)
			continue;
		if (calls < MAX_SAMPLES)
			samples[calls] = (unsigned)(t1 - t0 > 0xffffffffULL ? 0xffffffffULL : t1 - t0);
		total += t1 - t0;
		calls++;
		if (t1 >= end)
			break;
	}
	__atomic_store_n(&ctl->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < started; i++)
		if (pthread_join(th[i], NULL) != 0)
			status = status ? status : 56;
	if (status == 0 && calls > 0) {
		unsigned long kept = calls < MAX_SAMPLES ? calls : MAX_SAMPLES;
		qsort(samples, kept, sizeof samples[0], cmp_unsigned);
		say("smpbench: munmap_4threads mean %llu ns, median %u ns, over %llu calls\n", (total + calls / 2) / calls,
		    samples[kept / 2], calls);
		say("bench: smp.munmap_4threads %llu ns\n", (total + calls / 2) / calls);
		say("bench: smp.munmap_4threads_median %u ns\n", samples[kept / 2]);
	}
	return status;
}

static int run(void)
{
	ctl = mmap(0, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ctl == MAP_FAILED) {
		say("smpbench: mmap of the shared page failed\n");
		return 2;
	}
	unsigned long long t0 = now_ns();
	int status = 0;
	static const int workers[] = { 1, 2, 4 };
	for (enum test t = PF1; t <= PF3 && status == 0; t++) {
		if (!wanted(test_name[t], "procs") && !wanted(test_name[t], "threads"))
			continue;
		if (t != PF1 && !file[0]) {
			unsigned long long f0 = now_ns();
			status = make_file();
			if (status)
				break;
			say("smpbench: %s, %lu MiB, written in %llu ms\n", file, FILE_SIZE >> 20, (now_ns() - f0) / 1000000);
		}
		for (int i = 0; i < 3 && status == 0 && wanted(test_name[t], "procs"); i++)
			status = run_procs(t, workers[i]);
		for (int i = 0; i < 3 && status == 0 && wanted(test_name[t], "threads"); i++)
			status = run_threads(t, workers[i]);
	}
	if (file[0])
		unlink(file);
	if (status == 0 && wanted("munmap", NULL))
		status = munmap_4threads();
	if (status == 0)
		say("smpbench: done in %llu s\n", (now_ns() - t0 + 500000000ULL) / 1000000000ULL);
	return status;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		dir = argv[1];
	if (argc > 2)
		only = argv[2];
	int status = run();
	if (status != 0)
		say("smpbench: failed with status %d\n", status);
	if (getpid() == 1) {
		/* Linux's /init: nothing to return to. */
		reboot(RB_POWER_OFF);
	}
	return status;
}
