/* Pipes and fcntl as a shell uses them: data across fork in order, end of
 * file when the last writer goes, EPIPE and SIGPIPE when the last reader
 * has, O_NONBLOCK (EAGAIN both ways, set by pipe2 or fcntl), writes of
 * PIPE_BUF bytes never mixed, a signal ending a wait, and fcntl's
 * descriptor and status flags, close-on-exec honoured by execve; poll
 * and ppoll on pipes.
 *
 *   pipes
 *
 * Prints "pipes: ok" and exits 0. Runs unmodified on Linux
 * (tests/linux/run-linux.sh). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <stdint.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"

static const char *self;

static int wait_status(pid_t c)
{
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	return st;
}

/* 1 MiB from a child, in writes of odd sizes, read back in order. */
static void stream(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		close(p[0]);
		static char buf[7777];
		uint32_t n = 0;
		for (long sent = 0; sent < (1 << 20);) {
			long len = sent + (long)sizeof buf > (1 << 20) ? (1 << 20) - sent : (long)sizeof buf;
			for (long i = 0; i < len; i++)
				buf[i] = (char)(n++ * 31);
			CHECK(write(p[1], buf, len) == len);
			sent += len;
		}
		_exit(0);
	}
	close(p[1]);
	static char buf[5000];
	uint32_t n = 0;
	long got = 0;
	ssize_t r;
	while ((r = read(p[0], buf, sizeof buf)) > 0) {
		for (ssize_t i = 0; i < r; i++)
			CHECK(buf[i] == (char)(n++ * 31));
		got += r;
	}
	CHECK(r == 0 && got == (1 << 20));
	CHECK(WIFEXITED(wait_status(c)));
	close(p[0]);
}

static void broken(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	close(p[0]);
	/* SIGPIPE ignored: EPIPE. */
	signal(SIGPIPE, SIG_IGN);
	CHECK(write(p[1], "x", 1) < 0 && errno == EPIPE);
	signal(SIGPIPE, SIG_DFL);
	/* Its default kills. */
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		write(p[1], "x", 1);
		_exit(0);
	}
	int st = wait_status(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGPIPE);
	close(p[1]);

	/* End of file only once every write end is closed. */
	CHECK(pipe(p) == 0);
	int w2 = dup(p[1]);
	CHECK(w2 >= 0);
	CHECK(write(w2, "ab", 2) == 2);
	close(w2);
	char b[4];
	CHECK(read(p[0], b, 4) == 2 && memcmp(b, "ab", 2) == 0);
	close(p[1]);
	CHECK(read(p[0], b, 4) == 0);
	close(p[0]);
}

static void nonblocking(void)
{
	int p[2];
	CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
	char b[4096];
	CHECK(read(p[0], b, 1) < 0 && errno == EAGAIN);
	CHECK(fcntl(p[0], F_GETFL) == (O_RDONLY | O_NONBLOCK) && fcntl(p[1], F_GETFL) == (O_WRONLY | O_NONBLOCK));
	CHECK(fcntl(p[0], F_GETFD) == FD_CLOEXEC);
	long size = fcntl(p[1], F_GETPIPE_SZ);
	CHECK(size >= 4096);
	memset(b, 'z', sizeof b);
	long put = 0;
	ssize_t w;
	while ((w = write(p[1], b, sizeof b)) > 0)
		put += w;
	CHECK(w < 0 && errno == EAGAIN && put == size);
	/* A small write either goes whole or not at all. */
	CHECK(write(p[1], b, 1) < 0 && errno == EAGAIN);
	CHECK(read(p[0], b, 100) == 100);
	CHECK(write(p[1], b, 200) < 0 && errno == EAGAIN);
	/* A page read makes room for a page (Linux keeps pipes in pages). */
	CHECK(read(p[0], b, 3996) == 3996);
	CHECK(write(p[1], b, 100) == 100);
	/* Blocking again: a read takes what there is. */
	CHECK(fcntl(p[0], F_SETFL, 0) == 0 && fcntl(p[0], F_GETFL) == O_RDONLY);
	CHECK(read(p[0], b, sizeof b) == sizeof b);
	close(p[0]);
	close(p[1]);
}

/* Two writers of PIPE_BUF-byte records: every record read whole. */
static void atomic_records(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	pid_t c[2];
	for (int k = 0; k < 2; k++) {
		c[k] = fork();
		CHECK(c[k] >= 0);
		if (c[k] == 0) {
			close(p[0]);
			static char rec[4096];
			memset(rec, 'A' + k, sizeof rec);
			for (int i = 0; i < 64; i++)
				CHECK(write(p[1], rec, sizeof rec) == sizeof rec);
			_exit(0);
		}
	}
	close(p[1]);
	static char rec[4096];
	int records = 0;
	for (;;) {
		long got = 0;
		ssize_t r = 1;
		while (got < (long)sizeof rec && (r = read(p[0], rec + got, sizeof rec - got)) > 0)
			got += r;
		if (got == 0)
			break;
		CHECK(got == sizeof rec);
		for (long i = 1; i < got; i++)
			CHECK(rec[i] == rec[0]);
		records++;
	}
	CHECK(records == 128);
	for (int k = 0; k < 2; k++)
		CHECK(WIFEXITED(wait_status(c[k])));
	close(p[0]);
}

