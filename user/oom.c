/* Running out of memory is a normal event: a child allocates and touches
 * memory until mmap fails (ENOMEM) or the kernel kills it for want of
 * memory (SIGKILL); either way the parent survives, and afterwards memory
 * can be had again. Prints "oom: ok" and exits 0. Passes unmodified on
 * Linux (where the OOM killer ends the child). Meant for a machine with no
 * swap and little memory (QEMU's 128 MiB). */
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "check.h"

#define CHUNK (4 << 20)

int main(void)
{
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		for (long mb = 0; mb < (1L << 20); mb += CHUNK >> 20) {
			char *m = mmap(0, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED)
				_exit(errno == ENOMEM ? 0 : 1);
			for (long i = 0; i < CHUNK; i += 4096)
				m[i] = 1;
		}
		_exit(2);
	}
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL));
	/* The memory came back. */
	char *m = mmap(0, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	for (long i = 0; i < CHUNK; i += 4096)
		m[i] = 1;
	printf("oom: ok (child %s)\n", WIFSIGNALED(st) ? "killed by SIGKILL" : "saw ENOMEM");
	return 0;
}
