# GBCS codec for the relay: decode and check the routing information of GBCS messages in the
# clear (never decrypting), split/reassemble GBT blocks, build messages for tests and
# emulators. API and error codes: docs/gbcs.md. Host tools and tests: a counter store in
# RAM and the validator's lists are in ppmid.gbcs.validate_host.
# What the package names itself is what its users take from it (the relay, boot, host
# tools); the form and CRA constants and Message are ppmid.gbcs.message's (each name here
# is one more entry in the package's dict, held by the gateway for good).
from ppmid.gbcs.message import decode, GbcsError  # noqa: F401
from ppmid.gbcs.validate import Validator  # noqa: F401
