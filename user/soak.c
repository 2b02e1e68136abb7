/* A soak under memory pressure: `soak <workers> <seconds> <MiB>`.
 *
 * Each worker keeps up to <MiB> of private anonymous regions of random sizes
 * (4 KiB to 8 MiB), each filled with a pattern of its own. In a loop until the
 * time is up it maps and fills a region, checks one, unmaps one (checking it
 * first), or forks a checker: a child that checks every region, overwrites
 * one (its copy-on-write copy) and exits, after which the worker checks that
 * region again. Workers count their operations in a page shared with the
 * parent. With more memory in the workers than the machine has, everything
 * goes through swap and back.
 *
 * Exit status 0 when every word read back was the one written and every
 * worker and checker ended cleanly; the last line says what was done. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_REGIONS 64
#define MAX_WORKERS 16

struct counts {
	long maps, unmaps, checks, forks, words, wrong, failed_maps;
};

struct region {
	uint64_t *base;
	size_t words;
	uint64_t seed;
};

static struct counts *shared; /* one per worker, in a MAP_SHARED page */

static uint64_t state;

static uint64_t rnd(void)
{
	/* splitmix64 */
	uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t word_of(uint64_t seed, size_t i)
{
	uint64_t x = seed + i * 0x2545f4914f6cdd1dULL;
	return x ^ (x >> 29) ^ ((uint64_t)i << 40);
}

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fill(const struct region *r)
{
	for (size_t i = 0; i < r->words; i++)
		r->base[i] = word_of(r->seed, i);
}

/* Checks a region; returns the number of wrong words, and reports the first. */
static long check(const struct region *r, struct counts *c)
{
	long wrong = 0;
	for (size_t i = 0; i < r->words; i++) {
		uint64_t want = word_of(r->seed, i);
		if (r->base[i] != want) {
			if (wrong == 0)
				printf("soak: region %p word %zu of %zu is %#llx, not %#llx\n", (void *)r->base, i,
				       r->words, (unsigned long long)r->base[i], (unsigned long long)want);
			wrong++;
		}
	}
	c->words += r->words;
	c->wrong += wrong;
	return wrong;
}

static int worker(int id, double secs, size_t budget)
{
	struct region regions[MAX_REGIONS];
	int n = 0;
	size_t held = 0;
	struct counts *c = &shared[id];
	state = 0x5eed0000ULL + (uint64_t)id * 1000003;
	double end = seconds() + secs;

	while (seconds() < end) {
		unsigned op = rnd() % 16;
		if (op < 7 && n < MAX_REGIONS) {
			size_t len = ((size_t)4096 << (rnd() % 11)) + 4096 * (rnd() % 8);
			if (len > ((size_t)8 << 20))
				len = (size_t)8 << 20;
			if (held + len > budget)
				op = 15; /* over budget: unmap one instead */
			else {
				void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
				if (p == MAP_FAILED) {
					c->failed_maps++;
					continue;
				}
				regions[n] = (struct region){ p, len / 8, rnd() };
				fill(&regions[n]);
				n++;
				held += len;
				c->maps++;
				continue;
			}
		}
		if (n == 0)
			continue;
		struct region *r = &regions[rnd() % n];
		if (op < 12) {
			check(r, c);
			c->checks++;
		} else if (op < 14) {
			pid_t pid = fork();
			if (pid < 0) {
				check(r, c);
				continue;
			}
			if (pid == 0) {
				long wrong = 0;
				for (int i = 0; i < n; i++)
					wrong += check(&regions[i], c);
				for (size_t i = 0; i < r->words; i += 509)
					r->base[i] = ~word_of(r->seed, i);
				_exit(wrong ? 1 : 0);
			}
			int status;
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				printf("soak: worker %d: checker ended with status %#x\n", id, status);
				c->wrong++;
			}
			check(r, c); /* the checker's writes were its own */
			c->forks++;
		} else {
			check(r, c);
			munmap(r->base, r->words * 8);
			held -= r->words * 8;
			*r = regions[--n];
			c->unmaps++;
		}
	}
	for (int i = 0; i < n; i++)
		check(&regions[i], c);
	return c->wrong ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: soak <workers> <seconds> <MiB per worker>\n");
		return 2;
	}
	int workers = atoi(argv[1]);
	double secs = atof(argv[2]);
	size_t budget = (size_t)atol(argv[3]) << 20;
	if (workers < 1 || workers > MAX_WORKERS || secs <= 0 || budget == 0) {
		fprintf(stderr, "soak: 1 to %d workers, a positive time and size\n", MAX_WORKERS);
		return 2;
	}
	shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED) {
		perror("soak: mmap of the shared page");
		return 1;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	pid_t pids[MAX_WORKERS];
	for (int i = 0; i < workers; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("soak: fork");
			return 1;
		}
		if (pids[i] == 0)
			_exit(worker(i, secs, budget));
	}
	int failed = 0;
	for (int i = 0; i < workers; i++) {
		int status;
		while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR)
			;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			printf("soak: worker %d ended with status %#x\n", i, status);
			failed++;
		}
	}
	struct counts t = { 0 };
	for (int i = 0; i < workers; i++) {
		t.maps += shared[i].maps;
		t.unmaps += shared[i].unmaps;
		t.checks += shared[i].checks;
		t.forks += shared[i].forks;
		t.words += shared[i].words;
		t.wrong += shared[i].wrong;
		t.failed_maps += shared[i].failed_maps;
	}
	printf("soak: %d workers x %zu MiB for %.0f s: %ld maps, %ld unmaps, %ld checks, %ld checkers, "
	       "%ld words checked, %ld wrong, %ld failed maps, %d workers failed\n",
	       workers, budget >> 20, secs, t.maps, t.unmaps, t.checks, t.forks, t.words, t.wrong,
	       t.failed_maps, failed);
	return t.wrong == 0 && failed == 0 ? 0 : 1;
}
