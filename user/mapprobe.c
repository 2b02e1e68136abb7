/* Arguments to the memory calls that once hung or panicked the kernel, with
 * Linux's answers: MAP_FIXED_NOREPLACE over a terabyte (checked against the
 * map's entries, not page by page), the map-entry limit (vm.max_map_count:
 * mmap, mprotect and munmap splits past it are ENOMEM), file offsets whose
 * end passes the largest file offset (EOVERFLOW), a large valid offset read
 * past the end (SIGBUS) and msync'd, the last page below the user limit
 * (ENOMEM), wrapping and huge lengths to munmap, mprotect, madvise, mlock,
 * msync and mincore, and bytes written through a shared mapping past the
 * end of a file, which read as zeros once ftruncate grows the file over
 * them. usage: mapprobe [dir] (a writable directory, /tmp by default).
 * Prints "mapprobe: ok" and exits 0 when every check holds; passes on
 * Linux too. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

#define P 4096UL
#define TIB (1UL << 40)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static long sys_mmap(uintptr_t addr, unsigned long len, int prot, int flags, int fd, unsigned long off)
{
	return syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/* The status of a child that runs `f(arg)` then exits 0. */
static int in_child(void (*f)(char *), char *arg)
{
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		f(arg);
		_exit(0);
	}
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	return st;
}

static void read_byte(char *p)
{
	*(volatile char *)p;
}

static void noreplace(void)
{
	/* 1 TiB with nothing there, then with one page mapped at its far end:
	 * both answered at once. */
	uintptr_t base = 0x100000000000UL;
	double t0 = now();
	long r = sys_mmap(base, TIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);
	CHECK(r == (long)base);
	CHECK(munmap((void *)base, TIB) == 0);
	CHECK(sys_mmap(base + TIB - P, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == (long)(base + TIB - P));
	r = sys_mmap(base, TIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);
	CHECK(r == -1 && errno == EEXIST);
	CHECK(munmap((void *)(base + TIB - P), P) == 0);
	double t = now() - t0;
	printf("mapprobe: MAP_FIXED_NOREPLACE over 1 TiB twice: %.3f s\n", t);
	CHECK(t < 5);
}

/* Maps one page at a time, alternating protections so that no two can be
 * one entry, until the entry limit refuses; then a split of a 3-page
 * mapping by mprotect and by munmap is refused too. Everything is unmapped
 * after. */
static void entry_limit(void)
{
	enum { MAX = 70000 };
	char **pages = malloc(MAX * sizeof *pages);
	CHECK(pages);
	char *three = mmap(0, 3 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(three != MAP_FAILED);
	int n = 0;
	double t0 = now();
	for (; n < MAX; n++) {
		int prot = n % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
		char *m = mmap(0, P, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED) {
			CHECK(errno == ENOMEM);
			break;
		}
		pages[n] = m;
	}
	double t = now() - t0;
	printf("mapprobe: %d one-page mappings before ENOMEM, %.3f s\n", n, t);
	CHECK(n > 60000 && n < MAX);
	CHECK(mprotect(three + P, P, PROT_READ) == -1 && errno == ENOMEM);
	CHECK(munmap(three + P, P) == -1 && errno == ENOMEM);
	three[P] = 1; /* still there, still writable */
	for (int i = 0; i < n; i++)
		CHECK(munmap(pages[i], P) == 0);
	CHECK(mprotect(three + P, P, PROT_READ) == 0);
	CHECK(munmap(three, 3 * P) == 0);
	free(pages);
}

static void offsets(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/mapprobe.%d", dir, getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	char buf[100];
	memset(buf, 'a', sizeof buf);
	CHECK(write(fd, buf, sizeof buf) == 100);

	/* The end of the range passes the largest file offset. */
	CHECK(sys_mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0xFFFFFFFFFFFFF000UL) == -1 && errno == EOVERFLOW);
	CHECK(sys_mmap(0, 2 * P, PROT_READ, MAP_PRIVATE, fd, 0xFFFFFFFFFFFFE000UL) == -1 && errno == EOVERFLOW);
	CHECK(sys_mmap(0, P, PROT_READ, MAP_PRIVATE, fd, 0x8000000000000000UL) == -1 && errno == EOVERFLOW);
	CHECK(sys_mmap(0, P, PROT_READ, MAP_PRIVATE, fd, 0x7FFFFFFFFFFFF000UL) == -1 && errno == EOVERFLOW);

	/* A large offset that fits: msync is fine, a read past the end of the
	 * file is SIGBUS. */
	unsigned long far = 1UL << 50;
	long r = sys_mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, far);
	CHECK(r != -1);
	CHECK(msync((void *)r, 2 * P, MS_SYNC) == 0);
	int st = in_child(read_byte, (char *)r + P);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS);
	CHECK(munmap((void *)r, 2 * P) == 0);
	r = sys_mmap(0, P, PROT_READ, MAP_PRIVATE, fd, far);
	CHECK(r != -1);
	st = in_child(read_byte, (char *)r);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS);
	CHECK(munmap((void *)r, P) == 0);

	/* Bytes written through a shared mapping past the end of the file
	 * (in its last page) are not the file's: when ftruncate grows the
	 * file over them, they read as zeros. */
	char *m = mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED);
	CHECK(m[0] == 'a' && m[99] == 'a' && m[100] == 0);
	memset(m + 100, 'x', P - 100);
	CHECK(ftruncate(fd, P) == 0);
	/* Linux's tmpfs and ramfs (where Linux runs this, from its initramfs)
	 * have no blocks behind the page: the page is the file, and shows the
	 * bytes. A filesystem on a disk (ext2 here) shows zeros. */
	struct statfs sf;
	int memfs = fstatfs(fd, &sf) == 0 && (sf.f_type == 0x01021994 || sf.f_type == 0x858458f6);
	int stale = 0;
	for (unsigned long i = 100; i < P; i++)
		stale += m[i] != 0;
	CHECK(memfs || stale == 0);
	char back[P];
	CHECK(pread(fd, back, P, 0) == (ssize_t)P);
	for (unsigned long i = 100; i < P; i++)
		stale += back[i] != 0;
	CHECK(memfs || stale == 0);
	CHECK(m[0] == 'a' && m[99] == 'a');
	CHECK(munmap(m, P) == 0);
	CHECK(close(fd) == 0);
	CHECK(unlink(path) == 0);
}

