/* Process descriptors and process_mrelease, as Linux's mm selftest for it
 * uses them: pidfd_open of a child, its memory released after a SIGKILL
 * (before the child has ended, or ESRCH if it already has), the errors
 * (a bad descriptor, bad flags, a process that is not dying), and
 * pidfd_send_signal.
 *
 *   mrelease
 *
 * Prints "mrelease: ok" and exits 0. Runs unmodified on Linux
 * (tests/linux/run-linux.sh). */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "check.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_process_mrelease
#define SYS_process_mrelease 448
#endif

/* A child with `mib` MiB written, waiting to be killed. */
static pid_t child(long mib)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		close(p[0]);
		long len = mib << 20;
		char *m = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		CHECK(m != MAP_FAILED);
		for (long i = 0; i < len; i += 4096)
			m[i] = 1;
		CHECK(write(p[1], "", 1) == 1);
		for (int i = 0; i < 100; i++)
			sleep(1);
		_exit(3);
	}
	close(p[1]);
	char b;
	CHECK(read(p[0], &b, 1) == 1);
	close(p[0]);
	return c;
}

int main(void)
{
	CHECK(syscall(SYS_process_mrelease, -1, 0) < 0 && errno == EBADF);
	CHECK(syscall(SYS_pidfd_open, 999999, 0) < 0 && errno == ESRCH);
	CHECK(syscall(SYS_pidfd_open, getpid(), 12345) < 0 && errno == EINVAL);
	CHECK(syscall(SYS_process_mrelease, 0, 0) < 0 && errno == EBADF);

	int released = 0;
	for (long mib = 1; mib <= 64 && !released; mib *= 2) {
		pid_t c = child(mib);
		int fd = syscall(SYS_pidfd_open, c, 0);
		CHECK(fd >= 0);
		CHECK(syscall(SYS_process_mrelease, fd, -1) < 0 && errno == EINVAL);
		CHECK(syscall(SYS_process_mrelease, fd, 0) < 0 && errno == EINVAL);
		CHECK(syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) == 0);
		CHECK(kill(c, SIGKILL) == 0);
		if (syscall(SYS_process_mrelease, fd, 0) == 0)
			released = 1;
		else
			CHECK(errno == ESRCH);
		int st;
		CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		close(fd);
	}
	CHECK(released);

	/* pidfd_send_signal: a signal to the process, ESRCH once reaped. */
	pid_t c = child(1);
	int fd = syscall(SYS_pidfd_open, c, 0);
	CHECK(fd >= 0);
	CHECK(syscall(SYS_pidfd_send_signal, fd, SIGTERM, NULL, 0) == 0);
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	CHECK(syscall(SYS_pidfd_send_signal, fd, SIGTERM, NULL, 0) < 0 && errno == ESRCH);
	close(fd);
	printf("mrelease: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
