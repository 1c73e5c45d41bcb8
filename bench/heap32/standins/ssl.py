# Stand-in `ssl` for the heap gauge (the webassembly port has no TLS). No TLS is spoken:
# the wrapped socket passes bytes through. What it holds is what an ESP32's holds on the
# MicroPython heap (docs/memory.md, "Session 9, the TLS objects on the GC heap"):
#
# - on the esp32 port mbedTLS allocates its record buffers, parsed certificates and
#   handshake state from ESP-IDF's heap, outside the MicroPython heap: not here;
# - the SSLContext and each SSLSocket object are allocated on the MicroPython heap
#   (MicroPython 1.29 extmod/modtls_mbedtls.c:284 and :756) and embed mbedTLS's structs
#   (:85-120): sizeof(mp_obj_ssl_context_t) 1,560 and sizeof(mp_obj_ssl_socket_t) 592
#   bytes for a 32-bit ESP32 build (mbedTLS 3.6.5, ESP-IDF v5.5.2's config with
#   MicroPython's sdkconfig.base; computed with gcc -m32 -malign-double, not measured on a
#   board), 1,568 and 592 bytes in 16-byte GC blocks. Each stand-in object holds a
#   bytearray that brings it to that size: its instance (16 bytes), its two-attribute
#   table (16) and the bytearray's header (16) are the other 48 bytes.
#
# The context is made at boot and kept by the link (ppmid.mqtt.credentials); a socket
# lives as long as the firmware holds it (ppmid.mqtt.client._TlsStream), as the real one.
PROTOCOL_TLS_CLIENT = 0
CERT_REQUIRED = 2

CONTEXT_BYTES = 1568    # mp_obj_ssl_context_t, 1,560 bytes, in GC blocks
SOCKET_BYTES = 592      # mp_obj_ssl_socket_t
_OBJECT_OVERHEAD = 48   # the stand-in's instance, attribute table and bytearray header


class SSLContext:
    def __init__(self, protocol):
        self.verify_mode = 0
        self.mbedtls = bytearray(CONTEXT_BYTES - _OBJECT_OVERHEAD)

    def load_verify_locations(self, cadata=None):
        # the real one parses the DER into ESP-IDF's heap and keeps no reference to it
        pass

    def load_cert_chain(self, cert, key):
        pass

    def wrap_socket(self, sock, server_hostname=None, do_handshake_on_connect=True):
        return SSLSocket(sock)


class SSLSocket:
    # `sock`: the wrapped socket, as mp_obj_ssl_socket_t names it; the stand-in poller
    # (standins/socket.py) waits on it when the firmware waits on this object
    def __init__(self, sock):
        self.sock = sock
        self.mbedtls = bytearray(SOCKET_BYTES - _OBJECT_OVERHEAD)

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def readinto(self, buf):
        return self.sock.readinto(buf)

    def write(self, buf):
        return self.sock.write(buf)

    def close(self):
        self.sock.close()
