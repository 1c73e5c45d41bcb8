"""boards/NAME: board.json has what the firmware and the tools read; manifest.py freezes
firmware/ppmid on top of the port's own manifest (checked by running it with stand-ins
for the MicroPython build's manifest functions: no ESP-IDF build here)."""
import json
import os

import pytest

from host_tools import boards

BOARDS = boards.board_names()


def test_the_four_boards_exist():
    assert BOARDS == ["emulated", "esp32-devkitc", "esp32c3-devkitm-1", "esp32s3-devkitc-1"]


@pytest.mark.parametrize("name", BOARDS)
def test_board_json_has_the_keys_the_code_reads(name):
    d = boards.load_board(name)
    assert d["name"] == name
    for key in ("chip", "mpy_arch", "zigbee_uart", "nfc", "status_led", "fs_size", "heap", "image_offset"):
        assert key in d, key
    boards.heap_bytes(d["heap"])
    assert d["nfc"]["bus"] in ("uart", "i2c")
    if d["chip"] == "unix":
        assert d["zigbee_uart"]["pty"] and d["image_offset"] is None
    else:
        for pin in ("id", "tx", "rx", "baud"):
            assert pin in d["zigbee_uart"]
        assert int(d["image_offset"], 16) == (0x1000 if d["chip"] == "esp32" else 0)
        assert d["mpy_arch"] == ("rv32imc" if d["chip"] == "esp32c3" else "xtensawin")


@pytest.mark.parametrize("name", BOARDS)
def test_manifest_freezes_the_ppmid_package(name, monkeypatch):
    path = os.path.join(boards.BOARDS_DIR, name, "manifest.py")
    calls = []
    env = {
        "include": lambda p, **kw: calls.append(("include", p)),
        "package": lambda p, files=None, base_path=".", opt=None: calls.append(("package", p, base_path, opt, files)),
        "module": lambda *a, **kw: calls.append(("module",) + a),
        "require": lambda *a, **kw: calls.append(("require",) + a),
        "freeze": lambda *a, **kw: calls.append(("freeze",) + a),
    }
    monkeypatch.chdir(os.path.dirname(path))  # as MicroPython's build runs a manifest
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), env)
    includes = [c[1] for c in calls if c[0] == "include"]
    assert includes == (["$(PORT_DIR)/variants/standard/manifest.py"] if name == "emulated"
                        else ["$(PORT_DIR)/boards/manifest.py"])
    pkgs = [c for c in calls if c[0] == "package"]
    assert len(pkgs) == 1 and pkgs[0][1] == "ppmid"
    base = os.path.normpath(os.path.join(os.path.dirname(path), pkgs[0][2]))
    assert base == boards.FIRMWARE_DIR
    assert os.path.isfile(os.path.join(base, "ppmid", "__init__.py"))
    # boot.py / main.py are not frozen: MicroPython runs them from the filesystem by name
    assert not [c for c in calls if c[0] in ("module", "freeze")]
    # the ESP32 images leave out the emulated board's support, and nothing else
    files = pkgs[0][4]
    if name == "emulated":
        assert files is None
    else:
        every = sorted(os.path.relpath(os.path.join(d, f), os.path.join(base, "ppmid"))
                       for d, _, fs in os.walk(os.path.join(base, "ppmid")) for f in fs if f.endswith(".py"))
        assert sorted(files) == [f for f in every if f not in ("board/emulated.py", "board/ptyuart.py")]
        assert "board/esp32.py" in files and "zigbee/_ash_fast.py" in files
