# The sentences of the relay checks' refusals (ppmid.gbcs.validate raises them with their
# stable codes). Apart from the validator because a str constant loaded from a .mpy is a
# heap object for as long as its module is loaded: in validate.py these held ~0.6 KB of a
# board's heap for good (docs/memory.md, session 7). The validator imports this module for
# each refusal and drops it again. SENTENCES[i] is the sentence validate.py names _S_... =
# const(i) (the same name is in the comment).

SENTENCES = (
    "message is %d bytes; the limit (limits.max_gbcs) is %d",  # 0 _S_TOO_LARGE
    "a GBT block cannot be relayed on its own; reassemble the message first",  # 1 _S_FORM
    "only commands are relayed; this is a%s %s",  # 2 _S_NOT_COMMAND
    "message has no signature field: a pre-command, not a command the DCC sent",  # 3 _S_PRECOMMAND
    "recipient %s is not on this gateway's HAN device list",  # 4 _S_UNKNOWN_TARGET
    "message code 0x%04X is not allowed for %s %s (command profile %s)",  # 5 _S_NOT_ALLOWED
    "originator counter %d is not above the last accepted (%d) for this originator and recipient",  # 6 _S_REPLAY
    "the MAC header's security control is 0x%02X; a GBCS command has 0x11 (authenticated, in the clear)",  # 7 _S_SECURITY_CONTROL
    "General-Signing command without a MAC header and with an empty signature: no device could authenticate it (a pre-command, not a command the DCC sent)",  # 8 _S_UNSIGNED
)
