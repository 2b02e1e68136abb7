/* The process, time and signal system calls: uname, clock_gettime,
 * gettimeofday, nanosleep, pause, sched_yield, getrlimit, kill (of a running,
 * a sleeping, a paused and an ignoring child), rt_sigaction, rt_sigprocmask, raise and
 * abort, execve (arguments and environment, and its errors). Prints "calls:
 * ok" and exits 0 when every check holds. Passes unmodified on Linux.
 *
 * The program re-executes itself for the execve checks, so run it by path
 * (argv[0] must name it). */
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

extern char **environ;

static uint64_t ns(clockid_t c)
{
	struct timespec t;
	CHECK(clock_gettime(c, &t) == 0);
	return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static int status_of(pid_t pid)
{
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	return st;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "exec-child") == 0) {
		/* Arguments and environment arrive as given. */
		CHECK(argc == 4 && strcmp(argv[2], "two words") == 0 && strcmp(argv[3], "") == 0);
		CHECK(getenv("CALLS_TEST") && strcmp(getenv("CALLS_TEST"), "yes") == 0);
		return 42;
	}

	struct utsname u;
	CHECK(uname(&u) == 0);
	CHECK(strcmp(u.machine, "x86_64") == 0 && strcmp(u.sysname, "Linux") == 0);

	/* Clocks: monotonic moves forward; the wall clock is past 2020. */
	uint64_t a = ns(CLOCK_MONOTONIC), b = ns(CLOCK_MONOTONIC);
	CHECK(b >= a);
	CHECK(ns(CLOCK_REALTIME) / 1000000000u > 1577836800u);
	struct timeval tv;
	CHECK(gettimeofday(&tv, NULL) == 0 && tv.tv_sec > 1577836800 && tv.tv_usec < 1000000);
	struct timespec res;
	CHECK(clock_getres(CLOCK_MONOTONIC, &res) == 0);
	CHECK(clock_gettime((clockid_t)99, &res) == -1 && errno == EINVAL);

	/* nanosleep sleeps at least as long as asked; bad values are EINVAL. */
	struct timespec req = { 0, 20 * 1000 * 1000 };
	a = ns(CLOCK_MONOTONIC);
	CHECK(nanosleep(&req, NULL) == 0);
	CHECK(ns(CLOCK_MONOTONIC) - a >= 20 * 1000 * 1000);
	struct timespec bad = { 0, 1000000000 };
	CHECK(nanosleep(&bad, NULL) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_nanosleep, (void *)8, NULL) == -1 && errno == EFAULT);
	CHECK(sched_yield() == 0);

	struct rlimit rl;
	CHECK(getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur >= 1 << 20);

	/* kill: a running child, a sleeping child, an ignoring one. */
	pid_t c = fork();
	if (c == 0)
		for (;;)
			;
	CHECK(kill(c, SIGTERM) == 0);
	int st = status_of(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);

	c = fork();
	if (c == 0) {
		struct timespec long_sleep = { 100, 0 };
		nanosleep(&long_sleep, NULL);
		_exit(3);
	}
	req.tv_nsec = 10 * 1000 * 1000;
	nanosleep(&req, NULL);
	a = ns(CLOCK_MONOTONIC);
	CHECK(kill(c, SIGKILL) == 0);
	st = status_of(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	CHECK(ns(CLOCK_MONOTONIC) - a < 5000000000u); /* the sleep ended early */

	/* pause: sleeps until a signal, which ends it. */
	c = fork();
	if (c == 0) {
		pause();
		_exit(4);
	}
	nanosleep(&req, NULL);
	CHECK(waitpid(c, &st, WNOHANG) == 0); /* still paused */
	CHECK(kill(c, SIGTERM) == 0);
	st = status_of(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);

	c = fork();
	if (c == 0) {
		signal(SIGTERM, SIG_IGN);
		kill(getpid(), SIGTERM);
		raise(SIGTERM);
		/* Blocked, a signal waits; unblocked, it acts. */
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGINT);
		sigprocmask(SIG_BLOCK, &set, NULL);
		kill(getpid(), SIGINT);
		sigset_t pending;
		sigpending(&pending);
		if (!sigismember(&pending, SIGINT))
			_exit(4);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		_exit(5);
	}
	st = status_of(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT);

	c = fork();
	if (c == 0)
		abort();
	st = status_of(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);

	/* rt_sigaction: SIGKILL cannot be changed; the old action comes back. */
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	CHECK(sigaction(SIGKILL, &sa, NULL) == -1 && errno == EINVAL);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	CHECK(sigaction(SIGUSR1, NULL, &old) == 0 && old.sa_handler == SIG_IGN);
	CHECK(kill(getpid(), SIGUSR1) == 0); /* ignored: still here */
	CHECK(kill(999999, SIGTERM) == -1 && errno == ESRCH);
	CHECK(kill(getpid(), 1000) == -1 && errno == EINVAL);
	CHECK(kill(getpid(), 0) == 0);

	/* execve: by path, with arguments and environment; errors. */
	c = fork();
	if (c == 0) {
		char *args[] = { argv[0], "exec-child", "two words", "", NULL };
		char *env[] = { "CALLS_TEST=yes", NULL };
		execve(argv[0], args, env);
		_exit(100 + errno);
	}
	st = status_of(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42);
	char *none[] = { "x", NULL };
	CHECK(execve("/no/such/program", none, environ) == -1 && errno == ENOENT);
	CHECK(syscall(SYS_execve, (char *)8, none, environ) == -1 && errno == EFAULT);
	CHECK(syscall(SYS_execve, argv[0], (char **)8, environ) == -1 && errno == EFAULT);

	/* wait4 with no children left. */
	CHECK(wait(NULL) == -1 && errno == ECHILD);
	printf("calls: ok\n");
	return 0;
}
