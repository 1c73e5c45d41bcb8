"""The ROMFS route for real ESP32 boards (issue #14), checked without ESP-IDF or hardware:
every partition table the repository ships is one ESP-IDF would take and MicroPython's
ESP32 port would mount its romfs from, board.json states the sizes the table gives, the
partition holds the package's ROMFS image with room to grow, `make image` hands the build
the table and MICROPY_VFS_ROM, and `ppmid deploy` takes such a board with --romfs only.
Nothing of it was built for or run on an ESP32."""
import os
import subprocess
import sys

import pytest

from host_tools import boards, deploy, deploy_romfs, image, partitions

ROOT = boards.ROOT
pytestmark = pytest.mark.usefixtures("tmpdir_in_tmp_path")  # --dry-run's build folder
# the romfs partition must hold today's image and this much more, for the package to grow
ROMFS_MARGIN = 64 * 1024
TABLE_BOARDS = [n for n in boards.board_names() if boards.load_board(n).get("partition_table")]
ROMFS_BOARDS = [n for n in boards.board_names() if image.is_romfs_board(boards.load_board(n))]


def ppmid(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_the_romfs_boards_are_the_ones_with_a_table():
    assert ROMFS_BOARDS == ["esp32-devkitc-romfs", "esp32s3-devkitc-1-n8r8-romfs"]
    assert TABLE_BOARDS == ROMFS_BOARDS
    for name in boards.board_names():
        d = boards.load_board(name)
        if d["chip"] != "unix" and name not in ROMFS_BOARDS:  # the stock images: no romfs partition
            assert not d.get("romfs_bytes") and not d.get("partition_table"), name


@pytest.mark.parametrize("name", TABLE_BOARDS)
def test_every_shipped_partition_table_is_valid_and_matches_its_board_json(name):
    d = boards.load_board(name)
    path, table = partitions.board_table(name, d)  # raises naming what is wrong
    flash = boards.heap_bytes(d["flash_size"])
    assert partitions.problems(table, flash) == []
    for p in table:  # the rules, stated again here against the numbers themselves
        assert p.offset >= 0x9000 and p.offset % 0x1000 == 0 and p.size % 0x1000 == 0
        if p.type == "app":
            assert p.offset % 0x10000 == 0
        assert p.end <= flash
    spans = sorted((p.offset, p.end) for p in table)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    romfs = partitions.by_name(table, "romfs")
    assert romfs.type == "data" and romfs.subtype == 0x8F and romfs.size == d["romfs_bytes"]
    assert partitions.by_name(table, "vfs").size == d["fs_size"]
    apps = [p for p in table if p.type == "app"]
    assert apps and min(p.size for p in apps) >= 0x180000  # MicroPython's smallest app slot (its OTA table)
    assert max(p.end for p in table) == flash  # the filesystem takes what is left: nothing unused


@pytest.mark.parametrize("name", ROMFS_BOARDS)
def test_the_romfs_partition_holds_the_packages_image_with_room_to_grow(name, tmp_path):
    d = boards.load_board(name)
    build_dir, _, _ = deploy.build(name, build_dir=str(tmp_path / "build"), arch=d["mpy_arch"])
    size = len(deploy_romfs.romfs_image(build_dir))
    assert 100 * 1024 < size, size  # the package's image, not an empty one
    assert d["romfs_bytes"] >= size + ROMFS_MARGIN, (name, d["romfs_bytes"], size)
    assert d["romfs_bytes"] >= 256 * 1024


def _table_error(tmp_path, monkeypatch, csv, **definition):
    base = dict(boards.load_board("esp32-devkitc-romfs"), **definition)
    bdir = tmp_path / "boards" / "b"
    bdir.mkdir(parents=True)
    (bdir / "partitions.csv").write_text(csv)
    monkeypatch.setattr(boards, "BOARDS_DIR", str(tmp_path / "boards"))
    with pytest.raises(partitions.PartitionTableError) as exc:
        partitions.board_table("b", base)
    assert exc.value.code == "E_PARTITIONS"
    return str(exc.value)


GOOD = """nvs, data, nvs, 0x9000, 0x6000,
factory, app, factory, 0x10000, 0x1D0000,
romfs, data, 0x8f, 0x1E0000, 0x60000,
vfs, data, fat, 0x240000, 0x1C0000,
"""


@pytest.mark.parametrize("csv, words", [
    (GOOD.replace("0x10000, 0x1D0000", "0x11000, 0x1CF000"), "not on a 64 KB boundary"),
    (GOOD.replace("0x1E0000, 0x60000", "0x1E0800, 0x5F800"), "not whole 4 KB sectors"),
    (GOOD.replace("0x1E0000, 0x60000", "0x1D0000, 0x70000"), "factory (0x10000-0x1e0000) overlaps romfs"),
    (GOOD.replace("0x240000, 0x1C0000", "0x240000, 0x1D0000"), "past the 4194304-byte flash"),
    (GOOD.replace("data, 0x8f", "data, spiffs"), "romfs is not of type data, subtype 0x8f"),
    (GOOD.replace("0x9000, 0x6000", "0x8000, 0x7000"), "inside the bootloader or the partition table"),
    (GOOD.replace("factory, 0x10000", "ota_0, 0x10000"), "OTA app slots without an otadata partition"),
    (GOOD.replace("romfs, data, 0x8f, 0x1E0000, 0x60000,\n", ""), "romfs partition is 0 bytes, board.json"),
    (GOOD.replace("0x1E0000, 0x60000", "0x1E0000, 0x50000"), "romfs partition is 327680 bytes, board.json "
                                                              "romfs_bytes 393216"),
])
def test_a_table_that_breaks_a_rule_is_refused_naming_it(tmp_path, monkeypatch, csv, words):
    assert words in _table_error(tmp_path, monkeypatch, csv)


@pytest.mark.parametrize("csv, words", [
    ("nvs, data, nvs, 0x9000,\n", "nvs has no size"),
    ("nvs, data, nvs, 0x9000, lots\n", "'lots' is not a number"),
    ("nvs, disk, nvs, 0x9000, 0x6000\n", "type 'disk'"),
    ("nvs, data, ota_0, 0x9000, 0x6000\n", "subtype 'ota_0' is not a data subtype"),
    ("# only a comment\n", "has no partitions"),
])
def test_a_table_that_is_not_one_is_refused_with_its_line(csv, words):
    with pytest.raises(partitions.PartitionTableError) as exc:
        partitions.parse(csv, "t.csv")
    assert words in str(exc.value)


def test_the_table_accepts_esp_idfs_own_size_notation():
    table = partitions.parse("nvs, data, nvs, 36K, 24K\nfactory, app, factory, 64K, 1M\n")
    assert [(p.offset, p.size) for p in table] == [(0x9000, 0x6000), (0x10000, 0x100000)]
    assert partitions.problems(table, 4 * 1024 * 1024) == []


def _micropython_tree(tmp_path):
    top = tmp_path / "micropython"
    (top / "ports" / "esp32").mkdir(parents=True)
    (top / "ports" / "esp32" / "Makefile").write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "idf.py").write_text("#!/bin/sh\n")
    (bindir / "idf.py").chmod(0o755)
    return top, {"MICROPY_DIR": str(top), "IDF_PATH": str(tmp_path), "PATH": str(bindir)}


