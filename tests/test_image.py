"""`make image BOARD=NAME`: a MicroPython image with the app frozen in. No ESP-IDF or
MicroPython source tree here, so what is checked is that it says exactly what is missing,
one sentence each, and exits non-zero, and what it would run when all is there."""
import os
import subprocess
import sys

from host_tools import boards, image

ROOT = boards.ROOT


def make_image(board, env):
    base = {k: v for k, v in os.environ.items() if k not in ("MICROPY_DIR", "IDF_PATH")}
    base["PATH"] = "/usr/bin:/bin"  # no idf.py
    base.update(env)
    return subprocess.run(["make", "--no-print-directory", "image", "BOARD=" + board, "PY=" + sys.executable],
                          capture_output=True, text=True, cwd=ROOT, env=base, timeout=60)


def test_make_image_names_each_missing_thing():
    p = make_image("esp32-devkitc", {})
    assert p.returncode != 0
    lines = [l for l in p.stderr.splitlines() if l.startswith("ppmid: E_IMAGE: make image: ")]
    assert len(lines) == 3, p.stderr
    assert "MICROPY_DIR is not set" in lines[0]
    assert "IDF_PATH is not set" in lines[1]
    assert "idf.py is not on PATH" in lines[2]


def test_make_image_says_what_is_wrong_with_what_is_set(tmp_path):
    p = make_image("esp32s3-devkitc-1-n8r8", {"MICROPY_DIR": str(tmp_path), "IDF_PATH": str(tmp_path / "idf")})
    assert p.returncode != 0
    assert "MICROPY_DIR=%s is not a MicroPython source tree" % tmp_path in p.stderr
    assert "IDF_PATH=%s is not a directory" % (tmp_path / "idf") in p.stderr
    p = make_image("emulated", {})
    assert p.returncode != 0 and "no MicroPython ESP32 image" in p.stderr
    p = make_image("", {})
    assert p.returncode != 0 and "ppmid: E_BOARD: make image: unknown board ''" in p.stderr, p.stderr
    # every line the errors' own, with its code (review r5-9: `ppmid: make image: ...`, none)
    p = make_image("nosuch", {})
    lines = [l for l in p.stderr.splitlines() if l.startswith("ppmid: ")]
    assert p.returncode != 0 and lines == ["ppmid: E_BOARD: make image: unknown board 'nosuch' (known boards: %s) "
                                           "(make image BOARD=NAME)." % ", ".join(boards.board_names())], p.stderr


def test_with_everything_there_it_runs_micropythons_build_with_the_manifest(tmp_path):
    top = tmp_path / "micropython"
    (top / "ports" / "esp32").mkdir(parents=True)
    (top / "ports" / "esp32" / "Makefile").write_text("")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "idf.py").write_text("#!/bin/sh\n")
    (bindir / "idf.py").chmod(0o755)
    env = {"MICROPY_DIR": str(top), "IDF_PATH": str(tmp_path), "PATH": str(bindir)}
    assert image.missing("esp32s3-devkitc-1-n8r8", env) == []
    cmds, out = image.build_commands("esp32s3-devkitc-1-n8r8", env)
    build = cmds[-1]
    assert build[:3] == ["make", "-C", str(top / "ports" / "esp32")]
    assert "BOARD=ESP32_GENERIC_S3" in build and "BOARD_VARIANT=SPIRAM_OCT" in build
    assert "FROZEN_MANIFEST=" + os.path.join(boards.BOARDS_DIR, "esp32s3-devkitc-1-n8r8", "manifest.py") in build
    assert out.endswith("ports/esp32/build-ppmid-esp32s3-devkitc-1-n8r8/firmware.bin")
    cmds, _ = image.build_commands("esp32-devkitc", env)
    assert not any(a.startswith("BOARD_VARIANT") for a in cmds[-1])
