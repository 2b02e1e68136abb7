/* The user stack grows on demand: a recursion that uses about 4 MiB of
 * stack works and keeps its data; a child that recurses without end is
 * killed cleanly (SIGSEGV) at the stack limit and the parent goes on.
 * Prints "stack: ok" and exits 0. Passes unmodified on Linux (with the
 * default 8 MiB stack limit). */
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>

#include "check.h"

/* Each level keeps 16 KiB live on the stack. */
static uint64_t deep(int n)
{
	volatile uint64_t frame[2048];
	for (int i = 0; i < 2048; i += 512)
		frame[i] = n * 7 + i;
	uint64_t below = n > 0 ? deep(n - 1) : 0;
	uint64_t sum = below;
	for (int i = 0; i < 2048; i += 512)
		sum += frame[i] == (uint64_t)(n * 7 + i);
	return sum;
}

static uint64_t endless(uint64_t n)
{
	volatile uint64_t frame[512];
	if (n == 0)
		return 0; /* never: n starts at 1 */
	frame[0] = n;
	frame[511] = n;
	return endless(n + 1) + frame[0] + frame[511];
}

int main(int argc, char **argv)
{
	(void)argv;
	/* 256 levels × 16 KiB = 4 MiB; every level sees its own frame intact. */
	CHECK(deep(255) == 256 * 4);

	pid_t c = fork();
	if (c == 0)
		_exit((int)endless((uint64_t)argc));
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	printf("stack: ok\n");
	return 0;
}
