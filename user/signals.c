/* Signal handlers, as programs use them: SIGFPE (integer and x87), SIGILL and SIGTRAP from the CPU's
 * exceptions, SIGALRM from setitimer and alarm, a handler with its siginfo (the
 * sender's pid, SI_USER or SI_TKILL), SIGCHLD with the child's pid and
 * status while rt_sigsuspend waits, SA_RESTART around a wait, a
 * write barrier (a SIGSEGV handler that mprotects the page and returns, over
 * 1,000 pages), SEGV_MAPERR and siglongjmp out of the handler, SIGBUS past
 * the end of a file, a stack overflow caught on the alternate stack, the
 * FPU/SSE state kept across a handler, the handler's mask and SA_NODEFER,
 * SA_RESETHAND, and the kills for a frame that cannot be written or read.
 * Run with a writable directory (`signals /tmp`). Exits 0 when every check
 * holds; passes unmodified on Linux. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define PAGES 1000
#define PAGE 4096

static volatile int usr1_count, usr2_depth, usr2_max_depth, usr1_during_usr2;
static volatile siginfo_t last_info;
static char *region;
static volatile int barrier_faults;
static sigjmp_buf jump;
static volatile void *expected_addr;
static volatile int expected_code, jumped;
static char altstack[65536] __attribute__((aligned(16)));

static void on(int sig, void (*h)(int, siginfo_t *, void *), int flags, sigset_t *mask)
{
	struct sigaction sa = { 0 };
	sa.sa_sigaction = h;
	sa.sa_flags = SA_SIGINFO | flags;
	if (mask)
		sa.sa_mask = *mask;
	CHECK(sigaction(sig, &sa, 0) == 0);
}

static void usr1(int sig, siginfo_t *info, void *uc)
{
	(void)uc;
	last_info = *info;
	usr1_count += sig == SIGUSR1;
}

static void barrier(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)uc;
	char *a = info->si_addr;
	if (info->si_code != SEGV_ACCERR || a < region || a >= region + PAGES * PAGE)
		_exit(20);
	if (mprotect((void *)((uintptr_t)a & ~(uintptr_t)(PAGE - 1)), PAGE, PROT_READ | PROT_WRITE) != 0)
		_exit(21);
	barrier_faults++;
}

static void jumper(int sig, siginfo_t *info, void *uc)
{
	(void)uc;
	if (info->si_signo != sig || info->si_code != expected_code || info->si_addr != expected_addr)
		_exit(22);
	siglongjmp(jump, 1);
}

static volatile int trap_sig, trap_code, zero, quotient;

static void trap_handler(int sig, siginfo_t *info, void *uc)
{
	(void)uc;
	trap_sig = sig;
	trap_code = info->si_code;
	siglongjmp(jump, 1);
}

static void overflow_handler(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)info;
	(void)uc;
	char here;
	if (&here < altstack || &here >= altstack + sizeof altstack)
		_exit(23);
	siglongjmp(jump, 1);
}

/* Deeper than any stack: the recursion ends by overflowing. */
static volatile long depth_limit = 1L << 40;

static int recurse(volatile char *prev, long depth)
{
	volatile char buf[1024];
	buf[0] = prev ? prev[0] + 1 : 0;
	if (depth > depth_limit)
		return 0;
	return recurse(buf, depth + 1) + buf[1];
}

static void clobber_xmm7(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)info;
	(void)uc;
	__asm__ volatile("pxor %%xmm7, %%xmm7" ::: "xmm7");
}

static void usr2(int sig, siginfo_t *info, void *uc)
{
	(void)info;
	(void)uc;
	usr2_depth++;
	if (usr2_depth > usr2_max_depth)
		usr2_max_depth = usr2_depth;
	if (usr2_depth == 1) {
		int before = usr1_count;
		kill(getpid(), SIGUSR1); /* blocked by the action's mask */
		usr1_during_usr2 = usr1_count != before;
		kill(getpid(), sig); /* SA_NODEFER: runs at once, nested */
	}
	usr2_depth--;
}

static int child_status(void (*body)(void))
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		body();
		_exit(0);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	return st;
}

static volatile int *shared;

static volatile int chld_pid, chld_status, chld_code, alarms;

static void on_alrm(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)info;
	(void)uc;
	alarms++;
}

static void on_chld(int sig, siginfo_t *info, void *uc)
{
	(void)sig;
	(void)uc;
	chld_pid = info->si_pid;
	chld_status = info->si_status;
	chld_code = info->si_code;
}

/* A wait for a child that SIGUSR1 interrupts (a second child sends it,
 * then kills the first): true if the wait went on after the handler (it
 * returned the child), false if it ended with EINTR. */
static int wait_restarted(int flags)
{
	on(SIGUSR1, usr1, flags, 0);
	pid_t parent = getpid();
	pid_t slow = fork();
	CHECK(slow >= 0);
	if (slow == 0) {
		for (;;)
			pause();
	}
	pid_t poker = fork();
	CHECK(poker >= 0);
	if (poker == 0) {
		usleep(50000);
		kill(parent, SIGUSR1);
		usleep(200000);
		kill(slow, SIGKILL);
		_exit(0);
	}
	int before = usr1_count, st;
	pid_t r = waitpid(slow, &st, 0);
	int e = errno;
	CHECK(usr1_count == before + 1);
	if (r == -1) {
		CHECK(e == EINTR);
		CHECK(waitpid(slow, &st, 0) == slow);
	}
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	CHECK(waitpid(poker, &st, 0) == poker);
	return r == slow;
}

