/* The pod sandbox's only process (what a "pause" image runs): it holds the pod's namespaces open
 * and sleeps until it is told to stop. Built static so the image needs no libc. */
#include <signal.h>
#include <unistd.h>

static void stop(int signo) {
  (void)signo;
  _exit(0);
}

int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  for (;;) pause();
}