@pytest.mark.parametrize("name", ROMFS_BOARDS)
def test_make_image_for_a_romfs_board_builds_with_vfs_rom_and_its_table(name, tmp_path):
    top, env = _micropython_tree(tmp_path)
    d = boards.load_board(name)
    port = str(top / "ports" / "esp32")
    assert image.missing(name, env) == []
    cmds, out = image.build_commands(name, env)
    board_dir, files = image.romfs_board_files(name, env)
    assert board_dir == os.path.join(port, "build-ppmid-%s-board" % name)
    for cmd in cmds[1:]:  # submodules and the build: the same board
        assert "BOARD=" + d["micropython_board"] in cmd and "BOARD_DIR=" + board_dir in cmd
        assert not any(a.startswith("BOARD_VARIANT=") for a in cmd)  # the board directory includes it
    # the port's own frozen modules only: a frozen ppmid would be imported before /rom
    assert "FROZEN_MANIFEST=" + os.path.join(port, "boards", "manifest.py") in cmds[-1]
    assert out == os.path.join(port, "build-ppmid-" + name, "firmware.bin")
    stock = os.path.join(port, "boards", d["micropython_board"])
    cmake = files["mpconfigboard.cmake"].splitlines()
    assert "include(%s/mpconfigboard.cmake)" % stock in cmake
    assert "list(APPEND MICROPY_DEF_BOARD MICROPY_VFS_ROM=1)" in cmake
    assert "list(APPEND SDKCONFIG_DEFAULTS ${MICROPY_BOARD_DIR}/sdkconfig.ppmid)" in cmake
    if d.get("micropython_variant"):
        assert "include(%s/mpconfigvariant_%s.cmake)" % (stock, d["micropython_variant"]) in cmake
    sdk = files["sdkconfig.ppmid"].splitlines()
    table = os.path.join(boards.BOARDS_DIR, name, "partitions.csv")
    assert 'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="%s"' % table in sdk and "CONFIG_PARTITION_TABLE_CUSTOM=y" in sdk
    mb = boards.heap_bytes(d["flash_size"]) // (1024 * 1024)
    assert "CONFIG_ESPTOOLPY_FLASHSIZE_%dMB=y" % mb in sdk
    assert ("CONFIG_ESPTOOLPY_FLASHSIZE_4MB=n" in sdk) == (mb != 4)
    has_ota = any(p.type == "app" and p.subtype in (0x10, 0x11) for p in partitions.board_table(name)[1])
    assert ("CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y" in sdk) == has_ota
    assert files["mpconfigboard.h"].startswith('#include "%s/mpconfigboard.h"' % stock)


