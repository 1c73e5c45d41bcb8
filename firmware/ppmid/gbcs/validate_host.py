# What only host tools and tests use around the relay checks (ppmid.gbcs.validate): a
# counter store in RAM (the gateway's is its journal), the store key of a pair, and
# reading a validator's device list and allow-lists. Apart from validate.py so that a
# gateway does not load their code; nothing in the firmware imports this module.
from ppmid.gbcs.validate import _key


class MemoryCounterStore:
    """Counter store kept in RAM. The relay injects a persistent one with the same two
    methods."""

    def __init__(self):
        self._d = {}

    def get(self, key):
        return self._d.get(key)

    def put(self, key, value):
        self._d[key] = value


def counter_key(originator, recipient):
    """Store key for the anti-replay counter of one originator -> recipient pair:
    "<ORIGINATOR>:<RECIPIENT>" (16 upper-case hex digits each)."""
    return _key(originator, recipient)


def device_type(validator, eui):
    """The device type the validator knows for an EUI-64 (bytes), or None."""
    return validator._devices.get(bytes(eui))


def allowed(validator, device_type):
    """The message codes the validator admits for a device type (its profile applied): a set."""
    return set(validator._allow.get(device_type, ()))
