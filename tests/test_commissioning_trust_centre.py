"""The emulated CH as trust centre (host_tools/ncp_emulator/commissioning.py), alone:
device-log admission, and the Key Establishment server's answers and Terminate statuses
for each way an exchange goes wrong, with the modelled ECC agreeing only when every
certificate matches its holder's private key."""
import asyncio

from host_tools import mpcompat

mpcompat.install()
from host_tools.ncp_emulator import commissioning as M  # noqa: E402
from ppmid.zigbee import installcode as IC  # noqa: E402
from ppmid.zigbee import keyest as K  # noqa: E402

CODE = "83FED3407A939723A5C639B26916D505C3B5"
EUI = bytes.fromhex("000d6f0000a1b2c3")


class FakeNcp:
    def __init__(self, loop):
        self.loop = loop
        self.joined = True
        self.sent = []            # KE frames the CH sent to the PPMID
        self.removed = 0
        self.commissioning = type("Module", (), {"eui64": EUI})()

    def incoming(self, sender, profile, cluster, frame, encrypted=True):
        assert (sender, profile, cluster) == (0, 0x0109, 0x0800)
        assert not encrypted   # Key Establishment runs under network security only (docs/zigbee.md)
        self.sent.append(K.parse(frame))

    def removed_by_trust_centre(self):
        self.removed += 1
        self.joined = False


class FakeCh:
    def __init__(self, loop):
        self.loop = loop
        self.ncp = FakeNcp(loop)
        self.tunnel_requests = 0

    def log(self, msg):
        pass

    def ppmid_joined(self):
        self.tunnel_requests += 1


def _tc(loop, **kw):
    ch = FakeCh(loop)
    tc = M.TrustCentre(ch, {EUI: CODE}, **kw)
    return ch, tc


def _exchange(tc, ch, private, cert, corrupt_mac=False):
    """The PPMID's side of a whole exchange, computed as the module would."""
    tc.ke_frame(K.initiate(1, False, cert, 5, 5))
    r = ch.ncp.sent[-1]
    if r.command != K.INITIATE:
        return r
    eph = b"e" * 32
    tc.ke_frame(K.ephemeral_data(2, False, M.public_key(eph)))
    r2 = ch.ncp.sent[-1]
    macu, macv = M.smacs(private, eph, cert, r.certificate, r2.public_key, True)
    if corrupt_mac:
        macu = bytes(16)
    tc.ke_frame(K.confirm_key(3, False, macu))
    return ch.ncp.sent[-1], macv


def test_admission_by_device_log_and_install_code_key():
    async def main():
        loop = asyncio.get_running_loop()
        ch, tc = _tc(loop)
        net = tc.network
        args = (net["extended_pan_id"], net["pan_id"], net["channel"])
        assert tc.admit(EUI, IC.link_key(IC.parse(CODE)), *args)
        assert not tc.admit(EUI, bytes(16), *args)
        assert not tc.admit(bytes(8), IC.link_key(IC.parse(CODE)), *args)
        assert not tc.admit(EUI, IC.link_key(IC.parse(CODE)), bytes(8), 0x1234, 15)
        assert [e[1] for e in tc.events if e[0] == "join_refused"] == \
            ["link key mismatch", "not in the device log", "another network"]
    asyncio.run(main())


def test_honest_exchange_confirms_both_ways_and_opens_the_tunnel():
    async def main():
        ch, tc = _tc(asyncio.get_running_loop())
        private = b"p" * 32
        (r, macv) = _exchange(tc, ch, private, M.certificate(EUI, private))
        assert r.command == K.CONFIRM_KEY and r.server_to_client and r.mac == macv
        assert tc.cbke_done(EUI) and ch.tunnel_requests == 1
        init = ch.ncp.sent[0]
        assert (init.suite, init.ephemeral_time, init.confirm_time) == (K.SUITE_2, M.CH_EPHEMERAL_TIME_S,
                                                                        M.CH_CONFIRM_TIME_S)
        assert K.cert_subject(init.certificate) == tc.eui64
    asyncio.run(main())


def test_terminate_statuses():
    async def main():
        loop = asyncio.get_running_loop()
        private = b"p" * 32
        # a certificate from another authority
        ch, tc = _tc(loop)
        r = _exchange(tc, ch, private, M.certificate(EUI, private, issuer=b"OTHER-CA"))
        assert (r.command, r.status, r.wait_time) == (K.TERMINATE, K.UNKNOWN_ISSUER, M.CH_TERMINATE_WAIT_S)
        # someone else's certificate (subject is not the joined device)
        ch, tc = _tc(loop)
        r = _exchange(tc, ch, private, M.certificate(bytes(8), private))
        assert (r.command, r.status) == (K.TERMINATE, K.INVALID_CERTIFICATE)
        # a certificate whose public key is not the holder's: the keys differ, the MAC fails
        ch, tc = _tc(loop)
        r, _ = _exchange(tc, ch, private, M.certificate(EUI, b"q" * 32))
        assert (r.command, r.status) == (K.TERMINATE, K.BAD_KEY_CONFIRM)
        assert not tc.cbke_done(EUI) and ch.tunnel_requests == 0
        ch, tc = _tc(loop)
        r, _ = _exchange(tc, ch, private, M.certificate(EUI, private), corrupt_mac=True)
        assert r.status == K.BAD_KEY_CONFIRM
        # out of order, and a malformed frame
        ch, tc = _tc(loop)
        tc.ke_frame(K.confirm_key(9, False, bytes(16)))
        assert (ch.ncp.sent[-1].status, ch.ncp.sent[-1].seq) == (K.BAD_MESSAGE, 9)
        tc.ke_frame(K.initiate(1, False, M.certificate(EUI, private), 5, 5)[:-3])
        assert ch.ncp.sent[-1].status == K.BAD_MESSAGE
        # another suite
        cert = M.certificate(EUI, private)
        tc.ke_frame(K.initiate(4, False, cert, 5, 5, suite=K.SUITE_1))
        assert ch.ncp.sent[-1].status == K.UNSUPPORTED_SUITE
    asyncio.run(main())


def test_timeouts_end_the_session_and_the_deadline_removes_the_device():
    async def main():
        loop = asyncio.get_running_loop()
        ch, tc = _tc(loop, cbke_deadline_s=0.3)
        net = tc.network
        assert tc.admit(EUI, IC.link_key(IC.parse(CODE)), net["extended_pan_id"], net["pan_id"], net["channel"])
        private = b"p" * 32
        tc.ke_frame(K.initiate(1, False, M.certificate(EUI, private), 0, 0))   # 0 s announced: 2 s wait
        assert tc.session is not None
        await asyncio.sleep(0.5)
        assert ch.ncp.removed == 1 and ("removed", "no key establishment within 0.3s") in tc.events
        await asyncio.sleep(1.7)
        assert tc.session is None and tc.counters["ke_timeouts"] == 1
        # an ephemeral data after the session expired is out of order
        tc.ke_frame(K.ephemeral_data(2, False, M.public_key(b"e" * 32)))
        assert ch.ncp.sent[-1].status == K.BAD_MESSAGE
    asyncio.run(main())
