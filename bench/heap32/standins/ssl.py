# Stand-in `ssl` for the heap gauge (the webassembly port has no TLS): a pass-through,
# the "TLS socket" is the socket itself. What it leaves out of the MicroPython heap, as
# an ESP32 does, and what it does not (docs/memory.md, "Session 9, the gauge measures a
# connected gateway"): on the esp32 port mbedTLS allocates its record buffers, parsed
# certificates and handshake state from ESP-IDF's heap, outside the MicroPython heap; the
# SSLContext and SSLSocket objects themselves, which embed mbedTLS's context structs, are
# allocated on the MicroPython heap (extmod/modtls_mbedtls.c) and are not counted here.
PROTOCOL_TLS_CLIENT = 0
CERT_REQUIRED = 2


class SSLContext:
    def __init__(self, protocol):
        self.verify_mode = 0

    def load_verify_locations(self, cadata=None):
        pass

    def load_cert_chain(self, cert, key):
        pass

    def wrap_socket(self, sock, server_hostname=None, do_handshake_on_connect=True):
        return sock
