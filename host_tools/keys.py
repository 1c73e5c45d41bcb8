"""Envelope keys on the host: the one place that reads a 32-byte key file for the commands
that sign (`ppmid sign`, `send`, `replay`)."""
from host_tools.errors import ToolError

KEY_LEN = 32


class KeyFileError(ToolError):
    code = "E_KEY_FILE"


def read_envelope_key(path):
    """The 32-byte envelope key in `path`, or KeyFileError saying why not."""
    try:
        with open(path, "rb") as f:
            key = f.read()
    except OSError as exc:
        raise KeyFileError("cannot read the envelope key %s: %s" % (path, exc.strerror))
    if len(key) != KEY_LEN:
        raise KeyFileError("the envelope key %s must be %d bytes, not %d" % (path, KEY_LEN, len(key)))
    return key
