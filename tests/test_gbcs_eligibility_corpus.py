# The service request -> use case pairs of ppmid.gbcs.eligibility against the RTDS 4.5.0
# test messages, which DCC files by "SR_USECASE" (../shared/vectors/gbcs/rtds-4.5.0).
import os

import pytest

from ppmid.gbcs import eligibility

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "vectors",
                      "gbcs", "rtds-4.5.0")


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="needs ../shared/vectors/gbcs/rtds-4.5.0")
def test_each_rows_use_cases_are_filed_under_its_service_request_in_the_corpus():
    folders = {}
    for d in os.listdir(CORPUS):
        sr, _, uc = d.partition("_")
        folders.setdefault(sr, []).append(uc.lower())
    checked = 0
    for sr, _source, _roles, use_cases in eligibility.rows():
        if sr == "-":  # the PPMID's own use cases: no service request
            continue
        assert sr in folders, "service request %s has no folder in the corpus" % sr
        for uc in use_cases:
            if len(uc) == 4 and uc.isalnum() and uc[0] == "0":  # a message code (CS02b variants)
                continue
            want = uc.replace("/", "").lower()
            assert any(f.startswith(want) for f in folders[sr]), "%s is not filed under %s: %s" % (uc, sr, folders[sr])
            checked += 1
    assert checked > 150
    # and every service request of the corpus has a row, but NA (alerts and use cases no
    # DCC User sends) and the credential updates by the ACB (8.5) and the transitional
    # CoS party (6.23), roles the table does not hold
    assert set(folders) - {"NA", "8.5", "6.23"} <= {r[0] for r in eligibility.rows()}
