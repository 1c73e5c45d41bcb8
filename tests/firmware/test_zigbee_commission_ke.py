# Key establishment is the CH's alone (review2 H3): Key Establishment frames travel without
# APS encryption, so another HAN node holding the network key could end our exchange or
# answer it with its own (CA-issued) certificate. The real Commissioner.run through the
# real ZigbeeHan._incoming, over a scripted module (its CBKE library) and a scripted CH;
# a node 0x4F21 (an IHD, another PPMID) answers first. CPython and MicroPython.
import asyncio
import struct
from ppmid.zigbee import han as H
from ppmid.zigbee import commission as CM
from ppmid.zigbee import keyest as K
from ppmid.zigbee import ezsp_cbke as C
from ppmid.zigbee.tunnel import CH_NWK, PROFILE_SE

OTHER = 0x4F21
ISSUER = b"TESTCA01"
OURS = K.make_certificate(b"\x01" * 8, ISSUER, bytes.fromhex("00DB1234567890A4"), bytes(37))
CH_EUI = bytes.fromhex("00DB1234567890C0")    # the trust centre's, big-endian as printed
IHD_EUI = bytes.fromhex("00DB1234567890EE")
CH_CERT = K.make_certificate(b"\x02" * 8, ISSUER, CH_EUI, bytes(37))
IHD_CERT = K.make_certificate(b"\x03" * 8, ISSUER, IHD_EUI, bytes(37))   # same CA: the issuer check passes
MAC_U, MAC_V = b"U" * 16, b"V" * 16


def _le(eui):
    return bytes(reversed(eui))


class Module:
    """The NCP's CBKE library as far as commissioning uses it; callbacks come at once."""

    def __init__(self, han, version, tc=CH_EUI):
        self.han = han
        self.version = version
        self.tc = tc
        self.partners = []      # the certificate subjects calculateSmacs ran with
        self.stored = []        # clearTemporaryDataMaybeStoreLinkKey's argument

    def _ok(self):
        return bytes(4) if self.version >= 14 else b"\x00"

    async def command(self, fid, p):
        if fid == C.GET_CERTIFICATE_283K1:
            return self._ok() + OURS
        if fid == C.GET_CURRENT_SECURITY_STATE:
            return self._ok() + struct.pack("<H", 0x0010) + _le(self.tc)
        if fid == C.GENERATE_CBKE_KEYS_283K1:
            self.han.commission.on_callback(C.GENERATE_CBKE_KEYS_HANDLER_283K1, self._ok() + bytes(37))
        elif fid == C.CALCULATE_SMACS_283K1:
            self.partners.append(K.cert_subject(p[1:75]))
            self.han.commission.on_callback(C.CALCULATE_SMACS_HANDLER_283K1, self._ok() + MAC_U + MAC_V)
        elif fid == C.CLEAR_TEMPORARY_DATA_MAYBE_STORE_LINK_KEY_283K1:
            self.stored.append(p == b"\x01")
        return self._ok()


def _frame(han, sender, zcl, eui=None, profile=PROFILE_SE):
    m = {"aps": {"cluster": K.CLUSTER_KEY_ESTABLISHMENT, "profile": profile, "options": 0, "group": 0},
         "sender": sender, "eui64": eui, "message": zcl}
    han._incoming(m)


def _setup(version=13, ch_cert=CH_CERT, intruder=None, ch_eui=CH_EUI):
    """A ZigbeeHan commissioning; the CH answers every request with ch_cert; intruder(han,
    frame) runs first for each of our requests (the other node being quicker)."""
    han = H.ZigbeeHan(None, None, {})
    module = Module(han, version)
    han._ezsp = module
    sent = []
    wire = _le(ch_eui) if version >= 14 else None

    async def send_zcl(dest, zcl, cluster, ep, encrypt=True):
        f = K.parse(zcl)
        sent.append((dest, f))
        if intruder is not None:
            intruder(han, f)
        if f.command == K.INITIATE:
            _frame(han, CH_NWK, K.initiate(f.seq, True, ch_cert, 1, 1), wire)
        elif f.command == K.EPHEMERAL_DATA:
            _frame(han, CH_NWK, K.ephemeral_data(f.seq, True, bytes(37)), wire)
        elif f.command == K.CONFIRM_KEY:
            _frame(han, CH_NWK, K.confirm_key(f.seq, True, MAC_V), wire)

    han._send_zcl = send_zcl
    han.commission = CM.Commissioner(han, {"ke_timeout_s": 1})
    return han, module, sent


