# The sentences of the ASH link's failures and of its rare log lines (a module reset, a
# link that fails or comes up). Apart from the link because a str constant loaded from a
# .mpy is a heap object for as long as its module is loaded: in ashlink.py these held
# ~0.7 KB of a board's heap for good (docs/memory.md, session 7). The link imports this
# module when it needs one and drops it again. SENTENCES[i] is the sentence ashlink.py
# names _S_... = const(i) (the same name is in the comment).

SENTENCES = (
    "link closed",  # 0 _S_CLOSED
    "link up, reset code 0x%02x",  # 1 _S_LINK_UP
    "the Zigbee module did not answer RST (%d attempts)",  # 2 _S_NO_RSTACK
    "EZSP frame of %d bytes exceeds ASH's %d",  # 3 _S_FRAME_LARGE
    "UART write failed: %r",  # 4 _S_WRITE_FAILED
    "the Zigbee module's frame numbers no longer match ours (it reset and its RSTACK was lost)",  # 5 _S_NUMBERS_LOST
    "%d ACK timeouts in a row: link failure",  # 6 _S_ACK_TIMEOUTS
    "%d ACK timeouts in a row and no word from the module: link failure",  # 7 _S_ACK_TIMEOUTS_SILENT
    "the Zigbee module reset (damaged RSTACK)",  # 8 _S_RESET_DAMAGED
    "the Zigbee module reset (code 0x%02x)",  # 9 _S_RESET_CODE
    "the Zigbee module reported ASH error 0x%02x",  # 10 _S_ASH_ERROR
    "on_frame failed: %r",  # 11 _S_ON_FRAME
    "the link's loop failed (a UART write, the heap): %r",  # 12 _S_TURN_FAILED
)
