# Fixed update offers for the firmware tests, signed once with the `cryptography` package
# (tests/test_update_sign.py verifies them with it again). TEST KEYS ONLY: the private
# keys are public here.
import json

PRIVATE_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdoy6E7rIF4RZ3J+y
bU3sKbeYFXbIwE/eP30BAHhjGUehRANCAAQdyloItNGiXZvLM9uivB3ttl623moR
kBrQCnHKMy5VCr7ItH7vVhpVs24gOS682By0RPGIF6Ra56KqIHHd8oFW
-----END PRIVATE KEY-----
"""
OTHER_PRIVATE_PEM = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgnINGpeMwlUt4sF24
7AP0OyeuCLsXxy7cPyb7tbbN7sahRANCAAQbBa+q3TigdHUJw67KSlHDuSqID3Gh
wkIKVvmVAczxBFLLKnmPNI+0dS2oQSi+gOnGokqoYgDlN9OU8Q+95KJM
-----END PRIVATE KEY-----
"""
PUBLIC = "041dca5a08b4d1a25d9bcb33dba2bc1dedb65eb6de6a11901ad00a71ca332e550abec8b47eef561a55b36e20392ebcd81cb444f18817a45ae7a2aa2071ddf28156"
OTHER_PUBLIC = "041b05afaadd38a0747509c3aeca4a51c3b92a880f71a1c2420a56f99501ccf10452cb2a798f348fb4752da84128be80e9c6a24aa86200e537d394f10fbde4a24c"

MANIFEST = {"format": 1, "version": "0.2.0", "board": "emulated", "min_config_version": 1, "downgrade": False, "files": [{"path": "board.json", "sha256": "abababababababababababababababababababababababababababababababab", "size": 10}, {"path": "ppmid/app.mpy", "sha256": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", "size": 2000}]}

# name -> (signed manifest text, signature r || s in hex)
SIGNED = {
    'good': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'c842629d759a6e318ca31b1e4c2badb4c79e251b7dc71ad4fa3357c9979d6c08342c7455ad70ae99429539159c2e5484a5fefd614850fe71d644a73d8ff99426'),
    'wrong-key': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'b5bbd84b710279cc515c9eb9a8bcd4c39923375187cbcc03b72d7b3823685e82ab0ff733992e92120428f02d283b3db52d2023e385e3475b9543f10a1d13a40f'),
    'needs-config-2': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":2,"version":"0.2.0"}',
        'f82a09d11e4afc1a15160f223b3a35c3dbbf87d665b7fa29a1e6f5a05266a471e1a51688df8e19c25d322982d722d5c67efb11ed07aaf189952a9a41cdeefd3c'),
    'downgrade': ('{"board":"emulated","downgrade":true,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '5eaeef75ccbc8fdf69eab4c8a4917fce80f372ded9922848bad5f3313620e3c88108abb918d52a5b5398eefc1318a202eb94e943955002fc9ace842462759ac7'),
    'path-escape': ('{"board":"emulated","downgrade":false,"files":[{"path":"ppmid/../config.json","sha256":"abababababababababababababababababababababababababababababababab","size":3},{"path":"ppmid/app.mpy","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","size":2000}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'f07ecfb4413236d5cc33aa28e1f93dfab8deb64da2d66f57d5db466eeb55ba28a5ac8d0cdfd73828324896ad3c66aa2b2ed5b557a8b33b3c3dd2635b9f3b2803'),
    'no-app': ('{"board":"emulated","downgrade":false,"files":[{"path":"board.json","sha256":"abababababababababababababababababababababababababababababababab","size":10}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        '606cb00958cd191e5eb0ac81ab18b0304e8ddfdd44d26fb7c689498e85fd8c383e4ba755d92467a6a293fa96b9dc6d9d4bc2f8c021f4c5c79f4945ee6cdae687'),
    'bad-digest': ('{"board":"emulated","downgrade":false,"files":[{"path":"ppmid/app.mpy","sha256":"xyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxy","size":3}],"format":1,"min_config_version":1,"version":"0.2.0"}',
        'c92320bb48d55729cd30f660e243f4e92562034fee697fd30ee1ef6946cf59919a9ed83b8c151002800f1abbf6e4322c7ecafbcb64728ab638e06c6c971825ee'),
}


def signed_offer(name, oid="t1"):
    text, sig = SIGNED[name]
    return json.dumps({"id": oid, "manifest": text, "signature": sig}).encode()
