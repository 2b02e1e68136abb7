/* Threads as the C library makes them: 100 threads created and joined,
 * a mutex and condition-variable ping-pong, a producer/consumer over a
 * bounded buffer, thread-local storage, the FPU's rounding mode inherited
 * by a thread and a fork child, thread ids (getpid is the group,
 * gettid the thread), a signal to one thread with tgkill, a handler run
 * on the thread that takes a process-wide signal it alone does not block,
 * sigtimedwait and sigwaitinfo (a signal queued with a value by another
 * thread), rt_sigqueueinfo's EPERM for forged codes,
 * exit from the first thread while others run on, exit_group from another
 * thread, execve from a thread other than the first, vfork (and glibc's
 * posix_spawn, a clone with CLONE_VM|CLONE_VFORK). Prints "threads: every
 * check held" and exits 0. Passes unmodified on Linux. */
#define _GNU_SOURCE
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "check.h"

extern char **environ;

static pid_t tid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* ---- create and join ---------------------------------------------------- */

static void *square(void *arg)
{
	intptr_t v = (intptr_t)arg;
	return (void *)(v * v);
}

static void create_and_join(void)
{
	enum { N = 100 };
	pthread_t t[N];
	for (intptr_t i = 0; i < N; i++)
		CHECK(pthread_create(&t[i], NULL, square, (void *)i) == 0);
	for (intptr_t i = 0; i < N; i++) {
		void *r;
		CHECK(pthread_join(t[i], &r) == 0);
		CHECK((intptr_t)r == i * i);
	}
	/* And again, one at a time: ids and stacks are reused. */
	for (intptr_t i = 0; i < N; i++) {
		void *r;
		CHECK(pthread_create(&t[0], NULL, square, (void *)i) == 0);
		CHECK(pthread_join(t[0], &r) == 0);
		CHECK((intptr_t)r == i * i);
	}
}

/* ---- ping-pong ------------------------------------------------------------ */

enum { ROUNDS = 10000 };
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn, rounds_seen[2];

static void *player(void *arg)
{
	int me = (int)(intptr_t)arg;
	for (int i = 0; i < ROUNDS; i++) {
		pthread_mutex_lock(&mu);
		while (turn != me)
			pthread_cond_wait(&cv, &mu);
		rounds_seen[me]++;
		turn = !me;
		pthread_cond_signal(&cv);
		pthread_mutex_unlock(&mu);
	}
	return NULL;
}

static void ping_pong(void)
{
	pthread_t a, b;
	CHECK(pthread_create(&a, NULL, player, (void *)0) == 0);
	CHECK(pthread_create(&b, NULL, player, (void *)1) == 0);
	CHECK(pthread_join(a, NULL) == 0);
	CHECK(pthread_join(b, NULL) == 0);
	CHECK(rounds_seen[0] == ROUNDS && rounds_seen[1] == ROUNDS);
}

/* ---- producer / consumer --------------------------------------------------- */

enum { SLOTS = 16, ITEMS = 20000, PRODUCERS = 3, CONSUMERS = 3 };
static struct {
	pthread_mutex_t mu;
	pthread_cond_t not_full, not_empty;
	long buf[SLOTS];
	int head, count, done;
} q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER };

static void *produce(void *arg)
{
	long base = (long)(intptr_t)arg * ITEMS;
	for (long i = 1; i <= ITEMS; i++) {
		pthread_mutex_lock(&q.mu);
		while (q.count == SLOTS)
			pthread_cond_wait(&q.not_full, &q.mu);
		q.buf[(q.head + q.count++) % SLOTS] = base + i;
		pthread_cond_signal(&q.not_empty);
		pthread_mutex_unlock(&q.mu);
	}
	return NULL;
}

