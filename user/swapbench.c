/* Paging to swap as a program sees it, the same binary on our kernel and on
 * Linux: swapper's workload (user/swapper.c, mode "one") over MIB mebibytes
 * of private anonymous memory, three times RAM in the benchmark, with the
 * swap counters of /proc/vmstat (pswpout, pswpin: pages written to and read
 * from swap) read around each phase.
 *
 *   swapbench MIB [clustered|unclustered]
 *
 * Phases: "write" stores a pattern over every word of the region (zero-fill
 * faults; once memory is full, every page the pageout daemon evicts is a
 * page out); "read" checks every word twice in address order (every page
 * not resident is a page in, with whatever read-ahead the kernel does; the
 * pages it evicts meanwhile are clean copies of their swap blocks on both
 * kernels). Prints, with NAME (default "swap") as the figures' prefix:
 *
 *   bench: NAME.pageout <pages/s> pages/s   pswpout during write / its time
 *   bench: NAME.pagein <pages/s> pages/s    pswpin during read / its time
 *   bench: NAME.pages_out <n> pages         pswpout during write
 *   bench: NAME.pages_in <n> pages          pswpin during read
 *   bench: NAME.write_ms <ms> ms, bench: NAME.read_ms <ms> ms
 *
 * The rates are over the whole phase, the program's own work (computing and
 * checking the pattern) included, identical on both kernels.
 *
 * "unclustered" writes 0 to /proc/sys/vm/page-cluster when there is one
 * (Linux: swap-ins of one page, no read-ahead); on our kernel the boot's
 * command line says it instead (swap.read_ahead=off).
 *
 * As PID 1 on Linux (tests/linux/run-linux.sh --swap, Debian's kernel with
 * virtio as modules), it first mounts proc and devtmpfs, loads the modules
 * in /modules (in name order, finit_module), waits for /dev/vda (a swap area
 * made by mkswap on the host) and swapon(2)s it; it powers the machine off
 * when done. Exits 0 when the pattern read back is right, 1 otherwise. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static uint64_t word(uint64_t seed, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ seed;
	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	return x ^ (x >> 29);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The value of `key` in /proc/vmstat ("key value" lines). */
static uint64_t vmstat(const char *key)
{
	static char buf[16384];
	int fd = open("/proc/vmstat", O_RDONLY);
	CHECK(fd >= 0);
	ssize_t n, len = 0;
	while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
		len += n;
	close(fd);
	buf[len] = 0;
	size_t k = strlen(key);
	for (char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : 0)
		if (!strncmp(l, key, k) && l[k] == ' ')
			return strtoull(l + k + 1, 0, 10);
	fprintf(stderr, "swapbench: no %s in /proc/vmstat\n", key);
	exit(1);
}

/* Linux as PID 1: what an init and swapon(8) would have done. */
static void linux_swap_on(void)
{
	mkdir("/proc", 0555);
	CHECK(mount("proc", "/proc", "proc", 0, 0) == 0);
	CHECK(mount("devtmpfs", "/dev", "devtmpfs", 0, 0) == 0);
	struct dirent **names;
	int n = scandir("/modules", &names, 0, alphasort);
	CHECK(n >= 0);
	for (int i = 0; i < n; i++) {
		char path[300];
		if (names[i]->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/modules/%s", names[i]->d_name);
		int fd = open(path, O_RDONLY);
		CHECK(fd >= 0);
		if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST) {
			fprintf(stderr, "swapbench: loading %s: %s\n", path, strerror(errno));
			exit(1);
		}
		close(fd);
	}
	for (int tries = 0; access("/dev/vda", F_OK) != 0; tries++) {
		CHECK(tries < 500);
		usleep(10000);
	}
	CHECK(swapon("/dev/vda", 0) == 0);
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], 0, 0) : 384;
	int unclustered = argc > 2 && !strcmp(argv[2], "unclustered");
	int init = getpid() == 1 && !on_bsdvm();
	if (init)
		linux_swap_on();
	int fd = unclustered ? open("/proc/sys/vm/page-cluster", O_WRONLY) : -1;
	if (fd >= 0) {
		CHECK(write(fd, "0\n", 2) == 2);
		close(fd);
	}
	uint64_t words = (mib << 20) / 8;
	uint64_t *m = mmap(0, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);

	uint64_t out0 = vmstat("pswpout"), t0 = now_ms();
	for (uint64_t i = 0; i < words; i++)
		m[i] = word(1, i);
	uint64_t out1 = vmstat("pswpout"), in1 = vmstat("pswpin"), t1 = now_ms();
	int ok = 1;
	for (int pass = 0; pass < 2; pass++)
		for (uint64_t i = 0; i < words; i++)
			if (m[i] != word(1, i) && ok) {
				printf("swapbench: wrong word at offset %#llx\n", (unsigned long long)(i * 8));
				ok = 0;
			}
	uint64_t in2 = vmstat("pswpin"), t2 = now_ms();

	uint64_t out = out1 - out0, in = in2 - in1;
	uint64_t wms = t1 - t0 ? t1 - t0 : 1, rms = t2 - t1 ? t2 - t1 : 1;
	printf("bench: swap.pageout %llu pages/s\n", (unsigned long long)(out * 1000 / wms));
	printf("bench: swap.pagein %llu pages/s\n", (unsigned long long)(in * 1000 / rms));
	printf("bench: swap.pages_out %llu pages\n", (unsigned long long)out);
	printf("bench: swap.pages_in %llu pages\n", (unsigned long long)in);
	printf("bench: swap.write_ms %llu ms\n", (unsigned long long)wms);
	printf("bench: swap.read_ms %llu ms\n", (unsigned long long)rms);
	fflush(stdout);
	if (init) {
		sync();
		reboot(RB_POWER_OFF);
	}
	return ok ? 0 : 1;
}
