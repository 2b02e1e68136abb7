#define _GNU_SOURCE
/* Resource limits as Linux has them: the defaults, getrlimit / setrlimit /
 * prlimit64 (a soft limit above the hard one is EINVAL), inheritance by
 * fork and across execve, and enforcement: RLIMIT_NOFILE (dup and open
 * past it EMFILE, dup2 to it EBADF), RLIMIT_AS (mmap and brk past it
 * fail), RLIMIT_STACK (the stack stops growing: SIGSEGV), RLIMIT_MEMLOCK
 * (mlock and mlockall past it ENOMEM, at 0 EPERM) and RLIMIT_NPROC (fork
 * past it EAGAIN). Linux exempts root from the last two, so they are
 * checked as user nobody (setuid does not exist here: everything is root,
 * and the limits hold for root). Last, kill(SIGKILL) of init (pid 1, or
 * the parent when that is init) is ignored.
 * usage: limits [initkill]. Prints "limits: ok" and exits 0 when every
 * check holds; passes on Linux too. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

#define P 4096UL
#define MIB (1UL << 20)

static void get(int r, struct rlimit *l)
{
	CHECK(getrlimit(r, l) == 0);
}

static void set(int r, unsigned long cur, unsigned long max)
{
	struct rlimit l = {cur, max};
	CHECK(setrlimit(r, &l) == 0);
}

static int wait_status(pid_t c)
{
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	return st;
}

static void defaults_and_setting(void)
{
	struct rlimit l;
	get(RLIMIT_NOFILE, &l);
	CHECK(l.rlim_cur == 1024 && l.rlim_max == 4096);
	get(RLIMIT_MEMLOCK, &l);
	CHECK(l.rlim_cur == 8 * MIB && l.rlim_max == 8 * MIB);
	get(RLIMIT_STACK, &l);
	CHECK(l.rlim_cur == 8 * MIB && l.rlim_max == RLIM_INFINITY);
	get(RLIMIT_AS, &l);
	CHECK(l.rlim_cur == RLIM_INFINITY && l.rlim_max == RLIM_INFINITY);
	get(RLIMIT_NPROC, &l);
	CHECK(l.rlim_cur > 0 && l.rlim_cur != RLIM_INFINITY);

	struct rlimit bad = {200, 100};
	CHECK(setrlimit(RLIMIT_NOFILE, &bad) == -1 && errno == EINVAL);
	CHECK(getrlimit(RLIM_NLIMITS, &l) == -1 && errno == EINVAL);
	set(RLIMIT_NOFILE, 100, 4096);
	get(RLIMIT_NOFILE, &l);
	CHECK(l.rlim_cur == 100 && l.rlim_max == 4096);
	set(RLIMIT_NOFILE, 4096, 4096); /* the soft limit up to the hard */
	set(RLIMIT_NOFILE, 1024, 8192); /* the hard one up: root may */
	struct rlimit old, new = {512, 8192};
	CHECK(prlimit(0, RLIMIT_NOFILE, &new, &old) == 0);
	CHECK(old.rlim_cur == 1024 && old.rlim_max == 8192);
	CHECK(prlimit(getpid(), RLIMIT_NOFILE, NULL, &old) == 0);
	CHECK(old.rlim_cur == 512 && old.rlim_max == 8192);
	set(RLIMIT_NOFILE, 1024, 4096);
}

static void nofile(void)
{
	set(RLIMIT_NOFILE, 16, 4096);
	int n = 0, fd;
	while ((fd = dup(0)) >= 0)
		n++;
	CHECK(errno == EMFILE);
	CHECK(n >= 10 && n <= 13);
	CHECK(open("/", O_RDONLY) == -1 && errno == EMFILE);
	CHECK(dup2(0, 16) == -1 && errno == EBADF);
	CHECK(dup2(0, 15) == 15);
	for (fd = 3; fd < 16; fd++)
		close(fd);
	CHECK((fd = dup(0)) == 3);
	close(fd);
	set(RLIMIT_NOFILE, 1024, 4096);
}

