# Envelopes signed with ECDSA P-256 by a DCC User registered with a public key
# (ppmid.relay.senders), for the firmware tests: made once with the `cryptography` library
# from the fixed test scalars below over the bytes the envelope mac covers (docs/envelope.md), with gbcs_message(1,
# COUNTER, SUPPLIER, ESME, CODE) (tests/test_p256_envelope_host.py checks them again and
# signs fresh ones). TEST KEYS ONLY.
SCALAR = 0x1D2C3B4A5968778695A4B3C2D1E0F00112233445566778899AABBCCDDEEFF001
OTHER_SCALAR = 0x0F1E2D3C4B5A69788796A5B4C3D2E1F0FFEEDDCCBBAA99887766554433221101
KID = "supplier-pk"
PUBLIC = '04380399538d9fffb8b4e5c2e170eb0866e3eaa561bd8c9c0d66df1f994900a09fe1a9d613bed083e877cdfab6c0f604c84d0314f963a40d5bd3435c13c7a8c156'
# id "p1", counter 10, code 0x0007: r || s
GOOD = '2a1e662861e329c7e63be14804c5555334ff51f7924665bae7d0712fdd0302771cec8af54f1aec5daa3f3e0fa57f73fbd2116e631568008a135a2e9aa340c743'
# the same, as DER (what cryptography returns): not the wire form
GOOD_DER = '3046022100bbb402b3cd4ce268a7dd23a01bf3d0de2909f94abdd4994268621cd236e9ed89022100a53e277ab31f845e6102ce269ee9b8c64056f659f6b83cf605f4ea5c144a8516'
# id "p1", counter 10, signed with OTHER_SCALAR
OTHER_KEY = 'fdf5f172b1c30d84a7ae7bf768f4b1147f353a642f893e33bd11083b1a7e5b8080be4d1ef9d7ea80415a9c00f15efce20cf03f1efc37b9e98424294e32fe4fe2'
# id "p2", counter 11, code 0x0050 (ECS43, outside the prepay profile)
ROLE = '4666b08239bc132b7029700db2ceb340c4f41652624cb98cb74c6e7e921eab0e6375ff28986ad8915a1f72b71a8ff6c2cb1b8b57494f1428fe89dbef9d087081'
