"""The `ppmid emulate` report's "commissioning" read from the gateway's console
(host_tools/emulate.py commissioning_from_console): the rejoin and re-commission steps are
carried, and state/error follow the last outcome. The console lines are the firmware's own,
captured from runs of tests/test_commissioning_rejoin_e2e.py (a CH that refused the rejoin,
then the installer putting the PPMID back in its device log) and of
tests/test_e2e_emulate_commission.py (a HAN outage with a key switch)."""
import pytest

from host_tools.emulate import commissioning_from_console

COMMISSIONED = """han: networkInit status 0x93
han: status commissioning uncommissioned
commission: security state set (install-code link key)
commission: scan: network 00124b0001c0ffee open for joining (1 beacon(s))
commission: joining PAN 0x1a62 on channel 20
commission: joined PAN 0x1a62
commission: cbke: initiate sent
commission: cbke: CH certificate, subject 0000b0d5b3ffff00
commission: cbke: ephemeral data exchanged
commission: cbke: key confirmed, link key stored
commission: commissioned
han: status no-tunnel waiting for the CH to open the GB-HRGP tunnel
han: tunnel open 1
han: status running 
han: status network-down 
"""
REJOIN_FAILING = """han: status rejoining secured rejoin, attempt 1
commission: secured rejoin asked (channels mask 0x00100000)
commission: rejoin failed E_REJOIN_FAILED: the secured rejoin ended with status 0x93
han: status rejoining trust-centre rejoin, attempt 2
commission: trust-centre rejoin asked (channels mask 0x00100000)
commission: rejoin failed E_REJOIN_FAILED: the trust-centre rejoin ended with status 0x93
han: status rejoin-failed E_REJOIN_FAILED: the trust-centre rejoin ended with status 0x93
"""
REJOINED = """han: status rejoining secured rejoin, attempt 3
commission: secured rejoin asked (channels mask 0x00100000)
commission: rejoin failed E_REJOIN_FAILED: the secured rejoin ended with status 0x93
han: status rejoining trust-centre rejoin, attempt 4
commission: trust-centre rejoin asked (channels mask 0x00100000)
commission: rejoined (trust-centre rejoin)
han: status no-tunnel waiting for the CH to open the GB-HRGP tunnel
han: tunnel closed 'network down'
han: tunnel open 2
"""
REFUSED = """han: status rejoining secured rejoin, attempt 1
commission: secured rejoin asked (channels mask 0x00100000)
commission: rejoin failed E_REJOIN_FAILED: the secured rejoin ended with status 0x93
commission: trust-centre rejoin asked (channels mask 0x00100000)
commission: rejoin failed E_REJOIN_REFUSED: the trust centre refused the rejoin (no network key): the CH no longer holds this PPMID in its device log
commission: re-commission: the trust centre refused the rejoin (no network key): the CH no longer holds this PPMID in its device log
commission: left the network
han: status commissioning uncommissioned
commission: security state set (install-code link key)
commission: scan: network 00124b0001c0ffee open for joining (1 beacon(s))
commission: joining PAN 0x1a62 on channel 20
commission: join refused by PAN 0x1a62 (status 0xad)
commission: failed E_COMMISSION_JOIN_REFUSED: the trust centre gave no network key: this PPMID's EUI-64 is not in the CH's device log, or the install code there is not this one
han: status commission-failed E_COMMISSION_JOIN_REFUSED: the trust centre gave no network key: this PPMID's EUI-64 is not in the CH's device log, or the install code there is not this one
"""
RECOMMISSIONED = """commission: security state set (install-code link key)
commission: scan: network 00124b0001c0ffee open for joining (1 beacon(s))
commission: joining PAN 0x1a62 on channel 20
commission: joined PAN 0x1a62
commission: cbke: initiate sent
commission: cbke: CH certificate, subject 0000b0d5b3ffff00
commission: cbke: ephemeral data exchanged
commission: cbke: key confirmed, link key stored
commission: commissioned
han: tunnel open 2
"""


REJOINING = REJOINED.split("commission: rejoined")[0]
RECOMMISSIONING = REFUSED.split("commission: left the network")[0]
NO_ERROR = "(no error)"


@pytest.mark.parametrize("console, state, error, cbke", [
    (COMMISSIONED + REJOIN_FAILING, "failed", "E_REJOIN_FAILED", "ok"),
    (COMMISSIONED + REJOIN_FAILING + REJOINING, "rejoining", NO_ERROR, "ok"),
    (COMMISSIONED + REJOIN_FAILING + REJOINED, "commissioned", NO_ERROR, "ok"),
    # a board restarted after commissioning: the rejoin alone is in this run's console
    ("han: status network-down \n" + REJOINED, "commissioned", NO_ERROR, "ok"),
    (COMMISSIONED + RECOMMISSIONING, "uncommissioned", NO_ERROR, None),
    (COMMISSIONED + REFUSED, "failed", "E_COMMISSION_JOIN_REFUSED", None),
    (COMMISSIONED + REFUSED + RECOMMISSIONED, "commissioned", NO_ERROR, "ok"),
    (COMMISSIONED + REFUSED.split("commission: security state")[0] + "commission: cbke: initiate sent\n"
     "commission: failed E_CBKE_TIMEOUT: no initiate response from the CH within 10000 ms\n",
     "failed", "E_CBKE_TIMEOUT", "failed"),
], ids=["rejoin-failing", "rejoin-under-way", "rejoined", "rejoined-after-an-earlier-boot", "recommissioning",
        "recommission-refused", "recommissioned", "cbke-failed-after-a-recommission"])
def test_state_error_and_cbke_follow_the_last_outcome(console, state, error, cbke):
    c = commissioning_from_console(console)
    assert (c["state"], c.get("error", NO_ERROR), c["cbke"]) == (state, error, cbke), c


def test_a_failing_rejoin_is_counted_and_its_steps_carried():
    c = commissioning_from_console(COMMISSIONED + REJOIN_FAILING)
    assert c["rejoins"] == 2 and c["recommissions"] == 0
    assert c["steps"][9:] == ["tunnel open", "secured rejoin asked (channels mask 0x00100000)",
                              "rejoin failed E_REJOIN_FAILED: the secured rejoin ended with status 0x93",
                              "trust-centre rejoin asked (channels mask 0x00100000)",
                              "rejoin failed E_REJOIN_FAILED: the trust-centre rejoin ended with status 0x93"], c


def test_rejoined_ends_the_steps_and_counts_every_attempt():
    c = commissioning_from_console(COMMISSIONED + REJOIN_FAILING + REJOINED)
    assert c["steps"][-2:] == ["rejoined (trust-centre rejoin)", "tunnel open"] and c["rejoins"] == 4, c
    c = commissioning_from_console("han: status network-down \n" + REJOINED)
    assert c["steps"][-1] == "tunnel open", c


def test_a_refused_rejoin_counts_one_recommission_and_says_why():
    c = commissioning_from_console(COMMISSIONED + RECOMMISSIONING)
    assert c["recommissions"] == 1
    c = commissioning_from_console(COMMISSIONED + REFUSED + RECOMMISSIONED)
    assert c["steps"][-1] == "tunnel open" and c["recommissions"] == 1 and c["rejoins"] == 2, c
    assert "re-commission: the trust centre refused the rejoin (no network key): the CH no longer holds this " \
           "PPMID in its device log" in c["steps"]