static void resethand_body(void)
{
	usr1_count = 0;
	on(SIGUSR1, usr1, SA_RESETHAND, 0);
	kill(getpid(), SIGUSR1);
	*shared = usr1_count;
	kill(getpid(), SIGUSR1); /* the default action now: death */
	_exit(30);
}

static void bad_sigreturn_body(void)
{
	signal(SIGSEGV, SIG_DFL);
	__asm__ volatile("mov $0x1000, %%rsp\n\t"
			 "mov $15, %%eax\n\t"
			 "syscall" ::: "memory");
	_exit(31);
}

static void unwritable_frame_body(void)
{
	signal(SIGSEGV, SIG_DFL);
	on(SIGUSR1, usr1, 0, 0);
	long pid = getpid();
	/* kill(pid, SIGUSR1) with the stack pointer on no memory: the frame
	 * cannot be written. */
	__asm__ volatile("mov %%rsp, %%r12\n\t"
			 "mov $0x1000, %%rsp\n\t"
			 "mov $62, %%eax\n\t"
			 "syscall\n\t"
			 "mov %%r12, %%rsp" ::"D"(pid), "S"((long)SIGUSR1) : "rax", "rcx", "r11", "r12", "memory");
	_exit(32);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";

	/* A handler with its siginfo. */
	on(SIGUSR1, usr1, 0, 0);
	CHECK(kill(getpid(), SIGUSR1) == 0);
	CHECK(usr1_count == 1 && last_info.si_signo == SIGUSR1 && last_info.si_code == SI_USER);
	CHECK(last_info.si_pid == getpid());
	CHECK(raise(SIGUSR1) == 0 && usr1_count == 2 && last_info.si_code == SI_TKILL);

	/* SIGCHLD while rt_sigsuspend waits with it unblocked; the mask from
	 * before is back afterwards. */
	sigset_t chld, saved, empty, now0;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigemptyset(&empty);
	CHECK(sigprocmask(SIG_BLOCK, &chld, &saved) == 0);
	on(SIGCHLD, on_chld, 0, 0);
	pid_t kid = fork();
	CHECK(kid >= 0);
	if (kid == 0)
		_exit(5);
	CHECK(sigsuspend(&empty) == -1 && errno == EINTR);
	CHECK(chld_pid == kid && chld_status == 5 && chld_code == CLD_EXITED);
	CHECK(sigprocmask(SIG_BLOCK, 0, &now0) == 0 && sigismember(&now0, SIGCHLD));
	int kst;
	CHECK(waitpid(kid, &kst, 0) == kid && WIFEXITED(kst) && WEXITSTATUS(kst) == 5);
	CHECK(sigprocmask(SIG_SETMASK, &saved, 0) == 0);
	signal(SIGCHLD, SIG_DFL);

	/* ITIMER_REAL: SIGALRM every 20 ms; getitimer tells what is left;
	 * setitimer gives back the old setting; alarm's seconds; bad values. */
	on(SIGALRM, on_alrm, 0, 0);
	struct itimerval it = { { 0, 20000 }, { 0, 20000 } }, cur;
	CHECK(setitimer(ITIMER_REAL, &it, 0) == 0);
	while (alarms < 3)
		pause();
	CHECK(getitimer(ITIMER_REAL, &cur) == 0 && cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 20000);
	CHECK(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec <= 20000);
	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	CHECK(setitimer(ITIMER_REAL, &off, &cur) == 0 && cur.it_interval.tv_usec == 20000);
	CHECK(getitimer(ITIMER_REAL, &cur) == 0 && cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0);
	CHECK(alarm(100) == 0 && alarm(0) == 100);
	struct itimerval bad = { { 0, 0 }, { 0, 1000000 } };
	CHECK(setitimer(ITIMER_REAL, &bad, 0) == -1 && errno == EINVAL);
	int before_alarms = alarms;
	usleep(60000);
	CHECK(alarms == before_alarms);
	signal(SIGALRM, SIG_DFL);

	/* SA_RESTART: a wait goes on after the handler; without it, EINTR. */
	CHECK(wait_restarted(SA_RESTART) == 1);
	CHECK(wait_restarted(0) == 0);

	/* A write barrier over 1,000 pages. */
	region = mmap(0, PAGES * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(region != MAP_FAILED);
	on(SIGSEGV, barrier, 0, 0);
	for (int i = 0; i < PAGES; i++)
		region[i * PAGE + i % PAGE] = (char)i;
	CHECK(barrier_faults == PAGES);
	for (int i = 0; i < PAGES; i++)
		CHECK(region[i * PAGE + i % PAGE] == (char)i);

	/* An unmapped address: SEGV_MAPERR, and out of the handler by
	 * siglongjmp, with the signal unblocked again. */
	char *gone = mmap(0, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(gone != MAP_FAILED && munmap(gone, PAGE) == 0);
	on(SIGSEGV, jumper, 0, 0);
	expected_addr = gone + 8;
	expected_code = SEGV_MAPERR;
	if (sigsetjmp(jump, 1) == 0) {
		*(volatile char *)(gone + 8) = 1;
		CHECK(0);
	}
	sigset_t now;
	CHECK(sigprocmask(SIG_BLOCK, 0, &now) == 0 && !sigismember(&now, SIGSEGV));

	/* Past the end of a file: SIGBUS, BUS_ADRERR. */
	char path[256];
	snprintf(path, sizeof path, "%s/signals-bus", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && write(fd, "short", 5) == 5);
	char *file = mmap(0, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(file != MAP_FAILED);
	on(SIGBUS, jumper, 0, 0);
	expected_addr = file + PAGE + 16;
	expected_code = BUS_ADRERR;
	jumped = 0;
	if (sigsetjmp(jump, 1) == 0) {
		(void)*(volatile char *)(file + PAGE + 16);
		CHECK(0);
	}
	CHECK(file[0] == 's');
	munmap(file, 2 * PAGE);
	close(fd);
	unlink(path);

	/* Exceptions as signals: an integer division by zero is SIGFPE (FPE_INTDIV), an
	 * undefined instruction SIGILL (ILL_ILLOPN). */
	on(SIGFPE, trap_handler, 0, 0);
	on(SIGILL, trap_handler, 0, 0);
	if (sigsetjmp(jump, 1) == 0) {
		quotient = 7 / zero;
		CHECK(0);
	}
	CHECK(trap_sig == SIGFPE && trap_code == FPE_INTDIV);
	if (sigsetjmp(jump, 1) == 0) {
		__asm__ volatile("ud2");
		CHECK(0);
	}
	CHECK(trap_sig == SIGILL && trap_code == ILL_ILLOPN);

	/* An x87 division by zero, that exception unmasked, is SIGFPE
	 * (FPE_FLTDIV); int3 is SIGTRAP (SI_KERNEL). (Not SSE's: QEMU's
	 * software CPU never raises its exceptions.) */
	unsigned short cw, unmasked;
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	unmasked = cw & ~4;
	if (sigsetjmp(jump, 1) == 0) {
		volatile long double one = 1.0L, nothing = 0.0L, q;
		__asm__ volatile("fldcw %0" ::"m"(unmasked));
		q = one / nothing;
		__asm__ volatile("fwait");
		(void)q;
		CHECK(0);
	}
	__asm__ volatile("fnclex\n\tfldcw %0" ::"m"(cw));
	CHECK(trap_sig == SIGFPE && trap_code == FPE_FLTDIV);
	on(SIGTRAP, trap_handler, 0, 0);
	if (sigsetjmp(jump, 1) == 0) {
		__asm__ volatile("int3");
		CHECK(0);
	}
	CHECK(trap_sig == SIGTRAP && trap_code == SI_KERNEL);

	/* A stack overflow caught on the alternate stack. */
	struct rlimit rl = { 1 << 20, 1 << 20 };
	CHECK(setrlimit(RLIMIT_STACK, &rl) == 0);
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
	CHECK(sigaltstack(&ss, 0) == 0);
	on(SIGSEGV, overflow_handler, SA_ONSTACK, 0);
	if (sigsetjmp(jump, 1) == 0) {
		recurse(0, 0);
		CHECK(0);
	}
	stack_t old;
	CHECK(sigaltstack(0, &old) == 0 && old.ss_sp == altstack && !(old.ss_flags & SS_ONSTACK));

	/* The SSE registers survive a handler that changes them. */
	on(SIGUSR1, clobber_xmm7, 0, 0);
	uint64_t in = 0x0123456789abcdefULL, out;
	long pid = getpid();
	__asm__ volatile("movq %[in], %%xmm7\n\t"
			 "mov $62, %%eax\n\t"
			 "syscall\n\t"
			 "movq %%xmm7, %[out]"
			 : [out] "=r"(out)
			 : [in] "r"(in), "D"(pid), "S"((long)SIGUSR1)
			 : "rax", "rcx", "r11", "xmm7", "memory");
	CHECK(out == in);

	/* The action's mask holds SIGUSR1 off during the SIGUSR2 handler;
	 * SA_NODEFER lets SIGUSR2 in again at once. */
	on(SIGUSR1, usr1, 0, 0);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	usr1_count = 0;
	on(SIGUSR2, usr2, SA_NODEFER, &mask);
	CHECK(kill(getpid(), SIGUSR2) == 0);
	CHECK(usr2_max_depth == 2 && !usr1_during_usr2 && usr1_count == 1);

	/* SA_RESETHAND: the handler once, then the default action. */
	shared = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(shared != MAP_FAILED);
	int st = child_status(resethand_body);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGUSR1 && *shared == 1);

	/* A frame that cannot be read back, or written: SIGSEGV. */
	st = child_status(bad_sigreturn_body);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	st = child_status(unwritable_frame_body);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);

	puts("signals: every check held");
	return 0;
}
