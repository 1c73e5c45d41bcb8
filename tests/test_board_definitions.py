"""boards/NAME: board.json has what the firmware and the tools read; manifest.py freezes
firmware/ppmid on top of the port's own manifest (checked by running it with stand-ins
for the MicroPython build's manifest functions: no ESP-IDF build here)."""
import json
import os
import subprocess

import pytest

from host_tools import boards, deploy, image

BOARDS = boards.board_names()
# the boards whose image freezes the app (the ROMFS boards' image freezes none of it: a frozen
# ppmid would be imported before /rom; tests/test_romfs_boards.py)
MANIFEST_BOARDS = [n for n in BOARDS if os.path.isfile(os.path.join(boards.BOARDS_DIR, n, "manifest.py"))]


def test_the_boards_exist():
    assert BOARDS == ["emulated", "esp32-devkitc", "esp32-devkitc-romfs", "esp32c3-devkitm-1", "esp32s3-devkitc-1",
                      "esp32s3-devkitc-1-n8r8", "esp32s3-devkitc-1-n8r8-romfs"]
    assert sorted(set(BOARDS) - set(MANIFEST_BOARDS)) == ["esp32-devkitc-romfs", "esp32s3-devkitc-1-n8r8-romfs"]


@pytest.mark.parametrize("name", BOARDS)
def test_board_json_says_what_heap_the_board_has_and_where_the_figure_comes_from(name):
    d = boards.load_board(name)
    heap = boards.heap_bytes(d["heap"])
    assert isinstance(d["psram"], bool)
    source = d["heap_source"]
    if d["chip"] == "unix":
        assert "64-bit" in source and not d["psram"]
        return
    assert source.startswith("Not measured here")  # no board is attached to this project's machines
    assert d["micropython_board"].startswith("ESP32_GENERIC")
    if d["psram"]:
        assert "PSRAM" in source and heap >= 2 * 1024 * 1024 and d["micropython_variant"].startswith("SPIRAM")
    else:
        assert heap <= 200 * 1024  # internal RAM only: what ESP-IDF and Wi-Fi leave


def test_the_s3_with_psram_is_the_board_that_holds_the_app_as_mpy_files():
    need, _ = deploy.app_heap_need()
    fits = [n for n in BOARDS if boards.load_board(n)["chip"] != "unix"
            and deploy.heap_fits(n, boards.load_board(n), force=True, log=lambda m: None)]
    assert "esp32s3-devkitc-1-n8r8" in fits
    assert "esp32-devkitc" not in fits  # an ESP32-WROOM leaves ~110-160 KB with Wi-Fi up
    d = boards.load_board("esp32s3-devkitc-1-n8r8")
    assert d["chip"] == "esp32s3" and d["psram"] and d["micropython_variant"] == "SPIRAM_OCT"
    assert boards.heap_bytes(d["heap"]) >= need


def test_app_heap_json_is_the_gauges_figure():
    with open(deploy.APP_HEAP_JSON) as f:
        data = json.load(f)
    assert data["by"] == "bench/bench_heap32.py" and data["row"] == "heap32 peak 4KB command"
    assert 50 * 1024 < data["peak_4kb_command_bytes"] < 1024 * 1024
    assert deploy.app_heap_need()[0] == data["peak_4kb_command_bytes"]


@pytest.mark.parametrize("name", MANIFEST_BOARDS)
def test_every_file_a_manifest_freezes_exists_and_compiles_for_the_boards_arch(name, tmp_path):
    files, includes = image.manifest_files(name)
    assert files and includes
    arch = deploy.board_arch(boards.load_board(name))
    for src, frozen_name in files:
        assert os.path.isfile(src), "%s freezes %s, which does not exist" % (name, src)
        out = tmp_path / (frozen_name.replace("/", "_") + ".mpy")
        p = subprocess.run([boards.mpy_cross_binary(), "-march=" + arch, "-o", str(out), "-s", frozen_name, src],
                           capture_output=True, text=True)
        assert p.returncode == 0, "%s: %s does not compile for %s: %s" % (name, frozen_name, arch, p.stderr)


@pytest.mark.parametrize("name", BOARDS)
def test_board_json_has_the_keys_the_code_reads(name):
    d = boards.load_board(name)
    assert d["name"] == name
    for key in ("chip", "mpy_arch", "zigbee_uart", "nfc", "status_led", "fs_size", "heap", "image_offset"):
        assert key in d, key
    boards.heap_bytes(d["heap"])
    assert d["nfc"]["bus"] in ("uart", "i2c")
    if d["nfc"]["bus"] == "i2c":
        # the key ppmid.boot._nfc_driver reads (a 7-bit address; the PN532's is 0x24;
        # tests/firmware/test_nfc_session.py checks that boot takes it)
        assert set(d["nfc"]) >= {"id", "sda", "scl", "addr"} and "address" not in d["nfc"]
        assert 0 < d["nfc"]["addr"] < 0x78
    # the kinds board/esp32.py's Led drives; the S3 and C3 devkits' LED is an addressable
    # RGB one (Espressif's user guides, status_led_source), which a pin level cannot light
    assert d["status_led"].get("kind", "gpio") in ("gpio", "neopixel")
    if name.startswith(("esp32s3-devkitc-1", "esp32c3-devkitm-1")):
        assert d["status_led"]["kind"] == "neopixel" and d["status_led_source"]
    if d["chip"] == "unix":
        assert d["zigbee_uart"]["pty"] and d["image_offset"] is None
    else:
        for pin in ("id", "tx", "rx", "baud"):
            assert pin in d["zigbee_uart"]
        assert int(d["image_offset"], 16) == (0x1000 if d["chip"] == "esp32" else 0)
        assert d["mpy_arch"] == ("rv32imc" if d["chip"] == "esp32c3" else "xtensawin")


@pytest.mark.parametrize("name", MANIFEST_BOARDS)
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
    # the ESP32 images leave out the emulated board's support and the host-only modules
    # (*_host.py: host_tools/deploy.py HOST_ONLY_SUFFIX), and nothing else
    files = pkgs[0][4]
    if name == "emulated":
        assert files is None
    else:
        every = sorted(os.path.relpath(os.path.join(d, f), os.path.join(base, "ppmid"))
                       for d, _, fs in os.walk(os.path.join(base, "ppmid")) for f in fs if f.endswith(".py"))
        assert sorted(files) == [f for f in every if f not in ("board/emulated.py", "board/ptyuart.py")
                                 and not f.endswith("_host.py")]
        assert len([f for f in every if f.endswith("_host.py")]) >= 6
        assert "board/esp32.py" in files and "zigbee/_ash_fast.py" in files
