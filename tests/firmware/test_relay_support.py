# Shared helpers for the relay and journal tests (no tests of the relay itself here; the
# few tests below check that the fakes behave like the interfaces they stand in for).
# Flash: under MicroPython a real VfsLfs2 on a RAM block device; under CPython a temp dir.
import os
import struct

from scratch_files import open_scratch, scratch_folder

_mounts = [0]


class RamBlockDevice:
    def __init__(self, block_size=512, blocks=256):
        self.bs = block_size
        self.data = bytearray(block_size * blocks)
        self.writes = 0
        self.bytes_written = 0

    def readblocks(self, n, buf, off=0):
        a = n * self.bs + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            off = 0
            # erase-before-write semantics are not modelled: LittleFS copes either way
        a = n * self.bs + off
        self.data[a:a + len(buf)] = buf
        self.writes += 1
        self.bytes_written += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        if op == 6:
            return 0
        return None


class FileBlockDevice:
    """Flash in a host file, as on the emulated board (keeps the test heap small): a scratch
    file whose name is gone already (scratch_files.open_scratch), erased at the start."""

    def __init__(self, block_size=512, blocks=256):
        self.bs = block_size
        self.blocks = blocks
        self.f = open_scratch("ppmid-jt")
        blank = b"\xff" * block_size
        for i in range(blocks):
            self.f.write(blank)

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=None):
        self.f.seek(n * self.bs + (off or 0))
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.bs
        if op == 6:
            return 0
        return None


def fresh_signature_limits(start_ms=1000):
    """A fresh boot's count of failed signatures (ppmid.envelope_sig: per kid; and the one
    bucket of the update key's documents, ppmid.update.manifest.verify_signed) on a clock the
    test moves: returns [ms]. Tests
    share one process, and forged signatures of one would otherwise be counted in the next."""
    from ppmid import envelope_sig
    import ppmid.update
    now = [start_ms]
    envelope_sig._failed = None
    envelope_sig._verified = []
    envelope_sig.now_ms = ppmid.update.now_ms = lambda: now[0]
    ppmid.update.failed_signatures = None
    return now


def fresh_root(blocks=256):
    """An empty directory on a fresh flash filesystem; returns its path."""
    try:
        import vfs
    except ImportError:
        return scratch_folder("jnl")
    bdev = FileBlockDevice(512, blocks)
    vfs.VfsLfs2.mkfs(bdev)
    _mounts[0] += 1
    path = "/jt%d" % _mounts[0]
    vfs.mount(vfs.VfsLfs2(bdev), path)
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def eui(text):
    import binascii
    return binascii.unhexlify(text)


ESME = "00DB1234567890A0"
GSME = "00DB1234567890A1"
PPMID = "00DB1234567890A4"
SUPPLIER = "90B3D51F30010000"
ACB = "90B3D51F30000002"


SIGNATURE = bytes(range(0x80, 0xC0))  # 64 bytes in the place of a DCC User's ECDSA r|s


def gbcs_message(cra, counter, originator, recipient, code=0x0007, body=b"\x01\x02\x03"):
    """A small General-Signing (DF 09 ...) message with the fields the relay reads, in the
    form the DCC sends a command without a MAC header: with a 64-byte signature (a stand-in:
    the gateway cannot check it; the validator refuses an empty one, E_PRECOMMAND)."""
    out = bytearray(b"\xDF\x09")
    out.append(cra)
    out += struct.pack(">Q", counter)
    out += b"\x08" + eui(originator)
    out += b"\x08" + eui(recipient)
    out += b"\x00"
    out += b"\x02" + struct.pack(">H", code)
    out.append(len(body))
    out += body
    out += b"\x40" + SIGNATURE
    return bytes(out)


def test_gbcs_message_layout():
    m = gbcs_message(1, 5, SUPPLIER, ESME)
    assert m[0] == 0xDF and m[2] == 1
    assert m[3:11] == struct.pack(">Q", 5)
    assert m[12:20] == eui(SUPPLIER) and m[21:29] == eui(ESME)
    assert m[-65] == 64 and m[-64:] == SIGNATURE


