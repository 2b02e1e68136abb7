/* The VM with many threads in one map: threads faulting the same fresh
 * anonymous range at once, and the same file range at once (one reads a
 * page in, the others wait for it); munmap and mprotect racing faults
 * from other threads for 10,000 rounds, where every access either gets
 * the right data or a SIGSEGV with the right si_addr, never stale data
 * through a mapping that is gone; madvise(MADV_DONTNEED) and mlock racing
 * writers; fork while siblings write (the child's copy never changes
 * after the fork); exit_group while threads fault. Works in the directory
 * given as its first argument (default /tmp); the second, if given, is the
 * number of rounds of the race; a third, any, says what it does. Prints "vmthreads: every check held" and
 * exits 0. Passes unmodified on Linux. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "check.h"

#define P 4096L
#define NTHREADS 4

static pthread_barrier_t start_line;

/* ---- the same fresh range at once ---------------------------------------------- */

enum { FRESH_PAGES = 1024 };
static volatile uint64_t *fresh;

static void *fault_fresh(void *arg)
{
	long me = (long)(intptr_t)arg;
	pthread_barrier_wait(&start_line);
	for (long p = 0; p < FRESH_PAGES; p++) {
		volatile uint64_t *page = fresh + p * (P / 8);
		if (page[1 + me] != 0) /* read fault first: the zero page */
			return (void *)1;
		__atomic_fetch_add(&page[0], 1, __ATOMIC_SEQ_CST);
		page[1 + me] = (uint64_t)(p << 8 | me);
	}
	return NULL;
}

static void same_fresh_range(void)
{
	fresh = mmap(0, FRESH_PAGES * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(fresh != MAP_FAILED);
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&t[i], NULL, fault_fresh, (void *)(intptr_t)i) == 0);
	for (int i = 0; i < NTHREADS; i++) {
		void *r;
		CHECK(pthread_join(t[i], &r) == 0 && r == NULL);
	}
	for (long p = 0; p < FRESH_PAGES; p++) {
		volatile uint64_t *page = fresh + p * (P / 8);
		CHECK(page[0] == NTHREADS);
		for (long i = 0; i < NTHREADS; i++)
			CHECK(page[1 + i] == (uint64_t)(p << 8 | i));
	}
	munmap((void *)fresh, FRESH_PAGES * P);
}

/* ---- the same file range at once -------------------------------------------------- */

enum { FILE_PAGES = 512 };
static volatile unsigned char *filemap;
static long file_base;
static unsigned char (*byte_of)(long);

/* The root filesystem's data files (boot's `data_byte`). */
static unsigned char data_byte(long i)
{
	uint32_t h = (uint32_t)i * 2654435761u;
	return (unsigned char)(h >> 13 | h << 19) ^ (unsigned char)(i >> 12);
}

static unsigned char own_byte(long i)
{
	return (unsigned char)(i * 131 + (i >> 12) * 7);
}

static void *fault_file(void *arg)
{
	long me = (long)(intptr_t)arg;
	pthread_barrier_wait(&start_line);
	/* Every thread walks every page, starting at a different one, so
	 * that several fault each page at once. */
	for (long k = 0; k < FILE_PAGES; k++) {
		long p = (k + me * 3) % FILE_PAGES;
		for (long off = 0; off < P; off += 512)
			if (filemap[p * P + off] != byte_of(file_base + p * P + off))
				return (void *)1;
	}
	return NULL;
}

