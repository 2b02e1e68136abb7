/* futex(2) as the C libraries use it, and as they do not: wake counts,
 * EAGAIN on a changed value, relative and absolute timeouts (monotonic and
 * realtime), bitsets, REQUEUE and CMP_REQUEUE, WAKE_OP, EINTR on a signal,
 * bad addresses and ops, a word on a page never touched, and shared
 * futexes between two processes: in a MAP_SHARED file page mapped at two
 * different addresses, and in shared anonymous memory. Works in the
 * directory given as its argument (default /tmp). Prints "futex: every
 * check held" and exits 0. Passes unmodified on Linux. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

/* Linux's futex.h, which musl's compiler does not see. */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_REQUEUE 3
#define FUTEX_CMP_REQUEUE 4
#define FUTEX_WAKE_OP 5
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAKE_BITSET 10
#define FUTEX_PRIVATE_FLAG 128
#define FUTEX_CLOCK_REALTIME 256
#define FUTEX_WAIT_PRIVATE (FUTEX_WAIT | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAKE_PRIVATE (FUTEX_WAKE | FUTEX_PRIVATE_FLAG)
#define FUTEX_REQUEUE_PRIVATE (FUTEX_REQUEUE | FUTEX_PRIVATE_FLAG)
#define FUTEX_CMP_REQUEUE_PRIVATE (FUTEX_CMP_REQUEUE | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAKE_OP_PRIVATE (FUTEX_WAKE_OP | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAIT_BITSET_PRIVATE (FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG)
#define FUTEX_WAKE_BITSET_PRIVATE (FUTEX_WAKE_BITSET | FUTEX_PRIVATE_FLAG)
#define FUTEX_BITSET_MATCH_ANY 0xffffffff
#define FUTEX_OP_ADD 1
#define FUTEX_OP_OR 2
#define FUTEX_OP_CMP_EQ 0
#define FUTEX_OP_CMP_GT 4
#define FUTEX_OP(op, oparg, cmp, cmparg) \
	((((op)&0xf) << 28) | (((cmp)&0xf) << 24) | (((oparg)&0xfff) << 12) | ((cmparg)&0xfff))

static long futex(volatile uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts, volatile uint32_t *uaddr2,
		  uint32_t val3)
{
	return syscall(SYS_futex, uaddr, op, val, ts, uaddr2, val3);
}

/* FUTEX_REQUEUE and friends pass a count where the timeout goes. */
static long futex2(volatile uint32_t *uaddr, int op, uint32_t val, long val2, volatile uint32_t *uaddr2, uint32_t val3)
{
	return syscall(SYS_futex, uaddr, op, val, val2, uaddr2, val3);
}

static long now_ns(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void pause_ms(int ms)
{
	struct timespec t = { 0, ms * 1000000L };
	nanosleep(&t, NULL);
}

/* ---- waiters on threads ------------------------------------------------------- */

struct waiter {
	volatile uint32_t *word;
	int op;
	uint32_t bitset;
	long result;
	int err;
	pthread_t thread;
};

static volatile int queued;

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	__atomic_add_fetch(&queued, 1, __ATOMIC_SEQ_CST);
	w->result = futex(w->word, w->op, 0, NULL, NULL, w->bitset);
	w->err = errno;
	return NULL;
}

/* Starts `n` threads waiting on `word` (which holds 0) with `op`, and
 * returns once they have had time to be queued. */
static void start_waiters(struct waiter *w, int n, volatile uint32_t *word, int op, uint32_t bitset)
{
	queued = 0;
	for (int i = 0; i < n; i++) {
		w[i] = (struct waiter){ word, op, bitset, -2, 0 };
		CHECK(pthread_create(&w[i].thread, NULL, wait_thread, &w[i]) == 0);
	}
	while (queued < n)
		sched_yield();
	pause_ms(50);
}

static void join_waiters(struct waiter *w, int n)
{
	for (int i = 0; i < n; i++) {
		CHECK(pthread_join(w[i].thread, NULL) == 0);
		CHECK(w[i].result == 0);
	}
}

static volatile uint32_t word1, word2;

