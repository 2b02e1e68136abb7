/* madvise's populating advice, MADV_POPULATE_READ and MADV_POPULATE_WRITE,
 * as Linux's mm selftest for it checks them: pages brought in (pagemap)
 * without being touched, a write population making private copies, the
 * protection checked, holes and pages past a file's end refused. And
 * MADV_FREE: private anonymous memory given up lazily (smaps' LazyFree),
 * each page keeping its bytes or reading as zeros, a page written again
 * keeping what was written; other memory refused.
 *
 *   madvise [dir]    (dir: where to make a file to map; /tmp by default)
 *
 * Prints "madvise: ok" and exits 0. Runs unmodified on Linux, where as
 * PID 1 (tests/linux/run-linux.sh) it mounts /proc itself. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>

#include "check.h"

#define P 4096L
#define PRESENT (1ULL << 63)
#define FILE_OR_SHARED (1ULL << 61)
#define POPULATE_READ 22
#define POPULATE_WRITE 23

static uint64_t pagemap(char *a)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	CHECK(fd >= 0);
	uint64_t w;
	CHECK(pread(fd, &w, 8, (off_t)((uintptr_t)a / P * 8)) == 8);
	close(fd);
	return w;
}

static int all_present(char *a, int n)
{
	for (int i = 0; i < n; i++)
		if (!(pagemap(a + i * P) & PRESENT))
			return 0;
	return 1;
}

static char *anon(int n, int prot)
{
	char *m = mmap(0, n * P, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	return m;
}

/* The protection decides which population is allowed. */
static void protection(void)
{
	char *m = anon(4, PROT_READ);
	CHECK(madvise(m, 4 * P, POPULATE_READ) == 0);
	CHECK(madvise(m, 4 * P, POPULATE_WRITE) < 0 && errno == EINVAL);
	CHECK(munmap(m, 4 * P) == 0);

	m = anon(4, PROT_WRITE);
	CHECK(madvise(m, 4 * P, POPULATE_READ) < 0 && errno == EINVAL);
	CHECK(madvise(m, 4 * P, POPULATE_WRITE) == 0);
	CHECK(all_present(m, 4));
	CHECK(munmap(m, 4 * P) == 0);

	m = anon(4, PROT_NONE);
	CHECK(madvise(m, 4 * P, POPULATE_READ) < 0 && errno == EINVAL);
	CHECK(madvise(m, 4 * P, POPULATE_WRITE) < 0 && errno == EINVAL);
	CHECK(munmap(m, 4 * P) == 0);

	/* Not page aligned, unknown advice. */
	m = anon(1, PROT_READ | PROT_WRITE);
	CHECK(madvise(m + 1, P, POPULATE_READ) < 0 && errno == EINVAL);
	CHECK(madvise(m, P, 99) < 0 && errno == EINVAL);
	CHECK(madvise(m, 0, POPULATE_WRITE) == 0);
	CHECK(munmap(m, P) == 0);
}

/* A hole: ENOMEM, and what is mapped on either side is populated. */
static void holes(void)
{
	char *m = anon(8, PROT_READ | PROT_WRITE);
	CHECK(munmap(m + 4 * P, P) == 0);
	CHECK(madvise(m, 8 * P, POPULATE_WRITE) < 0 && errno == ENOMEM);
	CHECK(all_present(m, 4) && all_present(m + 5 * P, 3));
	CHECK(madvise(m + 5 * P, 3 * P, POPULATE_READ) == 0);
	CHECK(munmap(m, 8 * P) == 0);
}

/* Anonymous memory: present afterwards, reading as zeros; a read
 * population of written memory keeps it. */
static void anonymous(void)
{
	char *m = anon(16, PROT_READ | PROT_WRITE);
	CHECK(!all_present(m, 1));
	CHECK(madvise(m, 16 * P, POPULATE_READ) == 0);
	for (int i = 0; i < 16; i++)
		CHECK(m[i * P] == 0);
	CHECK(munmap(m, 16 * P) == 0);

	m = anon(16, PROT_READ | PROT_WRITE);
	CHECK(madvise(m, 16 * P, POPULATE_WRITE) == 0);
	CHECK(all_present(m, 16));
	for (int i = 0; i < 16; i++)
		m[i * P] = (char)i;
	CHECK(madvise(m, 16 * P, POPULATE_READ) == 0 && madvise(m, 16 * P, POPULATE_WRITE) == 0);
	for (int i = 0; i < 16; i++)
		CHECK(m[i * P] == (char)i);
	CHECK(munmap(m, 16 * P) == 0);
}

/* A file: a private write population copies the pages (the file keeps
 * its bytes, the pages stop being the file's); a shared one fills the
 * file's pages; past the end of the file, EFAULT. */
