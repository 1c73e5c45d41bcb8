# The sentences of the EZSP driver's failures (a malformed frame from the module, a
# response that does not fit its command, a timeout) and of its rare log lines. Apart from
# the driver because a str constant loaded from a .mpy is a heap object for as long as its
# module is loaded: in ezsp.py these held ~0.7 KB of a board's heap for good
# (docs/memory.md, session 7). The driver imports this module when it needs one and drops
# it again. SENTENCES[i] is the sentence ezsp.py names _S_... = const(i) (the same name is
# in the comment).

SENTENCES = (
    "no response to %s",  # 0 _S_NO_RESPONSE (its argument: the command's frame id)
    "EZSP frame too short (%d bytes)",  # 1 _S_FRAME_SHORT
    "unsupported EZSP frame format 0x%02x",  # 2 _S_FRAME_FORMAT
    "EZSP parameters truncated (%d bytes, need %d)",  # 3 _S_TRUNCATED
    "message of %d bytes cannot go in one sendUnicast",  # 4 _S_UNICAST_LARGE
    "incomingMessageHandler message truncated",  # 5 _S_INCOMING_TRUNCATED
    "callback 0x%04x dropped: %r",  # 6 _S_CALLBACK_DROPPED
    "response to nothing (seq %d, id 0x%04x) dropped",  # 7 _S_ORPHAN
    "the NCP rejected command 0x%04x (invalidCommand status %d)",  # 8 _S_INVALID_COMMAND
    "response id 0x%04x to command 0x%04x",  # 9 _S_WRONG_RESPONSE
    "version not negotiated",  # 10 _S_NOT_NEGOTIATED
)

# the commands the driver sends, by frame id, for a timeout's sentence (callbacks and
# invalidCommand never time out); the ids are private consts of the one module that sends
# them (ezsp.py, zigbee/han_start.py), so they are written here as numbers
_COMMANDS = {0x0000: "version", 0x0017: "networkInit", 0x0018: "networkState",
             0x0033: "maximumPayloadLength", 0x0034: "sendUnicast",
             0x0039: "sendReply"}


def sentence(key, arg):
    """The sentence `key` with its argument (a frame id for the first, else a value or a
    tuple of them, or None)."""
    if key == 0:
        arg = _COMMANDS.get(arg, hex(arg))
    return SENTENCES[key] if arg is None else SENTENCES[key] % arg
