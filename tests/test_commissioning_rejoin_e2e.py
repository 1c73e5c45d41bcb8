"""After commissioning, under MicroPython over a pty (issue #16): the network lost and not
found again by the module -> a secured rejoin (findAndRejoinNetwork with the network key the
module holds), and when the CH switched the network key meanwhile a trust-centre rejoin,
with backoff; a
CH that forgets the PPMID (removing it, or refusing its rejoin) -> a clean re-commission,
which succeeds once the installer puts it back in the device log; a re-commission ordered
by the host tools; two CHs answering the scan -> E_COMMISSION_NETWORKS unless the config
names the extended PAN id; a CH certificate from another CA -> Terminate UNKNOWN_ISSUER and
E_CBKE_ISSUER; one naming another device than the trust centre -> Terminate
INVALID_CERTIFICATE and E_CBKE_SUBJECT. The firmware's ZigbeeHan against the NCP emulator
with the CH as trust centre (host_tools/ncp_emulator/commissioning.py)."""
import time

from tests import test_zigbee_e2e as Z
from tests import test_commissioning_e2e as CE
from tests.test_zigbee_e2e import command, stopper  # noqa: F401  (fixture)

from ppmid.zigbee import installcode as IC

CODE = CE.CODE
NEIGHBOUR = {"channel": 20, "pan_id": 0x2B73, "extended_pan_id": bytes.fromhex("00124b0001deface")}

# the commissioning client, plus: every status seen is kept, and after the first
# wait_status the client waits for then_statuses in that order (a status can be brief);
# order_recommission: the host tools' order is given once the first status is reached
CLIENT = CE.Z_CLIENT
for old, new in (
        ("            out(ev=\"status\", status=han.status, detail=han.status_detail)\n",
         "            out(ev=\"status\", status=han.status, detail=han.status_detail)\n"
         "            SEEN.append(han.status)\n"),
        ("    asyncio.create_task(watch())\n",
         "    asyncio.create_task(watch())\n    await asyncio.sleep(0)\n"),
        ("    # read one command at a time",
         "    if opts.get(\"order_recommission\"):\n"
         "        from ppmid.zigbee.commission import order_recommission\n"
         "        out(ev=\"order\", ok=order_recommission(han, \"ordered by the test\"))\n"
         "        del SEEN[:]\n"
         "    for st in opts.get(\"then_statuses\", ()):\n"
         "        t = 0\n"
         "        while st not in SEEN and t < opts.get(\"wait_s\", 20) * 10:\n"
         "            await asyncio.sleep(0.1)\n"
         "            t += 1\n"
         "        if st in SEEN:\n"
         "            del SEEN[:SEEN.index(st) + 1]\n"
         "    # read one command at a time"),
        ("async def main():\n", "SEEN = []\n\nasync def main():\n")):
    assert old in CLIENT, old
    CLIENT = CLIENT.replace(old, new)


def run(emu_kwargs, cmds, tmp_path, **opts):
    saved = Z.CLIENT
    Z.CLIENT = CLIENT
    try:
        return Z.run_client(emu_kwargs, cmds, tmp_path, **opts)
    finally:
        Z.CLIENT = saved


def zconfig(tmp_path, **kw):
    kw.setdefault("rejoin_after_s", 2)
    return CE.zconfig(tmp_path, **kw)


def statuses(events):
    return [e["status"] for e in events if e["ev"] == "status"]


def _until(fn, what, timeout=40):
    t0 = time.time()
    while not fn():
        assert time.time() - t0 < timeout, "timed out waiting for " + what
        time.sleep(0.05)


def _tunnel_open(emu):
    _until(lambda: emu.ch is not None and emu.call(lambda: emu.ch.tunnel_id is not None), "the tunnel")


def _tc_event(emu, event):
    _until(lambda: event in [tuple(e) for e in emu.commissioning_state()["tc_events"]], repr(event))


def _back_in_device_log(emu):
    eui = emu.ncp.stack.config.eui64
    emu.call(emu.ch.trust_centre.device_log.__setitem__, eui, IC.parse(CODE))


