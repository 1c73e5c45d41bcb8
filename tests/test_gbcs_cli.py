"""`ppmid gbcs decode|check` (host_tools/cmd_gbcs.py) run as a subprocess, and corpus-wide
checks of the relay's default allow-list."""
import binascii
import glob
import json
import os
import subprocess
import sys

import pytest

from ppmid import config
from ppmid.gbcs import Validator, GbcsError, decode, build, gbt, codes
from ppmid.gbcs.validate_host import MemoryCounterStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CS11 = ("DD000000000000401100000000DF090100000000000003E90890B3D51F300100000800DB1234567890A1"
        "000200150C0109010107090004010001030007381A41244A959E5F765E50")  # RTDS 4.5.0 CS11_3.3_ERROR_COMMAND
# RTDS test titles
TYPES = {"00DB1234567890A0": "ESME", "00DB1234567890A1": "GSME", "00DB1234567890A2": "CHF",
         "00DB1234567890A3": "GPF", "00DB1234567890A4": "PPMID", "00DB1234567890A5": "HCALCS"}


def ppmid(*args, stdin=None):
    # the console-script entry point (`python -m host_tools.cli` would make a second CliError class)
    entry = "import sys; from host_tools.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", entry, "gbcs"] + list(args), input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, lines, proc.stderr


def _config(tmp_path, devices=("00DB1234567890A0", "00DB1234567890A1")):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"gateway": "00DB1234567890A4",
                                "han": {"devices": [{"eui": e, "type": TYPES[e]} for e in devices]}}))
    return str(path)


def test_decode_stdin_lines_and_errors():
    gbt_block = binascii.hexlify(list(build.split(binascii.unhexlify(CS11), 30))[1]).decode()
    text = "# comment\n%s\n\nDD0000\nXYZ\n%s\n" % (CS11, gbt_block)
    rc, out, err = ppmid("decode", "-", stdin=text)
    assert rc == 1 and len(out) == 4
    first = out[0]
    assert first["form"] == "mac+signed" and first["cra"] == "command" and first["counter"] == 1001
    assert first["originator"] == "90B3D51F30010000" and first["recipient"] == "00DB1234567890A1"
    assert first["message_code"] == 0x15 and first["message_name"].startswith("CS11 ")
    assert first["date_time"] is None and first["content_type"] == "gbz" and first["content_len"] == 12
    assert first["signature_len"] == 0 and first["mac"] == "07381A41244A959E5F765E50"
    assert first["source"] == "-:2"
    assert out[1] == {"error": {"code": "E_TRUNCATED", "message": out[1]["error"]["message"]}, "source": "-:4"}
    assert out[2]["error"]["code"] == "E_HEX" and "odd number" in out[2]["error"]["message"]
    g = out[3]
    assert g["form"] == "gbt" and g["block_number"] == 2 and g["last_block"] is False
    assert g["block_ack"] == 0 and g["block_data_len"] == 30 and g["content_type"] is None
    rc, out, err = ppmid("decode", "-", stdin="zz11\n")
    assert rc == 1 and out[0]["error"] == {"code": "E_HEX", "message": "not hex: 'z' is not a hex digit"}
    rc, out, err = ppmid("decode", "-", stdin="# only a comment\n\n")
    assert rc == 1 and out == [] and "no GBCS message" in err


def test_decode_all_ok_exit_zero(tmp_path):
    f = tmp_path / "one.HEX"
    f.write_text(CS11.lower() + "\n")
    rc, out, _ = ppmid("decode", str(f))
    assert rc == 0 and len(out) == 1 and out[0]["counter"] == 1001
    rc, out, _ = ppmid("decode", str(tmp_path))      # a folder of .HEX files
    assert rc == 0 and len(out) == 1