def test_make_image_writes_the_board_directory_then_runs_the_build(tmp_path, monkeypatch):
    top, env = _micropython_tree(tmp_path)
    ran = []
    monkeypatch.setattr(image.subprocess, "run", lambda cmd, env=None: ran.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0))
    with pytest.raises(image.ImageError, match="left no .*firmware.bin"):  # the stand-in make builds nothing
        image.build("esp32-devkitc-romfs", env, log=lambda m: None)
    board_dir, files = image.romfs_board_files("esp32-devkitc-romfs", env)
    for fname, text in files.items():
        assert (tmp_path / board_dir / fname).read_text() == text
    assert len(ran) == 3 and "BOARD_DIR=" + board_dir in ran[-1]


def test_make_image_refuses_a_romfs_board_whose_table_is_wrong(tmp_path, monkeypatch):
    _, env = _micropython_tree(tmp_path)
    real = boards.load_board
    monkeypatch.setattr(boards, "load_board", lambda n: dict(real(n), romfs_bytes=0x70000)
                        if n == "esp32-devkitc-romfs" else real(n))
    with pytest.raises(partitions.PartitionTableError, match="romfs partition is 393216 bytes, board.json "
                                                              "romfs_bytes 458752"):
        image.build_commands("esp32-devkitc-romfs", env)


def test_make_image_without_the_environment_still_says_exactly_what_is_missing():
    base = {k: v for k, v in os.environ.items() if k not in ("MICROPY_DIR", "IDF_PATH")}
    base["PATH"] = "/usr/bin:/bin"
    p = subprocess.run(["make", "--no-print-directory", "image", "BOARD=esp32-devkitc-romfs", "PY=" + sys.executable],
                       capture_output=True, text=True, cwd=ROOT, env=base, timeout=60)
    assert p.returncode != 0
    lines = [l for l in p.stderr.splitlines() if l.startswith("ppmid: E_IMAGE: make image: ")]
    assert [l.split(": ", 3)[3].split(" ", 1)[0] for l in lines] == ["MICROPY_DIR", "IDF_PATH", "idf.py"], p.stderr


