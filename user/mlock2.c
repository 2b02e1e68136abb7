/* mlock2 and MLOCK_ONFAULT, mlockall's MCL_ONFAULT, as a program sees
 * them through /proc: a locked page is present (pagemap) and locked
 * (kpageflags), its range says "lo" in smaps; a range locked on fault has
 * only the pages touched, each locked as it comes; unlocking a part
 * splits the range and unlocking the rest joins it again.
 *
 *   mlock2
 *
 * Prints "mlock2: ok" and exits 0. Runs unmodified on Linux, where as
 * PID 1 (tests/linux/run-linux.sh) it mounts /proc itself. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "check.h"

#define P 4096L
#define PRESENT (1ULL << 63)
#define PFN_MASK ((1ULL << 55) - 1)
/* kpageflags' MLOCKED: Linux sets it as the page is locked, where its
 * UNEVICTABLE waits for a batch of pages to move between lists. */
#define MLOCKED (1ULL << 33)
#define MLOCK_ONFAULT_ 1
#define MCL_ONFAULT_ 4

static int lock2(void *a, size_t len, int flags)
{
	return syscall(SYS_mlock2, a, len, flags);
}

static uint64_t word_at(const char *path, uint64_t index)
{
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	uint64_t w;
	CHECK(pread(fd, &w, 8, (off_t)(index * 8)) == 8);
	close(fd);
	return w;
}

static int present(char *a)
{
	return (word_at("/proc/self/pagemap", (uintptr_t)a / P) & PRESENT) != 0;
}

/* The page at `a` is in memory and locked there. */
static int mlocked(char *a)
{
	uint64_t w = word_at("/proc/self/pagemap", (uintptr_t)a / P);
	CHECK(w & PRESENT);
	return (word_at("/proc/kpageflags", w & PFN_MASK) & MLOCKED) != 0;
}

/* The smaps record of the range holding `a`: its bounds, Size and Rss
 * (kB) and whether its VmFlags say "lo". */
struct range {
	unsigned long start, end, size, rss;
	int lo;
};

static struct range range_of(char *a)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	CHECK(f != NULL);
	char line[512];
	struct range r = {0}, found = {0};
	int in = 0, done = 0;
	while (!done && fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char perms[8];
		/* A range's first line: "start-end perms ..." (no field line
		 * reads as two numbers joined by '-'). */
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3) {
			in = s <= (uintptr_t)a && (uintptr_t)a < e;
			if (in)
				r = (struct range){.start = s, .end = e};
			continue;
		}
		if (!in)
			continue;
		sscanf(line, "Size: %lu kB", &r.size);
		sscanf(line, "Rss: %lu kB", &r.rss);
		if (strncmp(line, "VmFlags:", 8) == 0) {
			r.lo = strstr(line + 8, " lo") != NULL;
			found = r;
			done = 1;
		}
	}
	fclose(f);
	CHECK(done);
	return found;
}