static void address_space(void)
{
	set(RLIMIT_AS, 64 * MIB, RLIM_INFINITY);
	int anon = MAP_PRIVATE | MAP_ANONYMOUS;
	CHECK(mmap(0, 128 * MIB, PROT_READ | PROT_WRITE, anon, -1, 0) == MAP_FAILED && errno == ENOMEM);
	CHECK(mmap(0, 128 * MIB, PROT_NONE, anon, -1, 0) == MAP_FAILED && errno == ENOMEM);
	char *m = mmap(0, MIB, PROT_READ | PROT_WRITE, anon, -1, 0);
	CHECK(m != MAP_FAILED);
	/* MAP_FIXED over what is mapped already counts only what it adds. */
	CHECK(mmap(m, MIB, PROT_READ, anon | MAP_FIXED, -1, 0) == m);
	CHECK(munmap(m, MIB) == 0);
	uintptr_t cur = syscall(SYS_brk, 0);
	CHECK(syscall(SYS_brk, cur + 128 * MIB) == (long)cur);
	CHECK(syscall(SYS_brk, cur + P) == (long)(cur + P));
	CHECK(syscall(SYS_brk, cur) == (long)cur);
	set(RLIMIT_AS, RLIM_INFINITY, RLIM_INFINITY);
	m = mmap(0, 128 * MIB, PROT_NONE, anon, -1, 0);
	CHECK(m != MAP_FAILED);
	CHECK(munmap(m, 128 * MIB) == 0);
}

/* Touches `kib` KiB of stack below here. */
static int deep(int kib)
{
	volatile char buf[1024];
	buf[0] = (char)kib;
	if (kib > 1)
		return deep(kib - 1) + buf[0];
	return buf[0];
}

static void stack(void)
{
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		set(RLIMIT_STACK, 512 * 1024, RLIM_INFINITY);
		deep(2048);
		_exit(0);
	}
	int st = wait_status(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		deep(2048); /* within the default 8 MiB */
		_exit(0);
	}
	st = wait_status(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* As nobody (on Linux root is exempt): RLIMIT_MEMLOCK and RLIMIT_NPROC. */
static void unprivileged(void)
{
	if (getuid() == 0)
		syscall(SYS_setuid, 65534);

	int anon = MAP_PRIVATE | MAP_ANONYMOUS;
	char *m = mmap(0, 32 * P, PROT_READ | PROT_WRITE, anon, -1, 0);
	CHECK(m != MAP_FAILED);
	set(RLIMIT_MEMLOCK, 16 * P, 8 * MIB);
	CHECK(mlock(m, 32 * P) == -1 && errno == ENOMEM);
	CHECK(mlock(m, 8 * P) == 0);
	CHECK(mlock(m, 16 * P) == 0); /* the first 8 counted once */
	CHECK(mlock(m + 16 * P, P) == -1 && errno == ENOMEM);
	CHECK(munlock(m, 16 * P) == 0);
	CHECK(mlockall(MCL_CURRENT) == -1 && errno == ENOMEM);
	set(RLIMIT_MEMLOCK, 0, 8 * MIB);
	CHECK(mlock(m, P) == -1 && errno == EPERM);
	CHECK(munmap(m, 32 * P) == 0);

	set(RLIMIT_NPROC, 4, 4);
	pid_t kids[8];
	int made = 0;
	for (; made < 8; made++) {
		pid_t c = fork();
		if (c < 0)
			break;
		if (c == 0) {
			for (;;) {
				struct timespec t = {1, 0};
				nanosleep(&t, NULL);
			}
		}
		kids[made] = c;
	}
	CHECK(made < 8 && errno == EAGAIN);
	CHECK(made >= 1 && made <= 3);
	for (int i = 0; i < made; i++) {
		CHECK(kill(kids[i], SIGKILL) == 0);
		int st = wait_status(kids[i]);
		CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	}
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0)
		_exit(0);
	CHECK(WIFEXITED(wait_status(c)));
}

/* The limits go to a child and across execve. */
static void inherited(const char *self)
{
	set(RLIMIT_NOFILE, 77, 3000);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		struct rlimit l;
		get(RLIMIT_NOFILE, &l);
		if (l.rlim_cur != 77 || l.rlim_max != 3000)
			_exit(2);
		char *argv[] = {(char *)self, "check-exec", NULL};
		execve(self, argv, NULL);
		_exit(3);
	}
	int st = wait_status(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	set(RLIMIT_NOFILE, 1024, 3000);
}

static void kill_init(void)
{
	pid_t init = getpid() == 1 ? 1 : getppid();
	CHECK(kill(init, SIGKILL) == 0);
	struct timespec t = {0, 50 * 1000 * 1000};
	nanosleep(&t, NULL);
	CHECK(kill(init, 0) == 0);
	CHECK(getpid() == 1 || getppid() == init);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "check-exec") == 0) {
		struct rlimit l;
		get(RLIMIT_NOFILE, &l);
		return l.rlim_cur == 77 && l.rlim_max == 3000 ? 0 : 4;
	}
	if (argc > 1 && strcmp(argv[1], "initkill") == 0) {
		kill_init();
		printf("limits: ok\n");
		return 0;
	}
	defaults_and_setting();
	nofile();
	address_space();
	stack();
	inherited(argv[0]);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		unprivileged();
		_exit(0);
	}
	int st = wait_status(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	if (getpid() == 1)
		kill_init();
	printf("limits: ok\n");
	return 0;
}