static void file(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/madvise.%d", dir, getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	char page[P];
	memset(page, 'f', P);
	for (int i = 0; i < 4; i++)
		CHECK(write(fd, page, P) == P);

	char *m = mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(m != MAP_FAILED);
	CHECK(madvise(m, 4 * P, POPULATE_READ) == 0);
	CHECK(all_present(m, 4) && (pagemap(m) & FILE_OR_SHARED));
	CHECK(madvise(m, 4 * P, POPULATE_WRITE) == 0);
	CHECK(all_present(m, 4) && !(pagemap(m) & FILE_OR_SHARED));
	m[0] = 'p';
	char c;
	CHECK(pread(fd, &c, 1, 0) == 1 && c == 'f');
	CHECK(munmap(m, 4 * P) == 0);

	m = mmap(0, 8 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED);
	CHECK(madvise(m, 4 * P, POPULATE_WRITE) == 0);
	CHECK(all_present(m, 4) && (pagemap(m) & FILE_OR_SHARED));
	CHECK(m[P] == 'f');
	CHECK(madvise(m, 8 * P, POPULATE_READ) < 0 && errno == EFAULT);
	CHECK(madvise(m + 4 * P, 4 * P, POPULATE_WRITE) < 0 && errno == EFAULT);
	CHECK(munmap(m, 8 * P) == 0);

	/* A file opened read-only, shared: no write population. */
	int ro = open(path, O_RDONLY);
	CHECK(ro >= 0);
	m = mmap(0, 4 * P, PROT_READ, MAP_SHARED, ro, 0);
	CHECK(m != MAP_FAILED);
	CHECK(madvise(m, 4 * P, POPULATE_READ) == 0);
	CHECK(madvise(m, 4 * P, POPULATE_WRITE) < 0 && errno == EINVAL);
	CHECK(munmap(m, 4 * P) == 0);
	CHECK(close(ro) == 0 && close(fd) == 0 && unlink(path) == 0);
}

/* The LazyFree figure of the smaps record holding `a`, in kB. */
static long lazy_free_kb(char *a)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	CHECK(f != NULL);
	char line[512];
	int in = 0;
	long kb = -1;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3)
			in = s <= (uintptr_t)a && (uintptr_t)a < e;
		else if (in && sscanf(line, "LazyFree: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	CHECK(kb >= 0);
	return kb;
}

static void lazy_free(const char *dir)
{
	int n = 64;
	char *m = anon(n, PROT_READ | PROT_WRITE);
	for (int i = 0; i < n; i++)
		memset(m + i * P, 'a' + i % 26, P);
	CHECK(lazy_free_kb(m) == 0);
	CHECK(madvise(m, n * P, MADV_FREE) == 0);
	/* Linux counts them as its per-CPU batches drain: most of them. */
	long kb = lazy_free_kb(m);
	CHECK(kb >= n * P / 1024 / 2 && kb <= n * P / 1024);
	/* Each page holds its bytes still, or zeros once taken. */
	for (int i = 0; i < n; i++) {
		char want = m[i * P] ? 'a' + i % 26 : 0;
		for (long j = 0; j < P; j += 512)
			CHECK(m[i * P + j] == want);
	}
	/* Written again: kept. */
	for (int i = 0; i < n; i++)
		m[i * P + 7] = 'w';
	for (int i = 0; i < n; i++)
		CHECK(m[i * P + 7] == 'w');
	CHECK(madvise(m + P, P, MADV_FREE) == 0);
	CHECK(madvise(m + 1, P, MADV_FREE) < 0 && errno == EINVAL);

	/* Locked memory, shared memory and files: EINVAL. */
	CHECK(mlock(m, P) == 0);
	CHECK(madvise(m, 2 * P, MADV_FREE) < 0 && errno == EINVAL);
	CHECK(munmap(m, n * P) == 0);
	char *s = mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(s != MAP_FAILED);
	CHECK(madvise(s, P, MADV_FREE) < 0 && errno == EINVAL);
	CHECK(munmap(s, P) == 0);
	char path[256];
	snprintf(path, sizeof path, "%s/madvise.free.%d", dir, getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, P) == 0);
	char *f = mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(f != MAP_FAILED);
	f[0] = 1;
	CHECK(madvise(f, P, MADV_FREE) < 0 && errno == EINVAL);
	CHECK(munmap(f, P) == 0 && close(fd) == 0 && unlink(path) == 0);
	/* A hole: ENOMEM. */
	m = anon(3, PROT_READ | PROT_WRITE);
	CHECK(munmap(m + P, P) == 0);
	CHECK(madvise(m, 3 * P, MADV_FREE) < 0 && errno == ENOMEM);
	CHECK(munmap(m, 3 * P) == 0);
}

int main(int argc, char **argv)
{
	/* As Linux's /init (tests/linux/run-linux.sh): /tmp and /proc of its own. */
	if (getpid() == 1 && !on_bsdvm()) {
		mkdir("/tmp", 01777);
		mkdir("/proc", 0555);
		CHECK(mount("proc", "/proc", "proc", 0, NULL) == 0);
	}
	protection();
	holes();
	anonymous();
	file(argc > 1 ? argv[1] : "/tmp");
	lazy_free(argc > 1 ? argv[1] : "/tmp");
	printf("madvise: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
