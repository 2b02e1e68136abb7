/* The cost of anonymous memory as a program sees it, the same binary on our
 * kernel and on Linux: map 64 MiB of private anonymous memory and write one
 * byte per page (a zero-fill fault each), fork and write one byte per page in
 * the child (a copy-on-write fault each), then munmap the 64 MiB.
 *
 * Three rounds, each on a fresh mapping; the figures of the last one are
 * printed as `bench: user.anon_zero_fill <ns> ns/fault`,
 * `bench: user.cow <ns> ns/fault` and `bench: user.munmap <ns> ns/page`.
 * Then warm file faults, lmbench lat_pagefault's shape: a 16 MiB file,
 * written once, is mapped and read one byte per page, three rounds; the
 * last gives `bench: user.file_fault <ns> ns/page` (both kernels map
 * neighbouring resident pages on a fault: Linux 16, ours 9).
 * Then mremap of a populated 64 MiB between 2 MiB-aligned places,
 * `bench: user.mremap_64m <us> us` (one call, the last of three rounds).
 * Last, Appel and Li's VM primitives for user programs (`appel_li`):
 * `user.sig_trap` (ns/trap), `user.prot1_trap_unprot` (ns/op),
 * `user.protN` (ns/call), and `user.thread_create_join` (ns/pair).
 * Under QEMU the first round also pays for QEMU's own first touch of guest
 * RAM, hence the rounds. The child prints its own figure and the parent waits
 * for it, so the output order is fixed.
 *
 * System calls: mmap, mremap, madvise, munmap, mprotect, fork, wait4, clock_gettime, write,
 * getpid, rt_sigaction, rt_sigreturn, clone (threads), futex, exit,
 * exit_group, and reboot when it runs as PID 1 (Linux's /init): it powers the
 * machine off when done. musl adds arch_prctl and set_tid_address at start-up
 * and rt_sigprocmask and gettid (in the child) around fork; its
 * clock_gettime goes through the vDSO when there is one (AT_SYSINFO_EHDR). Exits 0 when the copy-on-write checks hold, else the
 * number (3 to 9) of the first one that failed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define SIZE (64UL << 20)
#define PAGES (SIZE / PAGE)
#define ROUNDS 3

static unsigned long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

/* One line straight to fd 1 with write: nothing is left in a stdio buffer
 * for fork to duplicate. */
static void say(const char *fmt, ...)
{
	char buf[160];
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

/* Prints a round's figure per page of `pages`, and the bench line too in
 * the last round. */
static void report_of(int round, const char *what, const char *bench, unsigned long long ns, unsigned long pages,
		      const char *unit)
{
	unsigned long long per = (ns + pages / 2) / pages;
	say("round %d: %s %llu %s\n", round, what, per, unit);
	if (round == ROUNDS)
		say("bench: user.%s %llu %s\n", bench, per, unit);
}

static void report(int round, const char *what, const char *bench, unsigned long long ns, const char *unit)
{
	report_of(round, what, bench, ns, PAGES, unit);
}

#define FILE_SIZE (16UL << 20)
#define FILE_PAGES (FILE_SIZE / PAGE)

/* Warm file faults: the file's pages are in memory after the first round. */
static int file_faults(void)
{
	const char *path = "/vmbench-file";
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		say("vmbench: cannot create %s\n", path);
		return 10;
	}
	static char chunk[65536];
	for (unsigned long off = 0; off < FILE_SIZE; off += sizeof chunk) {
		memset(chunk, (int)(off >> 16), sizeof chunk);
		if (write(fd, chunk, sizeof chunk) != (ssize_t)sizeof chunk) {
			say("vmbench: cannot write %s\n", path);
			return 11;
		}
	}
	for (int round = 1; round <= ROUNDS; round++) {
		volatile char *p = mmap(0, FILE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED) {
			say("vmbench: mmap of %s failed\n", path);
			return 12;
		}
		unsigned long sum = 0;
		unsigned long long t0 = now_ns();
		for (unsigned long i = 0; i < FILE_PAGES; i++)
			sum += (unsigned char)p[i * PAGE];
		report_of(round, "file_fault", "file_fault", now_ns() - t0, FILE_PAGES, "ns/page");
		/* Page i holds (i * 4096) >> 16 = i / 16 in every byte. */
		unsigned long want = 0;
		for (unsigned long i = 0; i < FILE_PAGES; i++)
			want += (unsigned char)(i / 16);
		if (sum != want) {
			say("vmbench: the file reads back wrong\n");
			return 13;
		}
		munmap((void *)p, FILE_SIZE);
	}
	close(fd);
	unlink(path);
	return 0;
}