static void same_file_range(const char *dir)
{
	/* The data file when there is one (on this kernel's root filesystem,
	 * where no other test reads this part of it); else a file of our
	 * own. */
	int fd = open("/data/seq64", O_RDONLY);
	char path[256] = "";
	if (fd >= 0) {
		byte_of = data_byte;
		file_base = 40L << 20;
	} else {
		snprintf(path, sizeof path, "%s/vmthreads-file", dir);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		CHECK(fd >= 0);
		static unsigned char buf[P];
		for (long p = 0; p < FILE_PAGES; p++) {
			for (long i = 0; i < P; i++)
				buf[i] = own_byte(p * P + i);
			CHECK(write(fd, buf, P) == P);
		}
		byte_of = own_byte;
		file_base = 0;
	}
	void *m = mmap(0, FILE_PAGES * P, PROT_READ, MAP_PRIVATE, fd, file_base);
	CHECK(m != MAP_FAILED);
	filemap = m;
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&t[i], NULL, fault_file, (void *)(intptr_t)i) == 0);
	for (int i = 0; i < NTHREADS; i++) {
		void *r;
		CHECK(pthread_join(t[i], &r) == 0 && r == NULL);
	}
	munmap(m, FILE_PAGES * P);
	close(fd);
	if (path[0])
		unlink(path);
}

/* ---- munmap and mprotect racing faults ------------------------------------------------ */

/* The mutator's state. `epoch` is made odd once an mprotect or a munmap
 * has returned, and even again before access is given back: an access
 * that began and ended in one odd epoch ran under the reduced protection
 * all along. `gen` counts the munmaps; the words of a refilled range
 * carry the generation that filled them. */
enum { RACE_PAGES = 32 };
static volatile char *race;
static volatile long epoch, gen, race_done;
/* While `epoch` is odd after an mprotect: the pages taken away, and
 * whether they may still be read. (Set before the epoch turns odd.) */
static volatile long prot_lo, prot_n, prot_readable;
static int verbose_race;
static volatile long stale, lost, wrong_addr, wrong_data, faults, hits;

static __thread sigjmp_buf race_jump;
static __thread volatile uintptr_t race_addr;

static void on_race_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if ((uintptr_t)si->si_addr != race_addr || (si->si_code != SEGV_MAPERR && si->si_code != SEGV_ACCERR))
		__atomic_fetch_add(&wrong_addr, 1, __ATOMIC_SEQ_CST);
	siglongjmp(race_jump, 1);
}

static uint64_t race_word(long g, long page)
{
	return (uint64_t)g << 32 | (uint64_t)(page + 1);
}

