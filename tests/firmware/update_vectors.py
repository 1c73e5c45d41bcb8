# Fixed update offers for the firmware tests, signed once with the `cryptography` package
# (tests/test_update_sign.py verifies them with it again). TEST KEYS ONLY: the private
# keys are public here.
import json

PRIVATE_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBLVtBQklnPK4q/Mq
AOlBIfSVw/KRtJ/as4UzyOMHlIihRANCAAQcb5CFrUHfsj6JyXbJyqtuHdFusCaI
nCqZU6Ko2cUymsqIAZDZ14uLA7Ag94e9KQHs3lWUOJ/cqr5QvhHQj0JK
-----END PRIVATE KEY-----
"""
OTHER_PRIVATE_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkC3CLN2ztJNhycJO
8ucFrF4cOwrAm7Y3sCRWHKGztlChRANCAAQRiuEAh2DqRxJOchVA/JzwrmWD8oEo
u3LYVrGxIqBC+tcR6IQ3FKfLSo69C9AQitBYuxgB1aJlC44AToW7MWn/
-----END PRIVATE KEY-----
"""
PUBLIC = "041c6f9085ad41dfb23e89c976c9caab6e1dd16eb026889c2a9953a2a8d9c5329aca880190d9d78b8b03b020f787bd2901ecde5594389fdcaabe50be11d08f424a"
OTHER_PUBLIC = "04118ae1008760ea47124e721540fc9cf0ae6583f28128bb72d856b1b122a042fad711e8843714a7cb4a8ebd0bd0108ad058bb1801d5a2650b8e004e85bb3169ff"

EXPIRES = 4102444800  # the fixtures' expiry (2100-01-01): far ahead of any test clock
SEQ = 1767225600      # the fixtures' seq (docs/update.md "Replay"): a signing time, as ppmid release sets it
GATEWAY = "00DB1234567890A4"  # the one the downgrade fixture names (test_update_service.EUI)

MANIFEST = {"format": 1, "version": "0.2.0", "board": "emulated", "min_config_version": 1, "downgrade": False, "expires": EXPIRES, "seq": SEQ, "files": [{"path": "board.json", "sha256": "abababababababababababababababababababababababababababababababab", "size": 10}, {"path": "ppmid/app.mpy", "sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", "size": 2000}]}

# name -> (signed manifest text, signature r || s in hex)
SIGNED = {
    'good': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        '3e3338b5ab4ac14bbfad0d062b884245d90fa967aa67de237b2e3c8fb008077d189ec6fdbcf529fb41383db79afd83fdeca6bf837e978af67ef38d00ab2f6db8'),
    'wrong-key': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        '139c14bb5402aac26499d91514b70aba374194395e3e9221f04c2d5bc8b2d8a354ec2b60bf8282943403bde95be7dc24e794504beb1f378722c758be427a4584'),
    'needs-config-2': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":2,"seq":1767225600,"version":"0.2.0"}',
        'aed9fc159a54584527faf6249a9d1b4dd9ad7625e2396260325a24524c573e91c1126f8e04641abe63a10364c2d7b2eca3310cef5289a2c5da3778aa8898129b'),
    'downgrade': ('{"board":"emulated","downgrade":true,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"gateways":["00DB1234567890A4"],"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        '3978cc11d771cafc95f70976dcfc185ef40e48f3828992ec22314903731239d9b71dc2804fa23b2189dc4e8572c0ff12ab3776ec0f57083908f9ecbaa82f0376'),
    'path-escape': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"ppmid/../config.json","sha256":"abababababababababababababababababababababababababababababababab","size":3},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        '1b879975c1928f72b1cfef6924661e8798c1d931ac8780a4f782fc6d0ced95cf2c954288a3115e127ffd4144f9dc88d0f7e616f54ab7fcde4d8544e73f99cff5'),
    'no-app': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        '3e39ea9e8ec0c049b7cca043264468ecf452db3a804df0fb52dbf84fe447c9b3633a54382bdf99d6963fcc7ffa118a44cff643a3ec575a2ddb3e37408aba2e15'),
    'bad-digest': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"ppmid/app.mpy","sha256":"xyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxy","size":3}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        'e85d0029ea69542d41803512ba01d7f7a047d3255c3aa9b2c0987d2dd56c510c2afe936e226bc855683ac3bb2a4c188ddab8b088c9dfeb8a6759206ab77f72d4'),
    'real': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"df4a293fdf56431094e3f1bb34bb7a25d00552e9bd49418d406540d8515094a3","size":20},{"path":"ppmid/app.mpy","sha256":"fff5d0952a2272c2d76e419a1ad7b6f026eab7ad776afd029916f60fd43c2dd0","size":3075}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
        'ee2653c191af788765895e093ffcc11378ec515f18ee9ebe1bd46df9105b149a148c1a6b038d3286a9fe4c33369011e8bc23278cfde750a124619818ec131eb1'),
}


# the files of the "real" manifest
REAL_FILES = [b'{"name": "emulated"}', bytes(range(256)) * 12 + b"end"]


def signed_offer(name, oid="t1"):
    text, sig = SIGNED[name]
    return json.dumps({"id": oid, "manifest": text, "signature": sig}).encode()