/* ---- Appel and Li's primitives, and threads ----------------------------------- */

#define AL_PAGES 100
#define AL_TIMES 2000
static volatile char *al;

/* The handler of the trap benchmarks: unprotects the faulting page and
 * returns, and the write is retried. */
static void unprotect(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	mprotect((void *)((unsigned long)si->si_addr & ~(PAGE - 1)), PAGE, PROT_READ | PROT_WRITE);
}

static void *nothing(void *arg)
{
	return arg;
}

/* Appel and Li, "Virtual memory primitives for user programs": TRAP (a
 * protection fault handled by a handler that unprotects the page and
 * returns), PROT1+TRAP+UNPROT (one page protected, then trapped on), and
 * PROTN (100 resident, dirty pages protected by one call); and a thread
 * created and joined. Each the last of three rounds. */
static int appel_li(void)
{
	struct sigaction sa = { 0 };
	sa.sa_sigaction = unprotect;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSEGV, &sa, NULL) != 0)
		return 14;
	al = mmap(0, AL_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (al == MAP_FAILED)
		return 15;
	for (unsigned long i = 0; i < AL_PAGES; i++)
		al[i * PAGE] = 1;
	for (int round = 1; round <= ROUNDS; round++) {
		/* TRAP: all pages protected at once (not timed), then one trap per
		 * page. */
		unsigned long long trap = 0, prot1 = 0, protn = 0;
		for (int k = 0; k < AL_TIMES / AL_PAGES; k++) {
			mprotect((void *)al, AL_PAGES * PAGE, PROT_READ);
			unsigned long long t0 = now_ns();
			for (unsigned long i = 0; i < AL_PAGES; i++)
				al[i * PAGE]++;
			trap += now_ns() - t0;
		}
		report_of(round, "trap", "sig_trap", trap, AL_TIMES, "ns/trap");
		/* PROT1+TRAP+UNPROT: protect one page, write it. */
		unsigned long long t0 = now_ns();
		for (int k = 0; k < AL_TIMES; k++) {
			volatile char *page = al + (k % AL_PAGES) * PAGE;
			mprotect((void *)page, PAGE, PROT_READ);
			(*page)++;
		}
		prot1 = now_ns() - t0;
		report_of(round, "prot1_trap_unprot", "prot1_trap_unprot", prot1, AL_TIMES, "ns/op");
		/* PROTN: 100 pages, mapped writable and dirty, protected at once
		 * (putting them back is not timed). */
		for (int k = 0; k < AL_TIMES / 20; k++) {
			mprotect((void *)al, AL_PAGES * PAGE, PROT_READ | PROT_WRITE);
			for (unsigned long i = 0; i < AL_PAGES; i++)
				al[i * PAGE]++;
			t0 = now_ns();
			mprotect((void *)al, AL_PAGES * PAGE, PROT_READ);
			protn += now_ns() - t0;
		}
		mprotect((void *)al, AL_PAGES * PAGE, PROT_READ | PROT_WRITE);
		report_of(round, "protN", "protN", protn, AL_TIMES / 20, "ns/call");
		/* A thread created and joined. */
		t0 = now_ns();
		for (int k = 0; k < AL_TIMES / 4; k++) {
			pthread_t t;
			if (pthread_create(&t, NULL, nothing, NULL) != 0 || pthread_join(t, NULL) != 0)
				return 16;
		}
		report_of(round, "thread_create_join", "thread_create_join", now_ns() - t0, AL_TIMES / 4, "ns/pair");
	}
	signal(SIGSEGV, SIG_DFL);
	munmap((void *)al, AL_PAGES * PAGE);
	return 0;
}