static void *consume(void *arg)
{
	long *sum = arg;
	for (;;) {
		pthread_mutex_lock(&q.mu);
		while (q.count == 0 && !q.done)
			pthread_cond_wait(&q.not_empty, &q.mu);
		if (q.count == 0) {
			pthread_mutex_unlock(&q.mu);
			return NULL;
		}
		long v = q.buf[q.head];
		q.head = (q.head + 1) % SLOTS;
		q.count--;
		pthread_cond_signal(&q.not_full);
		pthread_mutex_unlock(&q.mu);
		*sum += v;
	}
}

static void producer_consumer(void)
{
	pthread_t p[PRODUCERS], c[CONSUMERS];
	long sums[CONSUMERS] = { 0 };
	for (int i = 0; i < CONSUMERS; i++)
		CHECK(pthread_create(&c[i], NULL, consume, &sums[i]) == 0);
	for (int i = 0; i < PRODUCERS; i++)
		CHECK(pthread_create(&p[i], NULL, produce, (void *)(intptr_t)i) == 0);
	for (int i = 0; i < PRODUCERS; i++)
		CHECK(pthread_join(p[i], NULL) == 0);
	pthread_mutex_lock(&q.mu);
	q.done = 1;
	pthread_cond_broadcast(&q.not_empty);
	pthread_mutex_unlock(&q.mu);
	long total = 0;
	for (int i = 0; i < CONSUMERS; i++) {
		CHECK(pthread_join(c[i], NULL) == 0);
		total += sums[i];
	}
	long n = (long)PRODUCERS * ITEMS;
	CHECK(total == n * (n + 1) / 2);
}

/* ---- thread-local storage and ids ------------------------------------------- */

static __thread long tls_value = 7;
static __thread char tls_buf[64];

static void *tls_thread(void *arg)
{
	long v = (long)(intptr_t)arg;
	if (tls_value != 7 || tls_buf[0] != 0)
		return (void *)1;
	tls_value = v;
	tls_buf[0] = (char)v;
	sched_yield();
	if (tls_value != v || tls_buf[0] != (char)v)
		return (void *)2;
	if (getpid() == tid() || getpid() != (pid_t)syscall(SYS_getpid))
		return (void *)3;
	return (void *)(intptr_t)tid();
}

static void tls_and_ids(void)
{
	CHECK(getpid() == tid()); /* the first thread's id is the pid */
	enum { N = 8 };
	pthread_t t[N];
	for (int i = 0; i < N; i++)
		CHECK(pthread_create(&t[i], NULL, tls_thread, (void *)(intptr_t)(100 + i)) == 0);
	pid_t ids[N];
	for (int i = 0; i < N; i++) {
		void *r;
		CHECK(pthread_join(t[i], &r) == 0);
		ids[i] = (pid_t)(intptr_t)r;
		CHECK(ids[i] > 3);
		for (int j = 0; j < i; j++)
			CHECK(ids[j] != ids[i]);
	}
	CHECK(tls_value == 7 && tls_buf[0] == 0);
}

/* ---- the FPU's modes are inherited ------------------------------------------------ */

static void *rounding(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)fegetround();
}

static void fpu_modes_inherited(void)
{
	CHECK(fesetround(FE_DOWNWARD) == 0);
	pthread_t t;
	void *r;
	CHECK(pthread_create(&t, NULL, rounding, NULL) == 0);
	CHECK(pthread_join(t, &r) == 0);
	CHECK((intptr_t)r == FE_DOWNWARD);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0)
		_exit(fegetround() == FE_DOWNWARD ? 0 : 1);
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(fesetround(FE_TONEAREST) == 0);
}

/* ---- signals and threads -------------------------------------------------------- */

static volatile pid_t handled_on;
static volatile int handled_sig;

static void note_thread(int sig)
{
	handled_on = tid();
	handled_sig = sig;
}

static pthread_barrier_t bar;
static volatile int stop_waiting;
static volatile pid_t waiter_tid;

static void *waiter(void *arg)
{
	(void)arg;
	waiter_tid = tid();
	pthread_barrier_wait(&bar);
	while (!stop_waiting)
		sched_yield();
	return NULL;
}