static void limits_of_the_address_space(void)
{
	const uintptr_t top = 0x800000000000UL - P; /* Linux's TASK_SIZE */
	int anon = MAP_PRIVATE | MAP_ANONYMOUS;
	CHECK(sys_mmap(top, P, PROT_READ, anon | MAP_FIXED, -1, 0) == -1 && errno == ENOMEM);
	CHECK(sys_mmap(top, P, PROT_READ, anon | MAP_FIXED_NOREPLACE, -1, 0) == -1 && errno == ENOMEM);
	CHECK(sys_mmap(top - P, 2 * P, PROT_READ, anon | MAP_FIXED, -1, 0) == -1 && errno == ENOMEM);
	CHECK(sys_mmap(0x10000000, 1UL << 47, PROT_READ, anon | MAP_FIXED, -1, 0) == -1 && errno == ENOMEM);
	CHECK(sys_mmap(0x10000000, -P, PROT_READ, anon | MAP_FIXED, -1, 0) == -1 && errno == ENOMEM);
	CHECK(sys_mmap(0, -P, PROT_READ, anon, -1, 0) == -1 && errno == ENOMEM);
	CHECK(sys_mmap(0, -1UL, PROT_READ, anon, -1, 0) == -1 && errno == ENOMEM);
	CHECK(munmap((void *)top, P) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_mprotect, top, P, PROT_READ) == -1 && errno == ENOMEM);
	unsigned char v[4];
	CHECK(mincore((void *)top, P, v) == -1 && errno == ENOMEM);

	/* Wrapping and huge lengths on a mapped page. */
	char *m = mmap(0, 2 * P, PROT_READ | PROT_WRITE, anon, -1, 0);
	CHECK(m != MAP_FAILED);
	m[0] = 1;
	CHECK(syscall(SYS_munmap, m, -P) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_munmap, m, -1UL) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_mprotect, m, -P, PROT_READ) == -1 && errno == ENOMEM);
	CHECK(syscall(SYS_mprotect, m, -1UL, PROT_READ) == -1 && errno == ENOMEM);
	CHECK(syscall(SYS_madvise, m, -1UL, MADV_DONTNEED) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_madvise, m, -2 * P, MADV_DONTNEED) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_mlock, m, -2 * P) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_mlock, m, -1UL) == 0);
	CHECK(syscall(SYS_munlock, m, -2 * P) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_msync, m, -1UL, MS_SYNC) == 0);
	CHECK(syscall(SYS_msync, m, -2 * P, MS_SYNC) == -1 && errno == ENOMEM);
	CHECK(syscall(SYS_msync, m, 1UL << 62, MS_SYNC) == -1 && errno == ENOMEM);
	CHECK(syscall(SYS_mincore, m, -P, v) == -1 && errno == ENOMEM);
	CHECK(syscall(SYS_mincore, m, 1UL << 62, v) == -1 && errno == ENOMEM);
	CHECK(m[0] == 1);
	CHECK(munmap(m, 2 * P) == 0);
	/* (madvise over a huge length is not tried: Linux applies the advice
	 * to every mapping above before it reports the hole.) An unmapped
	 * range is ENOMEM. */
	CHECK(madvise(m, 2 * P, MADV_DONTNEED) == -1 && errno == ENOMEM);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	mkdir(dir, 0777);
	noreplace();
	limits_of_the_address_space();
	offsets(dir);
	entry_limit();
	printf("mapprobe: ok\n");
	return 0;
}
