"""Bad input to any `ppmid` command ends in one clear line (a code and a sentence), never a
Python traceback: the command's own CliError (exit 1), or the CLI's last line of defence
for what a command let escape (exit 3, `ppmid: E_CODE: sentence`)."""
import json
import os
import socket
import ssl

import pytest

from host_tools import cli


def run(capsys, *argv):
    rc = cli.main(list(argv))
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err + cap.out
    return rc, cap.err


def _escaping_decode_error(monkeypatch):
    """gbcs decode reading bytes that are not UTF-8 without naming them, as a command that
    forgot to check would (gbcs decode itself now names the file: E_INPUT, exit 1)."""
    from host_tools import cmd_gbcs

    def inputs(path):
        raise UnicodeDecodeError("utf-8", b"\xff\xfe not text", 0, 1, "invalid start byte")
        yield  # a generator, as iter_inputs is

    monkeypatch.setattr(cmd_gbcs, "iter_inputs", inputs)


def test_what_a_command_lets_escape_is_one_line_with_a_code(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.HEX"
    bad.write_bytes(b"\xff\xfe not text")
    rc, err = run(capsys, "gbcs", "decode", str(bad))   # named by the command: exit 1
    assert rc == 1 and err == "ppmid: E_INPUT: %s is not UTF-8 text (byte 0xff at offset 0): give hex, a message " \
        "per line\n" % bad, err
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000)
    rc, err = run(capsys, "gbcs", "check", "--config", str(deep), "00")
    assert rc in (1, 3) and "ppmid: " in err
    _escaping_decode_error(monkeypatch)
    rc, err = run(capsys, "gbcs", "decode", str(bad))   # let escape: the last line of defence, exit 3
    assert rc == 3 and err.startswith("ppmid: E_INPUT: ") and "not UTF-8" in err and err.count("\n") == 1


