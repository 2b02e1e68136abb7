/* The /proc views of an address space, read as tools read them: maps,
 * smaps, smaps_rollup, status, statm, meminfo and the vm sysctls, each
 * checked against what the program did to its own memory.
 *
 *   procmaps [dir]    (dir: where to make a file to map; /tmp by default)
 *
 * Prints "procmaps: ok" and exits 0. Runs unmodified on Linux, where as
 * PID 1 (tests/linux/run-linux.sh) it mounts /proc itself. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "check.h"

#define P 4096L

static char text[1 << 20];

/* The whole of `path` into `text`, NUL-ended. */
static char *slurp(const char *path)
{
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	size_t n = 0;
	ssize_t r;
	/* In small reads, as a program reading line by line does. */
	while ((r = read(fd, text + n, 1000)) > 0) {
		n += r;
		CHECK(n < sizeof text - 1000);
	}
	CHECK(r == 0 && close(fd) == 0);
	text[n] = 0;
	return text;
}

/* The maps line of the entry starting at `at`, or NULL. */
static char *line_of(char *all, void *at)
{
	char key[32];
	snprintf(key, sizeof key, "%08lx-", (unsigned long)at);
	for (char *l = all; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, key, strlen(key)) == 0)
			return l;
	return NULL;
}

/* Field `name` (kB) of the smaps block of the entry starting at `at`. */
static long smaps_kb(void *at, const char *name)
{
	char *l = line_of(slurp("/proc/self/smaps"), at);
	CHECK(l != NULL);
	char key[64];
	snprintf(key, sizeof key, "\n%s:", name);
	char *f = strstr(l, key);
	char *next = strchr(l, '\n') ? strstr(strchr(l, '\n'), "\nVmFlags:") : NULL;
	CHECK(f != NULL && next != NULL && f < next);
	long v;
	CHECK(sscanf(f + strlen(key), " %ld kB", &v) == 1);
	return v;
}

/* The VmFlags line of the entry starting at `at`. */
static char *vm_flags(void *at)
{
	static char flags[256];
	char *l = line_of(slurp("/proc/self/smaps"), at);
	CHECK(l != NULL);
	char *f = strstr(l, "\nVmFlags:");
	CHECK(f != NULL);
	snprintf(flags, sizeof flags, "%.*s", (int)(strchr(f + 1, '\n') - f - 1), f + 1);
	return flags;
}

/* Field `name` (kB, or a count) of a "Name:\t value" file. */
static long field(const char *path, const char *name)
{
	char key[64];
	snprintf(key, sizeof key, "%s:", name);
	char *all = slurp(path);
	for (char *l = all; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, key, strlen(key)) == 0)
			return strtol(l + strlen(key), NULL, 10);
	fprintf(stderr, "%s: no %s\n", path, name);
	exit(1);
}

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define PM_EXCLUSIVE (1ULL << 56)
#define PM_PFN ((1ULL << 55) - 1)

/* The pagemap word of the page at `va`. */
static uint64_t pagemap(void *va)
{
	static int fd = -1;
	if (fd < 0)
		fd = open("/proc/self/pagemap", O_RDONLY);
	CHECK(fd >= 0);
	uint64_t w;
	CHECK(pread(fd, &w, 8, (uintptr_t)va / P * 8) == 8);
	return w;
}

/* Anonymous memory: its maps line, its pages as they are touched, locked
 * and shared with a child. */