def test_terminate_and_initiate_from_another_node_leave_the_exchange_with_the_ch():
    def intruder(han, f):
        if f.command == K.INITIATE:
            _frame(han, OTHER, K.terminate(f.seq, True, K.NO_RESOURCES, 255))
            _frame(han, OTHER, K.initiate(f.seq, True, IHD_CERT, 1, 1))
        elif f.command == K.EPHEMERAL_DATA:
            _frame(han, OTHER, K.ephemeral_data(f.seq, True, bytes(37)))
        elif f.command == K.CONFIRM_KEY:
            _frame(han, OTHER, K.confirm_key(f.seq, True, MAC_V))

    for version in (13, 14):
        han, module, sent = _setup(version, intruder=intruder)
        cm = han.commission
        assert asyncio.run(cm.run(True)) is True, (version, cm.error, cm.detail)
        assert cm.state == "commissioned" and cm.cbke == "ok" and cm.retry_after_s is None
        assert module.partners == [CH_EUI] and module.stored == [True]
        assert cm.ke_not_ch == 4 and cm.info()["ke_not_ch"] == 4
        assert [d for d, _ in sent] == [CH_NWK] * 3     # Initiate, Ephemeral Data, Confirm Key: no Terminate
        assert len([s for s in cm.steps if "0x4f21" in s]) == 1   # logged once, counted always


def test_ke_frames_from_nwk_0000_on_another_profile_or_from_another_eui_are_dropped():
    # at v14 the NCP names the sender's EUI-64: the CH's NWK address with another EUI-64 (a
    # node claiming 0x0000) is not the CH; nor is a frame on another profile
    def intruder(han, f):
        if f.command == K.INITIATE:
            _frame(han, CH_NWK, K.terminate(f.seq, True, K.NO_RESOURCES, 255), _le(IHD_EUI))
            _frame(han, CH_NWK, K.terminate(f.seq, True, K.NO_RESOURCES, 255), _le(CH_EUI), profile=0x0104)

    han, module, sent = _setup(14, intruder=intruder)
    cm = han.commission
    assert asyncio.run(cm.run(True)) is True, (cm.error, cm.detail)
    assert cm.ke_not_ch == 2 and module.partners == [CH_EUI]


def test_a_ch_certificate_for_another_subject_is_refused():
    for version in (13, 14):
        han, module, sent = _setup(version, ch_cert=IHD_CERT)
        cm = han.commission
        assert asyncio.run(cm.run(True)) is False
        assert cm.state == "failed" and cm.cbke == "failed" and cm.error == CM.E_CBKE_SUBJECT
        assert IHD_EUI.hex() in cm.detail and CH_EUI.hex() in cm.detail, cm.detail
        # terminated before any ECC: no calculateSmacs, no link key stored
        assert module.partners == [] and module.stored == [False]
        dest, last = sent[-1]
        assert dest == CH_NWK and last.command == K.TERMINATE and last.status == K.INVALID_CERTIFICATE


def test_a_module_that_does_not_know_the_trust_centre_fails_before_initiate():
    han, module, sent = _setup(13)
    module.tc = bytes(8)
    cm = han.commission
    assert asyncio.run(cm.run(True)) is False
    assert cm.error == CM.E_CBKE_MODULE and "trust centre" in cm.detail
    assert sent == [] and module.partners == []


def test_a_flood_of_ke_frames_pushes_out_no_module_callback():
    han, module, sent = _setup(13)
    cm = han.commission
    cm.on_callback(C.GENERATE_CBKE_KEYS_HANDLER_283K1, b"\x00" + bytes(37))
    for i in range(40):
        _frame(han, CH_NWK, K.terminate(i, True, K.NO_RESOURCES, 1))
    item = asyncio.run(cm._next((C.GENERATE_CBKE_KEYS_HANDLER_283K1,), 0))
    assert item is not None and item[0] == C.GENERATE_CBKE_KEYS_HANDLER_283K1
    # the KE queue keeps the newest few only
    seqs = []
    while True:
        item = asyncio.run(cm._next(("ke",), 0, cm._ke))
        if item is None:
            break
        seqs.append(K.parse(item[1]).seq)
    assert seqs == list(range(40 - len(seqs), 40)) and 0 < len(seqs) < 8
