"""`ppmid deploy --romfs` (host_tools/deploy_romfs.py): the package as a ROMFS image in the
emulated board's romfs partition, the scripts on the flash, the flash's /ppmid removed; the
app boots from /rom and relays; the refusals (no partition, an image too large, a heap too
small even from ROMFS) with their codes and figures, before anything is written; a write
cut before its header leaves no image a boot mounts."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from host_tools import boards, deploy, deploy_romfs
from host_tools import emulate as E
from host_tools import mqtt_tools as mt
from host_tools import update as U
from host_tools.deploy import DeployError
from host_tools.emuboard import EmulatedBoard
from tests.conftest import FIRMWARE_TESTS

sys.path.insert(0, FIRMWARE_TESTS)
import update_vectors as V  # noqa: E402

SETTINGS = {"limits": {"rate_per_s": 50, "burst": 50, "response_timeout_s": 15},
            "update": {"public_key": V.PUBLIC, "chunk": 2048}}


def ppmid(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.cli"] + list(args), capture_output=True, text=True,
                          cwd=boards.CHECKOUT, timeout=300)


def partition(b):
    with open(os.path.join(b.state_dir, "romfs.bin"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def romfs_gateway(tmp_path_factory, deployed_flash):
    """A board given a plain deploy (a copy of the session's deployed board), then a ROMFS
    one (what it showed: the build dir, the files, the console's ready banner), then the
    same board (its flash and partition kept) in the whole product, with an update key."""
    from tests.conftest import _copy_partitions
    tmp = tmp_path_factory.mktemp("romfs-gw")
    state, build = tmp / "gw", str(tmp / "build")
    _copy_partitions(deployed_flash[0], state)
    with EmulatedBoard(state) as b:
        b.wait_ready(60, since=0)  # a plain deploy first: /ppmid on the flash, which '' puts before /rom
        assert "ppmid" in b.exec("import os; print(os.listdir('/'))")
        mark = b.mark()
        files = deploy_romfs.deploy_romfs(b.repl, "emulated", build_dir=build)
        b.wait_ready(60, since=mark)
        out = b.exec("import sys, os, ppmid.app; print(ppmid.app.__file__); print(sorted(os.listdir('/')))")
        with open(os.path.join(b.state_dir, "romfs.bin"), "rb") as f:
            part = f.read()
    with E.Emulation(state, deploy=False, log=None, overrides=SETTINGS) as emu:
        yield {"build": build, "files": files, "exec": out, "partition": part, "emu": emu}


def test_romfs_deploy_over_a_plain_one_boots_from_rom_and_relays(romfs_gateway):
    g = romfs_gateway
    app_file, listing = g["exec"].strip().splitlines()
    assert app_file == "/rom/ppmid/app.mpy"  # the image's bytecode, not a flash copy
    assert "'ppmid'" not in listing and "'.romfs-new.img'" not in listing, listing
    assert "'main.py'" in listing and "'boot.py'" in listing and "'install.mpy'" in listing
    # the partition holds exactly the image built from the same .mpy set, erased after it
    with open(os.path.join(g["build"], deploy_romfs.IMAGE_NAME), "rb") as f:
        image = f.read()
    part = g["partition"]
    assert part[:len(image)] == image and part[len(image):] == b"\xff" * (len(part) - len(image))
    assert image == deploy_romfs.romfs_image(g["build"])  # mpremote's writer, from build/ppmid
    assert sum(1 for f in g["files"] if f.startswith("ppmid/")) > 100
    emu = g["emu"]
    lines = E.lines_from(E.renumbered_commands(3), interval_ms=200, prefix="romfs")
    rep = emu.replay(lines)
    assert rep["lost_count"] == 0 and rep["responses"] == 3, rep
    assert rep["delivered_to_ch"] == 3


def test_an_application_set_update_is_refused_naming_the_routes(romfs_gateway, tmp_path):
    emu = romfs_gateway["emu"]
    key = tmp_path / "operator.pem"
    key.write_text(V.PRIVATE_PEM)
    out = str(tmp_path / "rel")
    U.release("emulated", str(key), out, "0.2.0")
    s = U.UpdateSender(emu.broker_dir, emu.gateway, U.Release(out))
    try:
        st = s.run(120)
    finally:
        s.close()
    assert st["state"] == "refused" and st["error"]["code"] == "E_UPDATE_ROMFS", st
    msg = st["error"]["message"]
    assert "ROMFS image" in msg and "ppmid deploy --romfs" in msg and "image update" in msg
    assert s.chunks_sent == 0  # refused at the offer: nothing downloaded
    # the ROMFS set runs on, and relays
    assert emu.board.exec("import ppmid.update.service as s; print(s.__file__)").strip() == \
        "/rom/ppmid/update/service.mpy"
    emu.board.reset()
    emu.board.wait_ready(60)
    emu.wait_online(60)
    (_, gbcs), = E.renumbered_commands(1)
    cmd = mt.Commander(emu.broker_dir, emu.gateway, key=emu.key)
    try:
        cmd.send("after-refusal", gbcs)
        assert cmd.wait("after-refusal", timeout=60)[-1]["status"] == "response"
    finally:
        cmd.close()


@pytest.mark.usefixtures("tmpdir_in_tmp_path")  # the --dry-run's build folder
def test_a_board_definition_without_a_partition_is_refused_before_the_port(tmp_path):
    port = str(tmp_path / "ttyUSB0")  # no such port: the refusal comes first
    p = ppmid("deploy", "--romfs", "--port", port, "--board", "esp32s3-devkitc-1-n8r8")
    assert p.returncode == 1 and p.stdout == ""
    err = p.stderr.strip()
    assert err.startswith("ppmid: E_DEPLOY_NO_ROMFS: board esp32s3-devkitc-1-n8r8 has no romfs partition"), err
    assert "MICROPY_VFS_ROM" in err and "make image BOARD=esp32s3-devkitc-1-n8r8" in err
    assert len(err.splitlines()) == 1
    p = ppmid("deploy", "--romfs", "--scripts-only", "--port", port, "--board", "emulated")
    assert p.returncode == 1 and p.stderr.startswith("ppmid: E_DEPLOY: --romfs and --scripts-only"), p.stderr
    p = ppmid("deploy", "--romfs", "--dry-run", "--port", port, "--board", "emulated")
    assert p.returncode == 0, p.stderr
    assert "fs cp " in p.stdout and "romfs-image/000" in p.stdout and ":/.deploy-new/romfs-image/" in p.stdout


def test_the_heap_bench_keeps_the_romfs_figure_when_it_rewrites_app_heap_json(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(boards.CHECKOUT, "bench"))
    try:
        import bench_heap32
    finally:
        sys.path.pop(0)
    path = tmp_path / "app_heap.json"
    path.write_text('{"peak_4kb_command_bytes": 1, "romfs": {"peak_4kb_command_bytes": 73360, "by": "x"}}')
    monkeypatch.setattr(bench_heap32, "APP_HEAP_JSON", str(path))
    bench_heap32._write_app_heap(2)
    import json
    data = json.loads(path.read_text())
    assert data["peak_4kb_command_bytes"] == 2 and data["romfs"] == {"peak_4kb_command_bytes": 73360, "by": "x"}


def test_a_board_that_answers_without_a_partition_is_refused_and_keeps_its_flash(tmp_path):
    with EmulatedBoard(tmp_path / "b", romfs_bytes=0) as b:  # a stock image: no vfs.rom_ioctl
        b.exec("f = open('/keep.txt', 'w'); f.write('x'); f.close()")
        with pytest.raises(deploy_romfs.NoRomfs, match="answers without a romfs partition") as exc:
            deploy_romfs.deploy_romfs(b.repl, "emulated")
        assert exc.value.code == "E_DEPLOY_NO_ROMFS"
        assert b.exec("import os; print(sorted(os.listdir('/')))").strip() == "['keep.txt']"


def test_an_image_larger_than_the_partition_is_refused_with_the_figures(tmp_path):
    with EmulatedBoard(tmp_path / "b", romfs_bytes=65536) as b:
        with pytest.raises(deploy_romfs.RomfsTooSmall) as exc:
            deploy_romfs.deploy_romfs(b.repl, "emulated")
        assert exc.value.code == "E_DEPLOY_ROMFS_SIZE"
        msg = str(exc.value)
        size = int(msg.split("image is ")[1].split()[0])
        assert size > 65536 and "romfs partition 65536 (as the board reports it)" in msg
        assert "%d bytes over" % (size - 65536) in msg
        assert b.exec("import os; print(os.listdir('/'))").strip() == "[]"  # nothing copied
        assert partition(b) == b"\xff" * 65536


def test_the_heap_need_from_romfs_is_its_own_figure_and_both_refusals_name_the_routes(tmp_path, monkeypatch):
    need, source = deploy.romfs_heap_need()
    with open(deploy.APP_HEAP_JSON) as f:
        assert need == json.load(f)["romfs"]["peak_4kb_command_bytes"] and "frozen32.py" in source
    plain, _ = deploy.app_heap_need()
    assert need < plain
    small = {"chip": "esp32", "heap": "64K"}
    with pytest.raises(DeployError, match=r"the app needs %d bytes at its peak even with its package in a ROMFS "
                                          r"image .*make image BOARD=x" % need):
        deploy_romfs.romfs_heap_fits("x", small)
    assert deploy_romfs.romfs_heap_fits("x", small, force=True, log=lambda m: None) is False
    # the ESP32 DevKitC's 110K: too small for the .mpy files on the flash, enough from ROMFS;
    # the plain refusal names the ROMFS route and its figure
    devkitc = boards.load_board("esp32-devkitc")
    assert deploy_romfs.romfs_heap_fits("esp32-devkitc", devkitc) is True
    with pytest.raises(DeployError, match=r"ppmid deploy --romfs.*%d bytes" % need):
        deploy.heap_fits("esp32-devkitc", devkitc)
    path = tmp_path / "app_heap.json"
    path.write_text('{"peak_4kb_command_bytes": 1}')
    monkeypatch.setattr(deploy, "APP_HEAP_JSON", str(path))
    with pytest.raises(DeployError, match="cannot read the app's heap need from ROMFS"):
        deploy_romfs.romfs_heap_fits("x", small)


def test_the_romfs_need_is_written_by_the_run_that_measures_it(tmp_path):
    # review_w10-9: frozen32.py writes boards/app_heap.json `romfs` from its ROMFS row (the
    # plain figure beside it kept); a skipped run writes nothing; the checked-in entry names
    # that writer (the entry it writes names the row too)
    sys.path.insert(0, os.path.join(boards.CHECKOUT, "bench"))
    sys.path.insert(0, os.path.join(boards.CHECKOUT, "bench", "heap32"))
    try:
        from heap32 import frozen32
    finally:
        del sys.path[:2]
    with open(deploy.APP_HEAP_JSON) as f:
        checked_in = json.load(f)
    assert checked_in["romfs"]["by"] == "bench/heap32/frozen32.py"
    path = tmp_path / "app_heap.json"
    path.write_text(json.dumps(checked_in))
    rows = [{"name": frozen32.PEAK_ROW + "mpy", "value": 1}, {"name": frozen32.ROMFS_NEED_ROW, "value": 70001}]
    assert frozen32.write_romfs_need(rows, str(path), today="2027-01-02") == 70001
    got = json.loads(path.read_text())
    assert got["romfs"]["peak_4kb_command_bytes"] == 70001 and got["romfs"]["measured"] == "2027-01-02"
    assert got["romfs"]["row"] == frozen32.ROMFS_NEED_ROW and got["romfs"]["by"] == "bench/heap32/frozen32.py"
    assert {k: v for k, v in got.items() if k != "romfs"} == {k: v for k, v in checked_in.items() if k != "romfs"}
    assert deploy.romfs_heap_need(str(path))[0] == 70001
    before = path.read_text()
    skipped = [{"name": "heap32 frozen", "skipped": "MICROPY_DIR is not set"}]
    assert frozen32.write_romfs_need(skipped, str(path)) is None
    assert path.read_text() == before


def _stage_chunks(b, tmp_path, image):
    # the image's pieces where a deploy stages them (deploy_romfs step 3)
    d = str(tmp_path / "build")
    names = deploy_romfs.image_chunks(d, image)
    boards.mpremote(b.repl, ["fs", "mkdir", ":/.deploy-new", "+", "fs", "mkdir", ":/.deploy-new/romfs-image",
                             "+", "fs", "cp"] + [os.path.join(d, n) for n in names] + [":/.deploy-new/romfs-image/"])
    return names


def _write(b, image, names):
    lines = deploy_romfs._call(b.repl, "_rom_write", "/.deploy-new/romfs-image", len(names), deploy_romfs.CHUNK,
                               len(image), what="write")
    return lines, deploy_romfs._answer(lines, "@@WRITTEN", "write")


def test_an_image_cut_before_its_header_is_not_mounted(tmp_path):
    # steps 1-3 of the deploy, then a reset instead of the install and the header
    build = str(tmp_path / "build")
    deploy.build("emulated", build_dir=build)
    image = deploy_romfs.romfs_image(build)
    with EmulatedBoard(tmp_path / "b") as b:
        names = _stage_chunks(b, tmp_path, image)
        lines, (head, fresh, digest) = _write(b, image, names)
        assert digest == hashlib.sha256(image[int(head):]).hexdigest() and int(fresh) == len(names)
        # a line of progress for every piece: the stall bound sees a slow erase working (review_w10-10)
        assert [fields[1] for fields in lines if fields[0] == "@@P" and len(fields) == 3] == \
            [str(i) for i in range(len(names))]
        part = partition(b)
        assert part[:int(head)] == b"\xff" * int(head) and part[int(head):len(image)] == image[int(head):]
        mark = b.mark()
        b.reset()
        b.wait_for(r"MicroPython", since=mark)
        assert b.exec("import sys; print(sys.path)").strip() == "['', '.frozen', '/lib']"
        # written again (a resumed deploy): only the header's piece, the others are held already
        _, (head, fresh, digest) = _write(b, image, names)
        assert fresh == "1" and digest == hashlib.sha256(image[int(head):]).hexdigest()
        # a piece spoilt (bits cleared, as a cut write leaves them) is erased and written again
        with open(os.path.join(b.state_dir, "romfs.bin"), "r+b") as f:
            f.seek(3 * deploy_romfs.CHUNK + 100)
            f.write(b"\0" * 8)
        mark = b.mark()
        b.reset()
        b.wait_for(r"MicroPython", since=mark)
        _, (head, fresh, digest) = _write(b, image, names)
        assert fresh == "2" and digest == hashlib.sha256(image[int(head):]).hexdigest()
        # the header written: the next boot mounts it
        lines = deploy_romfs._call(b.repl, "_rom_seal", image[:int(head)], len(image), what="seal")
        assert deploy_romfs._answer(lines, "@@SEALED", "seal") == [hashlib.sha256(image).hexdigest()]
        mark = b.mark()
        b.reset()
        b.wait_for(r"MicroPython", since=mark)
        assert "/rom/ppmid/errors.mpy" in b.exec("import ppmid.errors as e; print(e.__file__)")


PARTITION_STAND_IN = """
import sys
class Partition:
    # what an ESP32's rom_ioctl(2, 0) hands out (ports/esp32/esp32_partition.c): a block
    # device of 4 KB blocks; an extended write (4 arguments) does not erase, NOR flash only
    # clears bits; ioctl(6, block) erases
    def __init__(self, n):
        self.mem = bytearray(b'\\xff' * n)
        self.erased = 0
    def ioctl(self, op, arg):
        if op == 4:
            return len(self.mem) // 4096
        if op == 5:
            return 4096
        if op == 6:
            self.check(arg * 4096, 4096)
            self.mem[arg * 4096:(arg + 1) * 4096] = b'\\xff' * 4096
            self.erased += 1
            return 0
    def check(self, a, n):
        if a + n > len(self.mem):  # esp_partition_* refuse it; check_esp_err raises
            raise OSError(22)
    def readblocks(self, block, buf, off=0):
        a = block * 4096 + off
        buf[:] = self.mem[a:a + len(buf)]
    def writeblocks(self, block, buf, off):
        a = block * 4096 + off
        self.check(a, len(buf))
        old = self.mem[a:a + len(buf)]
        self.mem[a:a + len(buf)] = bytes([x & y for x, y in zip(old, buf)])
class Vfs:
    pass
part = Partition(%d)
vfs = Vfs()
vfs.rom_ioctl = lambda op, *a: 1 if op == 1 else (part if op == 2 and a == (0,) else -22)
vfs.umount = lambda path: None
sys.modules['vfs'] = vfs
"""


def test_the_writer_speaks_an_esp32_partition_too(tmp_path):
    # romfs_write.py against a stand-in of the ESP32 port's Partition object, under the
    # real MicroPython: erased by blocks, written with extended writes, the header last
    build = str(tmp_path / "build")
    deploy.build("emulated", build_dir=build)
    image = deploy_romfs.romfs_image(build)
    names = deploy_romfs.image_chunks(build, image)
    chunks = os.path.join(build, deploy_romfs.CHUNKS)
    from host_tools import board_scripts
    script = tmp_path / "w.py"
    script.write_text(PARTITION_STAND_IN % 262144 + board_scripts.source("romfs_write.py") + """
_rom_info()
_rom_write(%r, %d, %d, %d)
print('@@HEAD', bytes(part.mem[:4]).hex(), part.erased)
part.erased = 0
_rom_write(%r, %d, %d, %d)
print('@@AGAIN', part.erased)
_rom_seal(%r, %d)
print('@@TAIL', bytes(part.mem[%d:%d + 8]).hex())
""" % (chunks, len(names), deploy_romfs.CHUNK, len(image), chunks, len(names), deploy_romfs.CHUNK, len(image),
       image[:4], len(image), len(image), len(image)))
    p = subprocess.run([boards.micropython_binary(), str(script)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    got = {}
    for line in p.stdout.splitlines():
        if line.startswith("@@") and not line.startswith("@@P "):
            got.setdefault(line.split()[0], []).append(line.split()[1:])
    assert got["@@ROM"] == [["262144"]]
    assert got["@@WRITTEN"] == [["4", str(len(names)), hashlib.sha256(image[4:]).hexdigest()],
                                ["4", "1", hashlib.sha256(image[4:]).hexdigest()]]
    # before the seal: no header (erased), and only the blocks the image needs were erased;
    # written again, only the header's piece (two blocks) is erased
    assert got["@@HEAD"] == [["ffffffff", str((len(image) + 4095) // 4096)]]
    assert got["@@AGAIN"] == [[str(deploy_romfs.CHUNK // 4096)]]
    assert got["@@SEALED"] == [[hashlib.sha256(image).hexdigest()]]
    assert got["@@TAIL"] == [["ff" * 8]]
    # a partition too small: the write past its end is refused by the device, said, not a crash
    script.write_text(PARTITION_STAND_IN % 4096 + board_scripts.source("romfs_write.py") +
                      "\n_rom_write(%r, %d, %d, %d)\n" % (chunks, len(names), deploy_romfs.CHUNK, len(image)))
    p = subprocess.run([boards.micropython_binary(), str(script)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert [line.split()[:2] for line in p.stdout.splitlines() if line.startswith("@@")] == [["@@ROMERR", "22"]]


def test_the_board_scripts_answers_become_coded_errors():
    with pytest.raises(deploy_romfs.RomfsWriteFailed, match=r"write: the partition refused it "
                                                             r"\(E_DEPLOY_ROMFS_WRITE: 22 OSError\(22,\)\)") as exc:
        deploy_romfs._answer([["@@ROMERR", "22", "OSError(22,)"]], "@@WRITTEN", "write")
    assert exc.value.code == "E_DEPLOY_ROMFS_WRITE"
    with pytest.raises(deploy_romfs.NoRomfs, match="no longer answers with a romfs partition"):
        deploy_romfs._answer([["@@ROM", "none"]], "@@WRITTEN", "write")
    with pytest.raises(deploy.BoardLost, match="write: no answer"):
        deploy_romfs._answer([], "@@WRITTEN", "write")
    assert deploy_romfs._answer([["@@WRITTEN", "4", "ab"]], "@@WRITTEN", "write") == ["4", "ab"]


# make soak: its two halves run in make test, the deploy's resume through the watchdog's
# resets in tests/test_deploy.py test_watchdog_reset_mid_copy_resumes_until_installed (the
# board lost mid-copy, what landed kept, the next run installs) and the ROMFS pieces kept
# across a reset in test_an_image_cut_before_its_header_is_not_mounted above (only the
# header's piece written again, a spoilt piece written again, then sealed)
@pytest.mark.slow
def test_a_romfs_deploy_onto_a_running_gateway_resumes_through_its_watchdog(tmp_path, monkeypatch):
    # review_w10-4, scaled as tests/test_deploy.py's resume test is: the app's watchdog capped
    # at 2 s, the console at 921,600 baud (~250 KB of image: several windows); the image goes
    # in staged pieces and the partition in pieces, what landed kept across the resets
    monkeypatch.setattr(deploy, "COPY_STALL_S", 2)
    # a board script silent for three times the 2 s watchdog has lost its board
    # (test_deploy.py's quick_stall): STALL_S's 15 s made an install the watchdog cut cost
    # 15 s of waiting
    monkeypatch.setattr(deploy, "STALL_S", 6)
    with EmulatedBoard(tmp_path / "board", wdt_max_ms=2000, repl_baud=921600) as b:
        b.deploy()  # the app runs and arms its (capped) watchdog
        said = []
        mark = b.mark()
        deploy_romfs.deploy_romfs(b.repl, "emulated", log=said.append, reset=False)
        assert b"watchdog expired" in b.console_bytes()[mark:], "the watchdog never cut the deploy: it shows nothing"
        assert any(s.startswith("board lost (") for s in said), said
        assert said[-1].startswith("romfs partition holds the image"), said
        mark = b.mark()
        deploy.soft_reset(b.repl)
        b.wait_ready(60, since=mark)
        out = _look(b, "import ppmid.app, os; print(ppmid.app.__file__, sorted(os.listdir('/')))")
        assert "/rom/ppmid/app.mpy" in out and "'.deploy-new'" not in out and "'ppmid'" not in out, out


def _look(b, code, tries=5):
    # the app that now runs arms the 2 s watchdog too: look again if it resets under us
    for _ in range(tries - 1):
        mark = b.mark()
        try:
            return b.exec(code)
        except (DeployError, boards.BoardError):
            b.wait_ready(60, since=mark)
    return b.exec(code)


def test_a_plain_deploy_after_a_romfs_one_retires_its_image_so_scripts_only_never_boots_it(tmp_path):
    # review_w10-5 and -11: --romfs (A), a plain deploy (B), --scripts-only (C): C's scripts
    # must not find A's package in /rom; an image file a cut --romfs run left goes with B
    from tests.conftest import changed_firmware_copy
    fw_b = changed_firmware_copy(tmp_path / "fw_b", "7")
    fw_c = changed_firmware_copy(tmp_path / "fw_c", "8")
    q = "import ppmid, ppmid.app; print(ppmid.VERSION, ppmid.app.__file__)"
    with EmulatedBoard(tmp_path / "board") as b:
        deploy_romfs.deploy_romfs(b.repl, "emulated")
        assert b.exec(q).strip().endswith("/rom/ppmid/app.mpy")
        assert partition(b)[:3] == b"\xd2\xcd\x31"
        b.exec("f = open('/.romfs-new.img', 'wb'); f.write(bytes(3000)); f.close()")
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw_b), log=said.append)
        assert b.exec(q).strip() == "7.%s ppmid/app.mpy" % _version()
        assert partition(b)[:4] == b"\0\0\0\0", "the image kept its header"
        assert "'.romfs-new.img'" not in b.exec("import os; print(os.listdir('/'))")
        assert any("lost its header" in s for s in said) and any("left on the flash" in s for s in said), said
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw_c), scripts_only=True)
        out = b.exec("import sys\ntry:\n import ppmid\n print(ppmid.__file__)\nexcept ImportError as e:\n"
                     " print('no package', sys.path)")
        assert out.startswith("no package ['', '.frozen', '/lib']"), out
        # a board with nothing in its partition: nothing said, nothing written
        said = []
        deploy.deploy(b.repl, "emulated", firmware_dir=str(fw_b), log=said.append)
        assert not any("lost its header" in s for s in said) and partition(b)[:4] == b"\0\0\0\0"


def _version():
    with open(os.path.join(boards.FIRMWARE_DIR, "ppmid", "__init__.py")) as f:
        return f.read().split('VERSION = "', 1)[1].split('"', 1)[0]


def test_a_partition_that_reads_back_another_image_after_the_seal_is_refused_and_not_mounted(tmp_path, monkeypatch):
    # review r1-1: the one check that catches a partition whose sealed image is not the build
    # (a write the flash did not take) crashed with NameError. Stood in for by a header the
    # partition takes with its last byte changed: the read-back is the board's own
    real_seal = deploy_romfs._seal
    sent = []

    def seal_a_changed_header(port, arch, definition, head, n, attempts, log):
        spoilt = head[:-1] + bytes([head[-1] ^ 0x01])
        sent.append(spoilt)
        return real_seal(port, arch, definition, spoilt, n, attempts, log)

    monkeypatch.setattr(deploy_romfs, "_seal", seal_a_changed_header)
    with EmulatedBoard(tmp_path / "b") as b:
        with pytest.raises(deploy_romfs.RomfsWriteFailed) as exc:
            deploy_romfs.deploy_romfs(b.repl, "emulated", reset=False)
        assert exc.value.code == "E_DEPLOY_ROMFS_WRITE"
        msg = str(exc.value)
        assert msg.startswith("seal the image in %s's romfs partition: the partition's image read back (sha256 "
                              % b.repl), msg
        assert "is not the built one" in msg and "its header is zeroed again, so no boot mounts it" in msg, msg
        assert msg.endswith("run the same deploy again"), msg
        assert len(sent) == 1 and partition(b)[:4] == b"\0\0\0\0", "the spoilt image kept its header"
        mark = b.mark()
        b.reset()
        b.wait_for(r"MicroPython", since=mark)
        assert b.exec("import sys; print(sys.path)").strip() == "['', '.frozen', '/lib']"


def test_a_mismatch_whose_header_cannot_be_zeroed_says_the_next_boot_may_mount_it(monkeypatch):
    def refused(port, arch, definition, attempts, log):
        raise DeployError("forget the ROMFS image on p: the partition refused the write (E_DEPLOY_ROMFS_WRITE: 5)")

    monkeypatch.setattr(deploy, "forget_romfs_image", refused)
    exc = deploy_romfs._not_the_image("p", "xtensawin", {}, "ab" * 32, "cd" * 32, 1, None)
    assert isinstance(exc, deploy_romfs.RomfsWriteFailed) and exc.code == "E_DEPLOY_ROMFS_WRITE"
    assert str(exc) == ("seal the image in p's romfs partition: the partition's image read back (sha256 "
                        "abababababababab) is not the built one (cdcdcdcdcdcdcdcd) (E_DEPLOY_ROMFS_WRITE); zeroing its "
                        "header failed too (forget the ROMFS image on p: the partition refused the write "
                        "(E_DEPLOY_ROMFS_WRITE: 5)), so the next boot may mount it; run the same deploy again")