def test_check_verdicts(tmp_path):
    cfg = _config(tmp_path)
    resp = binascii.hexlify(build.make_response(binascii.unhexlify(CS11))).decode()
    text = "\n".join([CS11, CS11, resp])
    rc, out, _ = ppmid("check", "--config", cfg, "-", stdin=text)
    assert rc == 1
    assert out[0]["verdict"] == {"relay": True}
    assert out[1]["verdict"]["relay"] is False and out[1]["verdict"]["code"] == "E_REPLAY"
    assert out[2]["cra"] == "response" and out[2]["verdict"]["code"] == "E_NOT_COMMAND"
    rc, out, _ = ppmid("check", "--config", _config(tmp_path, ("00DB1234567890A0",)), "-", stdin=CS11)
    assert out[0]["verdict"]["code"] == "E_UNKNOWN_TARGET"


def test_cli_user_errors(tmp_path):
    rc, out, err = ppmid("check", "-", stdin=CS11)
    assert rc != 0 and "--config" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"gateway": "nothex"}')
    rc, out, err = ppmid("check", "--config", str(bad), "-", stdin=CS11)
    assert rc == 1 and err.startswith("ppmid: E_CONFIG: config") and out == []
    rc, out, err = ppmid("decode", str(tmp_path / "missing.txt"))
    assert rc == 1 and "cannot read" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = ppmid("decode", str(empty))
    assert rc == 1 and "no .HEX files" in err


def test_corpus_decode_cli(gbcs_corpus):
    rc, out, err = ppmid("decode", gbcs_corpus)
    assert rc == 0, err
    assert len(out) == 1275 and not [o for o in out if "error" in o]
    assert {o["form"] for o in out} == {"mac+signed", "signed"}


def test_default_allow_list_accepts_every_corpus_command(gbcs_corpus):
    """Every RTDS COMMAND to a device of a known type passes the default allow-list, and is
    refused for a device type that the table does not list it for."""
    cfg = config.validate({"gateway": "00DB1234567890A4",
                           "han": {"devices": [{"eui": e, "type": t} for e, t in TYPES.items()]}})
    checked = 0
    for path in sorted(glob.glob(os.path.join(gbcs_corpus, "*", "*_COMMAND_GBCS.HEX"))):
        with open(path) as f:
            raw = binascii.unhexlify(f.read().strip())
        msg = decode(raw)
        target = binascii.hexlify(bytes(msg.recipient)).decode().upper()
        if target not in TYPES:
            continue
        v = Validator(cfg, MemoryCounterStore())
        try:
            v.check(raw)
        except GbcsError as exc:
            pytest.fail("%s: %s" % (os.path.basename(path), exc))
        # the same command to a device of a type the table does not list it for is refused
        other = [t for t in ("ESME", "GSME", "CHF", "GPF", "PPMID") if t not in codes.device_types(msg.message_code)][0]
        v = Validator(config.validate({"gateway": "00DB1234567890A4",
                                       "han": {"devices": [{"eui": target, "type": other}]}}), MemoryCounterStore())
        with pytest.raises(GbcsError) as exc:
            v.check(raw)
        assert exc.value.code == "E_NOT_ALLOWED"
        checked += 1
    assert checked == 495  # RTDS COMMAND files addressed to the six test titles above


def test_every_corpus_response_carries_its_commands_message_code(gbcs_corpus):
    """relay.core answers a command only with a CRA-2 frame of its (originator, recipient
    swapped, counter) that carries its message code (review r4 R4-4): every RTDS response
    whose command is in the corpus does (501 of the 503 responses; two have no command)."""
    commands = {}
    responses = []
    for path in sorted(glob.glob(os.path.join(gbcs_corpus, "*", "*.HEX"))):
        with open(path) as f:
            msg = decode(binascii.unhexlify(f.read().strip()))
        triple = (bytes(msg.originator), bytes(msg.recipient), bytes(msg.counter_bytes))
        if msg.cra == 1:
            commands.setdefault(triple, set()).add(msg.message_code)
        elif msg.cra == 2:
            responses.append(((triple[1], triple[0], triple[2]), msg.message_code, os.path.basename(path)))
    paired = other = 0
    for triple, code, name in responses:
        sent = commands.get(triple)
        if sent:
            paired += 1
            other += code not in sent
    assert (len(responses), paired, other) == (503, 501, 0)
