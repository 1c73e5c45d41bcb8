# Envelopes signed with ECDSA P-256 by a DCC User registered with a public key
# (ppmid.relay.senders, ppmid.envelope_sig), for the firmware tests: made once with the
# `cryptography` library from the fixed test scalars below, over the digest of
# gbcs_message(1, COUNTER, SUPPLIER, ESME, CODE) as docs/envelope.md gives it
# (tests/test_p256_envelope_host.py checks them again and signs fresh ones). TEST KEYS ONLY.
SCALAR = 0x1D2C3B4A5968778695A4B3C2D1E0F00112233445566778899AABBCCDDEEFF001
OTHER_SCALAR = 0x0F1E2D3C4B5A69788796A5B4C3D2E1F0FFEEDDCCBBAA99887766554433221101
KID = "supplier-pk"
PUBLIC = '04380399538d9fffb8b4e5c2e170eb0866e3eaa561bd8c9c0d66df1f994900a09fe1a9d613bed083e877cdfab6c0f604c84d0314f963a40d5bd3435c13c7a8c156'
# id "p1", counter 10, code 0x0007: r || s
GOOD = 'd4e97bd5c6eb04951bf004105a52ec3ed6df39794240c87e6299540bc9b478b34be260b9cff8fe3baeb474f10e7c02d9a904d3df8157ad84781b8a819a4d32e7'
# the same, as DER (what cryptography returns): not the wire form
GOOD_DER = '304502201b02194db13038439aa9d39d1c383bfe5265259e0852e5a7f09f94a7b75d0f6f022100a3e4d11f25acdaaf53509726785f3c166605f3cdc0213b339ace09083a41d8fb'
# id "p1", counter 10, signed with OTHER_SCALAR
OTHER_KEY = '06a0569347343d5be9f6b2a1fbc47eb47b41ac1e026d89dd8125aee3e7c66e0d1eb33da49af954bf63773fc00b91cf111c28258873429bae318a8e94b640459c'
# id "p2", counter 11, code 0x0050 (ECS43, outside the prepay profile)
ROLE = '4ea751830540ee90325c7574b4a2eed157a05e40eb06384ccc6f9ea83854fcfade488d8fc356e87510f815c2b6e341752cd067deee53ebb0dd5a983dc4510767'
