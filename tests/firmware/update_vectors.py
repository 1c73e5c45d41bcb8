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
GATEWAY = "00DB1234567890A4"  # the one the downgrade fixture names (test_update_service.EUI)

MANIFEST = {"format": 1, "version": "0.2.0", "board": "emulated", "min_config_version": 1, "downgrade": False, "expires": EXPIRES, "files": [{"path": "board.json", "sha256": "abababababababababababababababababababababababababababababababab", "size": 10}, {"path": "ppmid/app.mpy", "sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", "size": 2000}]}

# name -> (signed manifest text, signature r || s in hex)
SIGNED = {
    'good': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'f7671374355ac0a7af4c82eb49e447637de7033b86f7231c3b6a64f88983fb46f829243ec3a20bc00bab268cc4a7fe063737e352d576d00a8c6a66f0170269a3'),
    'wrong-key': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '93b3ddcd8a733903bd72c718e61693610412436e83bbad1b0029bfba2c9c0edbca099783987a5c458392f194c3425956d7f630accd625ead9fd821b56190545a'),
    'needs-config-2': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":2,"version":"0.2.0"}',
        '8c3240f62ca29f0c49f48cadb2ea119c5e4246ca4cbc1261153049a5e82b141af31cff03ac4409ab23f0a5006ca7d2f1e42bacd524b9e0c77d8c4f544cd5bda1'),
    'downgrade': ('{"board":"emulated","downgrade":true,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"gateways":["00DB1234567890A4"],"min_config_version":1,"version":"0.2.0"}',
        '38cc6d48b7c4aae2ff7592655f9e1926325cb9abcfd990434404dd43b10e0dc18b4624cc4a124b8a80dbced11a27a2f64ed077474c7caa598db6cadaa73c5ece'),
    'path-escape': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"ppmid/../config.json","sha256":"abababababababababababababababababababababababababababababababab","size":3},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '4c6f8d7171dcdb6f54ecf20461c6e9d2156fe576e80c7497ad546e47033a0f89ab74be09df58ee86c1b9546ec1950303f01c66c0f6b16b781ab01d525f9800b4'),
    'no-app': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'c9a2be85071484cd6e207e89e2644b983e0cc3a796b0ccbf34746be654516c72fc3dd10708d512476617d4ea072effe71ed713182d9dde0a3340a694b2964141'),
    'bad-digest': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"ppmid/app.mpy","sha256":"xyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxy","size":3}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'ab54811d070eaa1775e9ec72c6a9fad987abe6c146d4fba39dbeed958119c960c8c98494012e0d40e2325f6ae2effc6a2383e6dbde64a7c4c39a425fcc814e86'),
    'real': ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"df4a293fdf56431094e3f1bb34bb7a25d00552e9bd49418d406540d8515094a3","size":20},{"path":"ppmid/app.mpy","sha256":"fff5d0952a2272c2d76e419a1ad7b6f026eab7ad776afd029916f60fd43c2dd0","size":3075}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '835df048c8ca3e64c9c1b49239836b56fc90c83a518137d75878b6d0376e4b28b14d59871f3bbb3b1a178694c16022aa87fdce1c78e1132db47aec2f63343a6f'),
}


# the files of the "real" manifest
REAL_FILES = [b'{"name": "emulated"}', bytes(range(256)) * 12 + b"end"]


def signed_offer(name, oid="t1"):
    text, sig = SIGNED[name]
    return json.dumps({"id": oid, "manifest": text, "signature": sig}).encode()

# image manifests (docs/update.md "Image updates"): IMAGE is the 'image' one's bytes
IMAGE = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(10000))
SIGNED['image'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":10000},"min_config_version":1,"version":"0.2.0"}',
    '028fab5df1468e70c21bba3118831159d7bfc126fc4349300892a28ebcde14671a52604ef555ea2f4a04f9d8f7b67c665f85e0472ac360d7e1f2faadf6e8969d')
SIGNED['image-too-big'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":20000},"min_config_version":1,"version":"0.2.0"}',
    '7fc6d2d5aaf5f6f5013bd2c5bef695e216b5d8c1ae89e3a407cd21467ff49bb838f9ad7c54550cfa39270d51dd5de5478423246063ae658b76168b5a84a940d1')
SIGNED['image-and-files'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"ppmid/app.mpy","sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":3}],"format":1,"image":{"sha256":"c6bec1a98cf1c8f350c1ca9cd7ed598ae4e74e32ef95e8396cfd64129c34dc24","size":10000},"min_config_version":1,"version":"0.2.0"}',
    '07db3d52c93cb19cb49b06d26b147485b3974032ccbcca4a4282a3d23b352d3661316b1b42898696c4598d42f9220ad6e3c8baf8e2a1dc7a8356c2807e9f267e')

# expiry and gateways (docs/update.md "Manifest"): signed without expires (before it was
# required), expired, a downgrade naming no gateway, one naming another gateway
SIGNED['no-expires'] = ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
    '7f1bddba24deb0924a5aa4e69386f57ae0c813227e91aaa52e69337d615975df8c4301596bdcee60b283b7af6990bf5639553965f5d64c5d1ac5f3237b33f809')
SIGNED['expired'] = ('{"board":"emulated","downgrade":false,"expires":1700000000,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
    '5c5fdcd35b0236341b4134795b9a4f078943a8413d8f1341622bcb6a23cfcc29e2111fec6ba3ae596cdae357ebe5b022794c1d1875fe6d7ea802279effdd1a35')
SIGNED['downgrade-no-gateways'] = ('{"board":"emulated","downgrade":true,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
    '469ef9311557e6b27355d2d23043ba6bc73dfd44a850f51ddca17acdf9bfcbf08a6c62c45d8a9e87c52739e6a5cd278961cd268e32b56868a7cc734fb5a380df')
SIGNED['other-gateway'] = ('{"board":"emulated","downgrade":false,"expires":4102444800,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"gateways":["00DB000000000001"],"min_config_version":1,"version":"0.2.0"}',
    '708ca0e048894c7a9f8da7ab9e84ab2f60dd4b0bb16f641e54f970b2d03336894374105158a645615909b04d5f68b6041f584514a06eaabd440b43fb30f7e8e1')