# image manifests (docs/update.md "Image updates"): IMAGE is the 'image' one's bytes
IMAGE = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(10000))
SIGNED['image'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":10000},"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    '8697e5ab653ce9c206c73eb12590c7a9a15b32f3cfa7c8cc8b44a951181c401ab37325f053410578836b5cae3c626688648c3388d6272635ee3a73dbe5aee466')
SIGNED['image-too-big'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":20000},"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    '8555237f071a428b3c4cad34063bdac66006e683e37757666a5fc5aafb0f7dc041346de60b8905a0b43decd7b5d13597b4c1fbaff0433c8462674979d37f2089')
SIGNED['image-and-files'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"ppmid/app.mpy","sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":3}],"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":10000},"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    'b6f7f70378f761ec1168f1df3717692ce5639525f9fdd8576d222c1d4a878a6588a42ca78b18ecfd1082a024b79c0c05c6331412141ecab1b375bd76308cf6f1')

# expiry and gateways (docs/update.md "Manifest"): signed without expires (before it was
# required), expired, a downgrade naming no gateway, one naming another gateway
SIGNED['no-expires'] = ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    'd7101b0d3dbe26f224e8fffec5ad028d58c4d59e72bbaae1e65a01b0a0df1abd4860fef8d21dc9f388f39bd8c7c91491b104ef33761269815a8ae402767b373a')
SIGNED['expired'] = ('{"board":"emulated","downgrade":false,"expires":1700000000,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    '55965f079afaa3d350c9d57bd465ee775f075443e3e6130daae30f81831853917fc80dda51a6e4dd60c92884071d9e2b3bbe96470e00798c55090c793b367b55')
SIGNED['downgrade-no-gateways'] = ('{"board":"emulated","downgrade":true,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    '805e668183f22cff45fff036adba13157da23c66ea2f5dfa04c7df64b5f66625a8e0b4ae4b864a355f7673f93fbd98bc897c858f78395f0891a79302c3c78bc8')
SIGNED['other-gateway'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"gateways":["00DB000000000001"],"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    'e9341944b85fc0fd7f753b14b0360cf769a5cd419c88887301c0883d573caed3a023468b561437dd7d7cf0f63668b64eed85dac90082ec104dc40e9496fdb984')

# the replay floor (docs/update.md "Replay"): every manifest above is signed with seq SEQ;
# these are one signed without seq, and the "real" set again as 0.3.0 with a lower and a
# higher seq, and as a downgrade to 0.1.5 signed before it (a lower seq)
SIGNED['no-seq'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
    '9677b6cec4b534b12ca211294be50166fd0515b544a262037edf02203234f6ee28d882f5bc1d089a1c6c9cf327afed857027fc90a34a5c0e41831c88061be051')
SIGNED['real-older-seq'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"df4a293fdf56431094e3f1bb34bb7a25d00552e9bd49418d406540d8515094a3","size":20},{"path":"ppmid/app.mpy","sha256":"fff5d0952a2272c2d76e419a1ad7b6f026eab7ad776afd029916f60fd43c2dd0","size":3075}],"format":1,"min_config_version":1,"seq":1767225599,"version":"0.3.0"}',
    'f521366587e31de3fc1711678078f2bdd0462b308389576da6aecfa4fdd113c682b3831e45fab2d673ab263cfe40c0c0cebcb8bf9b15728007dd1144c92a2105')
SIGNED['real-next'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"df4a293fdf56431094e3f1bb34bb7a25d00552e9bd49418d406540d8515094a3","size":20},{"path":"ppmid/app.mpy","sha256":"fff5d0952a2272c2d76e419a1ad7b6f026eab7ad776afd029916f60fd43c2dd0","size":3075}],"format":1,"min_config_version":1,"seq":1767225601,"version":"0.3.0"}',
    'f59f9d3b695d787a783337a1b586bec2edcd39cfb96326ee2f309e6672474829ba3f0b9ba4c4ea80a52ef904016a039a40755713f43414ac1285062830e5441e')
SIGNED['real-downgrade'] = ('{"board":"emulated","downgrade":true,"expires":4102444800,"files":[{"path":"board.json","sha256":"df4a293fdf56431094e3f1bb34bb7a25d00552e9bd49418d406540d8515094a3","size":20},{"path":"ppmid/app.mpy","sha256":"fff5d0952a2272c2d76e419a1ad7b6f026eab7ad776afd029916f60fd43c2dd0","size":3075}],"format":1,"gateways":["00DB1234567890A4"],"min_config_version":1,"seq":1767225500,"version":"0.1.5"}',
    '7d0b29d83b79c79ca8e8bc29df0f4d1ab390a080ed38b63ae5ef98940015c9c796fbdb486c2ea1f111277c973cc55f1f027585a7e27925a743d7394d1d7c99db')

# manifest format 2 (docs/update.md "Manifest formats"): "good" and "real" with files as
# [path, size, sha256 in base64] triples
SIGNED['good-v2'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[["board.json",10,"q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="],["ppmid/app.mpy",2000,"zc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc0="]],"format":2,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    '111dd635993857e5fac4c553367c6cb884e5ddaeab42051722301ea342cbff392c08a2e7cf4d8b342c64ec776a57296afc5beac5298abbc9f1dcb117b2cdaaca')
SIGNED['real-v2'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[["board.json",20,"30opP99WQxCU4/G7NLt6JdAFUum9SUGNQGVA2FFQlKM="],["ppmid/app.mpy",3075,"//XQlSoicsLXbkGaGte28Cbqt613av0CmRb2D9Q8LdA="]],"format":2,"min_config_version":1,"seq":1767225600,"version":"0.2.0"}',
    'ad7d19989646c4bcb685fed0becc3241a1cf09d2960871fc1673b137e3ad9821efa3898f007b6ed2c188b85bb9ffd2616a3d2657373256838a5d0ce86cd802e6')
