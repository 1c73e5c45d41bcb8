"""`ppmid deploy --romfs`: the `ppmid` package's .mpy files in the board's romfs partition,
where MicroPython runs their bytecode in place (docs/memory.md "ROMFS"), and the rest on
the flash filesystem as a plain deploy puts it (docs/platform.md `ppmid deploy --romfs`).

1. Build the same .mpy set as `ppmid deploy` (host_tools.deploy.build) and make a ROMFS
   image of the `ppmid` package with mpremote's own writer (`mpremote.romfs.make_romfs`):
   the image holds /ppmid/..., mounted at /rom, so `import ppmid` finds /rom/ppmid.
   Refused before the board is touched: a board definition without a romfs partition
   (board.json `romfs_bytes`), an image larger than it, a real board whose heap is below
   the app's need from ROMFS (boards/app_heap.json `romfs`).
2. Probe the board as a deploy does (a MicroPython REPL of the build's architecture, the
   board's chip), then ask it for its partition (`vfs.rom_ioctl`): refused when it has none
   (a stock image: no MICROPY_VFS_ROM) or a smaller one than the image.
3. Copy the image to the flash (/.romfs-new.img, checked by its SHA-256), erase the
   partition and write all of it but its first bytes (board_scripts/romfs_write.py), and
   read that part back (SHA-256).
4. Install boot.py, main.py, install.mpy and board.json as a deploy with --scripts-only
   does (staged, verified, renamed by firmware/install.py, finished at boot when cut): the
   install removes the flash's /ppmid, which would otherwise be imported before /rom
   (sys.path is ['', '.frozen', '/rom', '/rom/lib', '/lib'] and '' is the flash root).
5. Write the image's first bytes (its ROMFS header), read the whole image back and compare
   its SHA-256 with the built one, remove /.romfs-new.img, soft-reset.

A cut anywhere leaves no mix of two builds: until step 4 the flash holds the old set whole
(the old package on the flash shadows /rom; an old ROMFS image lost its header in step 3,
so no boot mounts it); after step 4 the new boot.py and main.py find no package until step
5 writes the header, so the app does not start (main.py's import fails, the board stays at
the REPL or reboots) until the same deploy is run again, which writes it all again.
"""
import contextlib
import hashlib
import io
import os
import shlex
import shutil
import tempfile

from host_tools import board_scripts, boards, deploy
from host_tools.boards import FIRMWARE_DIR, tool
from host_tools.deploy import DeployError

IMAGE_ON_FLASH = "/.romfs-new.img"  # the image on its way into the partition
IMAGE_NAME = "ppmid.romfs"          # in the build dir


class NoRomfs(DeployError):
    """The board (its definition, or the MicroPython it runs) has no romfs partition."""
    code = "E_DEPLOY_NO_ROMFS"


class RomfsTooSmall(DeployError):
    """The package's ROMFS image does not fit the board's romfs partition."""
    code = "E_DEPLOY_ROMFS_SIZE"


class RomfsWriteFailed(DeployError):
    """The partition refused a write, or what was read back is not the image."""
    code = "E_DEPLOY_ROMFS_WRITE"


def romfs_heap_fits(board, definition, force=False, log=None):
    """DeployError when `board`'s Python heap cannot hold the app even with its package in
    a ROMFS image (force: a warning instead); emulated boards are not compared."""
    if definition.get("chip") == "unix":
        return True
    have = boards.heap_bytes(definition.get("heap", "0"))
    need, source = deploy.romfs_heap_need()
    if have >= need:
        return True
    message = ("board %s has a %d-byte Python heap (board.json heap %s), the app needs %d bytes at its peak even "
               "with its package in a ROMFS image (%s); freeze the app into the MicroPython image instead "
               "(`make image BOARD=%s`, flash it, then `ppmid deploy --scripts-only`)"
               % (board, have, definition.get("heap"), need, source, board))
    if not force:
        raise DeployError(message + ", or deploy anyway with --force")
    (log or print)("WARNING: " + message + "; deploying anyway (--force)")
    return False


