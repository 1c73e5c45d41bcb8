# Stand-in `termios` for the heap gauge: the emulated board's pty UART imports it.
TCSANOW = 0


def tcgetattr(fd):
    return [0, 0, 0, 0, 0, 0, [0] * 32]


def tcsetattr(fd, when, attrs):
    pass


def setraw(fd):
    pass
