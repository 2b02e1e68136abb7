/* Maps a file and checksums it through the mapping (FNV-1a, 64 bits):
 * prints "<size> <checksum in hex> <path>". The host compares it with its
 * own checksum of the same file. Passes unmodified on Linux.
 *
 *   cksum <file>... */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "check.h"

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: cksum <file>...\n");
		return 2;
	}
	for (int a = 1; a < argc; a++) {
		int fd = open(argv[a], O_RDONLY);
		CHECK(fd >= 0);
		struct stat st;
		CHECK(fstat(fd, &st) == 0);
		uint64_t h = 0xcbf29ce484222325ULL;
		if (st.st_size > 0) {
			const unsigned char *m = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			CHECK(m != MAP_FAILED);
			for (off_t i = 0; i < st.st_size; i++)
				h = (h ^ m[i]) * 0x100000001b3ULL;
			CHECK(munmap((void *)m, st.st_size) == 0);
		}
		close(fd);
		printf("%lld %016llx %s\n", (long long)st.st_size, (unsigned long long)h, argv[a]);
	}
	return 0;
}
