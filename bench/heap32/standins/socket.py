# Stand-in `socket` for the heap gauge: no network in the webassembly port. The gauge's
# board reports Wi-Fi down, so the MQTT client never gets this far; should it, the
# connection fails as with no route.
AF_INET = 2
SOCK_STREAM = 1


def getaddrinfo(*a, **k):
    raise OSError(-2)


class socket:
    def __init__(self, *a):
        raise OSError(113)