static void *race_reader(void *arg)
{
	uint64_t seed = (uint64_t)(intptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
	for (long n = 1; !race_done; n++) {
		/* Now and then the CPU to the others: on one CPU the mutator
		 * would otherwise wait a time slice per reader each round. */
		if (n % 256 == 0)
			sched_yield();
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		long page = (long)(seed >> 33) % RACE_PAGES;
		int write_it = (seed >> 20) & 1;
		volatile uint64_t *w = (volatile uint64_t *)(race + page * P) + ((seed >> 40) % (P / 8));
		race_addr = (uintptr_t)w;
		long e1 = epoch, g1 = gen;
		if (sigsetjmp(race_jump, 1)) {
			__atomic_fetch_add(&faults, 1, __ATOMIC_RELAXED);
			continue;
		}
		long lo = prot_lo, n = prot_n, readable = prot_readable;
		uint64_t v = *w;
		int wrote = write_it && v != 0;
		if (wrote)
			__atomic_compare_exchange_n(w, &v, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); /* a write access */
		long e2 = epoch;
		__atomic_fetch_add(&hits, 1, __ATOMIC_RELAXED);
		/* An access the protection forbade all along: it went through a
		 * translation that should be gone. */
		if (e1 == e2 && (e1 & 1) && page >= lo && page < lo + n && (wrote || !readable)) {
			if (__atomic_fetch_add(&stale, 1, __ATOMIC_SEQ_CST) == 0 && verbose_race)
				fprintf(stderr, "stale: page %ld wrote %d readable %ld lo %ld n %ld epoch %ld\n", page, wrote, readable, lo, n, e1);
		}
		if (v == 0) {
			if (e1 == e2 && !(e1 & 1))
				__atomic_fetch_add(&lost, 1, __ATOMIC_SEQ_CST);
		} else if ((long)(v >> 32) < g1 || (v & 0xffffffff) != (uint64_t)(page + 1)) {
			__atomic_fetch_add(&wrong_data, 1, __ATOMIC_SEQ_CST); /* an old generation's */
		}
	}
	return NULL;
}

static void fill_race(long g)
{
	for (long p = 0; p < RACE_PAGES; p++)
		for (long i = 0; i < P / 8; i++)
			((volatile uint64_t *)(race + p * P))[i] = race_word(g, p);
}

static void munmap_mprotect_race(long rounds)
{
	race = mmap(0, RACE_PAGES * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(race != MAP_FAILED);
	fill_race(0);
	struct sigaction sa = { .sa_sigaction = on_race_segv, .sa_flags = SA_SIGINFO | SA_NODEFER };
	CHECK(sigaction(SIGSEGV, &sa, NULL) == 0);
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&t[i], NULL, race_reader, (void *)(intptr_t)i) == 0);
	for (long r = 0; r < rounds; r++) {
		if (r % 4 == 3) {
			CHECK(munmap((void *)race, RACE_PAGES * P) == 0);
			gen++;
			prot_n = 0; /* the refill below makes it readable while odd */
			epoch++;
			void *m = mmap((void *)race, RACE_PAGES * P, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			CHECK(m == (void *)race);
			fill_race(gen);
			epoch++;
		} else {
			/* All of it, or a middle part (splitting the entry). */
			long lo = r % 2 ? 0 : RACE_PAGES / 4, n = r % 2 ? RACE_PAGES : RACE_PAGES / 2;
			CHECK(mprotect((void *)(race + lo * P), n * P, r % 3 ? PROT_NONE : PROT_READ) == 0);
			prot_lo = lo;
			prot_n = n;
			prot_readable = r % 3 == 0;
			epoch++;
			sched_yield();
			epoch++;
			CHECK(mprotect((void *)race, RACE_PAGES * P, PROT_READ | PROT_WRITE) == 0);
		}
		if (r % 64 == 0)
			sched_yield();
	}
	race_done = 1;
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
	signal(SIGSEGV, SIG_DFL);
	if (getenv("VMTHREADS_VERBOSE") || verbose_race)
		fprintf(stderr, "race: %ld rounds, %ld accesses, %ld faults\n", rounds, hits, faults);
	CHECK(stale == 0);
	CHECK(lost == 0);
	CHECK(wrong_addr == 0);
	CHECK(wrong_data == 0);
	CHECK(hits > 0);
	munmap((void *)race, RACE_PAGES * P);
}

/* ---- madvise and mlock racing writers ---------------------------------------------------- */

enum { DISCARD_PAGES = 64 };
static volatile uint64_t *discard;
static volatile long discard_done, discard_bad;

static void *discard_writer(void *arg)
{
	long me = (long)(intptr_t)arg;
	for (uint64_t n = 1; !discard_done; n++) {
		for (long p = 0; p < DISCARD_PAGES; p++) {
			volatile uint64_t *w = discard + p * (P / 8) + me;
			*w = n;
			uint64_t v = *w;
			/* What it wrote, or zero if the page was discarded in
			 * between: never another value. */
			if (v != n && v != 0)
				__atomic_fetch_add(&discard_bad, 1, __ATOMIC_SEQ_CST);
		}
	}
	return NULL;
}

static void discard_and_lock_race(void)
{
	discard = mmap(0, DISCARD_PAGES * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(discard != MAP_FAILED);
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&t[i], NULL, discard_writer, (void *)(intptr_t)i) == 0);
	for (int r = 0; r < 300; r++) {
		CHECK(madvise((void *)discard, DISCARD_PAGES * P, MADV_DONTNEED) == 0);
		if (r % 3 == 0) {
			CHECK(mlock((void *)discard, DISCARD_PAGES * P) == 0);
			CHECK(munlock((void *)discard, DISCARD_PAGES * P) == 0);
		}
		sched_yield();
	}
	discard_done = 1;
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
	CHECK(discard_bad == 0);
	munmap((void *)discard, DISCARD_PAGES * P);
}

/* ---- fork while siblings write ------------------------------------------------------------ */

