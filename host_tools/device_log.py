"""The emulated Communications Hub's device log, as a file on the host.

On a real HAN the DCC adds a device to the CH's device log for the installer: its EUI-64
and its install code. Here `ppmid provision --install-code` writes that entry into a file
(JSON lines, one `{"eui64": "...", "install_code": "..."}` per device) and the NCP
emulator's trust centre reads it (`ppmid ncp-emulator --device-log`, `ppmid emulate
--device-log`): the gateway is admitted only with the code the file holds for its EUI.

Install codes are checked with the firmware's own reader (ppmid.zigbee.installcode), so
the host refuses exactly what the gateway's config check refuses.
"""
import json
import os

from host_tools.errors import ToolError

E_DEVICE_LOG = "E_DEVICE_LOG"
DEFAULT_NAME = "device-log.jsonl"   # ppmid provision's, in a broker state dir (ppmid emulate makes its own: emulate.EMULATE_DEVICE_LOG)


class DeviceLogError(ToolError):
    """A device log file that is missing or that holds something other than entries."""

    code = E_DEVICE_LOG

    def __str__(self):
        return "%s (%s)" % (self.message, self.code)


class InstallCodeError(ToolError):
    """An install code refused; `code` is the firmware's (E_INSTALL_CODE or E_INSTALL_CODE_CRC)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code

    def __str__(self):
        return "%s (%s)" % (self.message, self.code)


def _installcode():
    from host_tools import mpcompat
    mpcompat.install()
    from ppmid.zigbee import installcode
    return installcode


def parse_install_code(text):
    """An install code as printed or typed -> its bytes, CRC included (InstallCodeError)."""
    ic = _installcode()   # first: it makes the firmware importable
    from ppmid.errors import PpmidError
    try:
        return ic.parse(text)
    except PpmidError as exc:
        raise InstallCodeError(exc.code, exc.message)


def new_install_code(length=16):
    """A random install code of `length` bytes (6, 8, 12 or 16) with its CRC appended."""
    ic = _installcode()
    if length not in ic.CODE_LENGTHS:
        raise InstallCodeError(ic.E_INSTALL_CODE, "an install code is 6, 8, 12 or 16 bytes, not %r" % (length,))
    body = os.urandom(length)
    crc = ic.crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def printed(code):
    """As an installer types it and a DCC device-log entry carries it: hex in groups of
    four digits, the CRC the last group (e.g. 83FE D340 ... D505 C3B5)."""
    digits = bytes(code).hex().upper()
    return " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def parse_eui(text, where="EUI-64"):
    """An EUI-64 as 16 hex digits (colons and hyphens allowed) -> its 8 bytes, or
    DeviceLogError naming `where`."""
    digits = str(text).replace(":", "").replace("-", "").strip()
    if len(digits) != 16:
        raise DeviceLogError("%s: an EUI-64 is 16 hex digits, not %r" % (where, text))
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise DeviceLogError("%s: an EUI-64 is 16 hex digits, not %r" % (where, text))


def read(path):
    """{EUI-64 bytes: install code bytes} from a device log file, or DeviceLogError naming
    the file and the line (missing file, not JSON, an entry without eui64 or install_code,
    a bad EUI-64 or install code, the same EUI-64 twice, no entry at all)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DeviceLogError("no device log at %s: write one with `ppmid provision --install-code HEX|new "
                             "--device-log %s ...`" % (path, path))
    except OSError as exc:
        raise DeviceLogError("cannot read the device log %s: %s" % (path, exc.strerror or exc))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DeviceLogError("device log %s is not text (expected JSON lines of eui64 and install_code)" % path)
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = "device log %s line %d" % (path, n)
        try:
            entry = json.loads(line)
        except ValueError:
            raise DeviceLogError("%s is not JSON (expected {\"eui64\": ..., \"install_code\": ...})" % where)
        if not isinstance(entry, dict) or not isinstance(entry.get("eui64"), str) \
                or not isinstance(entry.get("install_code"), str):
            raise DeviceLogError("%s: an entry is an object with the strings eui64 and install_code" % where)
        eui = parse_eui(entry["eui64"], where)
        try:
            code = parse_install_code(entry["install_code"])
        except InstallCodeError as exc:
            raise DeviceLogError("%s: install code refused: %s" % (where, exc))
        if eui in out:
            raise DeviceLogError("%s: EUI-64 %s is in the log twice" % (where, eui.hex().upper()))
        out[eui] = code
    if not out:
        raise DeviceLogError("device log %s holds no entry" % path)
    return out


def install_code_for(path, eui64):
    """The install code (bytes) the device log at path holds for eui64 (bytes), or
    DeviceLogError: the file refused by read(), or no entry for that EUI-64."""
    code = read(path).get(bytes(eui64))
    if code is None:
        e = bytes(eui64).hex().upper()
        raise DeviceLogError("device log %s has no entry for %s: add one with `ppmid provision --gateway %s "
                             "--install-code HEX|new --device-log %s ...`" % (path, e, e, path))
    return code


def add(path, eui64, code):
    """Add (or replace) the entry of `eui64` (16 hex digits) with this install code, keeping
    the other entries; written to a temporary file of its own and renamed, so a reader
    never sees half a log. Read, write and rename hold an exclusive lock on `path`.lock
    (left in place: removing it would let a third writer lock a different file), so two
    `ppmid provision` runs at once (a fleet script) both keep their entry. The log is
    owner-only (mkstemp's 0600): install codes derive the link keys. Returns the entry
    written."""
    import fcntl
    import tempfile
    eui = parse_eui(eui64)
    folder = os.path.dirname(os.path.abspath(path))
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read(path) if os.path.exists(path) else {}
        entries[eui] = bytes(code)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                for e, c in entries.items():
                    f.write(json.dumps(entry(e, c)) + "\n")
            os.replace(tmp, path)
        except BaseException:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
    return entry(eui, code)


def entry(eui64, code):
    """One line of the log: the EUI-64 and the install code as printed."""
    return {"eui64": bytes(eui64).hex().upper(), "install_code": printed(code)}