static void signals_to_threads(void)
{
	struct sigaction sa = { .sa_handler = note_thread };
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	CHECK(pthread_barrier_init(&bar, NULL, 2) == 0);
	pthread_t w;
	CHECK(pthread_create(&w, NULL, waiter, NULL) == 0);
	pthread_barrier_wait(&bar);

	/* tgkill reaches the thread it names. */
	CHECK(syscall(SYS_tgkill, getpid(), waiter_tid, SIGUSR1) == 0);
	while (handled_on == 0)
		sched_yield();
	CHECK(handled_on == waiter_tid && handled_sig == SIGUSR1);

	/* pthread_kill is tgkill too. */
	handled_on = 0;
	CHECK(pthread_kill(w, SIGUSR1) == 0);
	while (handled_on == 0)
		sched_yield();
	CHECK(handled_on == waiter_tid);

	/* A process-wide signal the first thread blocks goes to the other. */
	sigset_t usr1, old;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	CHECK(pthread_sigmask(SIG_BLOCK, &usr1, &old) == 0);
	handled_on = 0;
	CHECK(kill(getpid(), SIGUSR1) == 0);
	while (handled_on == 0)
		sched_yield();
	CHECK(handled_on == waiter_tid);
	CHECK(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0);

	/* Wrong group, no such thread, bad numbers. */
	CHECK(syscall(SYS_tgkill, getpid() + 100000, waiter_tid, SIGUSR1) == -1 && errno == ESRCH);
	CHECK(syscall(SYS_tgkill, getpid(), 0, SIGUSR1) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_tgkill, getpid(), waiter_tid, 65) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_tkill, waiter_tid, 0) == 0);

	stop_waiting = 1;
	CHECK(pthread_join(w, NULL) == 0);
	CHECK(syscall(SYS_tkill, waiter_tid, 0) == -1 && errno == ESRCH);
	signal(SIGUSR1, SIG_DFL);
}

/* ---- waiting for signals ------------------------------------------------------------ */

static void *queue_to_process(void *arg)
{
	(void)arg;
	usleep(20000);
	union sigval v = { .sival_int = 77 };
	CHECK(sigqueue(getpid(), SIGUSR2, v) == 0);
	return NULL;
}

static void waiting_for_signals(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	CHECK(pthread_sigmask(SIG_BLOCK, &s, NULL) == 0);
	/* Pending already: taken at once, with its info. */
	CHECK(raise(SIGUSR1) == 0);
	siginfo_t si;
	struct timespec zero = { 0, 0 }, ms20 = { 0, 20000000 };
	CHECK(sigtimedwait(&s, &si, &zero) == SIGUSR1);
	/* (musl's raise is a tgkill, glibc's here a kill.) */
	CHECK(si.si_signo == SIGUSR1 && (si.si_code == SI_TKILL || si.si_code == SI_USER) && si.si_pid == getpid());
	/* Nothing pending: EAGAIN at once, and after a timeout. */
	CHECK(sigtimedwait(&s, &si, &zero) == -1 && errno == EAGAIN);
	CHECK(sigtimedwait(&s, &si, &ms20) == -1 && errno == EAGAIN);
	/* Another thread queues a process-wide signal with a value; this
	 * thread, which blocks it, takes it. */
	pthread_t t;
	CHECK(pthread_create(&t, NULL, queue_to_process, NULL) == 0);
	CHECK(sigwaitinfo(&s, &si) == SIGUSR2);
	CHECK(si.si_code == SI_QUEUE && si.si_value.sival_int == 77 && si.si_pid == getpid());
	CHECK(pthread_join(t, NULL) == 0);
	/* Another process's info may not claim to be the kernel's or kill's. */
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		for (;;)
			pause();
	}
	siginfo_t forged;
	memset(&forged, 0, sizeof forged);
	forged.si_signo = SIGUSR1;
	forged.si_code = SI_USER;
	CHECK(syscall(SYS_rt_sigqueueinfo, c, SIGUSR1, &forged) == -1 && errno == EPERM);
	forged.si_code = SI_QUEUE;
	CHECK(syscall(SYS_rt_sigqueueinfo, c, SIGTERM, &forged) == 0);
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	CHECK(pthread_sigmask(SIG_UNBLOCK, &s, NULL) == 0);
}

