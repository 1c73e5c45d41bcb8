# GBCS codec for the relay: decode and check the routing information of GBCS messages in the
# clear (never decrypting), split/reassemble GBT blocks, build messages for tests and
# emulators. API and error codes: docs/gbcs.md. Host tools and tests: a counter store in
# RAM and the validator's lists are in ppmid.gbcs.validate_host.
from ppmid.gbcs.message import (decode, Message, GbcsError, FORM_MAC_SIGNED, FORM_SIGNED,  # noqa: F401
                                FORM_GBT, CRA_COMMAND, CRA_RESPONSE, CRA_ALERT)
from ppmid.gbcs.validate import Validator  # noqa: F401
