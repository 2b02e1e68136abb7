/* The VM system calls past mmap: madvise (DONTNEED gives zeros again,
 * WILLNEED, bad advice), mincore, mlock / munlock / mlockall / munlockall
 * (locked pages are resident; unmapping a locked range works), msync, a
 * write after mprotect(PROT_READ) killing with SIGSEGV, and bad pointers to
 * write and writev, one straddling into an unmapped page. Prints "vmcalls:
 * ok" and exits 0 when every check holds. Passes unmodified on Linux. */
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

#define P 4096

static int resident(char *m, int pages, int expect)
{
	unsigned char v[64];
	CHECK(pages <= 64);
	CHECK(mincore(m, pages * P, v) == 0);
	for (int i = 0; i < pages; i++)
		if ((v[i] & 1) != expect)
			return 0;
	return 1;
}

int main(void)
{
	char *m = mmap(0, 16 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);

	/* mincore: untouched pages are not resident, touched ones are. */
	CHECK(resident(m, 16, 0));
	for (int i = 0; i < 8; i++)
		m[i * P] = 1 + i;
	CHECK(resident(m, 8, 1));
	CHECK(resident(m + 8 * P, 8, 0));
	unsigned char v[16];
	CHECK(mincore(m + 1, P, v) == -1 && errno == EINVAL);

	/* madvise: DONTNEED drops the pages, which read as zeros again. */
	CHECK(madvise(m, 4 * P, MADV_DONTNEED) == 0);
	CHECK(resident(m, 4, 0));
	for (int i = 0; i < 4; i++)
		CHECK(m[i * P] == 0);
	CHECK(m[4 * P] == 5);
	CHECK(madvise(m, 16 * P, MADV_WILLNEED) == 0);
	CHECK(madvise(m, P, 12345) == -1 && errno == EINVAL);
	CHECK(madvise(m + 1, P, MADV_NORMAL) == -1 && errno == EINVAL);

	/* Past a fork, the child's DONTNEED gives it zeros, not the parent's
	 * data; the parent keeps its own. */
	m[5 * P] = 55;
	pid_t c = fork();
	if (c == 0) {
		if (madvise(m + 5 * P, P, MADV_DONTNEED) != 0 || m[5 * P] != 0)
			_exit(1);
		_exit(0);
	}
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(m[5 * P] == 55);

	/* mlock: every page resident; munlock; errors. */
	CHECK(mlock(m + 8 * P, 8 * P) == 0);
	CHECK(resident(m + 8 * P, 8, 1));
	CHECK(m[9 * P] == 0);
	CHECK(munlock(m + 8 * P, 8 * P) == 0);
	CHECK(mlock(m, 4 * P) == 0);
	CHECK(munmap(m, 2 * P) == 0); /* unmapping a locked range */
	CHECK(munlock(m + 2 * P, 2 * P) == 0);

	/* A locked range across a fork: the child sees the data, the parent's
	 * writes after the fork land in its own (still locked) pages. */
	char *locked = mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(locked != MAP_FAILED);
	memset(locked, 'a', 4 * P);
	CHECK(mlock(locked, 4 * P) == 0);
	c = fork();
	if (c == 0) {
		struct timespec t = { 0, 20 * 1000 * 1000 };
		nanosleep(&t, NULL);
		_exit(locked[0] == 'a' && locked[3 * P] == 'a' ? 0 : 1);
	}
	memset(locked, 'b', 4 * P);
	CHECK(resident(locked, 4, 1));
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(locked[P] == 'b');
	CHECK(munmap(locked, 4 * P) == 0);

	/* Unmapped ranges: ENOMEM. */
	char *hole = mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(hole != MAP_FAILED && munmap(hole, 2 * P) == 0);
	CHECK(mlock(hole, P) == -1 && errno == ENOMEM);
	CHECK(mincore(hole, P, v) == -1 && errno == ENOMEM);
	CHECK(madvise(hole, P, MADV_DONTNEED) == -1 && errno == ENOMEM);
	CHECK(msync(hole, P, MS_SYNC) == -1 && errno == ENOMEM);

	/* mlockall / munlockall: later mappings are locked too. */
	CHECK(mlockall(MCL_CURRENT | MCL_FUTURE) == 0);
	char *later = mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(later != MAP_FAILED);
	CHECK(resident(later, 4, 1));
	CHECK(munlockall() == 0);
	CHECK(mlockall(0) == -1 && errno == EINVAL);
	CHECK(munmap(later, 4 * P) == 0);

	/* msync on anonymous memory; its flag errors. */
	CHECK(msync(m + 8 * P, P, MS_SYNC) == 0);
	CHECK(msync(m + 8 * P, P, MS_ASYNC | MS_SYNC) == -1 && errno == EINVAL);
	CHECK(msync(m + 8 * P + 1, P, MS_SYNC) == -1 && errno == EINVAL);

	/* Bad pointers to write and writev: EFAULT, never a crash. A buffer
	 * straddling into an unmapped page fails whole on a terminal-like
	 * console (Linux's pipes and files take the mapped part). Run with
	 * stderr on a terminal or a pipe: /dev/null never reads the buffer. */
	char *two = mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(two != MAP_FAILED && munmap(two + P, P) == 0);
	memset(two, '.', P);
	CHECK(syscall(SYS_write, 2, (void *)8, 4) == -1 && errno == EFAULT);
	ssize_t r = write(2, two + P - 8, 16);
	CHECK((r == -1 && errno == EFAULT) || (!on_bsdvm() && r == 8));
	struct iovec iov[2] = { { two + P - 8, 16 }, { two, 1 } };
	r = writev(2, iov, 2);
	CHECK((r == -1 && errno == EFAULT) || (!on_bsdvm() && r == 8));
	CHECK(syscall(SYS_writev, 2, (struct iovec *)8, 1) == -1 && errno == EFAULT);
	CHECK(write(99, two, 1) == -1 && errno == EBADF);

	/* mprotect(PROT_READ), then a write: SIGSEGV for the writer only. */
	CHECK(mprotect(m + 8 * P, P, PROT_READ) == 0);
	c = fork();
	if (c == 0) {
		m[8 * P] = 1;
		_exit(0);
	}
	CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	CHECK(m[8 * P] == 0);
	printf("vmcalls: ok\n");
	return 0;
}