def test_network_lost_and_not_found_again_is_rejoined_through_the_trust_centre(tmp_path, stopper):
    def fault(emu, proc):
        _tunnel_open(emu)
        emu.network_down()
        time.sleep(4)                    # the first rejoin (after 2 s) finds no network
        emu.network_up(resume=False)     # back, but the module does not find it by itself
    cmds = [command(0x2100)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, before=fault, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", then_statuses=["rejoin-failed", "running"],
                         wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    seen = statuses(events)
    i = seen.index("network-down")
    assert seen[i:].index("rejoining") < seen[i:].index("rejoin-failed") < len(seen[i:]) - 1, seen
    assert done["status"] == "running" and c["state"] == "commissioned" and c["rejoins"] >= 2, c
    assert any(s.startswith("rejoin failed E_REJOIN_FAILED") for s in c["steps"]), c
    # the network key did not change: the secured rejoin brought it back
    assert c["steps"][-1] == "rejoined (secured rejoin)" and c["rejoin"] == "secured", c
    st = emu.commissioning_state()
    # a rejoin, not a new join: one join and one key establishment in all
    assert st["tc_counters"]["rejoins_admitted"] == 1 and st["tc_counters"]["joins_admitted"] == 1
    assert st["tc_counters"]["secured_rejoins_admitted"] == 1
    assert st["tc_counters"]["ke_ok"] == 1 and st["link_key_stored"]
    assert emu.received == cmds and (tmp_path / "zigbee_commissioned").exists()


def test_network_key_switched_while_away_needs_the_trust_centre_rejoin(tmp_path, stopper):
    def away(emu, proc):
        _tunnel_open(emu)
        emu.network_down()
        emu.switch_network_key()         # the CH moves to a new key while the PPMID is off the HAN
        emu.network_up(resume=False)
    cmds = [command(0x2150)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, before=away, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", then_statuses=["rejoining", "running"],
                         wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    assert done["status"] == "running" and c["state"] == "commissioned" and c["rejoin"] == "trust-centre", c
    steps = [s for s in c["steps"] if "rejoin" in s]
    # the secured rejoin goes unanswered (its key is the old one), the trust-centre one brings the new key
    assert steps[0].startswith("secured rejoin asked"), steps
    assert steps[1].startswith("rejoin failed E_REJOIN_FAILED: the secured rejoin ended with status"), steps
    assert steps[2].startswith("trust-centre rejoin asked") and steps[3] == "rejoined (trust-centre rejoin)", steps
    assert len(steps) == 4 and c["rejoins"] == 2, steps
    details = [e["detail"] for e in events if e["ev"] == "status" and e["status"] == "rejoining"]
    assert details[0] == "secured rejoin, attempt 1", details     # (a detail alone changing is not an event)
    st = emu.commissioning_state()
    assert st["tc_counters"]["secured_rejoins_stale_key"] == 1 and st["tc_counters"]["secured_rejoins_admitted"] == 0
    assert st["tc_counters"]["rejoins_admitted"] == 1 and st["tc_counters"]["joins_admitted"] == 1
    assert st["tc_counters"]["ke_ok"] == 1 and st["key_seq"] == 1      # the module holds the new key
    assert emu.received == cmds


def test_ch_that_forgets_the_ppmid_forces_a_clean_recommission(tmp_path, stopper):
    def forget(emu, proc):
        _tunnel_open(emu)
        emu.forget_ppmid()               # change of tenancy: removed from the network and the log
        _tc_event(emu, ("join_refused", "not in the device log"))
        _back_in_device_log(emu)         # the installer adds it again (through the DCC)
    cmds = [command(0x2200)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, before=forget, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running",
                         then_statuses=["commission-failed", "running"], wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    assert done["status"] == "running" and c["state"] == "commissioned" and c["cbke"] == "ok", c
    # the module holds no network any more: no rejoin can help, a fresh commissioning does
    assert any(s.startswith("re-commission: the module refused findAndRejoinNetwork") for s in c["steps"]), c
    assert any("E_COMMISSION_JOIN_REFUSED" in d for d in [e.get("detail", "") for e in events if e["ev"] == "status"])
    st = emu.commissioning_state()
    assert st["tc_counters"]["joins_admitted"] == 2 and st["tc_counters"]["ke_ok"] == 2
    assert st["has_network"] and st["link_key_stored"]
    assert emu.received == cmds and (tmp_path / "zigbee_commissioned").exists()


def test_network_back_just_before_the_rejoin_answer_is_not_left(tmp_path, stopper):
    # the network comes back by itself between the gateway's "still down" and its
    # findAndRejoinNetwork: the module, joined again, refuses the rejoin (INVALID_CALL);
    # that is no "trust centre removed us": no leaveNetwork, no re-commission
    def fault(emu, proc):
        _tunnel_open(emu)
        emu.network_down()
        emu.back_before_rejoin_answer()
    cmds = [command(0x2350)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, before=fault, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", then_statuses=["rejoining", "running"],
                         wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    assert done["status"] == "running" and c["state"] != "uncommissioned", c
    assert any(s.startswith("rejoin failed E_REJOIN_FAILED: the module refused findAndRejoinNetwork")
               for s in c["steps"]), c
    assert not any(s.startswith("re-commission") or s == "left the network" for s in c["steps"]), c
    st = emu.commissioning_state()
    assert st["leaves"] == 0 and st["has_network"] and st["link_key_stored"], st
    assert st["tc_counters"]["joins_admitted"] == 1 and st["tc_counters"]["ke_ok"] == 1
    assert emu.received == cmds and (tmp_path / "zigbee_commissioned").exists()


def test_rejoin_refused_by_the_trust_centre_recommissions(tmp_path, stopper):
    def away(emu, proc):
        _tunnel_open(emu)
        emu.network_down()
        emu.forget_ppmid()               # forgotten while away: the module still holds the network
        emu.network_up(resume=False)
        _tc_event(emu, ("rejoin_refused", "not in the device log"))
        _tc_event(emu, ("join_refused", "not in the device log"))
        _back_in_device_log(emu)
    cmds = [command(0x2300)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, before=away, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running",
                         then_statuses=["rejoining", "commission-failed", "running"], wait_s=40)
    stopper(emu)
    done = events[-1]
    c = done["commissioning"]
    assert done["status"] == "running" and c["state"] == "commissioned", c
    # (the steps are the last 16: the rejoin's own "rejoin failed E_REJOIN_REFUSED" is older)
    assert any(s.startswith("re-commission: the trust centre refused the rejoin (no network key)") for s in c["steps"]), c
    assert "left the network" in c["steps"], c
    st = emu.commissioning_state()
    assert st["tc_counters"]["rejoins_refused"] >= 1 and st["tc_counters"]["rejoins_admitted"] == 0
    assert st["tc_counters"]["joins_admitted"] == 2 and st["tc_counters"]["ke_ok"] == 2
    assert emu.received == cmds


def test_ordered_recommission_leaves_and_commissions_again(tmp_path, stopper):
    cmds = [command(0x2400)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", order_recommission=True,
                         then_statuses=["commissioning", "running"], wait_s=40)
    stopper(emu)
    assert [e["ok"] for e in events if e["ev"] == "order"] == [True]
    c = events[-1]["commissioning"]
    assert events[-1]["status"] == "running" and c["state"] == "commissioned", c
    assert "re-commission: ordered by the test" in c["steps"] and "left the network" in c["steps"], c
    st = emu.commissioning_state()
    assert st["tc_counters"]["joins_admitted"] == 2 and st["tc_counters"]["ke_ok"] == 2
    assert emu.received == cmds and (tmp_path / "zigbee_commissioned").exists()


def test_order_without_install_code_is_refused(tmp_path, stopper):
    events, emu, _ = run({}, [], tmp_path, config={}, wait_status="running", order_recommission=True, wait_s=20)
    stopper(emu)
    assert [e["ok"] for e in events if e["ev"] == "order"] == [False]
    assert events[-1]["status"] == "running" and events[-1]["commissioning"] is None


def test_two_chs_answering_are_not_guessed_between(tmp_path, stopper):
    emu_kw = {"commissioning": {"install_code": CODE, "trust_centre": {"extra_networks": [NEIGHBOUR]}}}
    events, emu, _ = run(emu_kw, [], tmp_path, config=zconfig(tmp_path), wait_status="running", wait_s=6)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["error"] == "E_COMMISSION_NETWORKS" and "00124b0001deface" in c["detail"], c
    assert "zigbee.extended_pan_id" in c["detail"] and events[-1]["status"] == "commission-failed"
    st = emu.commissioning_state()
    # no join offered to either trust centre
    assert st["tc_counters"]["joins_admitted"] == 0 and st["tc_counters"]["joins_refused"] == 0
    # the config names ours: commissioned
    events, emu, _ = run(emu_kw, [], tmp_path, config=zconfig(tmp_path, extended_pan_id="00124b0001c0ffee"),
                         wait_status="running", wait_s=30)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["state"] == "commissioned" and events[-1]["status"] == "running", c
    # it names the neighbour's: never joins ours, says so
    events, emu, _ = run(emu_kw, [], tmp_path, config=zconfig(tmp_path, extended_pan_id="00124b0001beefee"),
                         wait_status="running", wait_s=5)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["error"] == "E_COMMISSION_NO_NETWORK" and "00124b0001beefee" in c["detail"], c


def test_ch_certificate_from_another_issuer_is_terminated(tmp_path, stopper):
    emu_kw = {"commissioning": {"install_code": CODE, "trust_centre": {"cert_issuer": b"OTHERCA1"}}}
    events, emu, _ = run(emu_kw, [], tmp_path, config=zconfig(tmp_path), wait_status="running", wait_s=6)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["error"] == "E_CBKE_ISSUER" and c["cbke"] == "failed", c
    assert b"OTHERCA1".hex() in c["detail"] and events[-1]["status"] == "commission-failed"
    st = emu.commissioning_state()
    assert ("ke_terminated_by_ppmid", "unknown_issuer") in [tuple(e) for e in st["tc_events"]]
    assert st["tc_counters"]["ke_ok"] == 0 and not st["link_key_stored"]
    assert not (tmp_path / "zigbee_commissioned").exists()


def test_ch_certificate_naming_another_device_is_terminated(tmp_path, stopper):
    # a certificate from our CA (every GB HAN device's is) but of another holder, an IHD's:
    # what a node answering in the CH's place would show (review2 H3)
    ihd = bytes.fromhex("00db1234567890ee")
    emu_kw = {"commissioning": {"install_code": CODE, "trust_centre": {"cert_subject": ihd}}}
    events, emu, _ = run(emu_kw, [], tmp_path, config=zconfig(tmp_path), wait_status="running", wait_s=6)
    stopper(emu)
    c = events[-1]["commissioning"]
    assert c["error"] == "E_CBKE_SUBJECT" and c["cbke"] == "failed", c
    assert ihd.hex() in c["detail"] and "0000b0d5b3ffff00" in c["detail"], c
    assert events[-1]["status"] == "commission-failed"
    st = emu.commissioning_state()
    assert ("ke_terminated_by_ppmid", "invalid_certificate") in [tuple(e) for e in st["tc_events"]]
    assert st["tc_counters"]["ke_ok"] == 0 and not st["link_key_stored"]
    assert not (tmp_path / "zigbee_commissioned").exists()


def test_rejoin_after_an_earlier_boots_commissioning_leaves_no_commissioning_code(tmp_path, stopper):
    # first boot: commissioned; the next boot resumes the network and drops the code
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, [], tmp_path, config=zconfig(tmp_path),
                         wait_status="running", wait_s=30)
    stopper(emu)
    assert events[-1]["status"] == "running"
    emu.reset_ncp()                      # the board's power cut took the module too

    def fault(emu, proc):
        _until(lambda: emu.call(lambda: emu.ncp.joined), "the module back", 20)
        _tunnel_open(emu)
        emu.network_down()
        emu.network_up(resume=False)
    cmds = [command(0x2500)]
    events, emu, _ = run({}, cmds, tmp_path, reuse=Z.run_client.last, before=fault, expect_rx=1,
                         config=zconfig(tmp_path), wait_status="running", then_statuses=["rejoining", "running"],
                         wait_s=30)
    done = events[-1]
    # rejoined, and the commissioning code left the heap again (info has no "commissioning")
    assert done["status"] == "running" and done["commissioning"] is None, done
    st = emu.commissioning_state()
    assert st["tc_counters"]["rejoins_admitted"] == 1 and st["tc_counters"]["joins_admitted"] == 1
    assert emu.received == cmds


def test_module_reset_while_the_network_is_away_still_rejoins(tmp_path, stopper):
    def fault(emu, proc):
        _tunnel_open(emu)
        emu.network_down()
        time.sleep(3)                    # a rejoin has failed (after 2 s)
        emu.reset_ncp()                  # the module resets: the supervisor brings it up again
        time.sleep(3)                    # networkInit resumed nothing on the air (1 s timeout)
        emu.network_up(resume=False)
    cmds = [command(0x2600)]
    events, emu, _ = run({"commissioning": {"install_code": CODE}}, cmds, tmp_path, before=fault, expect_rx=1,
                         config=zconfig(tmp_path, network_timeout_s=1), wait_status="running",
                         then_statuses=["resetting", "rejoining", "running"], wait_s=40)
    stopper(emu)
    done = events[-1]
    assert done["status"] == "running" and done["commissioning"]["state"] == "commissioned", done
    st = emu.commissioning_state()
    # one rejoin brought it back; no second join, no second key establishment
    assert st["tc_counters"]["rejoins_admitted"] == 1 and st["tc_counters"]["joins_admitted"] == 1
    assert st["tc_counters"]["ke_ok"] == 1 and emu.received == cmds