def partition_bytes(board, definition):
    """The romfs partition's size the board definition gives, or NoRomfs."""
    size = definition.get("romfs_bytes") or 0
    if not isinstance(size, int) or size <= 0:
        raise NoRomfs("board %s has no romfs partition (E_DEPLOY_NO_ROMFS: boards/%s/board.json has no romfs_bytes; "
                      "no stock MicroPython ESP32 image has one: it takes an image built with MICROPY_VFS_ROM and a "
                      "partition table with a romfs partition, docs/platform.md \"Boards\"); nothing was copied. "
                      "Deploy the .mpy files to the flash (`ppmid deploy` without --romfs) or freeze the app "
                      "(`make image BOARD=%s`)" % (board, board, board))
    return size


def romfs_image(build_dir, package=deploy.PACKAGE):
    """The ROMFS image (bytes) of build_dir/PACKAGE, made by mpremote's writer: /PACKAGE/..."""
    from mpremote.romfs import make_romfs
    with tempfile.TemporaryDirectory(prefix="ppmid-romfs-") as d:
        shutil.copytree(os.path.join(build_dir, package), os.path.join(d, package))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree it writes
            return make_romfs(d, mpy_cross=False)


def _too_big(board, image, size, where):
    return RomfsTooSmall("the package's ROMFS image is %d bytes, board %s's romfs partition %d (%s): it does not "
                         "fit (E_DEPLOY_ROMFS_SIZE, %d bytes over); nothing was written. A larger partition needs "
                         "another partition table in the board's image" % (len(image), board, size, where,
                                                                            len(image) - size))


def _call(port, function, *args, what, timeout=120):
    out = deploy._exec(port, board_scripts.with_call("romfs_write.py", function, *args), what, timeout=timeout,
                       stall_s=deploy.STALL_S)
    return [line.split() for line in out.splitlines() if line.startswith("@@")]


def _answer(lines, tag, what):
    for fields in lines:
        if fields[0] == tag:
            return fields[1:]
        if fields[0] == "@@ROMERR":
            raise RomfsWriteFailed("%s: the partition refused it (E_DEPLOY_ROMFS_WRITE: %s); run the same deploy "
                                   "again" % (what, " ".join(fields[1:])))
        if fields == ["@@ROM", "none"]:
            raise NoRomfs("%s: the board no longer answers with a romfs partition" % what)
    raise deploy.BoardLost("%s: no answer (%r)" % (what, lines[-3:]))


