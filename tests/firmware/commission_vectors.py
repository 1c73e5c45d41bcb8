# Fixed signed commission orders for the firmware tests (ppmid.relay.commission_order), made
# once with host_tools.commission_order's text (canonical JSON) and signed with the test keys
# of update_vectors (tests/test_commission_order_host.py checks them again). TEST KEYS ONLY.
import json

GATEWAY = "00DB1234567890A4"

# name -> (signed text, signature r || s in hex)
SIGNED = {
    'first': ('{"format":1,"gateway":"00DB1234567890A4","order":"recommission","sequence":1}',
        '366eb4fe8f088cee0e32adb79ac024705b37904d07bdb25e61196774d86dedba94935f30c6d4dd18d54f46c4146ef25cee244d658472b2b6dd3125b272e96cd4'),
    'second': ('{"format":1,"gateway":"00DB1234567890A4","order":"recommission","sequence":2}',
        'e6001eb905ade368c6e0c24aa711f6ca086d2facb58cb639e3bb5a493c4e967e2b679af2568489c127a1777a51650b06d35d601fd19576da193b6a07b5fd6643'),
    'wrong-key': ('{"format":1,"gateway":"00DB1234567890A4","order":"recommission","sequence":3}',
        '57fc1de8faf0448ab1832fe206356b8dd7f87e76332575326fbc123cf68c9fc97814029ae7d7d9bb5aef4bad9d0f16eff9d4b37e0c89f11c97c2df97cae86db9'),
    'other-gateway': ('{"format":1,"gateway":"00DB1234567890A5","order":"recommission","sequence":3}',
        'f1ca59b6d62c6796405d33949dc1c53b11f6d8c232d5ab03550804b4e951c4438e00adf742dc1608a5be7b8bfd1da0d3cd0f3d814f192bb2c1258d73d4cd227a'),
    'unknown-order': ('{"format":1,"gateway":"00DB1234567890A4","order":"self-destruct","sequence":3}',
        '3f836f2e6924ad4b4abf7873cd16de522f0946bae34048f116d8d38df897816ccd6e801c4fe6d145739ba45400f91e263e22f7adff72b2f67a1efd3c45458ce2'),
    'format-2': ('{"format":2,"gateway":"00DB1234567890A4","order":"recommission","sequence":3}',
        '4e40321a50d32295f100abbf061837ebd9b4b8a8db831c726b6954363bd26abc53ce7128e087cf62034b9932305040873a8e6eda1c61698a589b5b45c8f70a7d'),
    'sequence-0': ('{"format":1,"gateway":"00DB1234567890A4","order":"recommission","sequence":0}',
        '121c08eed067ca6184a4a899e55726eb4c529bd13f3e0055c50eef74935f0ea172b95927ba4c6e029a04fda5f24d5d79ec043ab4908c7a185aa95d50f13051b3'),
}


def order(name, oid="o1", text=None):
    t, sig = SIGNED[name]
    return json.dumps({"id": oid, "order": t if text is None else text, "signature": sig}).encode()
