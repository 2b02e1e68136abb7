/* What a program sees when the disk fails: read() of a file returns EIO,
 * and touching a mapped page that cannot be read kills with SIGBUS (in a
 * child, so this program can report it). Exits with bit 0 set if read got
 * EIO and bit 1 if the mapped access got SIGBUS: 0 on a working disk (as
 * on Linux), 3 when every read fails. Any other outcome exits 100 + a
 * code.
 *
 *   ioerr <file> <byte offset> */
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "check.h"

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: ioerr <file> <byte offset>\n");
		return 100;
	}
	long off = atol(argv[2]) & ~4095L;
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0)
		return 101;
	int result = 0;
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof buf, off);
	if (n < 0 && errno == EIO)
		result |= 1;
	else if (n != (ssize_t)sizeof buf)
		return 102;
	volatile char *m = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, off + 1024 * 4096);
	if (m == MAP_FAILED)
		return 103;
	pid_t c = fork();
	if (c == 0) {
		(void)m[0];
		_exit(0);
	}
	int st;
	if (waitpid(c, &st, 0) != c)
		return 104;
	if (WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS)
		result |= 2;
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return 105;
	return result;
}
