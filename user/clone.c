/* clone as the C libraries use it to fork, and Linux's answers to the
 * flags it refuses. The child writes its thread id into its own memory
 * (CLONE_CHILD_SETTID) and the parent gets it in its own
 * (CLONE_PARENT_SETTID); CLONE_SETTLS gives the child its FS base; a
 * child given a stack runs on it; the combinations Linux refuses are
 * EINVAL. Built with musl and with glibc (/bin/clone.glibc); passes
 * unmodified on Linux. Exits 0 when every check holds. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define ARCH_GET_FS 0x1003

/* A raw clone whose child runs only the code below, on `stack` if given:
 * it exits with bit 0 set if its FS base is not `tls`, bit 1 if its stack
 * pointer is not `stack`. No C library code runs in the child, whose FS
 * base is not a thread's. */
static long clone_probe(unsigned long flags, void *stack, unsigned long tls)
{
	long ret;
	register long r10 __asm__("r10") = 0;
	register long r8 __asm__("r8") = (long)tls;
	__asm__ volatile("syscall\n\t"
			 "test %%rax, %%rax\n\t"
			 "jnz 1f\n\t"
			 /* The child: RSI still holds `stack`, R8 `tls`. */
			 "xor %%ebx, %%ebx\n\t"
			 "cmp %%rsi, %%rsp\n\t"
			 "je 2f\n\t"
			 "or $2, %%ebx\n\t"
			 "2:\n\t"
			 "sub $16, %%rsp\n\t"
			 "mov $158, %%eax\n\t" /* arch_prctl(ARCH_GET_FS, rsp) */
			 "mov $0x1003, %%edi\n\t"
			 "mov %%rsp, %%rsi\n\t"
			 "syscall\n\t"
			 "cmp (%%rsp), %%r8\n\t"
			 "je 3f\n\t"
			 "or $1, %%ebx\n\t"
			 "3:\n\t"
			 "mov %%ebx, %%edi\n\t"
			 "mov $231, %%eax\n\t" /* exit_group */
			 "syscall\n\t"
			 "1:\n\t"
			 : "=a"(ret)
			 : "a"((long)SYS_clone), "D"(flags), "S"(stack), "d"(0L), "r"(r10), "r"(r8)
			 : "rbx", "rcx", "r11", "memory");
	return ret;
}

static int wait_status(pid_t pid)
{
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	return st;
}

int main(void)
{
	/* The fork kind glibc uses, with the parent's copy of the id too. The
	 * child tells its thread id through a shared page. */
	volatile pid_t *shared = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(shared != MAP_FAILED);
	pid_t ctid = 0, ptid = 0;
	long pid = syscall(SYS_clone, CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | CLONE_PARENT_SETTID | SIGCHLD, 0,
			   &ptid, &ctid, 0);
	CHECK(pid >= 0);
	if (pid == 0) {
		pid_t me = syscall(SYS_gettid);
		*shared = me;
		_exit(ctid == me ? 0 : 10);
	}
	CHECK(wait_status(pid) == 0);
	CHECK(ptid == *shared && ptid > 0);
	CHECK(ctid == 0); /* the child's write went to its own memory */

	/* A new stack and a TLS: the child runs on the one with the other. */
	static char stack[16384] __attribute__((aligned(16)));
	unsigned long tls = 0x12345000;
	pid = clone_probe(SIGCHLD | CLONE_SETTLS, stack + sizeof stack, tls);
	CHECK(pid > 0);
	int st = wait_status(pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

	/* The exit signal may be none. */
	pid = syscall(SYS_clone, 0, 0, 0, 0, 0);
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(3);
	CHECK(waitpid(pid, &st, __WALL) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 3);

	/* What Linux refuses. */
	errno = 0;
	CHECK(syscall(SYS_clone, CLONE_SIGHAND | SIGCHLD, 0, 0, 0, 0) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_clone, CLONE_THREAD | CLONE_VM | SIGCHLD, 0, 0, 0, 0) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_clone, CLONE_NEWNS | CLONE_FS | SIGCHLD, 0, 0, 0, 0) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_clone, CLONE_PIDFD | CLONE_PARENT_SETTID | SIGCHLD, 0, &ptid, 0, 0) == -1 && errno == EINVAL);
	CHECK(syscall(SYS_clone, CLONE_PIDFD | CLONE_DETACHED | SIGCHLD, 0, &ptid, 0, 0) == -1 && errno == EINVAL);

	/* set_tid_address answers with the caller's thread id. */
	CHECK(syscall(SYS_set_tid_address, &ctid) == syscall(SYS_gettid));
	puts("clone: every check held");
	return 0;
}
