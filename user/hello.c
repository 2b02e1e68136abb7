/* The first C program: musl's start-up (TLS, stdio) and a buffered printf
 * flushed at exit through writev. Exits 42 when printf reports 16 bytes;
 * on Linux it does the same. */
#include <stdio.h>

int main(int argc, char **argv)
{
	int n = printf("hello from musl\n");
	return (n == 16 && argc == 1 && argv[0] != 0) ? 42 : 1;
}
