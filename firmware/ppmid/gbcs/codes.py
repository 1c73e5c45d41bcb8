# GBCS message codes: code -> use case, kind (command/alert) and the device types a command
# is addressed to. For logs and for the relay's default allow-list (docs/gbcs.md).
# Facts from public sources: use-case ids and codes as listed by Wireshark's GBCS dissector
# (tshark 4.0 value strings) and by the RTDS 4.5.0 test messages (folder = use case);
# device types = the recipients of that code's COMMAND messages in the RTDS corpus (test
# titles: ..A0 ESME, ..A1 GSME, ..A2 CHF, ..A3 GPF, ..A4 PPMID, ..A5 HCALCS), else the use-case
# prefix (ECS/PECS/HECS ESME, GCS/PCS GSME, CCS/DBCH CHF). Verify before relying on one.
# One string, searched on demand, so the table costs a single object (or flash, frozen).
# Line: CODE(hex4) KIND(C command, A alert) TYPES(E ESME, G GSME, F GPF, C CHF, P PPMID,
# H HCALCS, - none) USE-CASE ("-" for alerts without one).
TYPE_LETTERS = {"E": "ESME", "G": "GSME", "F": "GPF", "C": "CHF", "P": "PPMID", "H": "HCALCS", "I": "IHD"}

TABLE = """
0001 C C CCS01
0002 C C CCS02
0003 C C CCS03
0004 C C CCS05/CCS04
0007 C E CS01a
0008 C CEG CS02a
000A C E CS02c
000B C E CS02d
000C C E CS02e
000D C E CS03a1
000E C G CS03b
000F C EGP CS04ac
0010 C G CS04b
0012 C E CS06
0013 C G CS07
0014 C G CS10a
0015 C G CS11
0018 A - CS14
0019 C E ECS01a
001A C E ECS02
001B C E ECS03
001C C E ECS04a
001D C E ECS05
001E C E ECS07
001F C E ECS08
0020 C E ECS09
0021 C E ECS10
0022 C E ECS12
0023 C E ECS14
0024 C E ECS15a
0025 C E ECS16
0026 C E ECS17a
0027 C E ECS17b
0028 C E ECS17c
0029 C E ECS17d
002A C E ECS17e
002B C E ECS18a
002C C E ECS18b
002D C E ECS19
002E C E ECS20a
002F C E ECS20b
0030 C E ECS20c
0033 C E ECS21a
0034 C E ECS21b
0035 C E ECS21c
0036 C E ECS22a
0037 C E ECS22b
0038 C E ECS22c
0039 C E ECS23
003A C E ECS24
003B C E ECS26a
003C C E ECS26b
003D C E ECS26c
003E C E ECS26d
003F C E ECS26e
0040 C E ECS26f
0042 C E ECS27
0043 C E ECS28a
0044 C E ECS28b
0045 C E ECS29a
0046 C E ECS30
0047 C E ECS34
0048 C E ECS35a
0049 C E ECS35b
004A C E ECS37
004B C E ECS38
004C C E ECS39a
004D C E ECS39b
004E C E ECS40
004F C E ECS42
0050 C E ECS43
0051 C E ECS44
0052 C E ECS45
0053 C E ECS46a
0054 C E ECS46c
0055 C E ECS47
0058 C E ECS50
0059 C E ECS52
005A C E ECS57
005E C E ECS61c
005F C E ECS62
0060 C E ECS66
0061 A - ECS68
0062 C E ECS70
0067 A - ECS80
0068 C E ECS81
0069 C E ECS82
006B C G GCS01a
006C C G GCS02
006D C G GCS03
006E C G GCS04
006F C G GCS05
0070 C G GCS06
0071 C G GCS07
0072 C F GCS09
0073 C G GCS11
0074 C FG GCS13a
0075 C FG GCS14
0076 C G GCS15c
0077 C G GCS16a
0078 C G GCS17
0079 C G GCS18
007B C G GCS21a
007C C G GCS23
007D C G GCS24
007E C G GCS25
007F C G GCS28
0080 C G GCS31
0081 C G GCS32
0082 C G GCS33
0083 C G GCS36
0084 C G GCS38
0085 C G GCS39
0086 C G GCS40a
0087 C G GCS41
0088 C G GCS44
0089 C G GCS46
008B A - GCS53
008C C F GCS59
008D C G GCS60
0090 C G PCS02
0092 C C ECS26i
0093 C C ECS35c
0094 C C ECS35d
0096 C FG GCS16b
0097 C G CS01b
009B C G PCS01
009D C G GCS21d
009E C G GCS21e
009F C G GCS21f
00A0 C F GCS61
00A1 C G CS10b
00A2 C E ECS01b
00A3 C G GCS01b
00AB C HP CS03a2
00AC C E ECS25a
00AD C G GCS20
00AE C E ECS29b
00AF C GP CS03c
00B0 C E ECS25b
00B2 A - GCS62
00B3 C E ECS04b
00B4 C G GCS40b
00B5 C G GCS21b
00B6 C FG GCS13c
00B7 C E ECS01c
00B8 C FG GCS13b
00B9 C E ECS35e
00BA C E ECS35f
00BB C E ECS61a
00BC C E ECS23b
00BD C E ECS24b
00BE C E ECS26j
00BF C G GCS21j
00C0 C G GCS40c
00C1 C E ECS15c
00C2 C G GCS40d
00C3 C G GCS15b
00C4 C G GCS15d
00C5 C G GCS15e
00C6 C E ECS26k
00C7 C E ECS01d
00C9 C E ECS20d
00CA A - -
00CB A - -
00CC A - -
00CD A - -
00CE A - -
00CF A - -
00D1 C E ECS29c
00D2 C E ECS29d
00D3 C E ECS29e
00D4 C E ECS29f
00D5 A - -
00D7 C E ECS30a
00D8 C G GCS25a
00D9 C E ECS26l
00DA C G GCS21k
00DB C E ECS48
00DE C E ECS08a
00EA C E ECS25a1
00EB C E ECS25a2
00EC C E ECS25a3
00ED C E ECS25b3
00EE C E ECS25r1
00EF C E ECS25r2
00F0 A - -
00F1 C G GCS20r
00F2 A - -
00F9 C E ECS26m
00FA C C ECS26n
00FB C G GCS21m
00FC C G GCS24a
00FD C E ECS35g
00FE C C CCS07
0100 C CEFG CS02b
0101 C CEFG CS02b
0102 C EF CS02b
0103 C EF CS02b
0104 C E CS02b
0105 C C CS02b
0106 C E CS02b
0107 C E CS02b
0108 C E CS02b
0109 C CEFG CS02b
010A C C DBCH01
010B C C DBCH02
010C C C DBCH03
010D C C DBCH04
010E C C DBCH05
010F C C CCS06
0110 A - DBCH06
0111 A - DBCH07
0112 A - DBCH08
0113 A - DBCH09
0114 A - DBCH10
0115 A - DBCH11
0116 C E PECS01
0117 C E PECS02
0118 C E PECS03
0119 C E HECS01
011A C E ECS46d
011B C E CS02f
011C C E ECS61d
011D C E ECS61e
011E C E ECS47a
011F C E ECS47e
0120 A - ECS100
0121 A - ECS101
0122 A - ECS102
0123 A - ECS200
0124 A - CS02g
0125 C H CS02g
0126 C E CS02g
0128 A - CCS08
0129 C HP CS08
012A C FG GCS60a
012B A - CS09
1000 A - -
1001 A - -
"""