def test_the_traceback_is_there_when_asked_for(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.HEX"
    bad.write_bytes(b"\xff")
    _escaping_decode_error(monkeypatch)
    monkeypatch.setenv("PPMID_DEBUG", "1")
    assert cli.main(["gbcs", "decode", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnicodeDecodeError" in err and "ppmid: E_INPUT" in err


@pytest.mark.parametrize("exc, code, words", [
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "E_INPUT", "not UTF-8"),
    (json.JSONDecodeError("Expecting value", "{x", 1), "E_INPUT", "not valid JSON"),
    (RecursionError("maximum recursion depth exceeded"), "E_INPUT", "nested too deeply"),
    (ssl.SSLError(1, "[SSL] bad"), "E_TLS", "TLS failed"),
    (ConnectionRefusedError(111, "Connection refused"), "E_CONNECT", "broker running"),
    (socket.gaierror(-2, "Name or service not known"), "E_CONNECT", "unknown host"),
    (TimeoutError("timed out"), "E_TIMEOUT", "no answer in time"),
    (IsADirectoryError(21, "Is a directory", "/tmp/x"), "E_IO", "/tmp/x: Is a directory"),
    (KeyError("port"), "E_INTERNAL", "KeyError"),
])
def test_describe_names_the_problem(exc, code, words):
    got_code, sentence = cli.describe(exc)
    assert got_code == code and words in sentence, (got_code, sentence)


def test_send_refuses_what_would_hang_or_send_nothing(tmp_path, capsys):
    base = ["send", "--state-dir", str(tmp_path), "--gateway", "00DB1234567890A4"]
    rc, err = run(capsys, *base, "--gbcs", "DD00", "--timeout", "nan")
    assert rc == 1 and "--timeout" in err
    rc, err = run(capsys, *base, "--gbcs", "DD00", "--expires-in", "0")
    assert rc == 1 and "--expires-in" in err
    rc, err = run(capsys, *base, "--gbcs", "")
    assert rc == 1 and "empty" in err


def test_ncp_emulator_refuses_what_is_not_a_pty_or_a_sensible_setting(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    f = tmp_path / "f"
    f.write_text("x")
    rc, err = run(capsys, "ncp-emulator", "--pty", str(tmp_path / "d"))
    assert rc == 1 and "not a pty (a directory)" in err
    rc, err = run(capsys, "ncp-emulator", "--pty", str(f))
    assert rc == 1 and "not a pty (a regular file)" in err
    for bad, what in ((["--byte-error-rate", "5"], "--byte-error-rate"), (["--byte-error-rate", "nan"], "--byte-error-rate"),
                      (["--baud", "-5"], "--baud"), (["--max-payload", "-1"], "--max-payload"),
                      (["--corpus", str(f)], "--corpus"), (["--log", str(tmp_path / "no" / "x")], "--log")):
        rc, err = run(capsys, "ncp-emulator", "--pty", "/dev/ptmx", *bad)
        assert rc == 1 and what in err, (bad, err)


def test_ncp_emulator_start_reports_what_stopped_its_thread(tmp_path):
    """An emulator that cannot open its pty says why at once (not 'did not start' 10 s later)."""
    from host_tools.ncp_emulator import NcpEmulator
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        NcpEmulator(str(tmp_path / "d")).start()


def test_send_says_when_the_broker_cannot_be_reached_or_its_state_is_broken(tmp_path, capsys):
    from host_tools.broker import Broker
    state = tmp_path / "b"
    Broker(str(state), gateways=["00DB1234567890A4"], users=["test"]).prepare()
    (state / "keys").mkdir(exist_ok=True)
    (state / "keys" / "00DB1234567890A4.key").write_bytes(b"k" * 32)
    base = ["send", "--state-dir", str(state), "--gateway", "00DB1234567890A4", "--gbcs", "DD00", "--timeout", "2"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (state / "broker.json").write_text(json.dumps({"host": "127.0.0.1", "port": port}))
    rc, err = run(capsys, *base)
    assert rc == 1 and "cannot reach the broker at 127.0.0.1:%d" % port in err
    (state / "broker.json").write_text("{bad")
    rc, err = run(capsys, *base)
    assert rc == 1 and "not valid JSON" in err
    (state / "broker.json").write_text("[]")
    rc, err = run(capsys, *base)
    assert rc == 1 and "host and port" in err


def test_broker_refuses_a_port_out_of_range_and_a_state_dir_that_is_a_file(tmp_path, capsys):
    rc, err = run(capsys, "broker", "start", "--state-dir", str(tmp_path / "b"), "--port", "99999")
    assert rc == 1 and "--port must be from 1024 to 65535" in err
    f = tmp_path / "f"
    f.write_text("x")
    rc, err = run(capsys, "broker", "issue", "--state-dir", str(f), "--gateway", "00DB1234567890A4")
    assert rc == 1 and "is a file" in err


@pytest.mark.parametrize("option", ["--pcap", "--html"])
def test_emulate_refuses_an_output_file_that_is_a_folder_or_in_none(tmp_path, capsys, option):
    # refused before anything starts: the state dir stays empty
    run_dir = tmp_path / "run"
    for path in (tmp_path, tmp_path / "no" / "out"):
        rc, err = run(capsys, "emulate", "--commissioned", "--state-dir", str(run_dir), option, str(path))
        assert rc == 1 and err == "ppmid: E_INPUT: %s %s: give a file in an existing folder\n" % (option, path), err
    assert not run_dir.exists()


def test_output_file_check_passes_a_new_file_and_no_option(tmp_path):
    cli.check_output_file("--html", None)
    cli.check_output_file("--html", str(tmp_path / "new.html"))
    assert not (tmp_path / "new.html").exists()


def test_install_code_option_takes_hex_or_new_and_names_the_option_it_refuses():
    from host_tools import device_log
    spec = "83FE-D340-7A93-9723-A5C6-39B2-6916-D505-C3B5"
    assert cli.install_code_option(spec).hex().upper() == spec.replace("-", "")
    made = cli.install_code_option(" New ")
    assert len(made) == 18 and device_log.parse_install_code(made.hex()) == made   # its CRC holds
    with pytest.raises(device_log.InstallCodeError) as e:          # no option: the library's own error
        cli.install_code_option("0102")
    assert e.value.code == "E_INSTALL_CODE"
    with pytest.raises(cli.CliError) as e:
        cli.install_code_option(spec[:-1] + "6", "--ch-install-code")
    assert str(e.value).startswith("--ch-install-code: ") and "E_INSTALL_CODE_CRC" in str(e.value)
    with pytest.raises(cli.CliError) as e:                         # `new` only where the option allows it
        cli.install_code_option("new", "--ch-install-code", new=False)
    assert str(e.value).startswith("--ch-install-code: ") and "E_INSTALL_CODE" in str(e.value)


def _prepared_state(tmp_path):
    from host_tools.broker import Broker
    state = tmp_path / "b"
    Broker(str(state), gateways=["00DB1234567890A4"], users=["test"]).prepare()
    (state / "keys").mkdir(exist_ok=True)
    (state / "keys" / "00DB1234567890A4.key").write_bytes(b"k" * 32)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (state / "broker.json").write_text(json.dumps({"host": "127.0.0.1", "port": port}))  # no "pid"
    return state, port


def test_bad_input_to_the_host_tools_is_the_users_not_a_bug(tmp_path, capsys):
    # review L1: each of these said "E_INTERNAL ... (a bug: ...)", exit 3
    key = tmp_path / "k32"
    key.write_bytes(b"k" * 32)
    for cmd in (["send", "--serial", "/dev/null", "--gbcs", "DD00", "--key-file", str(key)],
                ["replay", "--serial", "/dev/null", "--envelope-key", str(key), "--report", str(tmp_path / "r.json")]):
        if cmd[0] == "replay":
            trace = tmp_path / "t.jsonl"
            trace.write_text('{"at_ms": 0, "id": "a1", "gbcs": "dd00"}\n')
            cmd = cmd + [str(trace)]
        rc, err = run(capsys, *(cmd + ["--baud", "-5"]))
        assert rc == 1 and "--baud must be a positive whole number" in err and "-5" in err, err
    state, port = _prepared_state(tmp_path)
    # broker.json without "pid" (hand-edited): the broker is taken as not running
    rc, err = run(capsys, "status", "--state-dir", str(state))
    assert rc == 1 and "cannot reach the broker at 127.0.0.1:%d" % port in err, err
    # a client PEM (or the CA) in the state dir that is not PEM: named
    (state / "clients" / "dcc-user-test.key.pem").write_text("not pem")
    rc, err = run(capsys, "send", "--state-dir", str(state), "--gateway", "00DB1234567890A4", "--gbcs", "DD00",
                  "--timeout", "2")
    assert rc == 1 and "private key %s is not a PEM file" % (state / "clients" / "dcc-user-test.key.pem") in err, err
    (state / "ca.pem").write_text("not pem")
    rc, err = run(capsys, "status", "--state-dir", str(state))
    assert rc == 1 and "%s is not" % (state / "ca.pem") in err, err
    rc, err = run(capsys, "capture", "--state-dir", str(state), "--gateway", "00DB1234567890A4",
                  "--out", str(tmp_path / "x.pcapng"), "--seconds", "1")
    assert rc == 1 and str(state / "ca.pem") in err, err
    # --ca/--cert/--key given that are not PEM
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    rc, err = run(capsys, "status", "--ca", str(junk), "--cert", str(junk), "--key", str(junk), "--state-dir", str(state))
    assert rc == 1 and "%s is not a PEM file" % junk in err, err


def test_flash_a_folder_and_replay_a_broken_broker_json_say_what_is_wrong(tmp_path, capsys):
    rc, err = run(capsys, "flash", "--board", "esp32-devkitc", "--port", "/dev/null", "--firmware", str(tmp_path))
    assert rc == 1 and "is a folder: give the firmware image file" in err, err
    (tmp_path / "broker.json").write_text("{bad")
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"at_ms": 0, "id": "a1", "gbcs": "dd00"}\n')
    rc, err = run(capsys, "replay", "--state-dir", str(tmp_path), "--gateway", "00DB1234567890A4",
                  "--report", str(tmp_path / "r.json"), str(trace))
    assert rc == 1 and "broker.json is not valid JSON" in err, err


def test_emulate_refuses_a_board_it_cannot_start_before_starting_anything(tmp_path, capsys):
    state = tmp_path / "emu"
    for board, words in (("nosuch", "unknown board 'nosuch'"), ("esp32-devkitc", "is a real esp32 board")):
        rc, err = run(capsys, "emulate", "--state-dir", str(state), "--board", board)
        assert rc == 1 and words in err, (board, err)
        assert "SNTP server" not in err and "broker" not in err, err   # nothing was started,
        assert not state.exists() or os.listdir(str(state)) == [], os.listdir(str(state))  # no CA made
