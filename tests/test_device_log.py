"""The emulated CH's device log on the host (host_tools/device_log.py) and the commands that
write and read it: `ppmid provision --install-code` refuses a bad code with its code before
anything is written, a missing or garbled device log is refused by `ppmid provision`,
`ppmid ncp-emulator` and `ppmid emulate` with E_DEVICE_LOG, and an entry added keeps the
others."""
import json

import pytest

from host_tools import device_log as D
from host_tools.broker import Broker
from tests.test_e2e_emulate_cli import ppmid

SPEC = "83FED3407A939723A5C639B26916D505C3B5"   # the Zigbee spec's example code, CRC valid
GW = "00DB1234567890A4"


def test_printed_groups_the_digits_as_an_installer_types_them():
    code = D.parse_install_code(SPEC)
    assert D.printed(code) == "83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5"
    assert D.parse_install_code(D.printed(code)) == code


@pytest.mark.parametrize("length", [6, 8, 12, 16])
def test_new_codes_carry_their_crc(length):
    code = D.new_install_code(length)
    assert len(code) == length + 2 and D.parse_install_code(code.hex()) == code
    assert D.new_install_code(length) != code   # random, not a constant


def test_bad_codes_are_refused_with_the_firmware_codes():
    with pytest.raises(D.InstallCodeError) as e:
        D.parse_install_code(SPEC[:-1] + "6")
    assert e.value.code == "E_INSTALL_CODE_CRC" and "E_INSTALL_CODE_CRC" in str(e.value)
    for bad in ("12", "zz" * 18, SPEC + "00"):
        with pytest.raises(D.InstallCodeError) as e:
            D.parse_install_code(bad)
        assert e.value.code == "E_INSTALL_CODE"
    with pytest.raises(D.InstallCodeError):
        D.new_install_code(10)


def test_add_keeps_other_entries_and_replaces_its_own(tmp_path):
    path = str(tmp_path / "log.jsonl")
    a, b = D.new_install_code(), D.parse_install_code(SPEC)
    D.add(path, GW, a)
    D.add(path, "00DB1234567890A5", b)
    D.add(path, GW.lower(), b)              # the same EUI again: its code replaced
    assert D.read(path) == {bytes.fromhex(GW): b, bytes.fromhex("00DB1234567890A5"): b}
    lines = [json.loads(x) for x in open(path)]
    assert lines[0] == {"eui64": GW, "install_code": D.printed(b)}


def test_add_waits_for_another_writer_and_keeps_its_entry(tmp_path):
    """Two provision runs at once: the second add waits while the first holds the log's
    lock, then reads the log the first wrote, so neither entry is lost."""
    import fcntl
    import threading
    path = str(tmp_path / "log.jsonl")
    other, mine = "00DB1234567890A5", D.parse_install_code(SPEC)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # the other run, inside its read-modify-write
        t = threading.Thread(target=D.add, args=(path, GW, mine))
        t.start()
        t.join(0.5)
        assert t.is_alive(), "add wrote the log while another writer held it"
        with open(path, "w") as f:                 # the other run's write lands
            f.write(json.dumps(D.entry(bytes.fromhex(other), mine)) + "\n")
    t.join(30)
    assert not t.is_alive()
    assert D.read(path) == {bytes.fromhex(other): mine, bytes.fromhex(GW): mine}