static char *map_pages(int n)
{
	char *m = mmap(0, n * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	return m;
}

/* Locked whole: both pages in and locked, the range "lo". */
static void all_locked(char *m)
{
	CHECK(present(m) && present(m + P));
	CHECK(mlocked(m) && mlocked(m + P));
	CHECK(range_of(m).lo && range_of(m + P).lo);
}

/* Locked on fault, nothing touched yet: nothing in; a write brings in
 * only its page, locked; the range is locked with less in than its size. */
static void locked_on_fault(char *m)
{
	CHECK(!present(m) && !present(m + P));
	*m = 'a';
	CHECK(present(m) && !present(m + P));
	CHECK(mlocked(m));
	struct range r = range_of(m);
	CHECK(r.lo && r.rss < r.size);
}

/* Unlocked: no page locked, no "lo". */
static void unlocked(char *m, int n)
{
	for (int i = 0; i < n; i++)
		if (present(m + i * P))
			CHECK(!mlocked(m + i * P));
	CHECK(!range_of(m).lo);
}

static void lock_and_unlock(void)
{
	char *m = map_pages(2);
	CHECK(lock2(m, 2 * P, 0) == 0);
	all_locked(m);
	CHECK(munlock(m, 2 * P) == 0);
	unlocked(m, 2);
	CHECK(munmap(m, 2 * P) == 0);

	m = map_pages(2);
	CHECK(lock2(m, 2 * P, MLOCK_ONFAULT_) == 0);
	locked_on_fault(m);
	CHECK(munlock(m, 2 * P) == 0);
	unlocked(m, 2);
	CHECK(munmap(m, 2 * P) == 0);

	/* A page there before the lock is locked by it at once. */
	m = map_pages(2);
	*m = 'a';
	CHECK(lock2(m, 2 * P, MLOCK_ONFAULT_) == 0);
	CHECK(mlocked(m) && !present(m + P));
	/* Locked again without MLOCK_ONFAULT: all of it comes in. */
	CHECK(lock2(m, 2 * P, 0) == 0);
	all_locked(m);
	CHECK(munmap(m, 2 * P) == 0);

	/* The errors. */
	m = map_pages(2);
	CHECK(lock2(m, P, 2) < 0 && errno == EINVAL);
	CHECK(munmap(m + P, P) == 0);
	CHECK(lock2(m, 2 * P, MLOCK_ONFAULT_) < 0 && errno == ENOMEM);
	CHECK(munmap(m, P) == 0);
}

static void lock_all(void)
{
	char *m = map_pages(2);
	CHECK(mlockall(MCL_CURRENT) == 0);
	all_locked(m);
	CHECK(munlockall() == 0);
	unlocked(m, 2);
	CHECK(munmap(m, 2 * P) == 0);

	m = map_pages(2);
	CHECK(mlockall(MCL_CURRENT | MCL_ONFAULT_) == 0);
	locked_on_fault(m);
	CHECK(munlockall() == 0);
	unlocked(m, 2);
	CHECK(mlockall(MCL_CURRENT | MCL_FUTURE) == 0);
	all_locked(m);
	CHECK(munlockall() == 0);
	unlocked(m, 2);
	CHECK(munmap(m, 2 * P) == 0);

	/* Mapped after MCL_FUTURE | MCL_ONFAULT: locked, nothing brought in. */
	CHECK(mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT_) == 0);
	m = map_pages(2);
	locked_on_fault(m);
	/* Inaccessible memory maps all the same, and locks as it is opened. */
	char *g = mmap(0, P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(g != MAP_FAILED);
	CHECK(mprotect(g, P, PROT_READ | PROT_WRITE) == 0);
	*g = 1;
	CHECK(mlocked(g));
	CHECK(munlockall() == 0);
	unlocked(m, 2);
	/* A later mapping is not locked. */
	char *n = map_pages(1);
	CHECK(!range_of(n).lo);
	CHECK(munmap(m, 2 * P) == 0 && munmap(g, P) == 0 && munmap(n, P) == 0);

	/* MCL_FUTURE alone: a new mapping comes in whole. */
	CHECK(mlockall(MCL_FUTURE) == 0);
	m = map_pages(2);
	all_locked(m);
	/* Each call says anew what later mappings get. */
	CHECK(mlockall(MCL_CURRENT) == 0);
	n = map_pages(1);
	CHECK(!range_of(n).lo);
	CHECK(munlockall() == 0);
	CHECK(munmap(m, 2 * P) == 0 && munmap(n, P) == 0);
}

/* Unlocking the middle page of a locked range splits it in three; unlocking
 * the rest joins it again. `lock` false: the range was locked by
 * mlockall(MCL_FUTURE | MCL_ONFAULT). */
static void split_and_join(int lock)
{
	char *m = map_pages(3);
	if (lock)
		CHECK(lock2(m, 3 * P, MLOCK_ONFAULT_) == 0);
	struct range a = range_of(m), b = range_of(m + P), c = range_of(m + 2 * P);
	CHECK(a.lo && a.start == b.start && b.start == c.start);
	CHECK(munlock(m + P, P) == 0);
	a = range_of(m), b = range_of(m + P), c = range_of(m + 2 * P);
	CHECK(a.start != b.start && b.start != c.start && a.end == (uintptr_t)(m + P) && b.end == (uintptr_t)(m + 2 * P));
	CHECK(a.lo && !b.lo && c.lo);
	CHECK(munlock(m, 3 * P) == 0);
	a = range_of(m), b = range_of(m + P), c = range_of(m + 2 * P);
	CHECK(a.start == b.start && b.start == c.start && !a.lo);
	CHECK(munmap(m, 3 * P) == 0);
}

/* A page locked on fault and shared with a child by fork: the child has
 * no lock, and the parent's write (a copy) moves the lock to the copy. */
static void across_fork(void)
{
	char *m = map_pages(2);
	CHECK(lock2(m, 2 * P, MLOCK_ONFAULT_) == 0);
	strcpy(m, "before");
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		CHECK(!range_of(m).lo);
		_exit(strcmp(m, "before") == 0 ? 0 : 3);
	}
	strcpy(m, "after");
	CHECK(mlocked(m) && !present(m + P));
	m[P] = 1;
	CHECK(mlocked(m + P));
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Grown by mremap: the new part is locked on fault too. */
	char *g = mremap(m, 2 * P, 4 * P, MREMAP_MAYMOVE);
	CHECK(g != MAP_FAILED);
	CHECK(!present(g + 2 * P) && range_of(g + 3 * P).lo);
	g[3 * P] = 1;
	CHECK(mlocked(g + 3 * P) && !present(g + 2 * P));
	CHECK(strcmp(g, "after") == 0);
	CHECK(munmap(g, 4 * P) == 0);
}

int main(void)
{
	/* As Linux's /init (tests/linux/run-linux.sh): /proc of its own. */
	if (getpid() == 1 && !on_bsdvm()) {
		mkdir("/proc", 0555);
		CHECK(mount("proc", "/proc", "proc", 0, NULL) == 0);
	}
	lock_and_unlock();
	lock_all();
	split_and_join(1);
	CHECK(mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT_) == 0);
	split_and_join(0);
	CHECK(munlockall() == 0);
	across_fork();
	printf("mlock2: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
