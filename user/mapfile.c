/* File mappings: a shared mapping reads the file and its writes reach the
 * file (msync, read, and after unmap and remap); a private mapping's writes
 * stay private; write() is seen through a mapping; the partial last page
 * reads zeros past the end of the file; an access past the last page, or
 * past a truncation (of a locked mapping too), is SIGBUS; and mmap's errors
 * for files. Works in the
 * directory given as its argument (default /tmp). Prints "mapfile: ok" and
 * exits 0. Passes unmodified on Linux. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "check.h"

#define P 4096
#define SIZE (3 * P + 100)

static char byte_at(long i)
{
	return (char)('a' + (i * 7 + i / P) % 26);
}

static int killed_by_sigbus(volatile char *p)
{
	pid_t c = fork();
	if (c == 0) {
		(void)*p;
		_exit(0);
	}
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	return WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	char file[256];
	snprintf(file, sizeof file, "%s/mapfile-%d", dir, getpid());
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	static char data[SIZE];
	for (long i = 0; i < SIZE; i++)
		data[i] = byte_at(i);
	CHECK(write(fd, data, SIZE) == SIZE);

	/* Shared: reads the file; the tail of the last page is zero. */
	char *m = mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED);
	CHECK(memcmp(m, data, SIZE) == 0);
	for (long i = SIZE; i < 4 * P; i++)
		CHECK(m[i] == 0);

	/* Writes through the mapping reach the file. */
	m[5] = 'X';
	m[2 * P + 1] = 'Y';
	CHECK(msync(m, 4 * P, MS_SYNC) == 0);
	char b[8];
	CHECK(pread(fd, b, 2, 5) == 2 && b[0] == 'X');
	CHECK(pread(fd, b, 1, 2 * P + 1) == 1 && b[0] == 'Y');

	/* write() is seen through the mapping. */
	CHECK(pwrite(fd, "ZZ", 2, P + 10) == 2);
	CHECK(m[P + 10] == 'Z' && m[P + 11] == 'Z');

	/* Unmap, map again: the data is still there. */
	m[3 * P + 50] = 'W';
	CHECK(munmap(m, 4 * P) == 0);
	m = mmap(0, SIZE, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(m != MAP_FAILED);
	CHECK(m[5] == 'X' && m[2 * P + 1] == 'Y' && m[3 * P + 50] == 'W' && m[P + 10] == 'Z');
	CHECK(munmap(m, SIZE) == 0);

	/* Private: writes stay private; the file does not change. */
	char *pv = mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, P);
	CHECK(pv != MAP_FAILED);
	CHECK(pv[0] == byte_at(P));
	pv[0] = '!';
	CHECK(pread(fd, b, 1, P) == 1 && b[0] == byte_at(P));
	CHECK(pv[0] == '!');
	CHECK(munmap(pv, 2 * P) == 0);

	/* Past the end of the file: SIGBUS; and after a truncation. */
	char *big = mmap(0, 8 * P, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(big != MAP_FAILED);
	CHECK(big[3 * P] == byte_at(3 * P));
	CHECK(killed_by_sigbus(big + 5 * P));
	CHECK(ftruncate(fd, P + 10) == 0);
	CHECK(big[P + 9] == byte_at(P + 9) && big[P + 10] == 0);
	CHECK(killed_by_sigbus(big + 2 * P));
	CHECK(munmap(big, 8 * P) == 0);

	/* A locked mapping truncated: the pages past the new end leave it
	 * (SIGBUS there), the rest stay, and nothing is left behind once it
	 * is unlocked and unmapped. */
	char *locked = mmap(0, 4 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(locked != MAP_FAILED);
	CHECK(ftruncate(fd, 4 * P) == 0);
	memset(locked, 'L', 4 * P);
	CHECK(mlock(locked, 4 * P) == 0);
	CHECK(ftruncate(fd, P) == 0);
	CHECK(killed_by_sigbus(locked + 2 * P));
	CHECK(locked[P - 1] == 'L');
	CHECK(munlock(locked, 4 * P) == 0);
	CHECK(munmap(locked, 4 * P) == 0);

	/* mmap's errors for files. */
	int ro = open(file, O_RDONLY);
	CHECK(ro >= 0);
	CHECK(mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED && errno == EACCES);
	char *priv = mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE, ro, 0);
	CHECK(priv != MAP_FAILED);
	priv[0] = 1;
	CHECK(mmap(0, P, PROT_READ, MAP_SHARED, 99, 0) == MAP_FAILED && errno == EBADF);
	CHECK(mmap(0, P, PROT_READ, MAP_SHARED, fd, 100) == MAP_FAILED && errno == EINVAL);
	close(ro);
	close(fd);
	CHECK(unlink(file) == 0);
	printf("mapfile: ok\n");
	return 0;
}
