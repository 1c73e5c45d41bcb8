# One error base for the whole firmware: every failure the gateway reports carries a
# stable code (what programs match on) and a sentence (what people read).
#
# Below: the codes that cross layers (raised in one, matched or mapped in another), in one
# place so that raiser and matcher cannot drift apart. Codes that only one module raises
# and nobody matches stay next to that module. The strings are the contract (docs/relay.md,
# docs/mqtt.md, docs/nfc.md): never change one.

# HAN link (zigbee/han.py, zigbee/tunnel.py) -> relay (RETRYABLE / PERMANENT, status texts)
E_HAN_DOWN = "E_HAN_DOWN"                  # the HAN link stayed down: nothing was sent
E_NO_TUNNEL = "E_NO_TUNNEL"                # no GB-HRGP tunnel from the CH: nothing was sent
E_HAN_DEST = "E_HAN_DEST"                  # destination not reachable on the HAN
E_HAN_TOO_BIG = "E_HAN_TOO_BIG"            # too large for the HAN link
E_DELIVERY = "E_DELIVERY"                  # the module or the CH refused the message
E_DELIVERY_UNKNOWN = "E_DELIVERY_UNKNOWN"  # may have reached the CH, not confirmed

# command acceptance: envelope / intake / relay / journal -> MQTT status, NFC status word
E_ENVELOPE = "E_ENVELOPE"
E_ID = "E_ID"
E_AUTH = "E_AUTH"
E_EXPIRED = "E_EXPIRED"
E_TOO_LARGE = "E_TOO_LARGE"
E_CLOCK = "E_CLOCK"                        # clock unset: an expiry cannot be checked
E_BUSY = "E_BUSY"                          # relay queue or journal full: try later

# UTRN top-ups (docs/utrn.md): raised by ppmid/utrn.py, reported by `ppmid utrn check` and,
# by every road a top-up arrives on (ppmid/topup.py, ppmid/relay/topups.py)
E_UTRN_FORMAT = "E_UTRN_FORMAT"            # not 20 digits (spaces and hyphens aside)
E_UTRN_CHECK = "E_UTRN_CHECK"              # the check digit does not match: a mistyped digit
E_UTRN_VALUE = "E_UTRN_VALUE"              # well formed, but not a top-up a meter could accept
# (the top-up road's own codes, E_UTRN_TARGET / _DUPLICATE / _GSME and the meter's results,
# live in ppmid/topup.py and ppmid/relay/topups.py: loaded only with the first top-up)


class PpmidError(Exception):
    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return self.code + ": " + self.message

    def as_dict(self):
        return {"code": self.code, "message": self.message}


# config (ppmid.config, at boot) -> app / MQTT link (certificates) / NFC settings. Here, not in
# config.py, so that the app can drop config.py's code once the config is validated: a
# class defined there would keep that whole module alive (its methods hold its globals).
E_CONFIG = "E_CONFIG"


class ConfigError(PpmidError):
    def __init__(self, message):
        super().__init__(E_CONFIG, message)
