/* A check that names what failed: `CHECK(cond)` prints the file, line,
 * condition and errno and exits 1 when `cond` is false. Test programs run
 * unmodified here and on Linux. */
#ifndef CHECK_H
#define CHECK_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			int e_ = errno;                                                      \
			fprintf(stderr, "%s:%d: check failed: %s (errno %d: %s)\n", __FILE__, \
				__LINE__, #cond, e_, strerror(e_));                          \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

/* True when running on this kernel rather than on Linux. */
static inline int on_bsdvm(void)
{
	struct utsname u;
	return uname(&u) == 0 && strstr(u.release, "bsdvm") != NULL;
}
#endif
