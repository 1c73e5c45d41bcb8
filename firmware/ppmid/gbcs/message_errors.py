# The sentences of the GBCS decoder's errors (ppmid.gbcs.message raises them with their
# stable codes). Apart from the decoder because a str constant loaded from a .mpy is a heap
# object for as long as its module is loaded: in message.py these held ~2.4 KB of a
# board's heap for good (docs/memory.md, session 7). The decoder imports this module for
# each refusal and drops it again. SENTENCES[i] is the sentence message.py names _S_...
# = const(i) (the same name is in the comment); FIELDS[i] its _F_... = const(i).

SENTENCES = (
    "%s runs past the end of the element that encloses it",  # 0 _S_RUNS_PAST (a field)
    "message ends inside the %s",  # 1 _S_ENDS_INSIDE (a field)
    "%s has an unsupported length form (only < 0x80, 81 nn, 82 nnnn)",  # 2 _S_LENGTH_FORM (a field)
    "transaction-id length must be 09, not %02X",  # 3 _S_TID_LEN
    "CRA flag must be 01 (command), 02 (response) or 03 (alert), not %02X",  # 4 _S_CRA
    "originator system title length must be 08, not %02X",  # 5 _S_ORIGINATOR_LEN
    "recipient system title length must be 08, not %02X",  # 6 _S_RECIPIENT_LEN
    "date-time length must be 00 or 0C, not %02X",  # 7 _S_DATE_TIME_LEN
    "expected the General-Signing tag DF, found %02X",  # 8 _S_NOT_DF
    "other-information length must be 2, 10, 18 or >= 26, not %d",  # 9 _S_OI_LEN
    "content is empty",  # 10 _S_CONTENT_EMPTY
    "signature length must be 00 or 40, not %02X",  # 11 _S_SIGNATURE_LEN
    "%d bytes follow the signature",  # 12 _S_AFTER_SIGNATURE
    "message is %d bytes long: too short for any GBCS form",  # 13 _S_TOO_SHORT
    "first byte must be DD (General-Ciphering) or DF (General-Signing), not %02X",  # 14 _S_FIRST_BYTE
    "MAC header fields (transaction-id .. key-info) must all be empty (00)",  # 15 _S_MAC_FIELDS
    "MAC header announces %d bytes, only %d present",  # 16 _S_MAC_ANNOUNCES
    "%d bytes follow the message",  # 17 _S_AFTER_MESSAGE
    "MAC header length %d is too small for security header and MAC",  # 18 _S_MAC_LEN_SMALL
    "after DD expected 00 (MAC header) or 09 (GBT routing header), found %02X",  # 19 _S_AFTER_DD
    "GBT routing header other-information length must be 02, not %02X",  # 20 _S_GBT_OI_LEN
    "GBT routing header key-info must be empty (00), not %02X",  # 21 _S_GBT_KEY_INFO
    "routing header announces %d bytes, only %d present",  # 22 _S_ROUTING_ANNOUNCES
    "%d bytes follow the GBT block",  # 23 _S_AFTER_GBT_BLOCK
    "expected the General-Block-Transfer tag E0, found %02X",  # 24 _S_NOT_E0
    "block data (%d bytes) runs past the routing header length",  # 25 _S_BLOCK_DATA_PAST
    "%d bytes follow the block data",  # 26 _S_AFTER_BLOCK_DATA
)
_FIELD_SENTENCES = 3  # the first three take a field's name

FIELDS = (
    "length",  # 0 _F_LENGTH (a length the decoder already checked: never in an error)
    "routing header",  # 1 _F_ROUTING_HEADER
    "date-time",  # 2 _F_DATE_TIME
    "General-Signing tag",  # 3 _F_GS_TAG
    "other-information",  # 4 _F_OTHER_INFO
    "content length",  # 5 _F_CONTENT_LENGTH
    "content",  # 6 _F_CONTENT
    "signature",  # 7 _F_SIGNATURE
    "MAC header",  # 8 _F_MAC_HEADER
    "MAC header length",  # 9 _F_MAC_HEADER_LENGTH
    "key-info",  # 10 _F_KEY_INFO
    "routing header length",  # 11 _F_ROUTING_HEADER_LENGTH
    "GBT header",  # 12 _F_GBT_HEADER
    "block data length",  # 13 _F_BLOCK_DATA_LENGTH
)


def sentence(key, arg):
    """The sentence `key` with its argument (a field key for the first three, else a value
    or a tuple of them, or None)."""
    s = SENTENCES[key]
    if key < _FIELD_SENTENCES:
        return s % FIELDS[arg]
    return s if arg is None else s % arg
