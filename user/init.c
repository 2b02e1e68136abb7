/*
 * init: the first process. Runs the program given as its arguments in a
 * child (fork + execve), collects orphans handed to it while it waits, and
 * exits with the program's status as a shell reports it (the exit code, or
 * 128 + the signal that killed it). The kernel powers off when init ends.
 *
 *   init <program> [arguments...]
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "init: usage: init <program> [arguments...]\n");
		return 2;
	}
	pid_t child = fork();
	if (child < 0) {
		fprintf(stderr, "init: fork: %s\n", strerror(errno));
		return 127;
	}
	if (child == 0) {
		execve(argv[1], argv + 1, environ);
		fprintf(stderr, "init: cannot run %s: %s\n", argv[1], strerror(errno));
		_exit(127);
	}
	for (;;) {
		int status;
		pid_t p = wait(&status);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0) {
			fprintf(stderr, "init: wait: %s\n", strerror(errno));
			return 127;
		}
		if (p != child)
			continue; /* an orphan */
		if (WIFSIGNALED(status))
			return 128 + WTERMSIG(status);
		return WEXITSTATUS(status);
	}
}
