# The sentences of the envelope's refusals (ppmid.envelope raises them with their stable
# codes). Apart from the envelope because a str constant loaded from a .mpy is a heap
# object for as long as its module is loaded: in envelope.py these held ~1 KB of a board's
# heap for good (docs/memory.md, session 7). The envelope imports this module for each
# refusal and drops it again. SENTENCES[i] is the sentence envelope.py names _S_... =
# const(i) (the same name is in the comment).

SENTENCES = (
    "envelope mac does not verify with this gateway's key",  # 0 _S_MAC
    "command expired at %d (now %d)",  # 1 _S_EXPIRED
    "%s must be a string of 1 to %d characters",  # 2 _S_ID_LENGTH
    "%s may hold only printable ASCII without spaces",  # 3 _S_ID_CHARACTERS
    "binary envelope truncated in kid",  # 4 _S_KID_TRUNCATED
    "gbcs is not valid base64 (bad character at %d)",  # 5 _S_B64_CHARACTER
    "gbcs is not valid base64 (length %d)",  # 6 _S_B64_LENGTH
    "gbcs is not valid base64 (padding)",  # 7 _S_B64_PADDING
    "mac must be 64 hex digits (HMAC) or 128 (a P-256 signature)",  # 8 _S_MAC_LENGTH
    "mac is not hex",  # 9 _S_MAC_HEX
    "command must be a JSON object",  # 10 _S_NOT_OBJECT
    "missing field %r",  # 11 _S_MISSING
    "gbcs must be a base64 string",  # 12 _S_GBCS_TYPE
    "gbcs is given twice",  # 13 _S_GBCS_TWICE
    "gbcs is larger than the %d bytes allowed",  # 14 _S_GBCS_TOO_LARGE
    "gbcs is empty",  # 15 _S_GBCS_EMPTY
    "expires must be an integer from 0 to 4294967294 (unix seconds)",  # 16 _S_EXPIRES
    "command is not valid JSON",  # 17 _S_NOT_JSON
    "command JSON nests deeper than %d levels",  # 18 _S_DEPTH
)