def test_a_rig_restarts_with_the_journal_bounds_it_was_made_with():
    r = Rig(max_bytes=2048, max_live=5)
    r.restart()
    assert (r.journal.max_bytes, r.journal.max_live) == (2048, 5)
    r.restart()
    assert (r.journal.max_bytes, r.journal.max_live) == (2048, 5)


def test_fresh_root_is_empty_and_writable():
    root = fresh_root()
    assert os.listdir(root) == []
    write_file(root + "/x", b"abc")
    assert read_file(root + "/x") == b"abc"


# ---- honest fakes of the interfaces the relay ties together ---------------------------
try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

from ppmid.errors import PpmidError

KEY = b"k" * 32


TICKS_PERIOD = 1 << 30   # MicroPython's ticks_ms on a 32-bit port (the ESP32) wraps here


class FakeClock:
    """ms ticks and unix seconds that move only when a test says so. The ticks wrap as on
    the ESP32: ms() counts modulo 2**30 and diff() is modular, right only within 2**29 ms
    (6.2 days), as time.ticks_diff is there. t_ms itself never wraps (time() uses it)."""

    def __init__(self, unix=1800000000, t_ms=5000):
        self.t_ms = t_ms
        self.unix0 = unix

    def ms(self):
        return self.t_ms & (TICKS_PERIOD - 1)

    def diff(self, a, b):
        half = TICKS_PERIOD >> 1
        return ((a - b + half) & (TICKS_PERIOD - 1)) - half

    def add(self, t, delta):
        return (t + delta) & (TICKS_PERIOD - 1)

    def time(self):
        return self.unix0 + self.t_ms // 1000

    def is_set(self):
        return self.time() >= 1704067200    # as a board before its first SNTP answer

    def advance(self, ms):
        self.t_ms += ms


class FakeHan:
    """HAN link: send() records what reached the CH or raises a scripted PpmidError code;
    receive() hands out what deliver() queued."""

    def __init__(self):
        self.sent = []
        self.fail = []     # codes for the next sends (None = succeed)
        self.rx = []
        self._ev = asyncio.Event()
        self.responder = None  # fn(bytes) -> response bytes (or None: none), delivered after each send

    async def send(self, dest, data, paced=None):
        assert dest is None
        if self.fail:
            code = self.fail.pop(0)
            if code is not None:
                if code == "E_DELIVERY":
                    self.sent.append(bytes(data))  # it may well have reached the CH
                raise PpmidError(code, "scripted HAN failure")
        self.sent.append(bytes(data))
        if self.responder is not None:
            rsp = self.responder(bytes(data))
            if rsp is not None:   # None: no answer (a meter refusing the command's signature)
                self.deliver(rsp)

    def deliver(self, buf):
        self.rx.append(buf)
        self._ev.set()

    async def receive(self):
        while not self.rx:
            self._ev.clear()
            await self._ev.wait()
        return self.rx.pop(0)


class FakePublisher:
    """MQTT client: publish() returns when 'PUBACKed'; raises while down."""

    def __init__(self):
        self.messages = []
        self.down = False

    async def publish(self, topic, payload, qos=1, retain=False):
        if self.down:
            raise OSError("broker unreachable")
        import json
        self.messages.append((topic, json.loads(payload)))

    def statuses(self, id=None):
        return [(m["id"], m["status"]) if id is None else m["status"] for t, m in self.messages
                if t.endswith("/rsp") and (id is None or m["id"] == id)]

    def on(self, suffix):
        return [m for t, m in self.messages if t.endswith(suffix)]


