/* Nested fork, 100 rounds: each round the parent forks a child that
 * rewrites the shared-looking memory, forks a grandchild that rewrites it
 * again, and checks that each generation sees only its own writes. The
 * parent's memory is unchanged after all of it. Prints "nested: ok" and
 * exits 0. Passes unmodified on Linux. */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "check.h"

#define P 4096
#define PAGES 64
#define ROUNDS 100

static int holds(volatile uint32_t *m, uint32_t base)
{
	for (int i = 0; i < PAGES; i++)
		if (m[i * (P / 4)] != base + i || m[i * (P / 4) + 7] != ~(base + i))
			return 0;
	return 1;
}

static void fill(volatile uint32_t *m, uint32_t base)
{
	for (int i = 0; i < PAGES; i++) {
		m[i * (P / 4)] = base + i;
		m[i * (P / 4) + 7] = ~(base + i);
	}
}

static int wait_ok(pid_t c)
{
	int st;
	return waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(void)
{
	volatile uint32_t *m = mmap(0, PAGES * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	fill(m, 1000);
	for (int r = 0; r < ROUNDS; r++) {
		pid_t c = fork();
		CHECK(c >= 0);
		if (c == 0) {
			if (!holds(m, 1000))
				_exit(2);
			fill(m, 2000 + r);
			pid_t g = fork();
			if (g < 0)
				_exit(3);
			if (g == 0) {
				if (!holds(m, 2000 + r))
					_exit(4);
				fill(m, 3000 + r);
				_exit(holds(m, 3000 + r) ? 0 : 5);
			}
			if (!wait_ok(g))
				_exit(6);
			_exit(holds(m, 2000 + r) ? 0 : 7);
		}
		CHECK(wait_ok(c));
		CHECK(holds(m, 1000));
	}
	printf("nested: ok\n");
	return 0;
}