/* ---- how a process with threads ends ------------------------------------------------ */

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void *finisher(void *arg)
{
	int code = (int)(intptr_t)arg;
	usleep(20000);
	exit(code); /* exit_group: every thread ends */
}

static void *last_one(void *arg)
{
	(void)arg;
	usleep(50000);
	/* The last thread: its end ends the process, with its status. (A
	 * raw exit: musl's own last-thread exit after the first thread's
	 * pthread_exit never ends on Linux either.) */
	syscall(SYS_exit, 5);
	return NULL;
}

static void *exec_thread(void *arg)
{
	char *self = arg;
	char *argv[] = { self, "exec-child", NULL };
	execve(self, argv, environ);
	_exit(99);
}

static int wait_for(pid_t c)
{
	if (getenv("THREADS_VERBOSE"))
		fprintf(stderr, "  waiting for %d\n", c);
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	return st;
}

static void endings(const char *self)
{
	/* exit from another thread while the first sleeps in pause(). */
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		pthread_t t;
		CHECK(pthread_create(&t, NULL, finisher, (void *)(intptr_t)42) == 0);
		for (;;)
			pause();
	}
	int st = wait_for(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42);

	/* The first thread exits alone (pthread_exit); the process lives on
	 * until the last thread ends, and reports that one's status. */
	c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		pthread_t t;
		CHECK(pthread_create(&t, NULL, last_one, NULL) == 0);
		pthread_exit(NULL);
	}
	st = wait_for(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 5);

	/* A fatal signal ends every thread. */
	c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		pthread_t t;
		for (int i = 0; i < 4; i++)
			CHECK(pthread_create(&t, NULL, sleeper, NULL) == 0);
		for (;;)
			pause();
	}
	usleep(20000);
	CHECK(kill(c, SIGTERM) == 0);
	st = wait_for(c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);

	/* execve from a thread other than the first: the others end, the
	 * program runs with the pid. */
	c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		pthread_t t;
		for (int i = 0; i < 3; i++)
			CHECK(pthread_create(&t, NULL, sleeper, NULL) == 0);
		CHECK(pthread_create(&t, NULL, exec_thread, (void *)self) == 0);
		for (;;)
			pause();
	}
	st = wait_for(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 33);

	/* vfork: the child borrows the parent's memory (a store there is the
	 * parent's), and the parent waits until it execs. */
	static volatile int borrowed;
	char *argv[] = { (char *)self, "exec-child", NULL };
	c = vfork();
	CHECK(c >= 0);
	if (c == 0) {
		borrowed = 1;
		execve(self, argv, environ);
		_exit(98);
	}
	CHECK(borrowed == 1);
	st = wait_for(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 33);

#ifdef __GLIBC__
	/* glibc's posix_spawn: clone(CLONE_VM|CLONE_VFORK) on a stack of its
	 * own, then execve. (musl's needs pipe2.) */
	CHECK(posix_spawn(&c, self, NULL, NULL, argv, environ) == 0);
	st = wait_for(c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 33);
#endif
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "exec-child") == 0) {
		/* The exec'd program: one thread, whose id is the pid. */
		return getpid() == tid() ? 33 : 1;
	}
	const char *v = getenv("THREADS_VERBOSE");
	if (argc > 1 && strcmp(argv[1], "-v") == 0)
		v = "";
#define STEP(f) do { if (v) fprintf(stderr, "%s\n", #f); f; } while (0)
	STEP(create_and_join());
	STEP(ping_pong());
	STEP(producer_consumer());
	STEP(tls_and_ids());
	STEP(fpu_modes_inherited());
	STEP(signals_to_threads());
	STEP(waiting_for_signals());
	STEP(endings(argv[0]));
	printf("threads: every check held\n");
	return 0;
}
