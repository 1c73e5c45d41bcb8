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

MANIFEST = {"format": 1, "version": "0.2.0", "board": "emulated", "min_config_version": 1, "downgrade": False, "files": [{"path": "board.json", "sha256": "abababababababababababababababababababababababababababababababab", "size": 10}, {"path": "ppmid/app.mpy", "sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", "size": 2000}]}

# name -> (signed manifest text, signature r || s in hex)
SIGNED = {
    'good': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '7f1bddba24deb0924a5aa4e69386f57ae0c813227e91aaa52e69337d615975df8c4301596bdcee60b283b7af6990bf5639553965f5d64c5d1ac5f3237b33f809'),
    'wrong-key': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'fa0f09026c82770bebc85b8cf30e15bb03612c34b5e069e141df8ebd444dd1e0af77c35d0c52495529d9ee30af85cd1809a9147802eb376dd5b4d0943295be2f'),
    'needs-config-2': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":2,"version":"0.2.0"}',
        '586ada52bfa22c6e94ce70e2fc59c1264e61bd31dfdf33c5d248d05fb04ffce9c78da0786a3bed05e231ad32f62f42af9a86c0ca38e37e9d51790d8c6e6a1a19'),
    'downgrade': ('{"board":"emulated","downgrade":true,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '39d9b7a209000a525526cd3e6838dbd8d4f6e3426b08c2bf4fe273cea3c3a4bb7c2b72489121684ce8fe2af95085c6a5570647852367d0d4254cd4e192f0c280'),
    'path-escape': ('{"board":"emulated","downgrade":false,"files":[{"path":"ppmid/../config.json","sha256":"abababababababababababababababababababababababababababababababab","size":3},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '4162b0db486905c12f72572e9dd3e3eb2184d48a1c294318c2ef5090327f57f3dc1b294040d6b844e4d869b75ac7e74f2968cefc8084e4f8d55bbd26c1c61d46'),
    'no-app': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '10c74e1a529a9d41ad16691b4b48bdc1eee31583fbdf4a7352fc349fa7998abf927fe60491ee5af51d0f4e28b39fa52768301db0c40fa0e646e0fc5b28c387b1'),
    'bad-digest': ('{"board":"emulated","downgrade":false,"files":[{"path":"ppmid/app.mpy","sha256":"xyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxy","size":3}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '257c82cd812ccda688beeefb84a9baf784230e206366ea5a01b42e048699677bb63be14baa19af17ad59bb1216fdc649fae39ab2146641d5f8af87f891b1af91'),
    'real': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"df4a293fdf56431094e3f1bb34bb7a25d00552e9bd49418d406540d8515094a3","size":20},{"path":"ppmid/app.mpy","sha256":"fff5d0952a2272c2d76e419a1ad7b6f026eab7ad776afd029916f60fd43c2dd0","size":3075}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '867379342302ffcf4ce0d80c7b8542ab4b524088d99f43b9c84d765771803fc4bf2c36e00c7450840793b72a84d555eea273e1e1941b0795be82b5c2a551afcb'),
}


# the files of the "real" manifest
REAL_FILES = [b'{"name": "emulated"}', bytes(range(256)) * 12 + b"end"]


def signed_offer(name, oid="t1"):
    text, sig = SIGNED[name]
    return json.dumps({"id": oid, "manifest": text, "signature": sig}).encode()

# image manifests (docs/update.md "Image updates"): IMAGE is the 'image' one's bytes
IMAGE = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(10000))
SIGNED['image'] = ('{"board":"emulated","downgrade":false,"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":10000},"min_config_version":1,"version":"0.2.0"}',
    '4ee7448558e1e12969fd4b3da16d89d713f924cd2a0f8c422900cdb10a470298247b4b7cb81ed055058552631b494fa5f6a43d07c7a282c9ab409d312eac336b')
SIGNED['image-too-big'] = ('{"board":"emulated","downgrade":false,"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":20000},"min_config_version":1,"version":"0.2.0"}',
    '7dc3da9e040ef7282ea572000f89fe126895762ec5d44879e6e1e7acd862ef7205da4384584c8e64a5c42b0306babc7e9fe781944df3401c78ba6206d4bfc0d0')
SIGNED['image-and-files'] = ('{"board":"emulated","downgrade":false,"files":[{"path":"ppmid/app.mpy","sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":3}],"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":10000},"min_config_version":1,"version":"0.2.0"}',
    '24a69d6a0c3db788aef14584f71e3413e2c45c560cdff4f7617f10ebf07d33625822ea0a653f16f8bd629d4928a2acd37c87cd4df413b30ca40900770edf430c')
