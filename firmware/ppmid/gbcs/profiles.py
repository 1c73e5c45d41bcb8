# Command profiles: named allow-lists a gateway is given in its config (han.profile,
# docs/config.md), as data. A profile names GBCS use cases; the validator admits a
# command only when its message code belongs to one of them AND to the device type's
# allow-list (han.allow, or the code table's commands for that type). Fewer command types
# on the route means less a stolen envelope key or a compromised sender can do with it
# (docs/security.md).
# Which use cases belong to a profile is our reading of the use-case titles (Wireshark's
# GBCS dissector value strings, the same titles as gbcs/titles.py), not DUIS' own lists:
# check them against DUIS before relying on one.
# Boot-only (ppmid.boot.BOOT_ONLY): the validator keeps the resulting code lists, not this.
import binascii
from array import array

# The route with no profile restriction: every code the device-type allow-lists admit.
ALL = "all"

PROFILES = {
    # prepayment: top-ups, emergency credit, credit and debt reads, supply enable
    "prepay": (
        "CS01a CS01b PECS01 PCS01 "          # apply a top-up (remote, and from a PPMID)
        "ECS09 GCS06 PECS02 PCS02 "          # activate emergency credit
        "ECS19 GCS14 ECS82 GCS60 "           # prepayment registers, meter balance
        "ECS20a ECS20d GCS15d GCS15e "       # billing logs: debt payments, prepayment credits
        "ECS26a GCS21b ECS26j GCS21j "       # prepayment configuration, payment mode
        "ECS42 ECS44 ECS45 GCS39 GCS33"      # supply enable: close/arm the load switch, arm the valve; status
    ),
    # a hand-held terminal on site (local delivery): joins and unjoins, the CHF device
    # log, identity and firmware reads, supply status and the event logs for diagnosis
    "hht": (
        "CS03a1 CS03a2 CS03b CS03c CS04ac CS04b CS07 CS10a CS10b "
        "CCS01 CCS02 CCS03 CCS05/CCS04 "
        "ECS26e ECS26m GCS21e ECS52 GCS38 ECS45 GCS33 ECS35a ECS35b"
    ),
}

NAMES = (ALL,) + tuple(sorted(PROFILES))


def use_cases(name):
    """The use-case ids of a profile (tuple), or None for `all` (no restriction)."""
    if name == ALL:
        return None
    return tuple(PROFILES[name].split())


def han_lists(han):
    """The validator's lists from the config's han section: (EUI-64 bytes -> device type,
    device type -> its message codes, ascending, in an array('H'): han.allow or the code
    table's commands for the type, narrowed to han.profile, (profile name, number of codes
    left over all types)). An array of 16-bit codes holds them in about half the heap a set
    does (~0.4 KB less for an ESME, a GSME and a PPMID: docs/memory.md); the validator looks
    a code up by bisection (validate.admits)."""
    devices = {}
    for d in han["devices"]:
        devices[binascii.unhexlify(d["eui"])] = d["type"]
    given = han.get("allow") or {}
    allow = {}
    for t in set(devices.values()):
        if t in given:
            allow[t] = set(given[t])
        else:
            from ppmid.gbcs import codes as table
            allow[t] = table.commands_for(t)
    profile = narrow(allow, han.get("profile") or ALL)
    for t in allow:
        allow[t] = array("H", sorted(allow[t]))
    return devices, allow, profile


def narrow(allow, name):
    """Narrow the validator's allow-lists (device type -> set of codes, in place) to
    profile `name`. Returns (name, number of codes left over all types)."""
    admit = codes(name)
    left = set()
    for t in allow:
        if admit is not None:
            allow[t] &= admit
        left |= allow[t]
    return name, len(left)


def codes(name):
    """The set of command message codes a profile admits (from the code table), or None
    for `all`."""
    wanted = use_cases(name)
    if wanted is None:
        return None
    wanted = set(wanted)
    from ppmid.gbcs import codes as table
    out = set()
    for line in table.TABLE.split("\n"):
        if len(line) > 7 and line[5] == "C" and line.split(" ")[3] in wanted:
            out.add(int(line[:4], 16))
    return out
