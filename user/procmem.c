/* /proc/PID/mem as a debugger uses it: reads and writes at virtual
 * addresses, past the mapping's protection where its maximum allows (a
 * breakpoint in read-only text), into the process's own copy only.
 *
 *   procmem [dir]    (dir: where to make a file to map; /tmp by default)
 *
 * Prints "procmem: ok" and exits 0. Runs unmodified on Linux, where as
 * PID 1 (tests/linux/run-linux.sh) it mounts /proc itself. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"

#define P 4096L

static int mem_fd(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/mem", pid);
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	return fd;
}

/* Reads and writes of the program's own memory, at its addresses. */
static void own(void)
{
	int fd = mem_fd(getpid());
	char *m = mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	memset(m, 'a', 2 * P);
	char buf[64];
	/* A read across the page boundary. */
	CHECK(pread(fd, buf, 20, (off_t)(uintptr_t)(m + P - 10)) == 20 && memcmp(buf, "aaaaaaaaaaaaaaaaaaaa", 20) == 0);
	CHECK(pwrite(fd, "hello", 5, (off_t)(uintptr_t)(m + P - 2)) == 5);
	CHECK(memcmp(m + P - 2, "hello", 5) == 0);

	/* Read-only now: the write goes through all the same, and leaves the
	 * page read-only (a plain write would fault). */
	CHECK(mprotect(m, 2 * P, PROT_READ) == 0);
	CHECK(pwrite(fd, "RO", 2, (off_t)(uintptr_t)m) == 2 && memcmp(m, "ROa", 3) == 0);

	/* Through the file offset too. */
	CHECK(lseek(fd, (off_t)(uintptr_t)(m + 100), SEEK_SET) == (off_t)(uintptr_t)(m + 100));
	CHECK(write(fd, "xyz", 3) == 3 && read(fd, buf, 2) == 2 && memcmp(buf, "aa", 2) == 0);
	CHECK(memcmp(m + 100, "xyzaa", 5) == 0);

	/* The program's own code reads back as it is. */
	CHECK(pread(fd, buf, 16, (off_t)(uintptr_t)own) == 16 && memcmp(buf, (void *)own, 16) == 0);

	/* Nothing mapped: EIO at the start, a short count across the end. */
	CHECK(munmap(m + P, P) == 0);
	CHECK(pread(fd, buf, 8, (off_t)(uintptr_t)(m + P)) < 0 && errno == EIO);
	CHECK(pread(fd, buf, 20, (off_t)(uintptr_t)(m + P - 10)) == 10);
	CHECK(munmap(m, P) == 0 && close(fd) == 0);
}

/* A read-only private file mapping (as a program's text is) takes a
 * write into its own copy; the file and a shared mapping of it keep their
 * bytes. A shared read-only mapping is not written at all. */
static void file(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/procmem-file", dir);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(f >= 0);
	char page[P];
	memset(page, 'F', P);
	CHECK(write(f, page, P) == P && close(f) == 0);
	f = open(path, O_RDONLY);
	CHECK(f >= 0);
	char *priv = mmap(0, P, PROT_READ | PROT_EXEC, MAP_PRIVATE, f, 0);
	char *shared = mmap(0, P, PROT_READ, MAP_SHARED, f, 0);
	CHECK(priv != MAP_FAILED && shared != MAP_FAILED);
	CHECK(priv[0] == 'F' && shared[0] == 'F');
	int fd = mem_fd(getpid());
	CHECK(pwrite(fd, "\xcc", 1, (off_t)(uintptr_t)priv) == 1);
	CHECK(priv[0] == '\xcc' && priv[1] == 'F');
	CHECK(shared[0] == 'F');
	char c;
	CHECK(pread(f, &c, 1, 0) == 1 && c == 'F');
	CHECK(pwrite(fd, "X", 1, (off_t)(uintptr_t)shared) < 0 && errno == EIO);
	CHECK(shared[0] == 'F');
	CHECK(munmap(priv, P) == 0 && munmap(shared, P) == 0 && close(f) == 0 && close(fd) == 0);
	CHECK(unlink(path) == 0);
}

/* Another process's memory: a parent writes into its child's copy of a
 * page they share after fork; the parent's stays as it was. */
static void child(void)
{
	char *m = mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	volatile int *flag = mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED && flag != MAP_FAILED);
	strcpy(m, "parent");
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		*flag = 1;
		while (*flag != 2)
			usleep(1000);
		_exit(strcmp(m, "child!") == 0 ? 0 : 3);
	}
	while (*flag != 1)
		usleep(1000);
	int fd = mem_fd(c);
	char buf[8];
	CHECK(pread(fd, buf, 7, (off_t)(uintptr_t)m) == 7 && strcmp(buf, "parent") == 0);
	CHECK(pwrite(fd, "child!", 7, (off_t)(uintptr_t)m) == 7);
	CHECK(strcmp(m, "parent") == 0);
	*flag = 2;
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The process is gone: its file reads nothing. */
	CHECK(pread(fd, buf, 7, (off_t)(uintptr_t)m) <= 0);
	CHECK(close(fd) == 0 && munmap(m, P) == 0 && munmap((void *)flag, P) == 0);
}

int main(int argc, char **argv)
{
	/* As Linux's /init (tests/linux/run-linux.sh): /tmp and /proc of its own. */
	if (getpid() == 1 && !on_bsdvm()) {
		mkdir("/tmp", 01777);
		mkdir("/proc", 0555);
		CHECK(mount("proc", "/proc", "proc", 0, NULL) == 0);
	}
	own();
	file(argc > 1 ? argv[1] : "/tmp");
	child();
	printf("procmem: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
