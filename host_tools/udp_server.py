"""The loopback UDP servers of the emulation (SNTP, DNS): one datagram in, at most one out,
served from a daemon thread. A subclass says what a datagram gets back (answer())."""
import socket
import threading


class LoopbackUdpServer:
    NAME = "udp-server"

    def __init__(self, host="127.0.0.1", port=0, log=None):
        self.host = host
        self.port = port
        self.log = log or (lambda m: None)
        self.answered = 0      # replies sent
        self._sock = None
        self._thread = None
        self._stop = threading.Event()

    def answer(self, data):
        """The reply to datagram `data`, or None to send nothing."""
        raise NotImplementedError

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.host, self.port))
        s.settimeout(0.2)
        self._sock = s
        self.port = s.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name=self.NAME)
        self._thread.start()
        return self

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self.answer(data)
            if reply is None:
                continue
            # counted before it goes: a client may read the counter as soon as it has the reply
            self.answered += 1
            try:
                self._sock.sendto(reply, addr)
            except OSError:
                self.answered -= 1

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if self._sock:
            self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