static void anonymous(void)
{
	char *m = mmap(0, 16 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	char *l = line_of(slurp("/proc/self/maps"), m);
	CHECK(l != NULL);
	char want[128];
	snprintf(want, sizeof want, "%08lx-%08lx rw-p 00000000 00:00 0 \n", (unsigned long)m, (unsigned long)(m + 16 * P));
	CHECK(strncmp(l, want, strlen(want)) == 0);

	CHECK(smaps_kb(m, "Size") == 64 && smaps_kb(m, "Rss") == 0);
	for (int i = 0; i < 5; i++)
		m[i * P] = 1;
	CHECK(smaps_kb(m, "Rss") == 20 && smaps_kb(m, "Pss") == 20);
	CHECK(smaps_kb(m, "Private_Dirty") == 20 && smaps_kb(m, "Anonymous") == 20);
	CHECK(smaps_kb(m, "Shared_Dirty") == 0 && smaps_kb(m, "Swap") == 0 && smaps_kb(m, "Locked") == 0);
	CHECK(strncmp(vm_flags(m), "VmFlags: rd wr ", 15) == 0 && !strstr(vm_flags(m), " lo "));
	for (int i = 0; i < 16; i++) {
		uint64_t w = pagemap(m + i * P);
		if (i < 5)
			CHECK((w & (PM_PRESENT | PM_EXCLUSIVE | PM_FILE | PM_SWAPPED)) == (PM_PRESENT | PM_EXCLUSIVE) &&
			      (w & PM_PFN) != 0);
		else
			CHECK((w & (PM_PRESENT | PM_SWAPPED)) == 0);
	}
	/* Whole reads: 8 bytes a page, from the page's offset; unaligned
	 * offsets and counts are refused. */
	{
		int fd = open("/proc/self/pagemap", O_RDONLY);
		uint64_t words[16];
		CHECK(fd >= 0 && lseek(fd, (uintptr_t)m / P * 8, SEEK_SET) == (off_t)((uintptr_t)m / P * 8));
		CHECK(read(fd, words, sizeof words) == sizeof words);
		for (int i = 0; i < 16; i++)
			CHECK(words[i] == pagemap(m + i * P));
		CHECK(pread(fd, words, 7, 0) < 0 && errno == EINVAL);
		CHECK(pread(fd, words, 8, 4) < 0 && errno == EINVAL);
		CHECK(close(fd) == 0);
	}

	/* Locked: every page in, every page counted. */
	long locked = field("/proc/self/status", "VmLck");
	CHECK(mlock(m, 16 * P) == 0);
	CHECK(smaps_kb(m, "Rss") == 64 && smaps_kb(m, "Locked") == 64);
	CHECK(strstr(vm_flags(m), " lo ") != NULL);
	CHECK(field("/proc/self/status", "VmLck") == locked + 64);
	CHECK(munlock(m, 16 * P) == 0 && field("/proc/self/status", "VmLck") == locked);
	CHECK(smaps_kb(m, "Locked") == 0);

	/* Shared with a child that has read every page: each page has two
	 * mappings, and counts half in each. */
	volatile int *flag = mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(flag != MAP_FAILED);
	CHECK(strchr(line_of(slurp("/proc/self/maps"), (void *)flag), ' ')[4] == 's');
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		long sum = 0;
		for (int i = 0; i < 16; i++)
			sum += m[i * P];
		*flag = 1 + (sum == 5);
		while (*flag != 3)
			usleep(1000);
		_exit(0);
	}
	while (*flag == 0)
		usleep(1000);
	CHECK(*flag == 2);
	CHECK(smaps_kb(m, "Rss") == 64 && smaps_kb(m, "Pss") == 32);
	CHECK(smaps_kb(m, "Private_Dirty") + smaps_kb(m, "Private_Clean") == 0);
	CHECK(smaps_kb(m, "Shared_Dirty") + smaps_kb(m, "Shared_Clean") == 64);
	for (int i = 0; i < 16; i++)
		CHECK((pagemap(m + i * P) & (PM_PRESENT | PM_EXCLUSIVE)) == PM_PRESENT);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/status", c);
	CHECK(field(path, "Pid") == c && field(path, "PPid") == getpid() && field(path, "Threads") == 1);
	snprintf(path, sizeof path, "/proc/%d/smaps_rollup", c);
	CHECK(field(path, "Rss") >= 64 && field(path, "Pss") < field(path, "Rss"));
	*flag = 3;
	int st;
	CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The child is gone: its pages are the parent's alone again. */
	CHECK(smaps_kb(m, "Pss") == 64);
	CHECK(munmap(m, 16 * P) == 0 && munmap((void *)flag, P) == 0);
	CHECK(line_of(slurp("/proc/self/maps"), m) == NULL);
	snprintf(path, sizeof path, "/proc/%d/maps", c);
	CHECK(open(path, O_RDONLY) < 0 && errno == ENOENT);
}

