/*
 * vx11-pause: the program of the test node's pod sandbox ("pause") image.
 *
 * It holds the pod's namespaces open and does nothing else: it waits for signals, reaps any
 * child that is reparented to it (it is PID 1 of the pod's PID namespace when the pod shares
 * one), and exits 0 on SIGTERM or SIGINT. Built static (gcc -static) by
 * ../controlplane/build.sh, so the image needs no libraries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Never runs (the signals are blocked and taken by sigwaitinfo), but having a handler keeps the
 * kernel from discarding SIGTERM/SIGINT sent to a PID 1 with the default disposition. */
static void nothing(int sig) { (void)sig; }

int main(int argc, char **argv) {
	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		puts("vx11-pause 1");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "usage: %s (no arguments; exits 0 on SIGTERM or SIGINT)\n", argv[0]);
		return 2;
	}

	/* Block the signals we handle and take them synchronously with sigwaitinfo: no handler
	 * races, and a signal that arrives before the wait is not lost. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = nothing;
	sa.sa_flags = SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		perror("vx11-pause: sigprocmask");
		return 1;
	}

	for (;;) {
		int sig = sigwaitinfo(&set, NULL);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			perror("vx11-pause: sigwaitinfo");
			return 1;
		}
		if (sig == SIGCHLD) {
			while (waitpid(-1, NULL, WNOHANG) > 0) {
			}
			continue;
		}
		/* SIGTERM or SIGINT */
		return 0;
	}
}
