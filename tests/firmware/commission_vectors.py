# Fixed signed commission orders for the firmware tests (ppmid.relay.commission_order), made
# once with host_tools.commission_order's text (canonical JSON) and signed with the test keys
# of update_vectors (tests/test_commission_order_host.py checks them again). TEST KEYS ONLY.
# no-kind, users-kind and extra-field: signed documents that are no commission order (the
# update key signs users updates and manifests too).
import json

GATEWAY = "00DB1234567890A4"

# name -> (signed text, signature r || s in hex)
SIGNED = {
    'first': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","order":"recommission","sequence":1}',
        '8813d6dcad726cb45ab6b05c4ec80f495f03a9e542fd343453d140542d2a8768531c60e74fd3b51dd97e5a9ba49ae542d689cf3799bf7097d9be1fc686b81e8b'),
    'second': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","order":"recommission","sequence":2}',
        '9c19cae0487e8e167aedc98fb0078da64d0694eff5583335a6a73cd804bbec199cfb3909d68eeace4ca02422fb19f5a0f1bff54279e080dcbe18327ac58133c1'),
    'wrong-key': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","order":"recommission","sequence":3}',
        '29bccc2b34d0030f1abcdba366b1f6ccf4a1e5281a6dd0aa38f84ad33c5322f0df200ef56684b98e56ab2d42392f8f32ca39efa8e74e410797ec10488b5c17e9'),
    'other-gateway': ('{"format":1,"gateway":"00DB1234567890A5","kind":"commission-order","order":"recommission","sequence":3}',
        '2850dff1ef8ea043e2f590fa36202531563708234173c7a5b50dfae6b42ecd1ec0242594667d4de819ab826931d5a2899e9b26fc2842676df357df491e3bff95'),
    'unknown-order': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","order":"self-destruct","sequence":3}',
        'bf7d856b70c6af19971a48729da4e9a0f0b17c66d158f65e003df5531ceeffcbc0862571d2e12440807ddce8d8958da78662bf4ce9e64ccd6c46e24dee9196c8'),
    'format-2': ('{"format":2,"gateway":"00DB1234567890A4","kind":"commission-order","order":"recommission","sequence":3}',
        '53a4a7d9e4d14022f53841ebb2d68b6dfd2367e03002d61c381b0214d624354a464b72238ffbba1fa79565b9479bc08708b1fa063b2be6c78931434601d675ed'),
    'sequence-0': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","order":"recommission","sequence":0}',
        '1191a15715df40142080c5ebda6510488753637483865e93fe5a8f3e25d1af67c546cb39bfd0faf8f356121151b12db8078f7031142f8c99f04cbe739de05498'),
    'no-kind': ('{"format":1,"gateway":"00DB1234567890A4","order":"recommission","sequence":3}',
        '8cebeb0a0057cb2d2a68e88c21ad6ed2d10f85d67f5cc01ff439857920cf69a33ff150a7268922e741b5a2c8f5d2e819d66ee3315f2438381207d4a1de9fec9e'),
    'users-kind': ('{"format":1,"gateway":"00DB1234567890A4","kind":"users-update","order":"recommission","sequence":3}',
        '0e7f7a15e37ab352317916d225c0a0f556af503fc4ebeed8edec0251a87a293b4df9290d11efae1d85a46d899dfd45966f60d52f2f9172b4318103c4eb37723e'),
    'extra-field': ('{"format":1,"gateway":"00DB1234567890A4","kind":"commission-order","order":"recommission","sequence":3,"users":{}}',
        'c7294f13025917083c79a0e6706202d8843b2fc4c4fbcde69d369114cf9ce0305286e718f9cd1209b74c4826a735a2b25dcea2256c456a6a87523d2d71eb3bab'),
}


def order(name, oid="o1", text=None):
    t, sig = SIGNED[name]
    return json.dumps({"id": oid, "order": t if text is None else text, "signature": sig}).encode()
