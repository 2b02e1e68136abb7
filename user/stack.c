/* The user stack grows on demand: a recursion that uses about 4 MiB of
 * stack works and keeps its data; a child that recurses without end is
 * killed cleanly (SIGSEGV) at the stack limit and the parent goes on.
 * Memory mapped with MAP_GROWSDOWN grows the same way, down to the same
 * limit. Prints "stack: ok" and exits 0. Passes unmodified on Linux (with
 * the default 8 MiB stack limit). */
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
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

#define P 4096L

/* The start of the /proc/self/maps line holding `a`, or 0. */
static uintptr_t line_start(void *a)
{
	FILE *f = fopen("/proc/self/maps", "r");
	CHECK(f != NULL);
	char line[512];
	uintptr_t s, e, found = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s <= (uintptr_t)a && (uintptr_t)a < e)
			found = s;
	fclose(f);
	return found;
}

/* MAP_GROWSDOWN: four pages at the top of 64 MiB left free below them; a
 * touch below grows the mapping down over it, to the stack limit and no
 * further. */
static void grows_down(void)
{
	long room = 64L << 20;
	char *r = mmap(0, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(r != MAP_FAILED && munmap(r, room) == 0);
	char *top = r + room;
	char *g = mmap(top - 4 * P, 4 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED,
		       -1, 0);
	CHECK(g == top - 4 * P);
	strcpy(g, "top");
	g[-1] = 'a';
	CHECK(line_start(g - 1) != 0 && line_start(g - 1) <= (uintptr_t)(g - P) && line_start(g) == line_start(g - 1));
	char *far = top - (1L << 20);
	far[0] = 'b';
	CHECK(line_start(far) != 0 && line_start(far) <= (uintptr_t)far);
	CHECK(g[-1] == 'a' && far[0] == 'b' && strcmp(g, "top") == 0);

	/* Past the limit, 16 MiB down: the child is killed, as by an endless
	 * recursion. */
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		*(volatile char *)(top - (16L << 20)) = 1;
		_exit(0);
	}
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	CHECK(munmap(top - (1L << 20), 1L << 20) == 0);
}

int main(int argc, char **argv)
{
	(void)argv;
	/* As Linux's /init (tests/linux/run-linux.sh): /proc of its own. */
	if (getpid() == 1 && !on_bsdvm()) {
		mkdir("/proc", 0555);
		CHECK(mount("proc", "/proc", "proc", 0, NULL) == 0);
	}
	/* 256 levels × 16 KiB = 4 MiB; every level sees its own frame intact. */
	CHECK(deep(255) == 256 * 4);

	pid_t c = fork();
	if (c == 0)
		_exit((int)endless((uint64_t)argc));
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
	grows_down();
	printf("stack: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
