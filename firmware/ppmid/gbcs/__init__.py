# GBCS codec for the relay: decode and check the routing information of GBCS messages in the
# clear (never decrypting), split/reassemble GBT blocks, build messages for tests and
# emulators. API and error codes: docs/gbcs.md.
from ppmid.gbcs.message import (decode, Message, GbcsError, FORM_MAC_SIGNED, FORM_SIGNED,  # noqa: F401
                                FORM_GBT, CRA_COMMAND, CRA_RESPONSE, CRA_ALERT)
from ppmid.gbcs.validate import Validator, MemoryCounterStore, counter_key  # noqa: F401
