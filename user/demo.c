/*
 * The VM demo that init runs at boot: memory touched page by page, a fork
 * whose copy-on-write keeps parent and child apart, and a child killed by
 * SIGSEGV while the parent goes on. Runs unmodified on Linux too.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 1024 /* 4 MiB */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int count(volatile uint64_t *m, uint64_t base)
{
	int same = 0;
	for (int i = 0; i < PAGES; i++)
		same += m[i * (PAGE / 8)] == base + i;
	return same;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	printf("demo: pid %d, parent %d\n", getpid(), getppid());

	volatile uint64_t *m = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		perror("demo: mmap");
		return 1;
	}
	uint64_t t0 = now_ns();
	for (int i = 0; i < PAGES; i++)
		m[i * (PAGE / 8)] = 1000 + i;
	uint64_t t1 = now_ns();
	printf("demo: touched %d fresh pages (4 MiB): one zero-fill fault each, %llu ns per page\n",
	       PAGES, (unsigned long long)(t1 - t0) / PAGES);

	pid_t child = fork();
	if (child == 0) {
		int same = count(m, 1000);
		for (int i = 0; i < PAGES / 2; i++)
			m[i * (PAGE / 8)] = 5000 + i;
		printf("demo:   child %d: saw %d of %d pages as the parent wrote them; "
		       "rewrote the first half (copy-on-write)\n", getpid(), same, PAGES);
		_exit(count(m, 5000) == PAGES / 2 ? 0 : 1);
	}
	int status;
	waitpid(child, &status, 0);
	printf("demo: parent: child %d exited with %d; the parent still sees %d of %d pages unchanged\n",
	       child, WEXITSTATUS(status), count(m, 1000), PAGES);

	child = fork();
	if (child == 0) {
		printf("demo:   child %d: writing through a null pointer...\n", getpid());
		*(volatile int *)0 = 1;
		_exit(0);
	}
	waitpid(child, &status, 0);
	if (WIFSIGNALED(status))
		printf("demo: parent: child %d was killed by signal %d (%s); the parent goes on\n",
		       child, WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		printf("demo: parent: child %d exited with %d (expected a SIGSEGV)\n", child,
		       WEXITSTATUS(status));

	munmap((void *)m, PAGES * PAGE);
	printf("demo: unmapped the 4 MiB; done\n");
	return 0;
}