def _line(code):
    key = "\n%04X " % (code & 0xFFFF)
    i = TABLE.find(key)
    if i < 0:
        return None
    j = TABLE.find("\n", i + 1)
    return TABLE[i + 1:j]


def use_case(code):
    """Use-case id ("ECS01a"), "" for an alert without one, or None for an unknown code."""
    line = _line(code)
    if line is None:
        return None
    uc = line.split(" ")[3]
    return "" if uc == "-" else uc


def is_command(code):
    line = _line(code)
    return line is not None and line[5] == "C"


def device_types(code):
    """Names of the device types the command is addressed to (tuple; () for alerts/unknown)."""
    line = _line(code)
    if line is None:
        return ()
    return tuple(TYPE_LETTERS[c] for c in line.split(" ")[2] if c in TYPE_LETTERS)


def commands_for(device_type):
    """Set of command codes the table lists for a device type name ("ESME", ...)."""
    letter = None
    for k in TYPE_LETTERS:
        if TYPE_LETTERS[k] == device_type:
            letter = k
    out = set()
    if letter is None:
        return out
    for line in TABLE.split("\n"):
        if len(line) > 7 and line[5] == "C" and letter in line.split(" ")[2]:
            out.add(int(line[:4], 16))
    return out


def name(code):
    """Readable name for logs: "ECS01a Set Tariff and Price on ESME", or "unknown 0x1234"."""
    uc = use_case(code)
    if uc is None:
        return "unknown 0x%04X" % code
    from ppmid.gbcs import titles  # loaded only when a name is wanted
    t = titles.title(code)
    if uc and t:
        return uc + " " + t
    return uc or t or ("0x%04X" % code)
