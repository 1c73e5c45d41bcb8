# The sentences of the GBT split's errors and of the length form's (ppmid.gbcs.gbt raises them
# with their stable codes). Apart from gbt.py because a str constant loaded from a .mpy is a
# heap object for as long as its module is loaded, and the gateway loads gbt.py with its
# first large command and keeps it: there these held ~0.45 KB of a board's heap at the
# command's peak (docs/memory.md, session 10). gbt.py imports this module for each error and
# drops it again. SENTENCES[i] is the sentence gbt.py names _S_... = const(i) (the same name
# is in the comment).

SENTENCES = (
    "negative length %d",  # 0 _S_NEGATIVE_LENGTH
    "length %d does not fit the 82 nnnn form",  # 1 _S_LENGTH_TOO_BIG
    "block numbers are 16-bit: %d / %d",  # 2 _S_BLOCK_NUMBERS
    "cannot split a GBT block; split the whole message",  # 3 _S_SPLIT_A_BLOCK
    "block data size must be at least 1, not %d",  # 4 _S_BLOCK_DATA_SIZE
    "%d blocks needed: more than 65535",  # 5 _S_TOO_MANY_BLOCKS
    "transfer size %d leaves no room for block data",  # 6 _S_NO_ROOM
    "a buffer of %d bytes cannot hold a %d-byte block at %d",  # 7 _S_BUFFER_TOO_SMALL
)
