"""Keys on the host, the one place that reads them: the 32-byte envelope key files of the
commands that sign (`ppmid sign`, `send`, `replay`), and the P-256 PEM files (a DCC User's
envelope-signing key, the operator's update key); every failure a KeyFileError."""
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


def load_p256(path, private=True):
    """The P-256 key in PEM file `path` (`cryptography` object): the private key, or with
    private=False the public key (a private key file gives its public half too); KeyFileError
    saying what is wrong (unreadable, not PEM, password-protected, another curve)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise KeyFileError("cannot read the key %s: %s" % (path, exc.strerror or exc))
    try:
        if private:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            try:
                key = serialization.load_pem_public_key(data)
            except ValueError:
                key = serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError) as exc:
        raise KeyFileError("%s is not an unencrypted PEM %s key (%s)"
                           % (path, "private" if private else "public or private", exc))
    if not isinstance(getattr(key, "curve", None), ec.SECP256R1):
        raise KeyFileError("%s is not a P-256 (secp256r1) key" % path)
    return key
