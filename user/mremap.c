/* mremap as Linux does it: growing in place when the pages after are
 * free, moving when not (MREMAP_MAYMOVE) or where told (MREMAP_FIXED,
 * replacing what was there), shrinking, MREMAP_DONTUNMAP, a second
 * mapping of shared memory (old length 0), locked ranges staying locked,
 * copy-on-write memory after fork, a file mapping moved, a realloc-style
 * run of small growths, a 64 MiB populated range moved whole, and the
 * errors. Prints "mremap: ok" and exits 0 when every check holds. Passes
 * unmodified on Linux (`mremap [dir]`: the file test uses dir, /tmp by
 * default; as PID 1, Linux's /init, it powers the machine off when done). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "check.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

#define P 4096L
#define FAILED ((char *)-1)

/* The raw call: every argument passed as given. */
static char *remap(void *old, long old_len, long new_len, long flags, void *new_addr)
{
	return (char *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}

static char *map(void *at, long len, int flags)
{
	char *m = mmap(at, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	return m;
}

/* Nothing is mapped in [m, m + len): mincore says ENOMEM for each page. */
static int unmapped(char *m, long len)
{
	unsigned char v;
	for (long off = 0; off < len; off += P)
		if (mincore(m + off, P, &v) == 0 || errno != ENOMEM)
			return 0;
	return 1;
}

static int resident(char *m, long len)
{
	static unsigned char v[16384];
	CHECK(len / P <= (long)sizeof(v));
	CHECK(mincore(m, len, v) == 0);
	for (long i = 0; i < len / P; i++)
		if (!(v[i] & 1))
			return 0;
	return 1;
}

static void fill(char *m, long pages, int tag)
{
	for (long i = 0; i < pages; i++) {
		m[i * P] = (char)(tag + i);
		m[i * P + P - 1] = (char)(tag + i + 1);
	}
}

static int holds(char *m, long pages, int tag)
{
	for (long i = 0; i < pages; i++)
		if (m[i * P] != (char)(tag + i) || m[i * P + P - 1] != (char)(tag + i + 1))
			return 0;
	return 1;
}

static int zeros(char *m, long pages)
{
	for (long i = 0; i < pages; i++)
		if (m[i * P] != 0 || m[i * P + P / 2] != 0)
			return 0;
	return 1;
}

/* Address space of our own to move to with MREMAP_FIXED (which replaces
 * whatever is there): inaccessible until something moves in. */
static char *spare(long len)
{
	char *m = mmap(0, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	CHECK(m != MAP_FAILED);
	return m;
}

static void in_place_and_moves(void)
{
	/* Four pages, four free pages after them, then one mapped page. */
	char *m = map(0, 16 * P, MAP_PRIVATE);
	CHECK(munmap(m + 4 * P, 4 * P) == 0 && munmap(m + 9 * P, 7 * P) == 0);
	char *block = m + 8 * P;

	/* Growing into free pages keeps the address. */
	fill(m, 4, 1);
	CHECK(remap(m, 4 * P, 8 * P, 0, 0) == m);
	CHECK(holds(m, 4, 1));
	CHECK(zeros(m + 4 * P, 4));
	fill(m + 4 * P, 4, 40);

	/* Shrinking gives up the tail, at the same address. */
	CHECK(remap(m, 8 * P, 3 * P, 0, 0) == m);
	CHECK(unmapped(m + 3 * P, 5 * P));
	CHECK(holds(m, 3, 1));
	/* Growing again shows nothing of what the tail held. */
	CHECK(remap(m, 3 * P, 8 * P, 0, 0) == m);
	CHECK(zeros(m + 3 * P, 5));

	/* Blocked: ENOMEM without MREMAP_MAYMOVE; with it, a move. */
	CHECK(remap(m, 8 * P, 9 * P, 0, 0) == FAILED && errno == ENOMEM);
	char *n = remap(m, 8 * P, 16 * P, MREMAP_MAYMOVE, 0);
	CHECK(n != FAILED && n != m);
	CHECK(holds(n, 3, 1));
	CHECK(zeros(n + 3 * P, 13));
	CHECK(unmapped(m, 8 * P));
	CHECK(munmap(block, P) == 0);

	/* MREMAP_FIXED replaces what the new range covers, no more. */
	char *dst = map(0, 32 * P, MAP_PRIVATE);
	fill(dst, 32, 90);
	CHECK(remap(n, 16 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_FIXED, dst + 4 * P) == dst + 4 * P);
	CHECK(unmapped(n, 16 * P));
	CHECK(holds(dst, 4, 90));
	CHECK(holds(dst + 4 * P, 3, 1));
	CHECK(zeros(dst + 7 * P, 5));
	CHECK(holds(dst + 12 * P, 20, 90 + 12));
	CHECK(munmap(dst, 32 * P) == 0);

	/* Protection goes with the range. */
	char *ro = map(0, 2 * P, MAP_PRIVATE);
	ro[0] = 7;
	CHECK(mprotect(ro, 2 * P, PROT_READ) == 0);
	char *to = spare(4 * P);
	char *ro2 = remap(ro, 2 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	CHECK(ro2 == to && ro2[0] == 7 && ro2[3 * P] == 0);
	CHECK(mprotect(ro2, 4 * P, PROT_READ | PROT_WRITE) == 0);
	ro2[3 * P] = 1;
	CHECK(munmap(ro2, 4 * P) == 0);
}

static void dont_unmap(void)
{
	char *m = map(0, 4 * P, MAP_PRIVATE);
	fill(m, 4, 20);
	CHECK(remap(m, 4 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0) == FAILED && errno == EINVAL);
	CHECK(remap(m, 4 * P, 4 * P, MREMAP_DONTUNMAP, 0) == FAILED && errno == EINVAL);
	char *n = remap(m, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0);
	CHECK(n != FAILED && n != m);
	CHECK(holds(n, 4, 20));
	/* The old range is still mapped, and private anonymous memory there
	 * starts over as zeros. */
	CHECK(zeros(m, 4));
	m[0] = 1;
	CHECK(n[0] == 20);
	CHECK(munmap(m, 4 * P) == 0 && munmap(n, 4 * P) == 0);
}

static void shared(void)
{
	/* Old length 0: a second mapping of the same shared memory. */
	char *s = map(0, 2 * P, MAP_SHARED);
	char *t = remap(s, 0, 2 * P, MREMAP_MAYMOVE, 0);
	CHECK(t != FAILED && t != s);
	s[P + 5] = 9;
	CHECK(t[P + 5] == 9);
	t[0] = 4;
	CHECK(s[0] == 4);
	/* Private memory cannot be mapped again so. */
	char *p = map(0, P, MAP_PRIVATE);
	CHECK(remap(p, 0, P, MREMAP_MAYMOVE, 0) == FAILED && errno == EINVAL);

	/* A shared range moved stays shared with a child. */
	char *to = spare(2 * P);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char *u = remap(s, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if (u == FAILED || u[0] != 4)
			_exit(1);
		u[1] = 55;
		_exit(0);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(s[1] == 55 && t[1] == 55);
	CHECK(munmap(s, 2 * P) == 0 && munmap(t, 2 * P) == 0 && munmap(p, P) == 0 && munmap(to, 2 * P) == 0);
}

static void after_fork(void)
{
	/* Copy-on-write memory moved and grown in the child: the parent's
	 * copy stays as it was. */
	char *m = map(0, 8 * P, MAP_PRIVATE);
	fill(m, 8, 60);
	char *to = spare(12 * P);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char *c = remap(m, 8 * P, 12 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if (c == FAILED || !holds(c, 8, 60) || !zeros(c + 8 * P, 4))
			_exit(1);
		fill(c, 12, 1);
		_exit(holds(c, 12, 1) ? 0 : 2);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(holds(m, 8, 60));
	/* And the parent's own move keeps its copy. */
	char *n = remap(m, 8 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	CHECK(n == to && holds(n, 8, 60));
	CHECK(munmap(n, 8 * P) == 0);
}

static void locked(void)
{
	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_MEMLOCK, &rl) == 0);
	if (rl.rlim_cur < 64 * P)
		return;
	char *m = map(0, 4 * P, MAP_PRIVATE);
	fill(m, 4, 5);
	CHECK(mlock(m, 4 * P) == 0);
	char *to = spare(12 * P);
	char *n = remap(m, 4 * P, 12 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	CHECK(n == to);
	/* The new memory of a locked range is locked too: resident at once. */
	CHECK(resident(n, 12 * P));
	CHECK(holds(n, 4, 5) && zeros(n + 4 * P, 8));
	CHECK(munlock(n, 12 * P) == 0 && munmap(n, 12 * P) == 0);

	/* Past RLIMIT_MEMLOCK: EAGAIN. As nobody: on Linux root is exempt. */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		if (getuid() == 0)
			syscall(SYS_setuid, 65534);
		struct rlimit small = {16 * P, rl.rlim_max};
		char *l = map(0, 4 * P, MAP_PRIVATE);
		if (setrlimit(RLIMIT_MEMLOCK, &small) != 0 || mlock(l, 4 * P) != 0)
			_exit(1);
		char *g = remap(l, 4 * P, 32 * P, MREMAP_MAYMOVE, 0);
		_exit(g == FAILED && errno == EAGAIN ? 0 : 2);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void file(const char *dir)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/mremap.%d", dir, (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	static char buf[8 * P];
	for (long i = 0; i < 8 * P; i++)
		buf[i] = (char)(i / P + 3);
	CHECK(write(fd, buf, sizeof(buf)) == sizeof(buf));
	char *f = mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(f != MAP_FAILED && f[0] == 3);
	char *to = spare(8 * P);
	char *g = remap(f, 4 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	CHECK(g == to);
	/* The grown part is the file's next pages. */
	for (int i = 0; i < 8; i++)
		CHECK(g[i * P] == i + 3);
	g[6 * P] = 'x';
	char c;
	CHECK(pread(fd, &c, 1, 6 * P) == 1 && c == 'x');
	/* A private file mapping, written and grown: the file's next pages
	 * under it, the writes its own. */
	char *q = mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	CHECK(q != MAP_FAILED);
	q[0] = 'p';
	to = spare(4 * P);
	char *r = remap(q, 2 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	CHECK(r == to && r[0] == 'p' && r[P] == 4 && r[3 * P] == 6);
	CHECK(pread(fd, &c, 1, 0) == 1 && c == 3);
	CHECK(munmap(g, 8 * P) == 0 && munmap(r, 4 * P) == 0);
	CHECK(close(fd) == 0 && unlink(path) == 0);
}

static void realloc_like(void)
{
	/* Grown a page at a time with leave to move, as a C library's
	 * realloc of a large block. */
	long pages = 1;
	char *m = map(0, P, MAP_PRIVATE);
	fill(m, 1, 0);
	for (; pages < 200; pages++) {
		/* Every other time, something in the way. */
		char *blocker = mmap(m + pages * P, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (pages % 2 && blocker == MAP_FAILED)
			CHECK(errno == EEXIST);
		if (pages % 2 == 0 && blocker != MAP_FAILED)
			CHECK(munmap(blocker, P) == 0);
		m = remap(m, pages * P, (pages + 1) * P, MREMAP_MAYMOVE, 0);
		CHECK(m != FAILED);
		CHECK(holds(m, pages, 0) && zeros(m + pages * P, 1));
		fill(m + pages * P, 1, (int)pages);
		if (pages % 2 && blocker != MAP_FAILED)
			CHECK(munmap(blocker, P) == 0);
	}
	CHECK(holds(m, pages, 0));
	CHECK(munmap(m, pages * P) == 0);
}

static void big(void)
{
	/* 64 MiB, every page written, moved whole: every page resident at
	 * the new place, none copied into a fault. */
	long len = 64L << 20;
	char *m = map(0, len, MAP_PRIVATE);
	for (long off = 0; off < len; off += P)
		*(long *)(m + off) = off ^ 0x5a5a;
	char *to = spare(len);
	char *n = remap(m, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	CHECK(n == to);
	CHECK(resident(n, len));
	for (long off = 0; off < len; off += P)
		CHECK(*(long *)(n + off) == (off ^ 0x5a5a));
	CHECK(unmapped(m, 16 * P));
	CHECK(munmap(n, len) == 0);
}

static void errors(void)
{
	char *m = map(0, 4 * P, MAP_PRIVATE);
	CHECK(remap(m + 1, P, 2 * P, MREMAP_MAYMOVE, 0) == FAILED && errno == EINVAL);
	CHECK(remap(m, P, 0, MREMAP_MAYMOVE, 0) == FAILED && errno == EINVAL);
	CHECK(remap(m, P, 2 * P, 8, 0) == FAILED && errno == EINVAL);
	char *to = spare(8 * P);
	CHECK(remap(m, P, 2 * P, MREMAP_FIXED, to) == FAILED && errno == EINVAL);
	/* The new range overlapping the old, or unaligned. */
	CHECK(remap(m, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, m + 2 * P) == FAILED && errno == EINVAL);
	CHECK(remap(m, 4 * P, 4 * P, MREMAP_MAYMOVE | MREMAP_FIXED, to + 1) == FAILED && errno == EINVAL);
	/* Nothing mapped, or the old range past its mapping. */
	CHECK(munmap(m + 3 * P, P) == 0);
	CHECK(remap(m + 3 * P, P, 2 * P, MREMAP_MAYMOVE, 0) == FAILED && errno == EFAULT);
	CHECK(remap(m, 4 * P, 8 * P, MREMAP_MAYMOVE, 0) == FAILED && errno == EFAULT);
	/* A length no address space holds; lengths whose ends wrap. */
	CHECK(remap(m, P, 1L << 50, MREMAP_MAYMOVE, 0) == FAILED && errno == ENOMEM);
	CHECK(remap(m, -2 * P, -P, MREMAP_MAYMOVE, 0) == FAILED && errno == EFAULT);
	CHECK(remap(m, -P, P, 0, 0) == FAILED && errno == EINVAL);
	CHECK(munmap(m, 3 * P) == 0 && munmap(to, 8 * P) == 0);
}

int main(int argc, char **argv)
{
	/* As Linux's /init (tests/linux/run-linux.sh): a /tmp of its own. */
	if (getpid() == 1)
		mkdir("/tmp", 01777);
	in_place_and_moves();
	dont_unmap();
	shared();
	after_fork();
	locked();
	file(argc > 1 ? argv[1] : "/tmp");
	realloc_like();
	big();
	errors();
	printf("mremap: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