static void wake_counts(void)
{
	struct waiter w[5];
	start_waiters(w, 5, &word1, FUTEX_WAIT_PRIVATE, 0);
	CHECK(futex(&word1, FUTEX_WAKE_PRIVATE, 2, NULL, NULL, 0) == 2);
	CHECK(futex(&word1, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 3);
	CHECK(futex(&word1, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 0);
	join_waiters(w, 5);

	/* A private wake does not reach a shared waiter, nor the reverse. */
	start_waiters(w, 1, &word1, FUTEX_WAIT, 0);
	CHECK(futex(&word1, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == 0);
	CHECK(futex(&word1, FUTEX_WAKE, 1, NULL, NULL, 0) == 1);
	join_waiters(w, 1);
}

static void values_and_timeouts(void)
{
	word1 = 5;
	CHECK(futex(&word1, FUTEX_WAIT_PRIVATE, 4, NULL, NULL, 0) == -1 && errno == EAGAIN);
	word1 = 0;

	/* Relative: 50 ms on the monotonic clock. */
	struct timespec rel = { 0, 50000000 };
	long t0 = now_ns(CLOCK_MONOTONIC);
	CHECK(futex(&word1, FUTEX_WAIT_PRIVATE, 0, &rel, NULL, 0) == -1 && errno == ETIMEDOUT);
	CHECK(now_ns(CLOCK_MONOTONIC) - t0 >= 50000000);

	/* Absolute (WAIT_BITSET): monotonic, then realtime. */
	long at = now_ns(CLOCK_MONOTONIC) + 30000000;
	struct timespec abs = { at / 1000000000L, at % 1000000000L };
	CHECK(futex(&word1, FUTEX_WAIT_BITSET_PRIVATE, 0, &abs, NULL, FUTEX_BITSET_MATCH_ANY) == -1 &&
	      errno == ETIMEDOUT);
	CHECK(now_ns(CLOCK_MONOTONIC) >= at);
	at = now_ns(CLOCK_REALTIME) + 30000000;
	abs = (struct timespec){ at / 1000000000L, at % 1000000000L };
	CHECK(futex(&word1, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 0, &abs, NULL,
		    FUTEX_BITSET_MATCH_ANY) == -1 &&
	      errno == ETIMEDOUT);
	CHECK(now_ns(CLOCK_REALTIME) >= at - 1000000);
	/* A deadline already past. */
	abs = (struct timespec){ 0, 0 };
	CHECK(futex(&word1, FUTEX_WAIT_BITSET_PRIVATE, 0, &abs, NULL, FUTEX_BITSET_MATCH_ANY) == -1 &&
	      errno == ETIMEDOUT);

	/* Bad timeouts, addresses and ops. */
	struct timespec bad = { 0, 1000000000 };
	CHECK(futex(&word1, FUTEX_WAIT_PRIVATE, 0, &bad, NULL, 0) == -1 && errno == EINVAL);
	CHECK(futex(&word1, FUTEX_WAIT_PRIVATE, 0, (void *)8, NULL, 0) == -1 && errno == EFAULT);
	CHECK(futex((void *)16, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0) == -1 && errno == EFAULT);
	CHECK(futex((void *)((uintptr_t)&word1 + 1), FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0) == -1 && errno == EINVAL);
	CHECK(futex((void *)16, FUTEX_WAKE, 1, NULL, NULL, 0) == -1 && errno == EFAULT);
	CHECK(futex(&word1, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL, NULL, 0) == -1 && errno == EINVAL);
	CHECK(futex(&word1, FUTEX_WAKE | FUTEX_CLOCK_REALTIME, 1, NULL, NULL, 0) == -1 && errno == ENOSYS);
	CHECK(futex(&word1, 99, 0, NULL, NULL, 0) == -1 && errno == ENOSYS);

	/* A word on a page never touched reads 0 (the wait faults it in). */
	uint32_t *fresh = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(fresh != MAP_FAILED);
	rel = (struct timespec){ 0, 10000000 };
	CHECK(futex(fresh, FUTEX_WAIT_PRIVATE, 1, &rel, NULL, 0) == -1 && errno == EAGAIN);
	CHECK(madvise(fresh, 4096, MADV_DONTNEED) == 0);
	CHECK(futex(fresh, FUTEX_WAIT, 0, &rel, NULL, 0) == -1 && errno == ETIMEDOUT);
	munmap(fresh, 4096);
}

static void bitsets(void)
{
	struct waiter w[2];
	start_waiters(w, 1, &word1, FUTEX_WAIT_BITSET_PRIVATE, 1);
	start_waiters(w + 1, 1, &word1, FUTEX_WAIT_BITSET_PRIVATE, 6);
	CHECK(futex(&word1, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 8) == 0);
	CHECK(futex(&word1, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 2) == 1);
	CHECK(futex(&word1, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 0) == -1 && errno == EINVAL);
	CHECK(futex(&word1, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 1);
	join_waiters(w, 2);
}

static void requeues(void)
{
	struct waiter w[4];
	start_waiters(w, 4, &word1, FUTEX_WAIT_PRIVATE, 0);
	/* CMP_REQUEUE checks the word first. */
	CHECK(futex2(&word1, FUTEX_CMP_REQUEUE_PRIVATE, 1, 2, &word2, 7) == -1 && errno == EAGAIN);
	CHECK(futex2(&word1, FUTEX_CMP_REQUEUE_PRIVATE, 1, -1, &word2, 0) == -1 && errno == EINVAL);
	/* One woken, two moved: three. */
	CHECK(futex2(&word1, FUTEX_CMP_REQUEUE_PRIVATE, 1, 2, &word2, 0) == 3);
	CHECK(futex(&word2, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 2);
	/* REQUEUE: none woken, the last one moved. */
	CHECK(futex2(&word1, FUTEX_REQUEUE_PRIVATE, 0, 5, &word2, 0) == 1);
	CHECK(futex(&word1, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 0);
	CHECK(futex(&word2, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0) == 1);
	join_waiters(w, 4);
}

static void wake_ops(void)
{
	struct waiter w[2];
	start_waiters(w, 1, &word1, FUTEX_WAIT_PRIVATE, 0);
	start_waiters(w + 1, 1, &word2, FUTEX_WAIT_PRIVATE, 0);
	/* word2 += 3 (it held 0); wake one on word1; wake one on word2 if
	 * the old value was 0. */
	word2 = 0;
	CHECK(futex2(&word1, FUTEX_WAKE_OP_PRIVATE, 1, 1, &word2, FUTEX_OP(FUTEX_OP_ADD, 3, FUTEX_OP_CMP_EQ, 0)) == 2);
	CHECK(word2 == 3);
	join_waiters(w, 2);
	/* The comparison fails: only the first word's waiter. */
	word2 = 0;
	start_waiters(w, 1, &word2, FUTEX_WAIT_PRIVATE, 0);
	CHECK(futex2(&word1, FUTEX_WAKE_OP_PRIVATE, 1, 1, &word2, FUTEX_OP(FUTEX_OP_OR, 1, FUTEX_OP_CMP_GT, 5)) == 0);
	CHECK(word2 == 1);
	/* (The waiter now sees 1, not 0: woken, it would not sleep again.) */
	CHECK(futex(&word2, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) == 1);
	join_waiters(w, 1);
}

/* ---- EINTR ------------------------------------------------------------------------ */

static void on_usr1(int sig)
{
	(void)sig;
}

static void interrupted(void)
{
	struct sigaction sa = { .sa_handler = on_usr1 }; /* no SA_RESTART */
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	struct waiter w;
	start_waiters(&w, 1, &word1, FUTEX_WAIT_PRIVATE, 0);
	CHECK(pthread_kill(w.thread, SIGUSR1) == 0);
	CHECK(pthread_join(w.thread, NULL) == 0);
	CHECK(w.result == -1 && w.err == EINTR);
	signal(SIGUSR1, SIG_DFL);
}

/* ---- shared between processes ------------------------------------------------------ */

/* The child maps the same page at another address and waits there; the
 * parent wakes it through its own mapping. `flag` is in the page too. */
static void across_processes(volatile uint32_t *page, int fd)
{
	volatile uint32_t *word = &page[16], *ready = &page[17];
	*word = 0;
	*ready = 0;
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		volatile uint32_t *mine = page;
		if (fd >= 0) {
			mine = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (mine == MAP_FAILED || mine == page)
				_exit(2);
		}
		__atomic_store_n(&mine[17], 1, __ATOMIC_SEQ_CST);
		while (mine[16] == 0)
			if (futex(&mine[16], FUTEX_WAIT, 0, NULL, NULL, 0) == -1 && errno != EAGAIN && errno != EINTR)
				_exit(3);
		_exit(mine[16] == 9 ? 0 : 4);
	}
	while (*ready == 0)
		sched_yield();
	pause_ms(50);
	__atomic_store_n(word, 9, __ATOMIC_SEQ_CST);
	CHECK(futex(word, FUTEX_WAKE, 1, NULL, NULL, 0) == 1);
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void shared_futexes(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/futex-page", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, 8192) == 0);
	volatile uint32_t *page = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(page != MAP_FAILED);
	across_processes(page, fd);
	munmap((void *)page, 8192);
	close(fd);
	unlink(path);

	volatile uint32_t *anon = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(anon != MAP_FAILED);
	across_processes(anon, -1);
	munmap((void *)anon, 4096);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	wake_counts();
	values_and_timeouts();
	bitsets();
	requeues();
	wake_ops();
	interrupted();
	shared_futexes(dir);
	printf("futex: every check held\n");
	return 0;
}
