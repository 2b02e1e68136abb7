/* The file system calls: open/openat with O_CREAT, O_EXCL, O_TRUNC,
 * O_APPEND and O_DIRECTORY; read, write, pread, pwrite and lseek (holes read
 * as zeros); fstat and stat; ftruncate; dup and dup2 sharing an offset;
 * getdents64 listing a directory; unlink, also of a file still open (it
 * stays readable until closed); and the errors of each. Works in the
 * directory given as its argument (default /tmp). Prints "files: ok" and
 * exits 0. Passes unmodified on Linux. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "check.h"

static char path[256];

static const char *in(const char *dir, const char *name)
{
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return path;
}

static int listed(const char *dir, const char *name)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	CHECK(fd >= 0);
	char buf[512];
	int found = 0;
	long n;
	/* A small buffer: the listing takes several calls. */
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (long off = 0; off < n;) {
			struct dirent *d = (struct dirent *)(buf + off);
			if (strcmp(d->d_name, name) == 0)
				found++;
			off += d->d_reclen;
		}
	}
	CHECK(n == 0);
	close(fd);
	return found;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	char name[64];
	snprintf(name, sizeof name, "files-test-%d", getpid());
	char file[256];
	snprintf(file, sizeof file, "%s/%s", dir, name);
	unlink(file);

	/* Create, write, read back. */
	int fd = open(file, O_RDWR | O_CREAT | O_EXCL, 0644);
	CHECK(fd >= 0);
	CHECK(open(file, O_RDWR | O_CREAT | O_EXCL, 0644) == -1 && errno == EEXIST);
	const char msg[] = "hello, file\n";
	CHECK(write(fd, msg, sizeof msg - 1) == sizeof msg - 1);
	CHECK(lseek(fd, 0, SEEK_CUR) == sizeof msg - 1);
	char buf[8192];
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	CHECK(read(fd, buf, sizeof buf) == sizeof msg - 1 && memcmp(buf, msg, sizeof msg - 1) == 0);
	CHECK(read(fd, buf, sizeof buf) == 0);

	/* A hole: writing past the end leaves zeros between. */
	CHECK(pwrite(fd, "X", 1, 10000) == 1);
	struct stat st;
	CHECK(fstat(fd, &st) == 0 && st.st_size == 10001 && S_ISREG(st.st_mode));
	CHECK(pread(fd, buf, 100, 5000) == 100);
	for (int i = 0; i < 100; i++)
		CHECK(buf[i] == 0);
	CHECK(pread(fd, buf, 10, 9995) == 6 && buf[5] == 'X');

	/* A larger write crossing many blocks, read back in odd pieces. */
	static char big[300000];
	for (unsigned i = 0; i < sizeof big; i++)
		big[i] = (char)(i * 7 + i / 4096);
	CHECK(pwrite(fd, big, sizeof big, 4096 * 3 + 5) == sizeof big);
	for (unsigned off = 0; off < sizeof big; off += 7777) {
		unsigned n = sizeof big - off < 7777 ? sizeof big - off : 7777;
		CHECK(pread(fd, buf, n, 4096 * 3 + 5 + off) == (ssize_t)n);
		CHECK(memcmp(buf, big + off, n) == 0);
	}

	/* ftruncate shrinks (and the tail reads as zeros when it grows again). */
	CHECK(ftruncate(fd, 3) == 0);
	CHECK(fstat(fd, &st) == 0 && st.st_size == 3);
	CHECK(ftruncate(fd, 100) == 0);
	CHECK(pread(fd, buf, 100, 0) == 100 && memcmp(buf, "hel", 3) == 0 && buf[3] == 0 && buf[99] == 0);
	CHECK(ftruncate(fd, -1) == -1 && errno == EINVAL);

	/* dup shares the offset; dup2 onto a number. */
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	int fd2 = dup(fd);
	CHECK(fd2 >= 0 && fd2 != fd);
	CHECK(read(fd2, buf, 2) == 2 && lseek(fd, 0, SEEK_CUR) == 2);
	CHECK(dup2(fd, 50) == 50);
	CHECK(lseek(50, 0, SEEK_END) == 100);
	CHECK(close(50) == 0 && close(fd2) == 0);
	CHECK(close(fd2) == -1 && errno == EBADF);

	/* O_APPEND writes at the end whatever the offset. */
	int fa = open(file, O_WRONLY | O_APPEND);
	CHECK(fa >= 0);
	CHECK(lseek(fa, 0, SEEK_SET) == 0);
	CHECK(write(fa, "END", 3) == 3);
	CHECK(fstat(fa, &st) == 0 && st.st_size == 103);
	CHECK(read(fa, buf, 1) == -1 && errno == EBADF);
	close(fa);

	/* stat by path; O_TRUNC empties. */
	CHECK(stat(file, &st) == 0 && st.st_size == 103);
	int ft = open(file, O_WRONLY | O_TRUNC);
	CHECK(ft >= 0 && fstat(ft, &st) == 0 && st.st_size == 0);
	CHECK(write(ft, msg, sizeof msg - 1) == sizeof msg - 1);
	close(ft);

	/* The directory lists the file. */
	CHECK(listed(dir, name) == 1);
	CHECK(open(file, O_RDONLY | O_DIRECTORY) == -1 && errno == ENOTDIR);
	CHECK(open(dir, O_WRONLY) == -1 && errno == EISDIR);
	CHECK(open(in(dir, "no/such/file"), O_RDONLY) == -1 && errno == ENOENT);
	CHECK(stat(in(dir, "no-such-file"), &st) == -1 && errno == ENOENT);

	/* Unlinked while open: gone from the directory, still readable. */
	CHECK(unlink(file) == 0);
	CHECK(listed(dir, name) == 0);
	CHECK(open(file, O_RDONLY) == -1 && errno == ENOENT);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	CHECK(read(fd, buf, sizeof buf) == sizeof msg - 1 && memcmp(buf, msg, sizeof msg - 1) == 0);
	CHECK(close(fd) == 0);
	CHECK(unlink(file) == -1 && errno == ENOENT);

	/* Bad descriptors and pointers. */
	CHECK(read(77, buf, 1) == -1 && errno == EBADF);
	CHECK(syscall(SYS_read, 0, NULL, 0) == 0);
	CHECK(syscall(SYS_open, (char *)8, O_RDONLY) == -1 && errno == EFAULT);
	/* The console cannot seek (on Linux, stdout may be a file). */
	if (on_bsdvm())
		CHECK(lseek(1, 0, SEEK_SET) == -1 && errno == ESPIPE);
	printf("files: ok\n");
	return 0;
}
