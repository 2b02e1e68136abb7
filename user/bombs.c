/* Resource bombs: a program that takes all it can of one kind of kernel
 * resource must get an error (never a hang or a kernel panic), and once it
 * lets go, the next program gets the resource again.
 *
 *   bombs [fork|threads|maps|files]...      (all four when none is named)
 *
 * fork   a child forks paused children until fork fails (EAGAIN: Linux
 *        bounds the number of processes by memory), then kills and reaps
 *        them; afterwards fork works.
 * threads  a child creates threads (each with a small stack, sleeping on
 *        a futex) until pthread_create fails (EAGAIN: threads count as
 *        processes do), then wakes and joins them; afterwards threads can
 *        be made again.
 * maps   one-page mappings side by side with alternating protections (so
 *        that no two merge) until mmap fails with ENOMEM (the map-entry
 *        limit, vm.max_map_count); one munmap removes them all; afterwards
 *        mmap works.
 * files  open() until EMFILE at the soft RLIMIT_NOFILE, then again at the
 *        hard limit after raising the soft one; four such processes at
 *        once (ENFILE, the system's table full, may stop them first); all
 *        closed, open works.
 *
 * Each bomb runs in a child of its own, so that whatever it leaves behind
 * ends with it. Prints a line per bomb and "bombs: ok", exits 0. Passes
 * unmodified on Linux. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "check.h"

/* More than any limit either kernel has at 128 MiB-1 GiB: reaching it means
 * nothing stopped the bomb. */
#define MAX_CHILDREN 65536
#define MAX_MAPS (1 << 20)

/* What a bomb reports to its parent, in a shared page. */
struct report {
	long count;
	int err;
};

static struct report *shared_report(void)
{
	struct report *r = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(r != MAP_FAILED);
	memset(r, 0, sizeof *r);
	return r;
}

