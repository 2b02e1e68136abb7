/* System-call fuzzing: workers issue system calls with random numbers and
 * random arguments (small numbers, pointers into their own memory, wild
 * pointers, huge values) until 100,000 calls have been made. A worker may
 * end itself or be killed by what it does; the kernel must stay up. Calls
 * that would block for good (reading the console, sleeping, waiting,
 * pausing) get harmless arguments or are left out, signals go only to the
 * worker itself, and a worker stuck for 10 s (Linux has calls that wait for
 * good on what a random argument names, a message queue or a socket) is
 * killed, so that the fuzzer survives its own workers.
 *
 *   fuzz [calls] [seed]
 *
 * Prints the tally and "fuzz: ok", exits 0. Runs unmodified on Linux (run it
 * in a throw-away VM: random calls as root can do anything). */
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

#define PER_WORKER 2000

static uint64_t rng;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static char *scratch;
/* Calls made, counted in memory shared with the parent. */
static volatile long *calls;

static uint64_t arg(void)
{
	switch (next() % 10) {
	case 0: return 0;
	case 1: return next() % 16;
	case 2: return (uint64_t)-1;
	case 3: return next();
	case 4: return 1ULL << (next() % 64);
	case 5: return (uint64_t)(scratch + (next() % 8192));
	case 6: return (uint64_t)scratch + 4096 * (next() % 4);
	case 7: return 0xffff800000000000ULL + (next() % 0x100000); /* kernel half */
	case 8: return (uint64_t)&rng; /* the worker's own data */
	default: return next() % 4096;
	}
}

/* Calls left out: they can block for good on Linux (poll, select, pause,
 * sigsuspend, futex, epoll and friends), or make threads (clone, vfork).
 * pipe too, whose ends would block a read or write for good: pipe2 is
 * made non-blocking instead. */
static int skipped(long nr)
{
	static const long skip[] = { 7, 22, 23, 34, 56, 58, 101, 128, 130, 202, 232, 270, 271, 281, 435 };
	for (unsigned i = 0; i < sizeof skip / sizeof skip[0]; i++)
		if (nr == skip[i])
			return 1;
	return 0;
}

static int worker(uint64_t seed)
{
	pid_t me = getpid();
	rng = seed * 0x9E3779B97F4A7C15ULL + 1;
	scratch = mmap(0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (scratch == MAP_FAILED)
		return 1;
	for (int i = 0; i < PER_WORKER; i++) {
		for (int j = 0; j < 64; j++)
			scratch[next() % 8192] = (char)next();
		long nr = next() % 8 == 0 ? (long)next() % 2000 : (long)(next() % 335);
		if (skipped(nr))
			continue;
		uint64_t a[6] = { arg(), arg(), arg(), arg(), arg(), arg() };
		switch (nr) {
		case 0: /* read: never the console, which waits for input */
			a[0] = 99;
			break;
		case 1: /* write: at most a line of noise on the console */
			a[2] %= 64;
			break;
		case 20: /* writev */
			a[0] = 99;
			break;
		case 35: /* nanosleep: no time at all */
		case 230: /* clock_nanosleep */
			memset(scratch, 0, 16);
			a[nr == 35 ? 0 : 2] = (uint64_t)scratch;
			a[1] = 0;
			break;
		case 293: /* pipe2: never blocking ends */
			a[1] |= 04000;
			break;
		case 72: /* fcntl: never making an end blocking again */
			if (a[1] == 4)
				a[1] = 3;
			break;
		case 61: /* wait4: never blocks */
			a[2] = 1;
			break;
		case 62: /* kill: only itself */
		case 434: /* pidfd_open: only of itself (pidfd_send_signal) */
			a[0] = me;
			break;
		case 200: /* tkill */
		case 234: /* tgkill */
			a[0] = me;
			a[1] = nr == 234 ? (uint64_t)me : a[1];
			break;
		}
		++*calls;
		syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
		if (getpid() != me) /* a fork's child */
			_exit(0);
	}
	return 0;
}

int main(int argc, char **argv)
{
	long target = argc > 1 ? atol(argv[1]) : 100000;
	uint64_t seed = argc > 2 ? strtoull(argv[2], 0, 0) : 1;
	long workers = 0, exited = 0, killed = 0, total = 0;
	calls = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(calls != MAP_FAILED);
	while (total < target) {
		*calls = 0;
		/* With allocations failing on purpose, fork may fail for a while
		 * (EAGAIN, ENOMEM), as it may on Linux under memory pressure. */
		pid_t c;
		for (int tries = 0; (c = fork()) < 0 && (errno == EAGAIN || errno == ENOMEM) && tries < 1000; tries++)
			nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
		CHECK(c >= 0);
		if (c == 0)
			_exit(worker(seed + workers));
		workers++;
		int st;
		pid_t p;
		struct timespec t0, now, tick = { 0, 1000000 };
		clock_gettime(CLOCK_MONOTONIC, &t0);
		while ((p = waitpid(c, &st, WNOHANG)) == 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec - t0.tv_sec > 10)
				kill(c, SIGKILL);
			nanosleep(&tick, NULL);
		}
		CHECK(p == c);
		if (WIFSIGNALED(st))
			killed++;
		else
			exited++;
		/* A random call may have scribbled on the shared count itself. */
		long n = *calls;
		total += n < 0 || n > PER_WORKER ? PER_WORKER : n;
	}
	printf("fuzz: %ld calls by %ld workers (%ld finished or exited, %ld killed)\n", total, workers, exited,
	       killed);
	printf("fuzz: ok\n");
	return 0;
}
