# Envelopes signed with ECDSA P-256 by a DCC User registered with a public key
# (ppmid.relay.senders, ppmid.envelope_sig), for the firmware tests: made once with the
# `cryptography` library (ECDSA P-256 with SHA-256) from the fixed test scalars below, over
# the signing input of gbcs_message(1, COUNTER, SUPPLIER, ESME, CODE) as docs/envelope.md
# gives it (tests/test_p256_envelope_host.py checks them again and signs fresh ones, also
# with openssl). TEST KEYS ONLY.
SCALAR = 0x1D2C3B4A5968778695A4B3C2D1E0F00112233445566778899AABBCCDDEEFF001
OTHER_SCALAR = 0x0F1E2D3C4B5A69788796A5B4C3D2E1F0FFEEDDCCBBAA99887766554433221101
KID = "supplier-pk"
PUBLIC = '04380399538d9fffb8b4e5c2e170eb0866e3eaa561bd8c9c0d66df1f994900a09fe1a9d613bed083e877cdfab6c0f604c84d0314f963a40d5bd3435c13c7a8c156'
# id "p1", counter 10, code 0x0007: r || s
GOOD = 'ca6d581ad81841e5e56326cc4ac0509f8121443ff224003de3105aa1971551bd365f0b595905c2d27eb29d1a1ca4cba7764ca6c3ad45427b2351ca0f0dfb0963'
# GOOD itself as DER (what cryptography and openssl give): not the wire form
GOOD_DER = '3045022100ca6d581ad81841e5e56326cc4ac0509f8121443ff224003de3105aa1971551bd0220365f0b595905c2d27eb29d1a1ca4cba7764ca6c3ad45427b2351ca0f0dfb0963'
# id "p1", counter 10, signed with OTHER_SCALAR
OTHER_KEY = '17678daa717df6a05c09611205b8810c3604e2fecaaeb22e2d1800f1504407869956704bbe935ead0a5c48e72978b43126599cb1bd5e275cfd9f85a443e5ce0a'
# id "p2", counter 11, code 0x0050 (ECS43, outside the prepay profile)
ROLE = 'f372f38a52307bcf21b9aea4624f3db0b03ac431a2ea9db8fdc6d90e6fb936325166ba7b8c570c1f42fd7a652b0a9db08832d2b64f70528b44570514ed3aa6a2'
# a top-up (docs/envelope.md "Top-ups"): id "t1", UTRN 73943333457189043313 for ESME, no
# expiry, signed over its own covered bytes ("ppmid-topup-v1" 01 kid 00 ...)
TOPUP = '2a168936a3c4c0a0a7d3bce673ed241294cef4dc4e58ef83c33c7fdd3a277b62a5c61e7f2272512f9c4b9dd7a9b99f87c8ff2810c885666963d602dfd04e2306'
