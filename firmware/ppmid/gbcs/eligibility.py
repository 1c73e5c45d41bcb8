# Which DCC User role may send which GBCS command, as data: the DCC User Interface
# Specification (DUIS) makes each Service Request eligible for some user roles, and each
# Service Request is carried to the device as one or more GBCS use cases. A sender's role
# in the config (`users.roles.NAME = "duis:IS"`, docs/config.md) admits the message codes
# of the rows its role is named on. Imported by relay/senders.py while the senders load
# (at boot, or a users update at run time) and dropped again right after (ppmid.modules.unload).
#
# Line: SR SOURCE ROLES USE-CASES...
#   SR        the DUIS Service Request reference; "-" for the PPMID's own use cases
#   SOURCE    where the roles of the row come from (docs/security.md "Roles from DUIS"):
#             D  DCC User Gateway Interface Design Specification v0.8 (2014), the annex
#                of that service names its user roles
#             T  the use case's own title names the role (Wireshark's GBCS value strings:
#                "... - Supplier", "... - Network Operator", "networkOperatorByNetworkOperator")
#             R  our reading: the fuel and the service group, narrowest plausible; check
#                against the DUIS in force before relying on a row
#   ROLES     IS import supplier, ES export supplier, GS gas supplier, ED electricity
#             distributor, GT gas transporter, OU other user (comma-separated)
#   USE-CASES use-case ids as the code table spells them (gbcs/codes.py), or a message
#             code in 4 hex digits where one use case has codes for several roles (CS02b)
# The SR -> use case pairs are facts: the RTDS 4.5.0 test messages are filed by
# "SR_USECASE" (../shared/vectors/gbcs/rtds-4.5.0). Electricity rows name electricity
# roles, gas rows gas roles (by the device types gbcs/codes.py gives the use case), so
# that a gas supplier's key cannot send to an ESME; an other user may read both fuels.
ROLES = {"IS": "import supplier", "ES": "export supplier", "GS": "gas supplier",
         "ED": "electricity distributor", "GT": "gas transporter", "OU": "other user"}
PREFIX = "duis:"

