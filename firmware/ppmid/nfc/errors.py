# NFC error codes. Every failure on the NFC road is an NfcError with a stable code.
from ppmid.errors import PpmidError

E_NFC_NOACK = "E_NFC_NOACK"        # PN532 did not acknowledge a command
E_NFC_TIMEOUT = "E_NFC_TIMEOUT"    # PN532 acknowledged but did not answer in time
E_NFC_FRAME = "E_NFC_FRAME"        # malformed or unexpected frame from the PN532
E_NFC_CHIP = "E_NFC_CHIP"          # PN532 error frame or status error
E_NFC_GONE = "E_NFC_GONE"          # target left the field (or stopped answering)
E_NFC_AID = "E_NFC_AID"            # target is not a PPMID phone app nor an NDEF tag
E_NFC_PROTO = "E_NFC_PROTO"        # phone broke the APDU protocol (bad SW, bad header)
E_NFC_LENGTH = "E_NFC_LENGTH"      # announced and actual lengths disagree
E_NFC_CRC = "E_NFC_CRC"            # CRC-32 of the transferred envelope does not match
E_NFC_LATE = "E_NFC_LATE"          # response not ready before the session time ran out
E_NFC_UNKNOWN = "E_NFC_UNKNOWN"    # a collect (mode 02) names an id the gateway does not know
E_NDEF = "E_NDEF"                  # NDEF data (or tag memory layout) is malformed
E_NDEF_NOCMD = "E_NDEF_NOCMD"      # well-formed NDEF without an application/vnd.ppmid.cmd record


class NfcError(PpmidError):
    pass
