/* fork and wait4 as musl programs use them: children see the parent's memory
 * as it was at the fork and their writes stay their own (copy-on-write);
 * exit statuses and death by SIGSEGV come back through waitpid. Exits 0 when
 * every check holds, else the number of the first that failed. Passes
 * unmodified on Linux. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int value = 1;

int main(void)
{
	char *buf = malloc(8192);
	if (!buf)
		return 2;
	memset(buf, 'p', 8192);
	for (int round = 0; round < 20; round++) {
		pid_t pid = fork();
		if (pid < 0)
			return 3;
		if (pid == 0) {
			if (value != 1 || buf[100] != 'p' || getppid() <= 0)
				_exit(100);
			value = 50 + round;
			memset(buf, 'c', 8192);
			_exit(round);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid)
			return 4;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != round)
			return 5;
		if (value != 1 || buf[100] != 'p' || buf[8191] != 'p')
			return 6;
	}
	pid_t pid = fork();
	if (pid == 0) {
		*(volatile int *)0 = 1;
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFSIGNALED(st) || WTERMSIG(st) != 11)
		return 7;
	if (waitpid(-1, &st, 0) != -1)
		return 8;
	return 0;
}