/* A file mapping: offset, device, inode and path in its line. */
static void file(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/procmaps-file", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0 && ftruncate(fd, 4 * P) == 0);
	struct stat st;
	CHECK(fstat(fd, &st) == 0);
	char *f = mmap(0, 2 * P, PROT_READ, MAP_SHARED, fd, 2 * P);
	CHECK(f != MAP_FAILED);
	CHECK(f[0] == 0 && f[P] == 0);
	char want[512];
	int n = snprintf(want, sizeof want, "%08lx-%08lx r--s 00002000 %02x:%02x %lu", (unsigned long)f,
			 (unsigned long)(f + 2 * P), major(st.st_dev), minor(st.st_dev), (unsigned long)st.st_ino);
	char *l = line_of(slurp("/proc/self/maps"), f);
	CHECK(l != NULL && strncmp(l, want, n) == 0);
	/* The name starts in column 74, as Linux pads it. */
	CHECK(strncmp(l + 73, path, strlen(path)) == 0 && l[73 + strlen(path)] == '\n');
	CHECK(smaps_kb(f, "Rss") == 8 && smaps_kb(f, "Anonymous") == 0);
	CHECK((pagemap(f) & (PM_PRESENT | PM_FILE)) == (PM_PRESENT | PM_FILE));
	CHECK(strncmp(vm_flags(f), "VmFlags: rd sh mr me ms ", 24) == 0 || strncmp(vm_flags(f), "VmFlags: rd sh mr mw me ms ", 27) == 0);
	CHECK(munmap(f, 2 * P) == 0 && close(fd) == 0 && unlink(path) == 0);
}

/* The process as a whole: status and statm agree with each other. */
static void whole(void)
{
	char *m = mmap(0, 256 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(m != MAP_FAILED);
	long rss = field("/proc/self/status", "VmRSS");
	long size = field("/proc/self/status", "VmSize");
	memset(m, 1, 256 * P);
	/* Linux counts a thread's pages into the process's figures every 64
	 * faults: status may be behind by as much. */
	CHECK(field("/proc/self/status", "VmRSS") >= rss + 1024 - 256);
	CHECK(field("/proc/self/status", "VmSize") == size);
	CHECK(field("/proc/self/status", "RssAnon") >= 1024 - 256);
	CHECK(field("/proc/self/status", "VmSwap") == 0);
	CHECK(field("/proc/self/status", "Threads") == 1 && field("/proc/self/status", "Pid") == getpid());
	long statm[7];
	char *s = slurp("/proc/self/statm");
	CHECK(sscanf(s, "%ld %ld %ld %ld %ld %ld %ld", &statm[0], &statm[1], &statm[2], &statm[3], &statm[4], &statm[5],
		     &statm[6]) == 7);
	CHECK(statm[0] * 4 == field("/proc/self/status", "VmSize"));
	CHECK(statm[1] >= 256 - 64 && statm[1] <= statm[0]);
	long rollup = field("/proc/self/smaps_rollup", "Rss");
	CHECK(rollup >= 1024 && rollup <= statm[0] * 4);
	CHECK(munmap(m, 256 * P) == 0);
	CHECK(field("/proc/self/status", "VmSize") == size - 1024);

	long total = field("/proc/meminfo", "MemTotal");
	long free_ = field("/proc/meminfo", "MemFree");
	CHECK(total > 0 && free_ > 0 && free_ <= total && field("/proc/meminfo", "MemAvailable") <= total);
	CHECK(field("/proc/meminfo", "SwapFree") <= field("/proc/meminfo", "SwapTotal"));
	long min_addr = strtol(slurp("/proc/sys/vm/mmap_min_addr"), NULL, 10);
	CHECK(min_addr >= 4096 && min_addr % 4096 == 0);
	CHECK(strtol(slurp("/proc/sys/vm/max_map_count"), NULL, 10) >= 65530);
	CHECK(open("/proc/self/nothing", O_RDONLY) < 0 && errno == ENOENT);
	struct stat st;
	CHECK(stat("/proc/self/smaps", &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0444);
	int fd = open("/proc/meminfo", O_RDONLY);
	CHECK(fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && close(fd) == 0);
	CHECK(stat("/proc/self/nothing", &st) < 0 && errno == ENOENT);
}

int main(int argc, char **argv)
{
	/* As Linux's /init (tests/linux/run-linux.sh): /tmp and /proc of its own. */
	if (getpid() == 1 && !on_bsdvm()) {
		mkdir("/tmp", 01777);
		mkdir("/proc", 0555);
		CHECK(mount("proc", "/proc", "proc", 0, NULL) == 0);
	}
	anonymous();
	file(argc > 1 ? argv[1] : "/tmp");
	whole();
	printf("procmaps: ok\n");
	if (getpid() == 1) {
		fflush(stdout);
		reboot(RB_POWER_OFF);
	}
	return 0;
}