static void on_alarm(int s)
{
	(void)s;
}

/* A signal ends a read that waits: EINTR (no SA_RESTART). */
static void interrupted(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	struct sigaction sa = {.sa_handler = on_alarm};
	CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
	alarm(1);
	char b;
	CHECK(read(p[0], &b, 1) < 0 && errno == EINTR);
	close(p[0]);
	close(p[1]);
}

static void descriptors(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	int d = fcntl(p[0], F_DUPFD, 50);
	CHECK(d >= 50 && fcntl(d, F_GETFD) == 0);
	int e = fcntl(p[0], F_DUPFD_CLOEXEC, 50);
	CHECK(e > d && fcntl(e, F_GETFD) == FD_CLOEXEC);
	CHECK(fcntl(e, F_SETFD, 0) == 0 && fcntl(e, F_GETFD) == 0);
	CHECK(fcntl(d, F_SETFD, FD_CLOEXEC) == 0 && fcntl(d, F_GETFD) == FD_CLOEXEC);
	CHECK(fcntl(999, F_GETFD) < 0 && errno == EBADF);
	CHECK(fcntl(p[0], 12345) < 0 && errno == EINVAL);
	struct stat st;
	CHECK(fstat(p[0], &st) == 0 && S_ISFIFO(st.st_mode));
	CHECK(lseek(p[0], 0, SEEK_SET) < 0 && errno == ESPIPE);
	close(d);
	close(e);

	/* Close-on-exec: the write end goes at the child's execve, so the
	 * read sees end of file while the new program still runs. */
	CHECK(fcntl(p[1], F_SETFD, FD_CLOEXEC) == 0);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		char *args[] = {(char *)self, "sleep", NULL};
		execve(self, args, NULL);
		_exit(99);
	}
	close(p[1]);
	char b;
	CHECK(read(p[0], &b, 1) == 0);
	CHECK(waitpid(c, NULL, WNOHANG) == 0);
	int ws = wait_status(c);
	CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 7);
	close(p[0]);
}

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void polling(void)
{
	int p[2];
	CHECK(pipe(p) == 0);
	struct pollfd f[4] = {
		{.fd = p[0], .events = POLLIN},
		{.fd = p[1], .events = POLLOUT},
		{.fd = -1, .events = POLLIN},
		{.fd = 900, .events = POLLIN},
	};
	CHECK(poll(f, 4, 0) == 2);
	CHECK(f[0].revents == 0 && f[1].revents == POLLOUT && f[2].revents == 0 && f[3].revents == POLLNVAL);
	/* Nothing to read: the timeout passes. */
	long t0 = now_ms();
	CHECK(poll(f, 1, 100) == 0 && now_ms() - t0 >= 90);
	struct timespec ts = {0, 50 * 1000000};
	CHECK(ppoll(f, 1, &ts, NULL) == 0);
	/* A child writes after a while: the wait ends with it. */
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		usleep(200 * 1000);
		CHECK(write(p[1], "x", 1) == 1);
		_exit(0);
	}
	CHECK(poll(f, 1, -1) == 1 && f[0].revents == POLLIN);
	CHECK(ppoll(f, 1, NULL, NULL) == 1 && f[0].revents == POLLIN);
	CHECK(WIFEXITED(wait_status(c)));
	char b;
	CHECK(read(p[0], &b, 1) == 1);
	/* The write end closed: a hangup; the read end closed: an error. */
	close(p[1]);
	CHECK(poll(f, 1, -1) == 1 && f[0].revents == POLLHUP);
	CHECK(pipe(p) == 0);
	close(p[0]);
	f[1].fd = p[1];
	CHECK(poll(&f[1], 1, 0) == 1 && (f[1].revents & POLLERR));
	close(p[1]);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "sleep") == 0) {
		sleep(1);
		return 7;
	}
	self = "/proc/self/exe";
	if (access(self, X_OK) != 0)
		self = argv[0];
	if (access(self, X_OK) != 0) /* run by ./run-qemu.sh run: a bare name */
		self = "/bin/pipes";
	stream();
	broken();
	nonblocking();
	atomic_records();
	interrupted();
	descriptors();
	polling();
	printf("pipes: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