def deploy_romfs(port, board, firmware_dir=FIRMWARE_DIR, build_dir=None, reset=True, dry_run=False, log=None,
                 force=False, attempts=deploy.ATTEMPTS):
    log = log or (lambda msg: None)
    if attempts < 1:
        raise DeployError("--attempts must be 1 or more (got %d)" % attempts)
    try:
        definition = boards.load_board(board)
    except boards.BoardError as exc:
        raise DeployError(str(exc))
    size = partition_bytes(board, definition)
    romfs_heap_fits(board, definition, force, log)
    arch = deploy.board_arch(definition)
    keep_build = bool(build_dir) or dry_run
    if dry_run and not build_dir:
        build_dir = os.path.join(tempfile.gettempdir(), "ppmid-build-" + board)
    build_dir, files, _ = deploy.build(board, firmware_dir, build_dir, arch)
    try:
        image = romfs_image(build_dir)
        digest = hashlib.sha256(image).hexdigest()
        image_path = os.path.join(build_dir, IMAGE_NAME)
        with open(image_path, "wb") as f:
            f.write(image)
        if len(image) > size:
            raise _too_big(board, image, size, "board.json romfs_bytes")
        scripts = [f for f in files if "/" not in f]
        log("built %d files, the package as a %d-byte ROMFS image (-march=%s, sha256 %s) in %s"
            % (len(files), len(image), arch, digest[:16], build_dir))
        if dry_run:
            mp = shlex.quote(tool("mpremote"))
            print("%s connect %s resume fs cp %s :%s" % (mp, shlex.quote(port), shlex.quote(image_path),
                                                          IMAGE_ON_FLASH))
            print("%s connect %s resume exec <write %s into the romfs partition, its header last; install %s; "
                  "remove /%s>" % (mp, shlex.quote(port), IMAGE_ON_FLASH, ", ".join(scripts), deploy.PACKAGE))
            if reset:
                print("# then Ctrl-C, Ctrl-B, Ctrl-D on %s (soft reset)" % port)
            return files
        deploy.probe(port, arch, definition)
        got = _answer(_call(port, "_rom_info", what="ask %s for its romfs partition" % port), "@@ROM",
                      "ask %s for its romfs partition" % port)
        if got == ["none"]:
            raise NoRomfs("port %s answers without a romfs partition (E_DEPLOY_NO_ROMFS: its MicroPython has no "
                          "vfs.rom_ioctl, or no romfs partition: a stock image); nothing was copied" % port)
        if len(image) > int(got[0]):
            raise _too_big(board, image, int(got[0]), "as the board reports it")
        # 3. the image to the flash, then into the partition but its header
        deploy._run_mpremote([tool("mpremote"), "connect", port, "resume", "fs", "cp", image_path,
                              ":" + IMAGE_ON_FLASH], "copy the image to %s" % port,
                             timeout=60 + 2 * len(image) // deploy.COPY_MIN_RATE, stall_s=deploy.COPY_STALL_S,
                             progress=None)
        on_flash = deploy.board_hashes(port, [IMAGE_ON_FLASH.lstrip("/")], "")
        if on_flash.get(IMAGE_ON_FLASH.lstrip("/")) != digest:
            raise deploy.BoardLost("the image copied to %s%s is not the built one (sha256 %s)"
                                   % (port, IMAGE_ON_FLASH, on_flash))
        what = "write the image into %s's romfs partition" % port
        head, written = _answer(_call(port, "_rom_write", IMAGE_ON_FLASH, len(image), what=what), "@@WRITTEN", what)
        head = int(head)
        if written != hashlib.sha256(image[head:]).hexdigest():
            raise RomfsWriteFailed("%s: what was read back differs from the image (E_DEPLOY_ROMFS_WRITE); the "
                                   "header is not written, so no boot mounts it; run the same deploy again" % what)
        log("romfs partition: %d of %d bytes written and read back" % (len(image) - head, len(image)))
        # 4. the flash side, /ppmid removed (install.py: staged, verified, finished at boot)
        local = {f: deploy.sha256_file(os.path.join(build_dir, f)) for f in scripts}
        deploy._stage_and_install(port, arch, definition, build_dir, scripts, local, attempts, log)
        log("installed %s on the flash, /%s removed from it" % (", ".join(scripts), deploy.PACKAGE))
        # 5. the header: from now on the board mounts the image
        what = "write the image's header into %s's romfs partition" % port
        (sealed,) = _answer(_call(port, "_rom_seal", IMAGE_ON_FLASH, head, len(image), what=what), "@@SEALED", what)
        if sealed != digest:
            raise RomfsWriteFailed("%s: the partition's image read back (sha256 %s) is not the built one (%s) "
                                   "(E_DEPLOY_ROMFS_WRITE); run the same deploy again" % (what, sealed[:16],
                                                                                          digest[:16]))
        deploy._exec(port, "import os\nos.remove(%r)\n" % IMAGE_ON_FLASH, "remove %s on %s" % (IMAGE_ON_FLASH, port))
        log("romfs partition holds the image (%d bytes, sha256 %s read back)" % (len(image), digest[:16]))
        if reset:
            deploy.soft_reset(port)
            log("soft reset")
        return files
    finally:
        if not keep_build:
            shutil.rmtree(build_dir, ignore_errors=True)
