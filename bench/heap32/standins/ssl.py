# Stand-in `ssl` for the heap gauge (the webassembly port has no TLS). On an ESP32 the
# parsed certificates and the TLS session live in mbedTLS's allocations outside the
# MicroPython heap, so holding nothing here is the fair stand-in for the Python heap.
PROTOCOL_TLS_CLIENT = 0
CERT_REQUIRED = 2


class SSLContext:
    def __init__(self, protocol):
        self.verify_mode = 0

    def load_verify_locations(self, cadata=None):
        pass

    def load_cert_chain(self, cert, key):
        pass

    def wrap_socket(self, sock, **k):
        raise OSError(113)