enum { FORK_PAGES = 64 };
static volatile uint64_t *forkmem;
static volatile long fork_done;

static void *fork_writer(void *arg)
{
	long me = (long)(intptr_t)arg;
	/* Each writer owns every NTHREADS-th page and writes a rising count
	 * into all its words, page by page. */
	for (uint64_t n = 1; !fork_done; n++)
		for (long p = me; p < FORK_PAGES; p += NTHREADS)
			for (long i = 0; i < P / 8; i++)
				forkmem[p * (P / 8) + i] = n;
	return NULL;
}

/* In the child: every page is a snapshot of rising counts (a run of n,
 * then a run of n - 1 where the writer was when the fork came), and it
 * does not change afterwards: no write of the parent's threads reaches
 * it. */
static int check_snapshot(void)
{
	static uint64_t first[FORK_PAGES * (P / 8)];
	for (long i = 0; i < FORK_PAGES * (P / 8); i++)
		first[i] = forkmem[i];
	for (long p = 0; p < FORK_PAGES; p++) {
		uint64_t *w = first + p * (P / 8);
		for (long i = 1; i < P / 8; i++)
			if (w[i] != w[i - 1] && w[i] + 1 != w[i - 1])
				return 1;
	}
	struct timespec t = { 0, 20000000 };
	nanosleep(&t, NULL);
	for (long i = 0; i < FORK_PAGES * (P / 8); i++)
		if (forkmem[i] != first[i])
			return 2;
	return 0;
}

static void fork_while_writing(void)
{
	forkmem = mmap(0, FORK_PAGES * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(forkmem != MAP_FAILED);
	pthread_t t[NTHREADS];
	for (long i = 0; i < NTHREADS; i++)
		CHECK(pthread_create(&t[i], NULL, fork_writer, (void *)(intptr_t)i) == 0);
	for (int r = 0; r < 20; r++) {
		struct timespec d = { 0, 2000000 };
		nanosleep(&d, NULL);
		pid_t c = fork();
		CHECK(c >= 0);
		if (c == 0)
			_exit(check_snapshot());
		int st;
		CHECK(waitpid(c, &st, 0) == c);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	fork_done = 1;
	for (int i = 0; i < NTHREADS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
	munmap((void *)forkmem, FORK_PAGES * P);
}

/* ---- exit_group while threads fault --------------------------------------------------------- */

static void *toucher(void *arg)
{
	(void)arg;
	for (;;) {
		char *m = mmap(0, 64 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			continue;
		for (long i = 0; i < 64 * P; i += P)
			m[i] = 1;
		munmap(m, 64 * P);
	}
	return NULL;
}

static void exit_while_faulting(void)
{
	for (int r = 0; r < 10; r++) {
		pid_t c = fork();
		CHECK(c >= 0);
		if (c == 0) {
			pthread_t t;
			for (int i = 0; i < NTHREADS; i++)
				if (pthread_create(&t, NULL, toucher, NULL) != 0)
					_exit(2);
			struct timespec d = { 0, (r + 1) * 3000000L };
			nanosleep(&d, NULL);
			exit(7);
		}
		int st;
		CHECK(waitpid(c, &st, 0) == c);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7);
	}
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	long rounds = argc > 2 ? atol(argv[2]) : 10000;
	CHECK(pthread_barrier_init(&start_line, NULL, NTHREADS) == 0);
	int verbose = getenv("VMTHREADS_VERBOSE") != NULL || argc > 3;
	verbose_race = verbose;
#define STEP(f)                                             \
	do {                                                \
		if (verbose)                                \
			fprintf(stderr, "vmthreads: %s\n", #f); \
		f;                                          \
	} while (0)
	STEP(same_fresh_range());
	STEP(same_file_range(dir));
	STEP(munmap_mprotect_race(rounds));
	STEP(discard_and_lock_race());
	STEP(fork_while_writing());
	STEP(exit_while_faulting());
	printf("vmthreads: every check held\n");
	return 0;
}
