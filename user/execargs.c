/* execve with large argument blocks, taken as Linux takes them: 20,000
 * short arguments and 100,000 empty or one-byte ones run (more than the
 * 128 KiB of stack a program starts with); 100,000 arguments of 30 bytes
 * (3 MB, past a quarter of the 8 MiB stack limit) and one argument of
 * 200 KB (past 128 KiB) fail with E2BIG, and the caller goes on. The
 * program re-executes itself as the child, which checks every argument. */
#include <sys/wait.h>
#include "check.h"

static char *const no_env[] = { NULL };
static const char *self;

/* The child: argv[2] is "n:len"; argument i (from 3) is `len` bytes of
 * the letter 'a' + i % 26. */
static int child(int argc, char **argv)
{
	int n, len;
	CHECK(argc >= 3 && sscanf(argv[2], "%d:%d", &n, &len) == 2);
	CHECK(argc == n);
	for (int i = 3; i < argc; i++) {
		CHECK(strlen(argv[i]) == (size_t)len);
		for (int k = 0; k < len; k++)
			CHECK(argv[i][k] == 'a' + i % 26);
	}
	CHECK(argv[argc] == NULL);
	return 0;
}

/* Runs this program with `n` arguments in all, those from 3 on `len`
 * bytes each; returns the child's exit status, or 100 + errno when the
 * execve failed. */
static int run(int n, int len)
{
	char **args = malloc((size_t)(n + 1) * sizeof *args);
	char *pool = malloc((size_t)n * (len + 1));
	CHECK(args && pool);
	char count[32];
	snprintf(count, sizeof count, "%d:%d", n, len);
	args[0] = (char *)self;
	args[1] = "child";
	args[2] = count;
	for (int i = 3; i < n; i++) {
		char *s = pool + (size_t)i * (len + 1);
		memset(s, 'a' + i % 26, len);
		s[len] = 0;
		args[i] = s;
	}
	args[n] = NULL;
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		execve(self, args, no_env);
		_exit(100 + errno);
	}
	int st;
	CHECK(waitpid(pid, &st, 0) == pid);
	free(args);
	free(pool);
	CHECK(WIFEXITED(st));
	return WEXITSTATUS(st);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "child") == 0)
		return child(argc, argv);
	self = "/proc/self/exe";
	if (access(self, X_OK) != 0)
		self = argv[0];
	if (access(self, X_OK) != 0) /* run by ./run-qemu.sh run: a bare name */
		self = "/bin/execargs";
	CHECK(run(20000, 8) == 0);
	CHECK(run(100000, 0) == 0);
	CHECK(run(100000, 1) == 0);
	CHECK(run(100000, 30) == 100 + E2BIG);
	CHECK(run(4, 200000) == 100 + E2BIG);
	/* Just below and above the limit on one string (its NUL counted). */
	CHECK(run(4, 128 * 1024 - 1) == 0);
	CHECK(run(4, 128 * 1024) == 100 + E2BIG);
	printf("execargs: ok\n");
	return 0;
}
