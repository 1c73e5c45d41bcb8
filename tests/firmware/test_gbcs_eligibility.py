# Roles from DUIS' eligibility of service requests (ppmid.gbcs.eligibility) and their use
# as a sender's role (`users.roles.R = "duis:GS"`). CPython and MicroPython.
from ppmid import config as C
from ppmid.errors import ConfigError
from ppmid.gbcs import codes, eligibility
from test_relay_support import Rig, KEY, ESME, GSME, PPMID, SUPPLIER, config, fresh_root

GAS_KEY = b"g" * 32
DNO_KEY = b"d" * 32
OU_KEY = b"u" * 32


def test_every_use_case_and_code_named_is_a_command_of_the_code_table():
    commands = [line for line in codes.TABLE.split("\n") if len(line) > 7 and line[5] == "C"]
    n = 0
    for sr, source, roles, use_cases in eligibility.rows():
        assert source in ("D", "T", "R"), (sr, source)
        assert roles and all(r in eligibility.ROLES for r in roles), (sr, roles)
        assert use_cases, sr
        for uc in use_cases:
            assert any(line[:4] == uc or line.endswith(" " + uc) for line in commands), \
                "%s names %s, not a command of gbcs/codes.py" % (sr, uc)
            n += 1
    assert n > 150


def test_each_role_admits_only_its_own_fuel():
    # a gas role's codes never address an ESME only, an electricity role's never a GSME
    # only (device types as gbcs/codes.py has them); an other user reads both fuels
    gas_only, elec_only = ("GSME", "GPF"), ("ESME",)
    for role in ("IS", "ES", "ED", "GS", "GT"):
        got = eligibility.codes(role)
        assert got, role
        for c in got:
            types = codes.device_types(c)
            if role in ("GS", "GT"):
                assert tuple(t for t in types if t not in elec_only), (role, hex(c), types)
            else:
                assert tuple(t for t in types if t not in gas_only), (role, hex(c), types)
    assert eligibility.codes("OU")
    # the suppliers hold their top-ups (CS01a, CS01b) and the PPMID's own (PECS01, PCS01)
    assert {0x0007, 0x0116} <= eligibility.codes("IS") and {0x0097, 0x009B} <= eligibility.codes("GS")
    assert 0x0007 not in eligibility.codes("OU") and 0x0007 not in eligibility.codes("ED")


def test_role_value_spelling():
    from ppmid.relay import users_config
    assert sorted(users_config._DUIS_ROLES) == sorted(eligibility.ROLES)
    assert eligibility.role("duis:GS") == "GS"
    for bad in ("duis:", "duis:XX", "duis:gs", "GS", None, 7):
        assert eligibility.role(bad) is None


def _rig():
    import os
    from ppmid.relay import senders as S
    cfg = config()
    cfg["gateway"] = PPMID
    cfg["han"] = {"devices": [{"eui": ESME, "type": "ESME"}, {"eui": GSME, "type": "GSME"}]}
    cfg["users"] = {"keys": {"gas-a": {"role": "gas-supplier", "originators": [SUPPLIER]},
                             "dno-1": {"role": "distributor", "originators": [SUPPLIER]},
                             "ou-1": {"role": "other", "originators": [SUPPLIER]}},
                    "roles": {"gas-supplier": "duis:GS", "distributor": "duis:ED", "other": "duis:OU"},
                    "legacy_key": False}
    cfg = C.validate(cfg)
    root = fresh_root()
    os.mkdir(root + "/secrets")
    os.mkdir(root + "/secrets/users")
    for name, key in (("gas-a", GAS_KEY), ("dno-1", DNO_KEY), ("ou-1", OU_KEY)):
        with open(root + "/secrets/users/" + name + ".key", "wb") as f:
            f.write(key)
    return Rig(cfg=cfg, senders=S.load(root, cfg["users"], KEY), admit_wait_ms=150)


async def test_a_duis_role_sends_its_codes_and_is_refused_outside_them():
    r = _rig()
    # the gas supplier: a GSME top-up (2.2 CS01b) yes; an ESME top-up (CS01a), no
    assert (await r.submit("g1", 10, key=GAS_KEY, target=GSME, code=0x0097))["status"] == "accepted"
    out = await r.submit("g2", 11, key=GAS_KEY, code=0x0007)
    assert out["error"] == "E_ROLE" and "gas-a" in out["message"] and "0x0007" in out["message"]
    # the distributor: set voltage configurations (6.5 ECS29a) yes; open the load switch (7.2 ECS43), no
    assert (await r.submit("d1", 12, key=DNO_KEY, code=0x0045))["status"] == "accepted"
    assert (await r.submit("d2", 13, key=DNO_KEY, code=0x0050))["error"] == "E_ROLE"
    # the other user: read import registers (4.1.1 ECS17b) yes; a tariff (1.1.1 ECS01a), no
    assert (await r.submit("u1", 14, key=OU_KEY, code=0x0027))["status"] == "accepted"
    assert (await r.submit("u2", 15, key=OU_KEY, code=0x0019))["error"] == "E_ROLE"
    assert sorted(r.journal.by_id) == ["d1", "g1", "u1"]


def test_an_unknown_duis_role_is_a_config_error():
    for value in ("duis:XX", "duis:"):
        try:
            C.validate({"gateway": PPMID, "users": {"keys": {}, "roles": {"r": value}}})
            raise AssertionError("accepted %r" % value)
        except ConfigError as exc:
            assert "users.roles.r" in exc.message and "DUIS" in exc.message