TABLE = """
1.1.1 R IS ECS01a
1.1.1 R GS GCS01a
1.1.2 R IS ECS01c
1.2.1 R IS ECS01b
1.2.1 R GS GCS01b
1.2.2 R IS ECS01d
1.5 R IS ECS04a ECS04b
1.5 R GS GCS40a GCS40b GCS40c GCS40d
1.6 R IS ECS02 ECS03
1.6 R GS GCS02 GCS03
1.7 R IS ECS05
2.1 R IS ECS08 ECS08a
2.1 R GS GCS05
2.2 R IS CS01a
2.2 R GS CS01b
2.3 R IS ECS07
2.3 R GS GCS04
2.5 R IS ECS09
2.5 R GS GCS06
3.1 D IS ECS10
3.1 D GS GCS07
3.2 D IS ECS12
3.2 D GS GCS09
3.3 D IS ECS15a ECS15c
3.3 D GS CS11
3.4 D IS ECS16
3.4 D GS GCS44
3.5 D IS ECS14
3.5 D GS GCS11
4.1.1 R IS,OU ECS17b
4.1.1 R GS,OU GCS13a
4.1.2 R IS ECS17d
4.1.2 R GS GCS13c
4.1.3 R IS ECS17e
4.1.4 R GS GCS13b
4.2 R IS,ES,OU ECS17a
4.3 R IS ECS19
4.3 R GS GCS14
4.4.2 R IS ECS20b
4.4.2 R GS GCS15b
4.4.3 R IS ECS20c
4.4.3 R GS GCS15c
4.4.4 R IS ECS20a
4.4.4 R GS GCS15d
4.4.5 R IS ECS20d
4.4.5 R GS GCS15e
4.6.1 R IS,OU ECS21a
4.6.1 R GS,OU GCS16a
4.6.2 R IS,ES,OU ECS21c
4.8.1 R IS,ED,OU ECS22b
4.8.1 R GS,GT,OU GCS17
4.8.2 R IS,ED,OU ECS22c
4.8.3 R IS,ES,ED,OU ECS22a
4.10 R IS,ED ECS23 ECS23b
4.10 R GS,GT GCS18
4.11.1 R IS ECS24
4.11.1 R GS GCS21f
4.11.2 R IS ECS24b
4.12.1 R IS,ED ECS18b
4.12.2 R IS,ES,ED ECS18a
4.13 R IS ECS26a
4.13 R GS GCS21b
4.14 R IS ECS21b
4.14 R GS GCS16b
4.15 R IS ECS27
4.16 R IS,ED,OU ECS17c
4.17 R IS,OU ECS66
4.17 R GS,OU GCS61
4.18 R IS ECS82
4.18 R GS GCS60 GCS60a
6.2.1 R IS,ED ECS26b ECS26k
6.2.2 R IS ECS26c
6.2.3 R IS ECS26d ECS26l
6.2.3 R GS GCS21d GCS21k
6.2.4 R IS,ED ECS26e ECS26i ECS26m ECS26n
6.2.4 R GS,GT GCS21e GCS21m
6.2.5 R IS ECS26f
6.2.7 R IS,ED ECS40
6.2.7 R GS,GT GCS46
6.2.8 R GS,GT GCS21a
6.2.9 R IS ECS26j
6.2.9 R GS GCS21j
6.2.10 T IS ECS25r1
6.2.10 T ED ECS25r2
6.2.10 T GS GCS20r
6.4.1 R IS ECS28a
6.4.2 R IS ECS28b
6.5 R ED ECS29a ECS29b ECS29c ECS29d
6.6 R GS GCS23
6.7 R GS GCS24 GCS24a
6.8 R IS ECS30 ECS30a
6.8 R GS GCS25 GCS25a
6.11 R IS ECS70
6.11 R GS GCS28
6.12 R IS ECS34
6.13 R IS ECS35a ECS35b ECS35c ECS35d ECS35e ECS35f ECS35g
6.13 R GS CS10a CS10b
6.14.1 R IS ECS46a
6.14.2 R IS ECS46c
6.14.3 R IS ECS46d
6.15.1 T IS,GS 0102
6.15.1 T ED 0103
6.15.1 R IS CS02g
6.15.2 R IS CS02d
6.17 R IS CS02c
6.18.1 R IS ECS37
6.18.2 R IS ECS57
6.20.1 R IS ECS39a
6.20.1 R GS GCS41
6.20.2 R IS ECS39b
6.21 T IS,GS 0102
6.21 T ED 0103
6.22 T IS ECS25a ECS25a1 ECS25a2 ECS25a3
6.22 T ED ECS25b ECS25b3
6.22 R GS GCS20
6.24.1 R IS,GS CS02a
6.24.1 R IS CS02f
6.24.2 R IS,ED CS02e
6.25 R IS ECS81
6.26 R IS ECS48
6.27 R ED ECS29e ECS29f
6.28 R IS,GS DBCH04
6.29 R IS,GS DBCH05
6.30 R IS,GS DBCH03
6.31 R IS,GS DBCH01
6.32 R IS,GS DBCH02
7.1 R IS ECS42
7.2 R IS ECS43
7.2 R GS GCS32
7.3 R IS ECS44
7.3 R GS GCS39
7.4 R IS ECS45
7.4 R GS GCS33
7.5 R IS ECS47
7.6 R IS ECS47
7.7 R IS ECS61a
7.8 R IS ECS47
7.9 R IS ECS62
7.10 R IS ECS62
7.11 R IS ECS61c
7.12 R IS ECS38
7.13 R IS ECS47a
7.14 R IS ECS61d
7.15 R IS ECS61e
7.16 R IS ECS47e
8.1.1 R IS ECS70
8.1.1 R GS GCS28
8.7.1 R IS CS03a1
8.7.1 R IS,GS CS03a2 CS03c
8.7.2 R IS,GS CS03a2 CS03c
8.7.2 R GS CS03b
8.8.1 R IS,GS CS04ac
8.8.2 R IS,GS CS04ac
8.8.2 R GS CS04b
8.9 R IS,GS CCS05/CCS04 CCS06 CCS07
8.9 R GS CS07
8.11 R IS,GS CCS01 CCS02
8.12.1 R IS,GS CCS03
8.12.2 R GS GCS59
9.1 R IS ECS50
9.1 R GS GCS36
11.2 R IS,ED ECS52 CS08
11.2 R GS,GT GCS38 CS08
11.3 R IS CS06
14.1 R GS,GT GCS31
- R IS PECS01 PECS02 PECS03
- R GS PCS01 PCS02
"""


def rows():
    """(sr, source, roles tuple, use cases tuple) for each line of the table."""
    for line in TABLE.split("\n"):
        if line:
            f = line.split(" ")
            yield f[0], f[1], tuple(f[2].split(",")), tuple(f[3:])


def role(value):
    """The DUIS role of a config role value ("duis:IS" -> "IS"), or None when the value
    is not a DUIS role."""
    if isinstance(value, str) and value.startswith(PREFIX) and value[len(PREFIX):] in ROLES:
        return value[len(PREFIX):]
    return None


def codes(name):
    """The set of command message codes DUIS role `name` ("IS", ...) may send."""
    wanted = set()
    for r in rows():
        if name in r[2]:
            wanted.update(r[3])
    from ppmid.gbcs import codes as table
    out = set()
    for line in table.TABLE.split("\n"):
        if len(line) > 7 and line[5] == "C" and (line[:4] in wanted or line.split(" ")[3] in wanted):
            out.add(int(line[:4], 16))
    return out
