/* Memory larger than RAM: writes a pattern over MIB mebibytes of anonymous
 * memory, reads it all back and checks every byte, so that most of it must
 * go to swap and come back.
 *
 *   swapper MIB [mode]
 *
 * mode "one" (the default): one process. "two": two processes at once,
 * MIB/2 each. "fork": the parent writes MIB/2, forks; the child checks the
 * parent's pattern, writes its own over half of it (copy-on-write under
 * memory pressure) and checks both halves; then the parent checks that
 * its own pattern is intact. Prints "swapper: ok" and the time taken, and
 * exits 0; a wrong byte is reported with its offset and exits 1. Runs
 * unmodified on Linux (with swap on). */
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"

static uint64_t word(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ seed;
	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	return x ^ (x >> 29);
}

static void fill(uint64_t *m, uint64_t words, uint64_t seed)
{
	for (uint64_t i = 0; i < words; i++)
		m[i] = word(seed, i);
}

/* Checks words [from, to); returns 0, or exits 1 at the first wrong one. */
static int verify(const uint64_t *m, uint64_t from, uint64_t to, uint64_t seed, const char *what)
{
	for (uint64_t i = from; i < to; i++) {
		if (m[i] != word(seed, i)) {
			printf("swapper: %s: wrong word at offset %#llx: %#llx, not %#llx\n", what,
			       (unsigned long long)(i * 8), (unsigned long long)m[i],
			       (unsigned long long)word(seed, i));
			exit(1);
		}
	}
	return 0;
}

static uint64_t *region(uint64_t bytes)
{
	void *m = mmap(0, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	return m;
}

/* One process's work: write, then read back twice. */
static void one(uint64_t bytes, uint64_t seed)
{
	uint64_t *m = region(bytes);
	fill(m, bytes / 8, seed);
	verify(m, 0, bytes / 8, seed, "first read");
	verify(m, 0, bytes / 8, seed, "second read");
}

static int wait_ok(pid_t c)
{
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		printf("swapper: child %d ended with status %#x\n", c, st);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], 0, 0) : 64;
	const char *mode = argc > 2 ? argv[2] : "one";
	uint64_t bytes = mib << 20;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!strcmp(mode, "one")) {
		one(bytes, 1);
	} else if (!strcmp(mode, "two")) {
		pid_t c[2];
		for (int k = 0; k < 2; k++) {
			c[k] = fork();
			CHECK(c[k] >= 0);
			if (c[k] == 0) {
				one(bytes / 2, 10 + k);
				_exit(0);
			}
		}
		int ok = wait_ok(c[0]) & wait_ok(c[1]);
		CHECK(ok);
	} else if (!strcmp(mode, "fork")) {
		uint64_t half = bytes / 2, words = half / 8;
		uint64_t *m = region(half);
		fill(m, words, 3);
		pid_t c = fork();
		CHECK(c >= 0);
		if (c == 0) {
			verify(m, 0, words, 3, "child, parent's pattern");
			fill(m, words / 2, 4);
			verify(m, 0, words / 2, 4, "child, own half");
			verify(m, words / 2, words, 3, "child, parent's half");
			_exit(0);
		}
		CHECK(wait_ok(c));
		verify(m, 0, words, 3, "parent after the child");
	} else {
		printf("swapper: unknown mode %s\n", mode);
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	printf("swapper: ok, %llu MiB (%s) in %ld ms\n", (unsigned long long)mib, mode, ms);
	return 0;
}
