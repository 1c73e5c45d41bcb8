"""For a child process that a test stops with SIGINT, as a user's Ctrl-C would.

A shell that runs the suite in the background (`nohup make test &`, some CI runners) starts
it with SIGINT ignored; children inherit that, and Python then installs no
KeyboardInterrupt handler, so the test's SIGINT would do nothing. Passed as `preexec_fn`,
this gives the child the default SIGINT that a terminal's Ctrl-C meets."""
import signal


def default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