def test_a_110k_board_with_a_romfs_partition_deploys_with_romfs_only(tmp_path):
    d = boards.load_board("esp32-devkitc-romfs")
    have = boards.heap_bytes(d["heap"])
    assert have == 110 * 1024
    assert have < deploy.app_heap_need()[0] and have >= deploy.romfs_heap_need()[0]  # the premise, from the files
    port = str(tmp_path / "ttyUSB0")  # no such port: a dry run never opens it
    p = ppmid("deploy", "--romfs", "--dry-run", "--port", port, "--board", "esp32-devkitc-romfs",
              "--build-dir", str(tmp_path / "build"))
    assert p.returncode == 0, p.stderr
    assert "ROMFS image in" in p.stdout + p.stderr and "-march=xtensawin" in p.stdout + p.stderr
    assert ":/.deploy-new/romfs-image/" in p.stdout and "into the romfs partition" in p.stdout
    p = ppmid("deploy", "--dry-run", "--port", port, "--board", "esp32-devkitc-romfs")
    assert p.returncode == 1 and p.stdout == ""
    err = p.stderr.strip()
    assert err.startswith("ppmid: E_DEPLOY: board esp32-devkitc-romfs has a 112640-byte Python heap"), err
    assert "`ppmid deploy --romfs`" in err and "make image BOARD=esp32-devkitc-romfs" in err
    assert "freeze the app" not in err  # its image has no app frozen in
    # the stock DevKitC is still sent to the frozen image first, and told of the romfs boards
    p = ppmid("deploy", "--dry-run", "--port", port, "--board", "esp32-devkitc")
    assert p.returncode == 1 and "make image BOARD=esp32-devkitc`" in p.stderr and "esp32-devkitc-romfs" in p.stderr
    p = ppmid("deploy", "--romfs", "--dry-run", "--port", port, "--board", "esp32-devkitc")
    assert p.returncode == 1 and p.stderr.startswith("ppmid: E_DEPLOY_NO_ROMFS: board esp32-devkitc has no romfs")


def test_the_s3_romfs_board_gets_past_the_romfs_and_heap_checks(tmp_path):
    p = ppmid("deploy", "--romfs", "--dry-run", "--port", str(tmp_path / "ttyUSB0"), "--board",
              "esp32s3-devkitc-1-n8r8-romfs", "--build-dir", str(tmp_path / "build"))
    assert p.returncode == 0, p.stderr
    assert ":/.deploy-new/romfs-image/" in p.stdout


def _esp32_image(tmp_path):
    """An ESP32 app image's first bytes (magic 0xE9, chip id 0 at byte 12), as esptool reads them."""
    head = bytes([0xE9, 3, 2, 0x20]) + bytes(8) + (0).to_bytes(2, "little")
    path = tmp_path / "firmware.bin"
    path.write_bytes(head + bytes(1024 - len(head)))
    return str(path)


def test_flash_with_romfs_writes_the_image_then_deploys_into_the_partition(tmp_path):
    firmware = _esp32_image(tmp_path)
    port = str(tmp_path / "ttyUSB0")
    p = ppmid("flash", "--romfs", "--erase-all", "--dry-run", "--port", port, "--board", "esp32-devkitc-romfs",
              "--firmware", firmware)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    erase = [i for i, l in enumerate(lines) if "erase-flash" in l or "erase_flash" in l]
    write = [i for i, l in enumerate(lines) if ("write-flash 0x1000 " in l or "write_flash 0x1000 " in l)
             and l.endswith(firmware)]
    romfs = [i for i, l in enumerate(lines) if "into the romfs partition" in l]
    assert erase and write and romfs and erase[0] < write[0] < romfs[0], p.stdout
    # without --romfs the deploy after it would be refused for the heap: refused before esptool
    p = ppmid("flash", "--dry-run", "--port", port, "--board", "esp32-devkitc-romfs", "--firmware", firmware)
    assert p.returncode == 1 and p.stdout == "" and "`ppmid deploy --romfs`" in p.stderr, p.stderr
    # a stock-image board has no partition: refused before esptool, naming the code
    p = ppmid("flash", "--romfs", "--dry-run", "--port", port, "--board", "esp32-devkitc", "--firmware", firmware)
    assert p.returncode == 1 and p.stdout == "" and p.stderr.startswith("ppmid: E_DEPLOY_NO_ROMFS: "), p.stderr
    p = ppmid("flash", "--romfs", "--scripts-only", "--dry-run", "--port", port, "--board", "esp32-devkitc-romfs",
              "--firmware", firmware)
    assert p.returncode == 1 and p.stderr.startswith("ppmid: E_DEPLOY: --romfs and --scripts-only"), p.stderr
    # --no-deploy writes the image alone (no heap or partition question asked)
    p = ppmid("flash", "--no-deploy", "--dry-run", "--port", port, "--board", "esp32-devkitc-romfs",
              "--firmware", firmware)
    assert p.returncode == 0 and "write-flash 0x1000 " in p.stdout and "mpremote" not in p.stdout, p.stdout
