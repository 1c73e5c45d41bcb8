# Fixed signed users updates for the firmware tests (ppmid.relay.users_update), made once
# with host_tools.users_update (wrap, fixed nonces) and signed with the test keys of
# update_vectors (tests/test_users_push.py checks both again). TEST KEYS ONLY.
import json

GATEWAY = "00DB1234567890A4"
CONFIG_KEY = b'cccccccccccccccccccccccccccccccc'
ROTATED = b'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr'
NEW_ENG = b'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn'

# name -> (signed text, signature r || s in hex)
SIGNED = {
    'add-public-key': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":1,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"},"supplier-pk":{"originators":["90B3D51F30010000"],"public_key":"04380399538d9fffb8b4e5c2e170eb0866e3eaa561bd8c9c0d66df1f994900a09fe1a9d613bed083e877cdfab6c0f604c84d0314f963a40d5bd3435c13c7a8c156","role":"supplier"}},"legacy_key":false,"roles":{"supplier":"prepay"}}}',
        'da89f4c5c5ffc6183daa5cc7ec2c960944c23c6d699f010dd8ee2706ce963a671d48a71892100999fda5a54de6474480fc90d617dffc76dae03dabd344246f6f'),
    'rotate': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{"eng-2":{"check":"bca7ecafe9185cfbfded5c0f4f73466b","key":"68b891f3a1f306db5240f0db4af67094ed562d09bab3e8dee508cdb5b2b772e0","nonce":"01010101010101010101010101010101"},"supplier-a":{"check":"3956ea9f1af8f382ad9332c075861f36","key":"1e27b981fc59b3344a57b5d57c881e04628cae2dd79c180393c48dc5e4fc76e2","nonce":"02020202020202020202020202020202"}},"sequence":1,"users":{"keys":{"eng-2":{"originators":["90B3D51F30010000","90B3D51F30020000"],"role":"engineer"},"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        'e5fd1d3aaa65b19a44db638eabcd7a1d04c9b367b585a1255739a9247dd3cc4618d53f86138bee2e0e23ebaf4f0313b95d8ae06b2b394875413ccdb6d8cda445'),
    'revoke': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":2,"users":{"keys":{"eng-2":{"originators":["90B3D51F30010000","90B3D51F30020000"],"role":"engineer"},"supplier-a":{"originators":["90B3D51F30010000"],"revoked":true,"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        '3ffa5e75d4c9ea6af469eee4f503e4b4ed00a35866c7856a8e5b9b880f113c16297ec13040ebb47b0c24f9a05d43dcc197b32583f101a114cbc37b623e19f1de'),
    'wrong-key': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":3,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        'e555f6453787e3fd1c645de0b8f2bc2855e93eda7a843856fe261f60290ed17ca0c3f43da6f179dc290b1077417866d4f7e91133d75b3f9d5bb50058febd13f3'),
    'other-gateway': ('{"format":1,"gateway":"00DB1234567890A5","new_keys":{},"sequence":3,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        '0cd4c1f8fbdca8b1d533347fb3d2c6e52743cda6ed23f0ce91085cf77bf3904de75618369a3308b754c2a0891059ac5b7a9c09b3d1de887d235126978d05b16b'),
    'wrong-config-key': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{"supplier-a":{"check":"b03fdfde41cd3a7b220b1fca2c361686","key":"0176779deb4be6763cb67fbbf15c60dd5380c3e9d2e685394776fbeb96889ff9","nonce":"01010101010101010101010101010101"}},"sequence":3,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        '71600dd154c0086375b2ecf512d7ef180f4fe023bc7d39f23402a5d356cf01236388f5f9d21ba8543136236b0baf281480c8221d4c30cefb47d96e270ce1b5c1'),
    'undefined-role': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":3,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"nobody"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        '45bfc489c8a59d5fbed17f6a813e14b07b67e5d356d5b5b8edc23e5908112d6ecc96af06f84c86561cbbd773af4b4c161cc55daefb69bd8697bd44ab5c0e0f33'),
    'stray-key': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{"ghost":{"check":"fe8158c244055ec536186e91273feafd","key":"c691cfecba762789ba29eb99bccc4e30df4bb051bdf146f5eb847d442d44281b","nonce":"01010101010101010101010101010101"}},"sequence":3,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        'f5f886181d046db90cd64b81f2016db793f3b9992fad2d6ba1740978c8ab82d0685d99c272ab14e4d4495f94ef8a3d7088e15d5e9625d56100c21838295ea19d'),
    'unknown-user-no-key': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":3,"users":{"keys":{"newbie":{"originators":["90B3D51F30010000","90B3D51F30020000"],"role":"engineer"},"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"}},"legacy_key":false,"roles":{"engineer":[89],"supplier":"prepay"}}}',
        'df4fee73d40a9f3557e354c9a9539c46cacbb4991410362b08850b317810bd7be35ca07f5fc56ada2e5d37f2b4d8fda60a47c0523e5ef4ee9ffcfda2637e5938'),
    'off-curve-key': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":1,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"},"supplier-pk":{"originators":["90B3D51F30010000"],"public_key":"04380399538d9fffb8b4e5c2e170eb0866e3eaa561bd8c9c0d66df1f994900a09fe1a9d613bed083e877cdfab6c0f604c84d0314f963a40d5bd3435c13c7a8c157","role":"supplier"}},"legacy_key":false,"roles":{"supplier":"prepay"}}}',
        'c0229032688c17f24e4d880f81e4c99582e64f351edf3109642b237495cd79b287abb15c6e47aff0f5a9b830ffbad6ba8fd046567a939da76b2746f12835bee7'),
    'duis-role': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":1,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"gas"}},"legacy_key":false,"roles":{"gas":"duis:GS"}}}',
        'e787f42df4c35ea7028c890262a4db9d573e2295ea7bb036cbd8b48f15a21511d7a2edfc62f73031d940cfb3ff8b0a2bb3847b686ab2c2b7f640ce2b106e129c'),
    # every sender removed, the legacy key off (`ppmid users push --remove` of the last one):
    # nothing is accepted (review r2 R2-2)
    'lockdown': ('{"format":1,"gateway":"00DB1234567890A4","new_keys":{},"sequence":1,"users":{"keys":{},"legacy_key":false,"roles":{"supplier":"prepay"}}}',
        '2f456bcb72098ccd184d897a636a74c31ed67d65958759d43369dcbff924a60c325f147a19e63288e181a8bd1c729796237cb64356a347541ab6bbd7b40d904f'),
    'extra-field': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","new_keys":{},"sequence":1,"users":{"keys":{"supplier-a":{"originators":["90B3D51F30010000"],"role":"supplier"},"supplier-pk":{"originators":["90B3D51F30010000"],"public_key":"04380399538d9fffb8b4e5c2e170eb0866e3eaa561bd8c9c0d66df1f994900a09fe1a9d613bed083e877cdfab6c0f604c84d0314f963a40d5bd3435c13c7a8c156","role":"supplier"}},"legacy_key":false,"roles":{"supplier":"prepay"}}}',
        '487aaa071d2a7e86fcc9913df7c57ca9c6e61baea245a626cae490f7e7fd82eaf9cfc314fe43ed87074a8896f6ff53b05bc369ee2b2e289bfb4ca4c600bdfe0f'),
}


def offer(name, oid="u1", text=None):
    t, sig = SIGNED[name]
    return json.dumps({"id": oid, "config": t if text is None else text, "signature": sig}).encode()
