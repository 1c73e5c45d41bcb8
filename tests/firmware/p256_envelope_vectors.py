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
GOOD = 'e4615461278719052623fbe8839927ef594feebf4c7a873d7afff9108aa4eb3bdf10c2aeb987adebd4fd637d78b4275ed6374ed0e5ef9040717cc3c855c2aba7'
# GOOD itself as DER (what cryptography and openssl give): not the wire form
GOOD_DER = '3046022100e4615461278719052623fbe8839927ef594feebf4c7a873d7afff9108aa4eb3b022100df10c2aeb987adebd4fd637d78b4275ed6374ed0e5ef9040717cc3c855c2aba7'
# id "p1", counter 10, signed with OTHER_SCALAR
OTHER_KEY = '481a1a7750ae5d78097ddef4384e6184990165cd7e5f47742c81c98c5d5bd803c26a93ed0a41b9562b0d7affd4d59eff3db55ea0755d52fa339f65cce95c4e34'
# id "p2", counter 11, code 0x0050 (ECS43, outside the prepay profile)
ROLE = '56ac3ed6a6e7897b767aa77ce2d4e4b8ea9f19f9878b825ea5a7833d6c287365dac71d8b00500fc4b62bdad3787caa19901379d2c6d07a964267ef577cc35bbd'
# a top-up (docs/envelope.md "Top-ups"): id "t1", UTRN 73943333457189043313 for ESME, no
# expiry, signed over its own covered bytes ("ppmid-topup-v1" 01 kid 00 ...)
TOPUP = '2a168936a3c4c0a0a7d3bce673ed241294cef4dc4e58ef83c33c7fdd3a277b62a5c61e7f2272512f9c4b9dd7a9b99f87c8ff2810c885666963d602dfd04e2306'
