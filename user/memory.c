/* Memory system calls as musl programs use them: malloc (brk and mmap
 * underneath), mmap's argument errors, MAP_FIXED and MAP_FIXED_NOREPLACE,
 * mprotect and munmap. Exits 0 when every check holds, else the number of
 * the first one that failed. Passes unmodified on Linux. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define P 4096

int main(void)
{
	char *small = malloc(100);
	char *big = malloc(1 << 20);
	if (!small || !big)
		return 2;
	memset(small, 7, 100);
	memset(big, 9, 1 << 20);
	for (int i = 0; i < (1 << 20); i += P)
		if (big[i] != 9 || small[i % 100] != 7)
			return 3;
	free(big);
	free(small);

	if (mmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED || errno != EINVAL)
		return 4;
	if (mmap(0, P, PROT_READ, MAP_ANONYMOUS, -1, 0) != MAP_FAILED || errno != EINVAL)
		return 5;
	if (mmap((void *)0x10001, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED ||
	    errno != EINVAL)
		return 6;

	char *m = mmap(0, 3 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 7;
	m[0] = 1;
	m[2 * P] = 2;
	if (mmap(m, P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != MAP_FAILED ||
	    errno != EEXIST)
		return 8;
	/* MAP_FIXED replaces the first page with a fresh, zero one. */
	if (mmap(m, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != m || m[0] != 0 ||
	    m[2 * P] != 2)
		return 9;
	if (mprotect(m, P, PROT_READ) != 0)
		return 10;
	/* musl's mprotect rounds the address down; the system call does not. */
	if (syscall(SYS_mprotect, m + 1, P, PROT_READ) == 0 || errno != EINVAL)
		return 11;
	if (munmap(m, 3 * P) != 0)
		return 12;
	if (mprotect(m, P, PROT_READ) == 0 || errno != ENOMEM)
		return 13;
	if (munmap(m + 1, P) == 0 || errno != EINVAL)
		return 14;
	return 0;
}
