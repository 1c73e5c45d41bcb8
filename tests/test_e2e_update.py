"""Application updates end to end (issue #18 item 1, docs/update.md): `ppmid release`'s
library builds and signs sets of this tree, the UpdateSender (what `ppmid update` runs)
offers them through the real mosquitto (TLS, ACLs generated from the contract) to the
deployed firmware on the emulated board, which downloads, checks, switches and confirms
or rolls back. One board for the module, in this order: refusals first (the old version
keeps running), then a good update (version changes, commands still relayed; the same
release offered again is a replay), then an older one refused, then a version that raises at boot (rolled back and reported)."""
import json
import os
import re
import queue
import threading
import time

import pytest

from host_tools import emulate as E
from host_tools import mqtt_tools as mt
from host_tools import update as U
from host_tools.boards import FIRMWARE_DIR

import sys
from tests.conftest import FIRMWARE_TESTS
sys.path.insert(0, FIRMWARE_TESTS)
import update_vectors as V  # noqa: E402

BOOTS = 2
SETTINGS = {"limits": {"rate_per_s": 50, "burst": 50},
            "update": {"public_key": V.PUBLIC, "probation_boots": BOOTS, "probation_s": 60, "chunk": 2048}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    good, other = d / "operator.pem", d / "other.pem"
    good.write_text(V.PRIVATE_PEM)
    other.write_text(V.OTHER_PRIVATE_PEM)
    return str(good), str(other)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    e = E.Emulation(tmp_path_factory.mktemp("e2e-update"), overrides=SETTINGS, log=None)
    with e:
        yield e


def _release(tmp_path, key, version, board="emulated", firmware_dir=None, **kw):
    out = str(tmp_path / ("rel-%s-%s" % (board, version)))
    U.release(board, key, out, version, firmware_dir, **kw)
    return U.Release(out)


def _offer(emu, rel, timeout=240, **kw):
    s = U.UpdateSender(emu.broker_dir, emu.gateway, rel, **kw)
    try:
        return s.run(timeout), s
    finally:
        s.close()


def _running(emu):
    return re.findall(r"PPMID ready: version=(\S+)", emu.board.console_text())[-1]


def _info(emu, fw, last=None, state=None, timeout=20):
    """The gateway's info once it names firmware fw and (when given) the last update
    result `last` and the gateway's `state` (a retained info from before may come first,
    until the gateway publishes its new one)."""
    got = queue.Queue()
    c = mt.paho_client(emu.broker_dir, "dcc-user-test")
    c.on_message = lambda client, userdata, msg: got.put(json.loads(msg.payload))
    mt.connect(c, emu.broker_dir)
    c.subscribe(mt.Topics(emu.gateway).info, 1)
    seen = []
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                info = got.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            seen.append((info.get("fw"), (info.get("update") or {}).get("last"), info.get("state")))
            if info.get("fw") == fw and (last is None or (info.get("update") or {}).get("last") == last) \
                    and (state is None or info.get("state") == state):
                return info
    finally:
        c.disconnect()
        c.loop_stop()
    raise AssertionError("no info for firmware %s (saw %s)" % (fw, seen))


def _relays_a_command(emu, tag):
    (_, gbcs), = E.renumbered_commands(1)
    cmd = mt.Commander(emu.broker_dir, emu.gateway, key=emu.key)
    try:
        cmd.send(tag, gbcs)
        out = cmd.wait(tag, timeout=60)
    finally:
        cmd.close()
    assert out[-1]["status"] == "response", out


def test_wrong_key_is_refused_and_the_old_version_runs_on(emu, keys, tmp_path):
    rel = _release(tmp_path, keys[1], "0.2.0")
    st, s = _offer(emu, rel)
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_SIGNATURE", st
    assert s.chunks_sent == 0
    assert _running(emu) == "0.1.0"


def test_a_release_for_another_board_is_refused(emu, keys, tmp_path):
    rel = _release(tmp_path, keys[0], "0.2.0", board="esp32-devkitc")
    st, _ = _offer(emu, rel)
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_BOARD", st


def test_a_corrupted_chunk_fails_the_hash_check(emu, keys, tmp_path):
    rel = _release(tmp_path, keys[0], "0.2.0")

    def flip(i, off, data):
        if i == 3 and off == 0 and data:
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data
    st, s = _offer(emu, rel, tamper=flip)
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_HASH", st
    assert U.file_paths(rel.manifest)[3] in st["error"]["message"]
    assert _running(emu) == "0.1.0" and emu.board.restarts == emu.restarts_at_start
    _relays_a_command(emu, "after-hash")


def test_a_good_update_is_applied_and_commands_still_relay(emu, keys, tmp_path):
    rel = _release(tmp_path, keys[0], "0.2.0")
    mark = emu.board.mark()
    st, s = _offer(emu, rel)
    assert st["state"] == "applied", (st, s.statuses[-3:])
    assert st["version"] == "0.2.0" and st["running"] == "0.2.0" and st["previous"] == "0.1.0"
    assert s.bytes_sent >= rel.total
    emu.board.wait_for(r"PPMID ready: version=0\.2\.0", 30, since=mark)
    # the console is read by its own thread: the line may come after the applied status
    emu.board.wait_for(r"version 0\.2\.0 confirmed", 30, since=mark)
    info = _info(emu, "0.2.0", "applied")
    assert info["update"]["last"] == "applied" and info["update"]["previous"] == "0.1.0"
    emu.wait_online()
    _relays_a_command(emu, "after-update")
    # the same signed release offered again (any DCC User may publish on update/offer): a
    # replay, after the switch's reset, and after a soft reset and a reset button press
    # too (the floor is in the pointer on the flash, docs/update.md "Replay")
    st, s = _offer(emu, rel)
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_REPLAY", st
    assert s.chunks_sent == 0 and _running(emu) == "0.2.0"
    import subprocess
    from host_tools.boards import mpremote_path
    seq = "import json\nprint('@@SEQ', json.load(open('/upd/state.json'))['seq'])"
    from host_tools.emuboard import SOFT_REBOOT_LINE
    mark = emu.board.mark()
    # plain mpremote (no resume): it stops the app, and soft-resets between the two reads
    p = subprocess.run([mpremote_path(), "connect", emu.board.repl, "exec", seq, "soft-reset", "exec", seq],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.count("@@SEQ %d" % rel.manifest["seq"]) == 2, p.stdout + p.stderr
    assert emu.board.console_bytes()[mark:].count(SOFT_REBOOT_LINE) >= 2  # entering the raw REPL, soft-reset
    mark = emu.board.mark()
    emu.board.reset()  # exec stopped the app (as on a real board): boot it again
    emu.board.wait_for(r"PPMID ready: version=0\.2\.0", 60, since=mark)
    emu.wait_online()
    st, _ = _offer(emu, rel)
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_REPLAY", st


def test_an_older_version_is_refused_through_the_command_line(emu, keys, tmp_path):
    """`ppmid release` then `ppmid update` as a user runs them."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "rel-0.1.5")

    def ppmid(*args):
        return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), cwd=root, capture_output=True,
                              text=True, timeout=300)
    r = ppmid("release", "--board", "emulated", "--key", keys[0], "--out", out, "--version", "0.1.5")
    assert r.returncode == 0, r.stderr
    r = ppmid("update", "--state-dir", emu.broker_dir, "--gateway", emu.gateway, "--release", out)
    assert r.returncode == 1, r.stdout + r.stderr
    st = json.loads(r.stdout.strip().splitlines()[-1])
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_OLDER", st
    assert "0.1.5: refused (E_UPDATE_OLDER)" in r.stderr and "ppmid: E_UPDATE_OLDER: update 0.1.5 refused: " in r.stderr
    assert _running(emu) == "0.2.0"


def test_a_version_that_raises_at_boot_is_rolled_back_and_reported(emu, keys, tmp_path):
    import shutil
    broken = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, broken, ignore=shutil.ignore_patterns("__pycache__"))
    with open(broken / "ppmid" / "app.py", "a") as f:
        f.write("\nraise RuntimeError('this build raises at import')\n")
    rel = _release(tmp_path, keys[0], "0.3.0", firmware_dir=str(broken))
    mark = emu.board.mark()
    st, _ = _offer(emu, rel)
    assert st["state"] == "rolled-back", st
    assert st["error"]["code"] == "E_UPDATE_BOOT" and st["version"] == "0.3.0" and st["running"] == "0.2.0", st
    text = emu.board.console_bytes()[mark:].decode("utf-8", "replace")
    assert text.count("this build raises at import") == BOOTS
    emu.board.wait_for(r"PPMID ready: version=0\.2\.0", 30, since=mark)
    emu.wait_online()
    _relays_a_command(emu, "after-rollback")
    info = _info(emu, "0.2.0", "rolled-back")
    assert info["update"]["last"] == "rolled-back" and info["update"]["error"] == "E_UPDATE_BOOT"


def test_power_cuts_during_download_and_probation_end_in_the_new_version(emu, keys, tmp_path):
    """SIGKILL of the chip (a power cut) twice during the download and once during the
    probation boot: the sender re-offers when the gateway goes quiet, the download resumes
    where the flash stopped, and the new set is confirmed on a later boot."""
    rel = _release(tmp_path, keys[0], "0.4.0")
    cuts = []

    def progress(st):
        if st.get("state") == "downloading" and st.get("total"):
            done = st["received"] / st["total"]
            if (len(cuts) == 0 and done >= 0.25) or (len(cuts) == 1 and done >= 0.6):
                cuts.append(("download", done))
                emu.board.kill()
        elif st.get("state") == "switching" and len(cuts) == 2:
            cuts.append(("probation", None))
            threading.Thread(target=cut_in_probation, daemon=True).start()

    def cut_in_probation():
        # as soon as the first probation boot says so: before it can run and connect
        emu.board.wait_for(r"version 0\.4\.0 on probation, boot 1 of", 30, since=mark)
        emu.board.kill()
    mark = emu.board.mark()
    st, s = _offer(emu, rel, quiet_s=3.0, progress=progress)
    assert [c[0] for c in cuts] == ["download", "download", "probation"]
    assert st["state"] == "applied" and st["version"] == "0.4.0", (st, s.statuses[-5:])
    assert s.offers_sent >= 3  # re-offered after each cut in the download
    emu.board.wait_for(r"PPMID ready: version=0\.4\.0", 30, since=mark)
    text = emu.board.console_bytes()[mark:].decode("utf-8", "replace")
    assert "PPMID update: resuming 0.4.0" in text
    assert "on probation, boot 2 of %d" % BOOTS in text  # the cut boot counted; the next one confirmed
    emu.wait_online()
    _relays_a_command(emu, "after-cuts")



def test_a_deploy_runs_the_deployed_set_and_forgets_the_updates_but_not_the_replay_floor(emu, keys, tmp_path):
    """`ppmid deploy` after updates: the set just deployed runs (the pointer would
    otherwise keep booting the updated slot), the info no longer names an update, and the
    pointer keeps the replay floor: a manifest signed at or below it is still a replay."""
    from host_tools import deploy
    pointer = "import json\nprint('@@PTR', json.dumps(json.load(open('/upd/state.json'))))"
    before = json.loads(emu.board.exec(pointer).split("@@PTR ", 1)[1])
    floor = before["seq"]
    assert before["slot"] in ("a", "b") and floor > 0, before  # an update runs
    mark = emu.board.mark()
    deploy.deploy(emu.board.repl, "emulated")
    emu.board.wait_for(r"PPMID ready: version=0\.1\.0", 60, since=mark)
    assert "on probation" not in emu.board.console_text()[mark:]
    out = emu.board.exec("import os\nprint('@@UPD', sorted(os.listdir('/upd')) if 'upd' in os.listdir('/') else [])")
    # the pointer alone (no slot, no download, no boot count: the app started)
    assert "@@UPD ['state.json']" in out, out
    kept = {k: before[k] for k in ("seq", "image_seq") if k in before}
    assert json.loads(emu.board.exec(pointer).split("@@PTR ", 1)[1]) == dict(kept, slot="")
    mark = emu.board.mark()
    emu.board.reset()  # exec stopped the app (as on a real board): boot it again
    emu.board.wait_for(r"PPMID ready: version=0\.1\.0", 60, since=mark)
    emu.wait_online()
    info = _info(emu, "0.1.0")
    assert "update" not in info
    # releases newer than what runs, signed at the floor and below it: replays
    for version, seq in (("0.9.0", floor), ("0.9.1", floor - 1)):
        st, s = _offer(emu, _release(tmp_path, keys[0], version, seq=seq))
        assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_REPLAY", st
        assert "seq %d is not above %d" % (seq, floor) in st["error"]["message"], st
        assert s.chunks_sent == 0
    assert _running(emu) == "0.1.0"
    _relays_a_command(emu, "after-deploy")


def test_an_app_that_fails_at_every_boot_gets_the_safe_mode_and_is_mended_by_an_update(emu, keys, tmp_path):
    """A deployed set whose app raises at start (no probation: `ppmid deploy` put it there):
    after SAFE_AFTER failed boots the next one is the safe mode: online, commands refused
    with E_SAFE_MODE, info says so, and an update over MQTT brings a working version."""
    import shutil
    from host_tools import deploy
    broken = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, broken, ignore=shutil.ignore_patterns("__pycache__"))
    app = broken / "ppmid" / "app.py"
    app.write_text(app.read_text().replace(
        "async def run(board):\n", "async def run(board):\n    raise RuntimeError('this app fails at every start')\n", 1))
    mark = emu.board.mark()
    deploy.deploy(emu.board.repl, "emulated", firmware_dir=str(broken))
    emu.board.wait_for(r"PPMID status: safe-mode: 3 boots in a row did not start the app", 90, since=mark)
    text = emu.board.console_bytes()[mark:].decode("utf-8", "replace")
    assert text.count("this app fails at every start") == 3
    emu.wait_online()
    info = _info(emu, "0.1.0", state="safe-mode")  # not the retained info of the boot before
    assert info["boot_failures"] == 3, info
    (_, gbcs), = E.renumbered_commands(1)
    cmd = mt.Commander(emu.broker_dir, emu.gateway, key=emu.key)
    try:
        cmd.send("in-safe-mode", gbcs)
        out = cmd.wait("in-safe-mode", timeout=30)
    finally:
        cmd.close()
    assert out[-1]["status"] == "rejected" and out[-1]["error"]["code"] == "E_SAFE_MODE", out
    rel = _release(tmp_path, keys[0], "0.5.0")
    st, _ = _offer(emu, rel)
    assert st["state"] == "applied" and st["running"] == "0.5.0", st
    emu.wait_online()
    _relays_a_command(emu, "after-safe-mode")

# ---- soak (`make soak`): many power cuts, and a version that hangs ---------------------
SOAK_ROUNDS = 10
CUTS_PER_ROUND = 3


@pytest.mark.slow
def test_thirty_random_power_cuts_always_end_in_a_working_old_or_new_version(emu, keys, tmp_path):
    """Issue #18: SIGKILL at random moments during download, switch and probation, 3 per
    update, 10 updates: each ends applied or rolled back, the version that runs is the one
    the result names, it comes online and relays a command."""
    import random
    import time
    rng = random.Random(18)
    kills = []
    for rnd in range(SOAK_ROUNDS):
        before = _running(emu)
        version = "1.0.%d" % rnd
        rel = _release(tmp_path, keys[0], version)
        # each cut: at a fraction of the download, or a moment after "switching" (the reset,
        # the probation boot and its confirmation take about 2 s here)
        plan = [(rng.choice(("download", "after-switch")), rng.random()) for _ in range(CUTS_PER_ROUND)]
        pending = sorted(x for w, x in plan if w == "download")
        switch_delays = [1.5 * x for w, x in plan if w == "after-switch"]
        workers = []
        last_kill = [0]

        def kill(what):
            # one cut = one SIGKILL of a running chip (between two boots there is none yet)
            for _ in range(100):
                try:
                    at = emu.board.mark()
                    emu.board.kill()
                    kills.append((rnd, what))
                    last_kill[0] = at
                    return
                except Exception:  # noqa: BLE001 - no chip at this instant: try again
                    time.sleep(0.05)

        def after_switch(delays):
            for d in delays:
                # once the chip booted again (after the switch's reset or the last cut)
                emu.board.wait_for(r"PPMID update: version %s on probation|PPMID ready" % re.escape(version), 60,
                                   since=last_kill[0] or switch_mark[0])
                time.sleep(d)
                kill("after-switch")

        switch_mark = [0]

        def progress(st):
            # one download cut per status: a status means the chip is up (it resumed)
            if pending and st.get("state") == "downloading" and st.get("total") \
                    and st["received"] / st["total"] >= pending[0]:
                pending.pop(0)
                kill("download")
            elif st.get("state") == "switching" and not workers:
                switch_mark[0] = mark
                workers.append(threading.Thread(target=after_switch, args=(switch_delays,), daemon=True))
                workers[-1].start()
        mark = emu.board.mark()
        st, s = _offer(emu, rel, quiet_s=3.0, progress=progress, timeout=300)
        for w in workers:  # a cut may still come after the result (the new set confirmed early)
            w.join(120)
        assert st["state"] in ("applied", "rolled-back"), (rnd, st)
        want = version if st["state"] == "applied" else before
        if st["state"] == "rolled-back":
            assert st["error"]["code"] == "E_UPDATE_BOOT", st  # only cut boots make it fail
        emu.board.wait_for(r"PPMID ready: version=%s" % re.escape(want), 60, since=max(mark, last_kill[0]))
        emu.wait_online()
        assert _running(emu) == want
        _relays_a_command(emu, "soak-%d" % rnd)
    planned = SOAK_ROUNDS * CUTS_PER_ROUND
    # a download cut planned past the last status of its download has no moment to land
    assert len(kills) >= planned - 3, kills


@pytest.mark.slow
def test_a_version_that_hangs_at_import_is_rolled_back_by_the_watchdog(emu, keys, tmp_path):
    import shutil
    before = _running(emu)
    hung = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, hung, ignore=shutil.ignore_patterns("__pycache__"))
    with open(hung / "ppmid" / "app.py", "a") as f:
        f.write("\nwhile True:\n    pass\n")
    rel = _release(tmp_path, keys[0], "2.0.0", firmware_dir=str(hung))
    mark = emu.board.mark()
    st, _ = _offer(emu, rel, timeout=400)
    assert st["state"] == "rolled-back" and st["error"]["code"] == "E_UPDATE_BOOT", st
    emu.board.wait_for(r"PPMID ready: version=%s" % re.escape(before), 60, since=mark)
    emu.wait_online()
    _relays_a_command(emu, "after-hang")


def test_a_format_1_release_is_still_applied(emu, keys, tmp_path):
    # the stepping stone (docs/update.md "Manifest formats"): gateways on a version before
    # format 2 take only format 1, so the release that brings format 2 is built in it; a
    # gateway that knows both takes it as it takes format 2 (the releases above)
    version = "9.1.0"  # above every version the tests before install
    rel = _release(tmp_path, keys[0], version, manifest_format=1)
    assert json.loads(rel.text)["format"] == 1 and all(isinstance(f, dict) for f in rel.manifest["files"])
    mark = emu.board.mark()
    st, s = _offer(emu, rel)
    assert st["state"] == "applied" and st["running"] == version, (st, s.statuses[-3:])
    assert s.bytes_sent >= rel.total
    emu.board.wait_for(r"PPMID ready: version=%s" % re.escape(version), 60, since=mark)
    emu.wait_online()
    _relays_a_command(emu, "after-format-1")
