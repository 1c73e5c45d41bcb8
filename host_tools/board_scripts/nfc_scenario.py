# The start of every NFC scenario (host_tools/pn532_emulator/fixture.py appends the
# scenario's body): opens the firmware's PN532 driver on the emulator's pty, defines a fake
# relay intake, and the report/step protocol. argv: FIRMWARE_DIR PTY_PATH KEY_HEX.
import sys
sys.path.insert(0, sys.argv[1])
import asyncio, json, termios, binascii, gc
from ppmid.board.ptyuart import PtyUart
from ppmid.nfc.hsu import HsuTransport
from ppmid.nfc.pn532 import PN532
from ppmid.nfc.service import NfcService
from ppmid.errors import PpmidError
KEY = binascii.unhexlify(sys.argv[3])
PATH = sys.argv[2]


def report(**kw):
    print("@@" + json.dumps(kw))


def step(name):
    report(step=name)
    sys.stdin.readline()


def open_driver(**kw):
    # generous timeouts: the emulator is a thread on a possibly busy CI host (a real PN532
    # ACKs within ~1 ms); tests of the timeouts themselves pass their own values
    kw.setdefault("ack_timeout_ms", 150)
    kw.setdefault("response_timeout_ms", 3000)
    u = PtyUart(PATH)
    # a UART's read(n) returns what has arrived; make the pty do the same (VMIN=0, VTIME=0)
    a = termios.tcgetattr(u.fileno())
    a[6][6] = 0
    a[6][5] = 0
    termios.tcsetattr(u.fileno(), termios.TCSANOW, a)
    r, w = u.streams()
    return PN532(HsuTransport(r, w), **kw)


def response_for(gbcs):
    # what the fake relay answers: recognisable and checkable on the host side
    return b"R:" + bytes(reversed(gbcs))[:3000]


class FakeIntake:
    """Stands in for the relay: verifies the mac (a forged one is refused with E_AUTH),
    journals in memory, answers after `respond_after` result() polls."""

    def __init__(self, respond_after=0, reject=None):
        self.respond_after = respond_after
        self.reject = reject
        self.accepted = []
        self.pending = {}
        self.results = {}
        self.polls = {}
        self.delivered_ids = []

    async def accept(self, env, via):
        if self.reject:
            raise PpmidError(self.reject, "refused by the test relay")
        env.verify(KEY)
        if env.id in self.pending or env.id in self.results:
            return  # a redelivered command: already journaled (idempotent, like the relay)
        gbcs = bytes(env.gbcs)
        self.accepted.append({"id": env.id, "via": via, "len": len(gbcs),
                              "crc": binascii.crc32(gbcs) & 0xFFFFFFFF})
        self.pending[env.id] = gbcs
        await asyncio.sleep_ms(1)

    def result(self, id):
        if id in self.results:
            return self.results[id]
        if id in self.pending:
            self.polls[id] = self.polls.get(id, 0) + 1
            if self.polls[id] > self.respond_after:
                self.results[id] = {"status": "response", "gbcs": response_for(self.pending.pop(id)), "error": None}
                return self.results[id]
        return None

    def delivered(self, id, via):
        self.delivered_ids.append(id)


async def poll_until(svc, tries=50):
    """Poll until a session happened; its outcome (or None after `tries` empty polls)."""
    for i in range(tries):
        o = await svc.poll_once()
        if o is not None:
            return o
        await asyncio.sleep_ms(20)
    return None