/* Runs `bomb` in a child and checks that it exited 0. */
static void in_child(int (*bomb)(struct report *), struct report *r)
{
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0)
		_exit(bomb(r));
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fprintf(stderr, "bombs: the bomb ended with status %#x after %ld (errno %d)\n", st, r->count, r->err);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static int fork_bomb(struct report *r)
{
	pid_t *kids = mmap(0, MAX_CHILDREN * sizeof(pid_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (kids == MAP_FAILED)
		return 10;
	long n = 0;
	for (; n < MAX_CHILDREN; n++) {
		pid_t c = fork();
		if (c == 0) {
			for (;;)
				pause();
		}
		if (c < 0) {
			r->err = errno;
			break;
		}
		kids[n] = c;
	}
	r->count = n;
	for (long i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	for (long i = 0; i < n; i++) {
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
			return 11;
	}
	if (n == MAX_CHILDREN)
		return 12;
	return r->err == EAGAIN || r->err == ENOMEM ? 0 : 13;
}

static volatile int threads_go;

static void *parked(void *arg)
{
	(void)arg;
	while (!threads_go)
		usleep(1000);
	return NULL;
}

static int thread_bomb(struct report *r)
{
	pthread_t *t = mmap(0, MAX_CHILDREN * sizeof(pthread_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		return 20;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 16384);
	long n = 0;
	for (; n < MAX_CHILDREN; n++) {
		int e = pthread_create(&t[n], &a, parked, NULL);
		if (e != 0) {
			r->err = e;
			break;
		}
	}
	r->count = n;
	threads_go = 1;
	for (long i = 0; i < n; i++)
		if (pthread_join(t[i], NULL) != 0)
			return 21;
	if (n == MAX_CHILDREN)
		return 22;
	if (r->err != EAGAIN && r->err != ENOMEM)
		return 23;
	/* Threads can be made again: at once, or as soon as the joined ones
	 * have finished ending (join returns when a thread's id word is
	 * cleared, a moment before the thread is gone; Linux has the same
	 * window). */
	pthread_t again;
	int e = EAGAIN;
	for (int tries = 0; e == EAGAIN && tries < 1000; tries++) {
		e = pthread_create(&again, NULL, parked, NULL);
		if (e == EAGAIN)
			usleep(1000);
	}
	if (e != 0 || pthread_join(again, NULL) != 0)
		return 24;
	return 0;
}

static int map_bomb(struct report *r)
{
	/* Where the bomb's pages go: found by a mapping of the whole range,
	 * then given back so that each page can be mapped on its own. */
	size_t span = (size_t)MAX_MAPS * 4096;
	char *base = mmap(0, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED)
		return 20;
	if (munmap(base, span) != 0)
		return 21;
	long n = 0;
	for (; n < MAX_MAPS; n++) {
		int prot = n % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
		char *want = base + n * 4096;
		char *p = mmap(want, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == MAP_FAILED) {
			r->err = errno;
			break;
		}
		if (p != want)
			return 22;
	}
	r->count = n;
	if (n == MAX_MAPS || r->err != ENOMEM)
		return 23;
	/* A split of one of them needs one entry more: refused too. */
	if (mprotect(base + 4096, 2048 + 2048, PROT_READ | PROT_WRITE) != 0 && errno != ENOMEM)
		return 24;
	if (munmap(base, n * 4096) != 0)
		return 25;
	char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 26;
	p[0] = 1;
	return 0;
}

/* Opens files until open fails; returns how many it opened, the error in
 * *err. */
static long open_until_full(int *err)
{
	long n = 0;
	for (;;) {
		int fd = open("/", O_RDONLY);
		if (fd < 0) {
			*err = errno;
			return n;
		}
		n++;
	}
}

/* Opens files until EMFILE at the soft limit, raises the soft limit to
 * the hard one and goes on to EMFILE again. ENFILE (the system's table
 * full, shared by the four) may end either part early. */
static int file_bomb_one(struct report *r)
{
	struct rlimit lim;
	int err;
	if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
		return 30;
	long n = open_until_full(&err);
	if (err != EMFILE && err != ENFILE)
		return 31;
	/* 0, 1 and 2 are open, and perhaps a few more inherited. */
	if (err == EMFILE && (n + 3 > (long)lim.rlim_cur || n + 16 < (long)lim.rlim_cur))
		return 32;
	if (err == EMFILE && lim.rlim_max > lim.rlim_cur && lim.rlim_max != RLIM_INFINITY) {
		lim.rlim_cur = lim.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
			return 33;
		long more = open_until_full(&err);
		if (err != EMFILE && err != ENFILE)
			return 34;
		if (err == EMFILE && n + more + 16 < (long)lim.rlim_max)
			return 35;
		n += more;
	}
	__atomic_fetch_add(&r->count, n, __ATOMIC_RELAXED);
	if (err == ENFILE)
		__atomic_store_n(&r->err, ENFILE, __ATOMIC_RELAXED);
	for (int fd = 3; fd < 3 + n + 16; fd++)
		close(fd);
	int fd = open("/", O_RDONLY);
	if (fd < 0)
		return 36;
	close(fd);
	return 0;
}

static int file_bomb(struct report *r)
{
	pid_t kids[4];
	for (int i = 0; i < 4; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			return 40;
		if (kids[i] == 0)
			_exit(file_bomb_one(r));
	}
	for (int i = 0; i < 4; i++) {
		int st;
		if (waitpid(kids[i], &st, 0) != kids[i])
			return 41;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "bombs: files: process %d ended with %#x\n", i, st);
			return 42;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *all[] = { "fork", "threads", "maps", "files" };
	int n = argc > 1 ? argc - 1 : 4;
	const char **which = argc > 1 ? (const char **)argv + 1 : all;
	struct report *r = shared_report();
	for (int i = 0; i < n; i++) {
		memset(r, 0, sizeof *r);
		if (strcmp(which[i], "fork") == 0) {
			in_child(fork_bomb, r);
			printf("bombs: fork: %ld children, then errno %d\n", r->count, r->err);
			/* Processes can be made again. */
			pid_t c = fork();
			CHECK(c >= 0);
			if (c == 0)
				_exit(7);
			int st;
			CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 7);
		} else if (strcmp(which[i], "threads") == 0) {
			in_child(thread_bomb, r);
			printf("bombs: threads: %ld threads, then errno %d\n", r->count, r->err);
		} else if (strcmp(which[i], "maps") == 0) {
			in_child(map_bomb, r);
			printf("bombs: maps: %ld one-page mappings, then errno %d\n", r->count, r->err);
		} else if (strcmp(which[i], "files") == 0) {
			in_child(file_bomb, r);
			printf("bombs: files: %ld opened by 4 processes, then EMFILE%s\n", r->count,
			       r->err == ENFILE ? " or ENFILE" : "");
		} else {
			fprintf(stderr, "bombs: no bomb %s\n", which[i]);
			return 2;
		}
	}
	printf("bombs: ok\n");
	return 0;
}
