/* execve of malformed ELF files written to /tmp: each fails (ENOEXEC where
 * Linux says so) and the caller goes on; and paths are bytes: /tmp/\xff is
 * run, not /tmp/\xef\xbf\xbd (U+FFFD, what a lossy conversion makes of it).
 * Each execve runs in a child, so a program Linux does start (and kills)
 * does not end the probe. */
#include <elf.h>
#include <fcntl.h>
#include <sys/wait.h>
#include "check.h"

static char *const no_env[] = { NULL };

/* A small valid header: one PT_LOAD of a page at 0x400000. */
static void base(unsigned char *buf, size_t size)
{
	memset(buf, 0, size);
	Elf64_Ehdr *h = (Elf64_Ehdr *)buf;
	memcpy(h->e_ident, ELFMAG, SELFMAG);
	h->e_ident[EI_CLASS] = ELFCLASS64;
	h->e_ident[EI_DATA] = ELFDATA2LSB;
	h->e_ident[EI_VERSION] = EV_CURRENT;
	h->e_type = ET_EXEC;
	h->e_machine = EM_X86_64;
	h->e_version = EV_CURRENT;
	h->e_entry = 0x400078;
	h->e_phoff = sizeof *h;
	h->e_ehsize = sizeof *h;
	h->e_phentsize = sizeof(Elf64_Phdr);
	h->e_phnum = 1;
	Elf64_Phdr *p = (Elf64_Phdr *)(buf + sizeof *h);
	p->p_type = PT_LOAD;
	p->p_flags = PF_R | PF_X;
	p->p_offset = 0;
	p->p_vaddr = 0x400000;
	p->p_filesz = 0x100;
	p->p_memsz = 0x100;
	p->p_align = 4096;
}

static void write_file(const char *path, const void *buf, size_t n)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	CHECK(fd >= 0);
	CHECK(write(fd, buf, n) == (ssize_t)n);
	CHECK(close(fd) == 0);
}

/* Runs `path` in a child; returns the errno of a failed execve, or -1 if
 * the program started (and ended one way or another). */
static int try_exec(const char *path)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char *const argv[] = { (char *)path, NULL };
		execve(path, argv, no_env);
		_exit(100 + errno);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	if (WIFEXITED(st) && WEXITSTATUS(st) >= 100)
		return WEXITSTATUS(st) - 100;
	return -1;
}

#define SIZE (40 * 1024)
static unsigned char buf[SIZE];
#define H ((Elf64_Ehdr *)buf)
#define P ((Elf64_Phdr *)(buf + sizeof(Elf64_Ehdr)))

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "ran") == 0)
		return 42;
	int strict = on_bsdvm();
	const char *f = "/tmp/execprobe.elf";

	/* Linux and this kernel: ENOEXEC. */
	base(buf, SIZE);
	H->e_phentsize = 8;
	write_file(f, buf, 4096);
	CHECK(try_exec(f) == ENOEXEC);

	base(buf, SIZE);
	H->e_phnum = 0;
	write_file(f, buf, 4096);
	CHECK(try_exec(f) == ENOEXEC);

	base(buf, SIZE);
	buf[4] = ELFCLASS32; /* Linux may take it for x32 */
	write_file(f, buf, 4096);
	CHECK(try_exec(f) == ENOEXEC || !strict);

	/* Program headers where the file has none (Linux: EIO from its short
	 * read), misaligned, or past the parser's first bytes. */
	struct { unsigned long phoff; size_t len; } where[] = {
		{ 0xfffffffffffffff0ul, 4096 }, { 65, 4096 }, { 32768, 4096 },
		{ 32768, SIZE }, { 4088, 4096 },
	};
	for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
		base(buf, SIZE);
		H->e_phoff = where[i].phoff;
		write_file(f, buf, where[i].len);
		int e = try_exec(f);
		CHECK(!strict || e == ENOEXEC);
	}

	/* Segments: huge, wrapping, in the kernel half, larger in the file
	 * than in memory, past the end of the file, overlapping; misaligned
	 * and huge (loaded by copying page by page). Linux refuses some and
	 * starts (then kills) others; here execve refuses them all or the
	 * program starts, and the probe goes on. */
	for (int c = 0; c < 9; c++) {
		base(buf, SIZE);
		H->e_phnum = 2;
		P[1] = P[0];
		P[1].p_vaddr = 0x600000;
		switch (c) {
		case 0: P[1].p_memsz = 1ul << 46; break;
		case 1: P[1].p_vaddr = 0xfffffffffffff000ul; P[1].p_memsz = 0x2000; break;
		case 2: P[1].p_vaddr = 0xffff800000000000ul; break;
		case 3: P[1].p_filesz = 0x200; break;
		case 4: P[1].p_offset = 1ul << 40; break;
		case 5: P[1].p_vaddr = 0x400080; break;
		case 6: P[1].p_offset = 0x10; P[1].p_memsz = 0x10000000; break;
		case 7: P[1].p_offset = 0xfffffffffffff000ul; break;
		case 8: P[1].p_vaddr = 0x7ffffffff000ul; P[1].p_memsz = 0x10000; break;
		}
		write_file(f, buf, 4096);
		int e = try_exec(f);
		if (strict && e != ENOEXEC && c != 0 && c != 6)
			fprintf(stderr, "execprobe: segment case %d: %d\n", c, e);
		/* A 64 TiB bss is lazy memory here; the copied 256 MiB may be
		 * refused for memory or loaded. */
		if (strict && c != 0 && c != 6)
			CHECK(e == ENOEXEC);
		if (strict && (c == 0 || c == 6))
			CHECK(e == ENOMEM || e == ENOEXEC || e == -1);
	}
	CHECK(unlink(f) == 0);

	/* Paths are bytes. */
	const char *self = "/proc/self/exe";
	int in = open(self, O_RDONLY);
	if (in < 0)
		in = open(argv[0], O_RDONLY);
	if (in < 0) /* run by ./run-qemu.sh run: argv[0] is a bare name */
		in = open("/bin/execprobe", O_RDONLY);
	CHECK(in >= 0);
	static unsigned char prog[4 << 20];
	ssize_t n = 0, r;
	while ((r = read(in, prog + n, sizeof prog - n)) > 0)
		n += r;
	CHECK(r == 0 && n > 0 && (size_t)n < sizeof prog);
	close(in);
	write_file("/tmp/\xff", prog, n);
	base(buf, SIZE);
	H->e_phnum = 0;
	write_file("/tmp/\xef\xbf\xbd", buf, 4096);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		char *const args[] = { "/tmp/\xff", "ran", NULL };
		execve(args[0], args, no_env);
		_exit(100 + errno);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42);
	CHECK(unlink("/tmp/\xff") == 0);
	CHECK(unlink("/tmp/\xef\xbf\xbd") == 0);
	printf("execprobe: ok\n");
	return 0;
}
