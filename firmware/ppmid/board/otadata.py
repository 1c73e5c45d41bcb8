# The emulated board's stand-in for the ESP32's OTA data (docs/update.md "Image updates"):
# which of the two app partitions boots, and the ESP-IDF app-rollback states, as one
# fixed-size JSON record. Pure code (no imports): the firmware's image slots write it
# (set_boot, mark_valid) and the emulated board's supervisor applies boot_step() at every
# reset, as the ESP-IDF bootloader does with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE:
#   set_boot(X)            -> boot X, state "new"
#   reset with "new"       -> boot X, state "pending_verify" (the first boot of X)
#   mark_valid() in X      -> state "valid"
#   reset, "pending_verify" -> state "aborted", boot the previous partition (rolled back)
# What is not modelled: the two otadata sectors with sequence numbers and CRCs (one record
# written in one write() here), image headers and their checks by the bootloader.
LABELS = ("ota_0", "ota_1")
RECORD = 256  # bytes; padded with spaces, which JSON ignores


def initial():
    return {"boot": LABELS[0], "state": "valid", "previous": LABELS[0]}


def parse(raw):
    """The record from its bytes; the initial one when erased (0xff) or unreadable."""
    import json
    try:
        rec = json.loads(bytes(raw).decode().strip())
    except (ValueError, UnicodeError):
        return initial()
    if not isinstance(rec, dict) or rec.get("boot") not in LABELS or rec.get("previous") not in LABELS:
        return initial()
    return rec


def dump(rec):
    import json
    raw = json.dumps(rec).encode()
    if len(raw) > RECORD:
        raise ValueError("otadata record too long")
    return raw + b" " * (RECORD - len(raw))


def other(label):
    return LABELS[1] if label == LABELS[0] else LABELS[0]


def boot_step(rec):
    """The bootloader at a reset: (the label that boots, the record to write back)."""
    rec = dict(rec)
    state = rec.get("state")
    if state == "new":
        rec["state"] = "pending_verify"
    elif state == "pending_verify":
        # the new partition's first boot ended without mark_valid(): back to the previous
        rec["rolled_back"] = rec["boot"]
        rec["boot"] = rec["previous"]
        rec["state"] = "aborted"
    return rec["boot"], rec


def set_boot(rec, label, running):
    if label not in LABELS:
        raise ValueError("no app partition %r" % (label,))
    return {"boot": label, "state": "new", "previous": running}


def mark_valid(rec, running):
    """Cancel the rollback: the partition running on its first boot is the one to keep."""
    rec = dict(rec)
    if rec.get("boot") == running and rec.get("state") == "pending_verify":
        rec["state"] = "valid"
    return rec