def test_a_failed_write_leaves_the_log_and_no_temporary_file(tmp_path, monkeypatch):
    import os
    path = str(tmp_path / "log.jsonl")
    D.add(path, GW, D.parse_install_code(SPEC))
    before = open(path, "rb").read()

    def fail(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        D.add(path, "00DB1234567890A5", D.new_install_code())
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["log.jsonl", "log.jsonl.lock"]


@pytest.mark.parametrize("content, words", [
    (b"", "holds no entry"),
    (b"not json\n", "line 1 is not JSON"),
    (b'{"eui64": "%s"}\n' % GW.encode(), "eui64 and install_code"),
    (b'[1, 2]\n', "eui64 and install_code"),
    (b'{"eui64": "00DB12", "install_code": "%s"}\n' % SPEC.encode(), "16 hex digits"),
    (b'{"eui64": "%s", "install_code": "%s"}\n' % (GW.encode(), SPEC[:-1].encode() + b"6"), "E_INSTALL_CODE_CRC"),
    (b'{"eui64": "%s", "install_code": "%s"}\n' % (GW.encode(), SPEC.encode()) * 2, "line 2: EUI-64"),
    (b"\xff\xfe\x00", "not text"),
])
def test_garbled_logs_are_refused_with_the_line(tmp_path, content, words):
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    with pytest.raises(D.DeviceLogError) as e:
        D.read(str(path))
    assert words in str(e.value) and "E_DEVICE_LOG" in str(e.value)
    with pytest.raises(D.DeviceLogError):   # and never overwritten by an add
        D.add(str(path), GW, D.parse_install_code(SPEC))
    assert path.read_bytes() == content


def test_missing_log_says_how_to_make_one(tmp_path):
    with pytest.raises(D.DeviceLogError) as e:
        D.read(str(tmp_path / "none.jsonl"))
    assert "ppmid provision --install-code" in str(e.value) and "E_DEVICE_LOG" in str(e.value)


def _broker_state(tmp_path):
    state = str(tmp_path / "broker")
    Broker(state, gateways=[GW]).prepare()
    return state


def test_provision_refuses_a_bad_install_code_before_anything(tmp_path):
    state = _broker_state(tmp_path)
    r = ppmid("provision", "--port", str(tmp_path / "no-board"), "--gateway", GW, "--state-dir", state,
              "--install-code", SPEC[:-1] + "6", timeout=60)
    assert r.returncode == 1 and "E_INSTALL_CODE_CRC" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = ppmid("provision", "--port", str(tmp_path / "no-board"), "--gateway", GW, "--state-dir", state,
              "--install-code", "0102", timeout=60)
    assert r.returncode == 1 and "E_INSTALL_CODE" in r.stderr and "6, 8, 12 or 16 bytes" in r.stderr, r.stderr
    assert not (tmp_path / "broker" / D.DEFAULT_NAME).exists()
    r = ppmid("provision", "--port", str(tmp_path / "no-board"), "--gateway", GW, "--state-dir", state,
              "--device-log", str(tmp_path / "x.jsonl"), timeout=60)
    assert r.returncode == 1 and "go with --install-code" in r.stderr, r.stderr


def test_provision_refuses_a_garbled_device_log_before_the_board(tmp_path):
    state = _broker_state(tmp_path)
    log = tmp_path / "log.jsonl"
    log.write_text("garbage\n")
    r = ppmid("provision", "--port", str(tmp_path / "no-board"), "--gateway", GW, "--state-dir", state,
              "--install-code", "new", "--device-log", str(log), timeout=60)
    assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "line 1 is not JSON" in r.stderr, r.stderr
    assert log.read_text() == "garbage\n"


def test_provision_dry_run_prints_the_code_and_the_config_holds_it(tmp_path):
    state = _broker_state(tmp_path)
    r = ppmid("provision", "--port", "unused", "--gateway", GW, "--state-dir", state, "--install-code",
              "83FE-D340-7A93-9723-A5C6-39B2-6916-D505-C3B5", "--dry-run", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "install code 83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5" in r.stdout
    cfg = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    assert cfg["zigbee"]["install_code"] == SPEC
    assert "device log" in r.stdout and not (tmp_path / "broker" / D.DEFAULT_NAME).exists()


def test_ncp_emulator_and_emulate_refuse_a_missing_or_garbled_log(tmp_path):
    import os
    master, slave = os.openpty()
    try:
        r = ppmid("ncp-emulator", "--pty", os.ttyname(slave), "--device-log", str(tmp_path / "none.jsonl"),
                  timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "no device log" in r.stderr, r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"eui64": "%s", "install_code": "1234"}\n' % GW)
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--device-log", str(bad), timeout=60)
    assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "line 1" in r.stderr, r.stderr
    assert not (tmp_path / "run" / "board.json").exists()        # refused before anything started
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--device-log", str(tmp_path / "none"), timeout=60)
    assert r.returncode == 1 and "no device log" in r.stderr, r.stderr
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--commissioned", "--ch-install-code", SPEC,
              timeout=60)
    assert r.returncode == 1 and "--commissioned" in r.stderr, r.stderr
    r = ppmid("emulate", "--state-dir", str(tmp_path / "run"), "--device-log", str(bad), "--ch-install-code", SPEC,
              timeout=60)
    assert r.returncode == 1 and "give one" in r.stderr, r.stderr


def test_emulate_refuses_a_device_log_without_the_gateway_or_with_another_code(tmp_path):
    # refused before anything starts (no board, no broker): the CH would refuse the join
    elsewhere = tmp_path / "elsewhere.jsonl"
    D.add(str(elsewhere), "00DB1234567890A5", D.parse_install_code(SPEC))
    run = tmp_path / "run"
    r = ppmid("emulate", "--state-dir", str(run), "--device-log", str(elsewhere), timeout=60)
    assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "no entry for %s" % GW in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (run / "board.json").exists()
    log = tmp_path / "log.jsonl"
    code = D.new_install_code()
    D.add(str(log), GW, code)
    for given in (SPEC, "new"):
        r = ppmid("emulate", "--state-dir", str(run), "--device-log", str(log), "--install-code", given, timeout=60)
        assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "is not the code" in r.stderr, r.stderr
        assert D.printed(code) in r.stderr and not (run / "board.json").exists()
    r = ppmid("emulate", "--state-dir", str(run), "--device-log", str(log), "--install-code", "12", timeout=60)
    assert r.returncode == 1 and "E_INSTALL_CODE" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_emulate_takes_the_code_the_device_log_holds_for_the_gateway(tmp_path):
    import argparse
    from host_tools.cmd_emulate import _commissioning
    log = tmp_path / "log.jsonl"
    code = D.new_install_code()
    D.add(str(log), "00DB1234567890A5", D.parse_install_code(SPEC))
    D.add(str(log), GW, code)
    args = argparse.Namespace(commissioned=False, ch_install_code=None, device_log=str(log), install_code=None)
    assert _commissioning(args)["install_code"] == code.hex().upper()
    args.install_code = D.printed(code)                  # the same code, as an installer types it
    assert _commissioning(args) == {"install_code": code.hex().upper(), "device_log": str(log)}
    args.device_log, args.install_code = None, None      # no log: the spec's example code, as before
    assert _commissioning(args)["install_code"] == SPEC


def test_provision_checks_zigbee_eui_before_the_board_and_takes_colons(tmp_path):
    from host_tools.emuboard import EmulatedBoard
    state = _broker_state(tmp_path)
    log = tmp_path / "log.jsonl"
    base = ["provision", "--gateway", GW, "--state-dir", state, "--broker-host", "127.0.0.1",
            "--broker-port", "18883", "--install-code", SPEC, "--device-log", str(log)]
    for bad in ("nothex", "00:0D:6F:00:00:00:01", "00DB1234567890A4FF"):
        r = ppmid(*base, "--port", "unused", "--zigbee-eui", bad, "--dry-run", timeout=60)
        assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "--zigbee-eui" in r.stderr, (bad, r.stderr)
    with EmulatedBoard(tmp_path / "board") as b:
        r = ppmid(*base, "--port", b.repl, "--zigbee-eui", "nothex", timeout=60)
        assert r.returncode == 1 and "E_DEVICE_LOG" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "E_INTERNAL" not in r.stderr
        assert b.exec("import os\nprint(sorted(os.listdir('/')))").strip() == "[]"   # the board untouched
        assert not log.exists()
        r = ppmid(*base, "--port", b.repl, "--zigbee-eui", "00:0d:6f:00:00:00:00:01", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "EUI-64 000D6F0000000001" in r.stdout
        assert b.exec("import os\nprint('config.json' in os.listdir('/'))").strip() == "True"
    assert D.read(str(log)) == {bytes.fromhex("000D6F0000000001"): D.parse_install_code(SPEC)}
    assert json.loads(log.read_text()) == {"eui64": "000D6F0000000001", "install_code": D.printed(D.parse_install_code(SPEC))}


def test_emulate_leaves_a_provision_device_log_in_its_state_dir_alone(tmp_path):
    """ppmid emulate makes its CH's log afresh each run under a name of its own; a
    device-log.jsonl that `ppmid provision` keeps in the same folder is not touched."""
    from host_tools import emulate as E
    real = tmp_path / D.DEFAULT_NAME
    D.add(str(real), "00DB1234567890A5", D.parse_install_code(SPEC))
    before = real.read_bytes()
    emu = E.Emulation(tmp_path, commissioning={"install_code": SPEC}, log=None)
    for _ in range(2):   # a second run replaces emulate's own log, not provision's
        assert emu._device_log() == {bytes.fromhex(GW): D.parse_install_code(SPEC)}
    assert real.read_bytes() == before
    assert emu.device_log_path == str(tmp_path / E.EMULATE_DEVICE_LOG)