/* A range of len bytes starting on a 2 MiB boundary, reserved (no access):
 * the part of a larger reservation that is so aligned. */
static char *aligned_range(unsigned long len)
{
	const unsigned long huge = 2UL << 20;
	char *m = mmap(0, len + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return 0;
	char *a = (char *)(((unsigned long)m + huge - 1) & ~(huge - 1));
	if (a > m)
		munmap(m, a - m);
	munmap(a + len, m + len + huge - (a + len));
	return a;
}

/* mremap of 64 MiB with every page present, from one 2 MiB-aligned place
 * to another: Linux moves whole page-table pages when source and
 * destination are so aligned, and so does ours. Transparent huge pages are
 * off for the range, so that both move tables of 4 KiB pages. Three
 * rounds; the last gives `bench: user.mremap_64m <us> us` (one call). */
static int mremaps(void)
{
	for (int round = 1; round <= ROUNDS; round++) {
		char *src = aligned_range(SIZE), *dst = aligned_range(SIZE);
		if (!src || !dst)
			return 17;
		if (mmap(src, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != src)
			return 17;
		madvise(src, SIZE, MADV_NOHUGEPAGE);
		for (unsigned long i = 0; i < PAGES; i++)
			src[i * PAGE] = (char)i;
		unsigned long long t0 = now_ns();
		char *moved = mremap(src, SIZE, SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
		unsigned long long dt = now_ns() - t0;
		if (moved != dst) {
			say("vmbench: mremap failed\n");
			return 18;
		}
		for (unsigned long i = 0; i < PAGES; i++)
			if (dst[i * PAGE] != (char)i) {
				say("vmbench: page %lu changed in mremap\n", i);
				return 19;
			}
		report_of(round, "mremap of 64 MiB", "mremap_64m", dt, 1000, "us");
		munmap(dst, SIZE);
	}
	return 0;
}

static int run(void)
{
	for (int round = 1; round <= ROUNDS; round++) {
		volatile char *p = mmap(0, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			say("vmbench: mmap of %lu bytes failed\n", SIZE);
			return 3;
		}

		unsigned long long t0 = now_ns();
		for (unsigned long i = 0; i < PAGES; i++)
			p[i * PAGE] = 1;
		report(round, "zero_fill", "anon_zero_fill", now_ns() - t0, "ns/fault");

		pid_t pid = fork();
		if (pid < 0) {
			say("vmbench: fork failed\n");
			return 4;
		}
		if (pid == 0) {
			t0 = now_ns();
			for (unsigned long i = 0; i < PAGES; i++)
				p[i * PAGE] = 2;
			report(round, "cow", "cow", now_ns() - t0, "ns/fault");
			for (unsigned long i = 0; i < PAGES; i++)
				if (p[i * PAGE] != 2)
					_exit(5);
			_exit(0);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid) {
			say("vmbench: waitpid failed\n");
			return 6;
		}
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			say("vmbench: the child failed (wait status %#x)\n", st);
			return 7;
		}
		/* The child's writes stayed its own. */
		for (unsigned long i = 0; i < PAGES; i++)
			if (p[i * PAGE] != 1) {
				say("vmbench: the parent sees the child's write at page %lu\n", i);
				return 8;
			}

		t0 = now_ns();
		if (munmap((void *)p, SIZE) != 0) {
			say("vmbench: munmap failed\n");
			return 9;
		}
		report(round, "munmap", "munmap", now_ns() - t0, "ns/page");
	}
	int r = file_faults();
	if (r == 0)
		r = mremaps();
	return r != 0 ? r : appel_li();
}

int main(void)
{
	int status = run();
	if (getpid() == 1) {
		/* Linux's /init: nothing to return to. */
		if (status != 0)
			say("vmbench: failed with status %d\n", status);
		reboot(RB_POWER_OFF);
	}
	return status;
}
