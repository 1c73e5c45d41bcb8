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
3. Stage the image on the flash as a plain deploy stages files (/.deploy-new, resumable:
   CHUNK-byte pieces /.deploy-new/romfs-image/NNN, each checked by its SHA-256, with the
   scripts of step 4), then erase the partition's first chunk and write all of the image but
   its first bytes (board_scripts/romfs_write.py): a chunk the partition already holds is not
   written again, so a watchdog reset in the middle costs the chunk it cut; read that part
   back (SHA-256). A board that resets (the running app's watchdog keeps running after the
   probe's Ctrl-C) is probed again and the deploy goes on from what is staged and written,
   up to `attempts` rounds, as a plain deploy does (review_w10-4).
4. Install boot.py, main.py, install.mpy and board.json as a deploy with --scripts-only
   does (renamed by firmware/install.py, finished at boot when cut): the install removes
   the flash's /ppmid, which would otherwise be imported before /rom (sys.path is
   ['', '.frozen', '/rom', '/rom/lib', '/lib'] and '' is the flash root), and the staging
   dir with the image's chunks.
5. Write the image's first bytes (its ROMFS header, sent with the call), read the whole
   image back and compare its SHA-256 with the built one (another: the header zeroed again
   and E_DEPLOY_ROMFS_WRITE), soft-reset.
The port is held (ports.PortLock) from before the build to the reset, as a plain deploy
holds it (review_w10-1).

A cut anywhere leaves no mix of two builds: until step 4 the flash holds the old set whole
(the old package on the flash shadows /rom; an old ROMFS image lost its header in step 3,
so no boot mounts it); after step 4 the new boot.py and main.py find no package until step
5 writes the header, so the app does not start (main.py's import fails, the board stays at
the REPL or reboots) until the same deploy is run again, which stages and writes again
what is not there yet.
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
from host_tools.ports import PortLock

IMAGE_NAME = "ppmid.romfs"  # in the build dir
CHUNKS = "romfs-image"     # the image's pieces, in the build dir and staged in deploy.STAGING
# a piece: whole 4 KB erase units (an ESP32's flash sector, the emulated board's), small
# enough that a 115,200-baud copy of one fits well inside the app's 30 s watchdog window
CHUNK = 8192


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


def _seal(port, arch, definition, head, n, attempts, log):
    """The header written and the whole image read back: its SHA-256. A board lost on the
    way (the app's watchdog, still counting after the install) comes back without a header,
    so its main.py finds no package and arms no watchdog: probed again, sealed again."""
    what = "write the image's header into %s's romfs partition" % port
    for attempt in range(1, attempts + 1):
        try:
            return _answer(_call(port, "_rom_seal", head, n, what=what), "@@SEALED", what)[0]
        except deploy.BoardLost as exc:
            if attempt == attempts:
                raise deploy.BoardLost("%s: lost the board %d times (last: %s); the package is installed but not "
                                       "its header, so the board boots without it (at the REPL); run the same "
                                       "deploy again" % (what, attempts, exc))
            log("board lost (%s); attempt %d of %d: probing again" % (str(exc)[-300:], attempt + 1, attempts))
            deploy._reprobe(port, arch, definition, None)


def _not_the_image(port, arch, definition, sealed, digest, attempts, log):
    """RomfsWriteFailed for a sealed partition whose image read back is not the built one
    (a write the flash did not take); its header, just written, is zeroed first, so no boot
    mounts bytecode that is not the build's (the board stays without a package, as a deploy
    cut after its install leaves it)."""
    what = "seal the image in %s's romfs partition" % port
    try:
        deploy.forget_romfs_image(port, arch, definition, attempts, log)
        outcome = "its header is zeroed again, so no boot mounts it"
    except DeployError as exc:
        outcome = "zeroing its header failed too (%s), so the next boot may mount it" % exc
    return RomfsWriteFailed("%s: the partition's image read back (sha256 %s) is not the built one (%s) "
                            "(E_DEPLOY_ROMFS_WRITE); %s; run the same deploy again"
                            % (what, sealed[:16], digest[:16], outcome))