class RecordingClient:
    """The MQTT client as the update family's handlers use it (link.client): publish()
    records (topic, payload as JSON, retain) and is PUBACKed at once."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.sent = []
        self.waited = []   # topics published with wait=True (a handler's would wait for a
        #                    PUBACK the real client reads only once the handler returns)

    queue_size = 16   # the real client's bound (none of it in use: PUBACKed at once)

    def pending(self):
        return 0

    async def publish(self, topic, payload, qos=1, retain=False, wait=True, first=False):
        import json
        self.sent.append((topic, json.loads(payload), retain))
        if wait:
            self.waited.append(topic)
        return True


class RecordingLink:
    """The MQTT link of a gateway whose client is a RecordingClient; info: a callable
    returning the info payload, or None (mqtt/link.py's)."""

    def __init__(self, client_id, info=None):
        from ppmid.mqtt.contract import Topics
        self.client = RecordingClient(client_id)
        self.topics = Topics(client_id)
        self.info = info
        self.follows = 0   # calls of the link itself: the info to follow, paced (mqtt/info_follow.py)

    def __call__(self, *_):
        self.follows += 1


class FlashBoard:
    """A board as the handlers see it: its flash's root folder only."""

    def __init__(self, root):
        self.fs_root = root


class FakeValidator:
    """The GBCS validator's contract: check() -> Message or GbcsError; commit_pair() (the
    relay's, once a device answered) records the counter in the store (per
    originator+recipient), only ever upwards."""

    def __init__(self, store, devices=(ESME, GSME, PPMID), han=None):
        from ppmid.gbcs import decode
        self.decode = decode
        self.store = store
        self.devices = [eui(d) for d in devices]
        self.commit_fails = False
        self.han = han

    def __getattr__(self, name):
        # the real validator's allow lists by device type (han.allow narrowed to han.profile)
        # and profile, which the top-up road reads (relay/topups.py): built from the config's
        # han section as gbcs/validate.py builds them, on first use (the code table is large)
        if name in ("_allow", "profile") and self.han is not None:
            from ppmid.gbcs import profiles
            _, self._allow, self.profile = profiles.han_lists(self.han)
            return getattr(self, name)
        raise AttributeError(name)

    def check(self, buf):
        from ppmid.gbcs import GbcsError
        msg = self.decode(buf)
        if msg.cra != 1:
            raise GbcsError("E_NOT_COMMAND", "not a command")
        if bytes(msg.recipient) not in self.devices:
            raise GbcsError("E_UNKNOWN_TARGET", "recipient is not on this HAN")
        last = self.store.get(bytes(msg.originator) + bytes(msg.recipient))
        if last is not None and msg.counter <= last:
            raise GbcsError("E_REPLAY", "counter %d not above %d" % (msg.counter, last))
        return msg

    def commit(self, msg):
        self.commit_pair(msg.originator, msg.recipient, msg.counter_bytes)

    def commit_pair(self, originator, recipient, counter):
        # the relay's: once the device answered the command (counter: 8 bytes)
        if self.commit_fails:
            raise OSError("flash write failed")
        self.store.put(bytes(originator) + bytes(recipient), int.from_bytes(counter, "big"))


class FakeWdt:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def config(**limits):
    from ppmid import config as C
    return C.validate({"gateway": PPMID, "han": {"devices": [{"eui": ESME, "type": "ESME"},
                                                             {"eui": GSME, "type": "GSME"}]},
                       "limits": limits})


def response_to(cmd, body=b"\x09\x09"):
    """The response a meter gives: originator and recipient swapped, same counter."""
    from ppmid.gbcs import decode
    m = decode(cmd)
    return gbcs_message(2, m.counter, _hexs(m.recipient), _hexs(m.originator), m.message_code, body)


def refusal_of(cmd):
    """A meter's refusal of a replayed command, as the emulated meters send it
    (host_tools/ncp_emulator/ch.py): an alert from the meter to the command's originator
    naming the command (supplementary remote party id and counter)."""
    from ppmid.gbcs import decode, build
    from ppmid.relay.resend import REPLAY_REFUSED_ALERT
    m = decode(cmd)
    return build.build_signed(3, 0x0100000000000001, m.recipient, m.originator, REPLAY_REFUSED_ALERT,
                              b"\x0f\x00", other_info=bytes(m.originator) + bytes(m.counter_bytes))


async def time_out_every_copy(r, budget_ms):
    """No response comes to a command in flight, nor to any copy of it: let its budget end
    MAX_RESENDS + 1 times (each copy goes at once, the meter being free)."""
    from ppmid.relay.resend import MAX_RESENDS
    for _ in range(MAX_RESENDS + 1):
        r.clock.advance(budget_ms + 100)
        r.relay.check_timers()
        await r.pump()


class Unloadable:
    """with Unloadable("ppmid.x.y"): the module cannot be loaded meanwhile, as on a heap
    too cut up for its code: importing it (or a name from it) raises MemoryError."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, attr):
        raise MemoryError("memory allocation failed")

    def __enter__(self):
        import sys
        self.real = sys.modules.get(self.name)
        sys.modules[self.name] = self
        return self

    def __exit__(self, *exc):
        import sys
        del sys.modules[self.name]
        if self.real is not None:
            sys.modules[self.name] = self.real
        return False


async def stop_relay(relay):
    """Cancel the relay's tasks (relay.start()'s) and wait for them: how a test ends a
    running relay (a board's never stops; Relay.stop until session 9)."""
    for t in relay._tasks:
        t.cancel()
    for t in relay._tasks:
        try:
            await t
        except BaseException:
            pass
    relay._tasks = []


def _hexs(b):
    import binascii
    return binascii.hexlify(bytes(b)).decode().upper()


class Rig:
    """A relay over a fresh flash journal with fakes; restart() simulates a power cut
    (RAM lost, flash kept) with the same fakes on the outside."""

    def __init__(self, root=None, cfg=None, clock=None, han=None, pub=None, **kw):
        self.root = root or fresh_root()
        self.cfg = cfg or config()
        self.clock = clock or FakeClock()
        self.han = han or FakeHan()
        self.pub = pub or FakePublisher()
        self.wdt = FakeWdt()
        self.kw = kw
        self.logs = []
        self.boot()

    def boot(self):
        from ppmid.relay.journal import Journal
        from ppmid.relay.journal import JournalCounterStore
        from ppmid.relay.core import Relay
        from ppmid.relay.recovery import recover
        # the journal's bounds stay in self.kw: every restart opens it with the same ones
        kw = dict(self.kw)
        self.journal = Journal(self.root, kw.pop("max_bytes", 16384), kw.pop("max_live", 48))
        self.journal.open()
        self.store = JournalCounterStore(self.journal)
        self.validator = FakeValidator(self.store, han=self.cfg["han"])
        self.relay = Relay(self.cfg, self.journal, self.validator, self.han, self.pub, self.clock, KEY,
                           wdt=self.wdt, console=self.logs.append, **kw)
        recover(self.relay)

    def restart(self):
        self.journal.close()
        self.boot()

    def env(self, id, counter, target=ESME, originator=SUPPLIER, expires=None, key=KEY, code=0x0007, kid=None):
        from ppmid import envelope
        return envelope.sign(key, id, gbcs_message(1, counter, originator, target, code), expires, kid)

    async def submit(self, id, counter, **kw):
        via = kw.pop("via", "mqtt")
        return await self.accept_env(self.env(id, counter, **kw), via)

    async def accept_env(self, env, via="mqtt"):
        """relay.accept, with a refusal (raised, as the intakes expect) turned into a
        dict {"status": "rejected", "error": code, "message"} for the asserts."""
        try:
            return await self.relay.accept(env, via)
        except PpmidError as exc:
            return {"id": env.id, "status": "rejected", "error": exc.code, "message": exc.message}

    async def publish_all(self):
        n = 0
        from ppmid.relay import outbox
        while await outbox.publish_once(self.relay):
            n += 1
        return n

    async def pump(self):
        """Dispatch everything that may go now, deliver HAN input, publish."""
        while await self.relay.dispatch_once() == 0:
            pass
        while self.han.rx:
            self.relay.on_han_message(self.han.rx.pop(0))
        await self.publish_all()
