# ppmid.modules.unload: the one helper that drops modules nobody needs any more (boot-only
# code, a rare order's handler, a table used once). Dropped means out of sys.modules and
# off the parent package, with the modules under a package; importing one again works.
# CPython and MicroPython.
import sys

from ppmid.modules import unload


def test_a_module_leaves_sys_modules_and_its_package():
    import ppmid.gbcs.eligibility
    import ppmid.gbcs
    assert "ppmid.gbcs.eligibility" in sys.modules and hasattr(ppmid.gbcs, "eligibility")
    unload("ppmid.gbcs.eligibility")
    assert "ppmid.gbcs.eligibility" not in sys.modules
    assert not hasattr(ppmid.gbcs, "eligibility")
    assert "ppmid.gbcs" in sys.modules      # the parent stays
    from ppmid.gbcs import eligibility      # loaded again when asked for
    assert "ppmid.gbcs.eligibility" in sys.modules and eligibility.role("duis:IS")


def test_a_package_goes_with_the_modules_under_it_and_no_namesake():
    import ppmid
    import ppmid.nfc.apdu
    import ppmid.nfc.ndef
    import ppmid.nfc
    unload("ppmid.nfc")
    left = [m for m in sys.modules if m == "ppmid.nfc" or m.startswith("ppmid.nfc.")]
    assert left == [] and not hasattr(ppmid, "nfc")
    # a name that only starts like the one dropped is not under it
    import ppmid.relay.senders
    unload("ppmid.relay.sender")
    assert "ppmid.relay.senders" in sys.modules


def test_a_package_alone_leaves_the_modules_under_it():
    # (ppmid.update.report: an updater loaded meanwhile keeps its module)
    import ppmid
    import ppmid.update.p256
    import ppmid.update.manifest
    unload("ppmid.update.manifest")
    unload("ppmid.update", under=False)
    assert "ppmid.update" not in sys.modules and not hasattr(ppmid, "update")
    assert "ppmid.update.p256" in sys.modules and "ppmid.update.manifest" not in sys.modules
    import ppmid.update.manifest        # the package loaded again with what is asked for
    assert "ppmid.update" in sys.modules and "ppmid.update.manifest" in sys.modules
    unload("ppmid.update")


def test_several_names_and_unknown_names():
    import ppmid.update.p256
    import ppmid.update.manifest
    unload("ppmid.update.p256", "ppmid.not_a_module", "ppmid.update.manifest")
    assert "ppmid.update.p256" not in sys.modules and "ppmid.update.manifest" not in sys.modules
    assert "ppmid.update" in sys.modules


def test_unloading_itself_finishes_the_call():
    # the callers that load it on demand drop it again with their own modules
    import ppmid.gbcs.profiles
    unload("ppmid.modules", "ppmid.gbcs.profiles")
    assert "ppmid.modules" not in sys.modules and "ppmid.gbcs.profiles" not in sys.modules
    from ppmid.modules import unload as again
    again("ppmid.not_a_module")
    assert "ppmid.modules" in sys.modules



def test_unload_leaves_collecting_to_the_caller():
    # (the callers that want the memory back at once call gc.collect() after)
    import gc
    import ppmid.gbcs.eligibility  # noqa: F401
    unload("ppmid.gbcs.eligibility")
    gc.collect()
    assert "ppmid.gbcs.eligibility" not in sys.modules


def test_sentence_loads_a_sentences_module_for_one_sentence_and_drops_it():
    import sys
    from ppmid import modules
    text = modules.sentence("ppmid.envelope_errors", 16)
    assert "expires" in text
    assert "ppmid.envelope_errors" not in sys.modules and "ppmid.modules" not in sys.modules
    assert modules.sentence("ppmid.envelope_errors", 16) == text  # loaded again for the next one
    # a module with a sentence(key, arg) of its own (more than one format) is asked for it
    assert modules.sentence("ppmid.zigbee.ezsp_errors", 0, 0x123) == "no response to 0x123"
    assert modules.sentence("ppmid.zigbee.ezsp_errors", 1, 3) == "EZSP frame too short (3 bytes)"
    assert "ppmid.zigbee.ezsp_errors" not in sys.modules