def image_chunks(build_dir, image):
    """Write `image` as build_dir/CHUNKS/NNN pieces of CHUNK bytes; their names, in order."""
    os.makedirs(os.path.join(build_dir, CHUNKS), exist_ok=True)
    names = []
    for i in range(0, len(image), CHUNK):
        name = "%s/%03d" % (CHUNKS, i // CHUNK)
        with open(os.path.join(build_dir, name), "wb") as f:
            f.write(image[i:i + CHUNK])
        names.append(name)
    return names


def deploy_romfs(port, board, firmware_dir=FIRMWARE_DIR, build_dir=None, reset=True, dry_run=False, log=None,
                 force=False, attempts=deploy.ATTEMPTS):
    """Build, stage the image and the scripts, write the partition, install, seal, reset
    (the module's docstring), the port held throughout; a dry run holds none."""
    with PortLock(None if dry_run else port):
        return _deploy_romfs(port, board, firmware_dir, build_dir, reset, dry_run, log, force, attempts)


def _deploy_romfs(port, board, firmware_dir, build_dir, reset, dry_run, log, force, attempts):
    log = log or (lambda msg: None)
    definition = deploy.board_for_deploy(board, attempts)
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
        chunks = image_chunks(build_dir, image)
        scripts = [f for f in files if "/" not in f]
        log("built %d files, the package as a %d-byte ROMFS image in %d pieces (-march=%s, sha256 %s) in %s"
            % (len(files), len(image), len(chunks), arch, digest[:16], build_dir))
        if dry_run:
            mp = shlex.quote(tool("mpremote"))
            for cmd in deploy.copy_commands(port, build_dir, chunks + scripts):
                print(" ".join(shlex.quote(c) for c in cmd))
            print("%s connect %s resume exec <write %s/%s into the romfs partition, its header last; install %s; "
                  "remove /%s>" % (mp, shlex.quote(port), deploy.STAGING, CHUNKS, ", ".join(scripts),
                                   deploy.PACKAGE))
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
        # 3 and 4: staged (resumable), the partition written from the staged chunks but its
        # header, then the flash side installed (/ppmid and the staging dir removed)
        local = {f: deploy.sha256_file(os.path.join(build_dir, f)) for f in chunks + scripts}
        heads = []

        def write_body():
            what = "write the image into %s's romfs partition" % port
            head, fresh, written = _answer(_call(port, "_rom_write", deploy.STAGING + "/" + CHUNKS, len(chunks),
                                                 CHUNK, len(image), what=what), "@@WRITTEN", what)
            head = int(head)
            if written != hashlib.sha256(image[head:]).hexdigest():
                raise RomfsWriteFailed("%s: what was read back differs from the image (E_DEPLOY_ROMFS_WRITE); the "
                                       "header is not written, so no boot mounts it; run the same deploy again"
                                       % what)
            log("romfs partition: %d of %d bytes written and read back (%s of %d pieces written, the rest held "
                "already)" % (len(image) - head, len(image), fresh, len(chunks)))
            heads.append(head)

        deploy._stage_and_install(port, arch, definition, build_dir, chunks + scripts, local, attempts, log,
                                  stage_only=set(chunks), before_install=write_body)
        log("installed %s on the flash, /%s removed from it" % (", ".join(scripts), deploy.PACKAGE))
        # 5. the header: from now on the board mounts the image
        sealed = _seal(port, arch, definition, image[:heads[-1]], len(image), attempts, log)
        if sealed != digest:
            raise _not_the_image(port, arch, definition, sealed, digest, attempts, log)
        log("romfs partition holds the image (%d bytes, sha256 %s read back)" % (len(image), digest[:16]))
        if reset:
            deploy.soft_reset(port)
            log("soft reset")
        return files
    finally:
        if not keep_build:
            shutil.rmtree(build_dir, ignore_errors=True)
