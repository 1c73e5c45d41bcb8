# The rig of the public-key sender tests (test_relay_p256_senders, test_relay_p256_limits):
# a relay whose users section holds V.KID registered with V.PUBLIC and one symmetric sender,
# supplier-a. Split from the tests so each test module fits the MicroPython test heap.
import binascii
import json
import os
from ppmid import config as C
from ppmid import envelope
from test_relay_support import Rig, KEY, ESME, PPMID, SUPPLIER, config, fresh_root, gbcs_message
import p256_envelope_vectors as V

HMAC_KEY = b"s" * 32


def users_section(**pk):
    k = {"role": "supplier", "originators": [SUPPLIER], "public_key": V.PUBLIC}
    for f in pk:
        k[f] = pk[f]
    return {"keys": {V.KID: k, "supplier-a": {"role": "supplier", "originators": [SUPPLIER]}},
            "roles": {"supplier": "prepay"}, "legacy_key": False}


def root():
    # only the symmetric sender has a key file: a public key is in the config
    path = fresh_root()
    os.mkdir(path + "/secrets")
    os.mkdir(path + "/secrets/users")
    with open(path + "/secrets/users/supplier-a.key", "wb") as f:
        f.write(HMAC_KEY)
    return path


def rig(**pk):
    return rig_role("prepay", **pk)


def rig_role(role, **pk):
    section = users_section(**pk)
    section["roles"]["supplier"] = role
    return rig_users(section)


def rig_users(users):
    from ppmid.relay import senders as S
    cfg = config()
    cfg["gateway"] = PPMID
    # nwk and endpoint: the ESME takes top-ups (docs/utrn.md)
    cfg["han"] = {"devices": [{"eui": ESME, "type": "ESME", "nwk": 0x4A21, "endpoint": 9}]}
    cfg["users"] = users
    cfg = C.validate(cfg)
    r = Rig(cfg=cfg, senders=S.load(root(), cfg["users"], KEY), admit_wait_ms=150)
    # failed signature checks are counted per kid (envelope_sig): new buckets on this rig's
    # clock; and nothing counts as verified already
    from ppmid import envelope_sig  # after the rig's boot: both fit the test heap
    envelope_sig._failed = None
    envelope_sig._again = None
    envelope_sig._verified = []
    envelope_sig.now_ms = r.clock.ms
    return r


def one_failed_check_later(r):
    # a kid regains one failed signature check per 1 / FAILS_PER_S seconds
    from ppmid import envelope_sig
    r.clock.advance(int(1000 / envelope_sig.FAILS_PER_S) + 1)


def json_text(id, counter, sig, kid=V.KID, code=0x0007, **extra):
    obj = {"id": id, "gbcs": binascii.b2a_base64(gbcs_message(1, counter, SUPPLIER, ESME, code)).decode().strip(),
           "mac": sig, "kid": kid}
    for f in extra:
        obj[f] = extra[f]
    return json.dumps(obj)


def env(text):
    return envelope.from_json_obj(json.loads(text), 4096)
