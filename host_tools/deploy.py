"""Compile firmware/ and install it on a board (what `ppmid deploy` runs).

1. Compile: every firmware/ppmid/**.py -> .mpy with mpy-cross for the board's architecture
   (boards/NAME/board.json "mpy_arch"; "native" = the local unix port's, read from its
   sys.implementation._mpy), but those the board's "firmware_exclude" lists (the ESP32
   boards leave out the emulated board's support; their manifests read the same list).
   boot.py and main.py stay .py (MicroPython runs them by name); install.py (the install
   below, which boot.py finishes when a reset cut it short) becomes /install.mpy;
   the board definition goes along as /board.json. A file that does not compile stops the
   deploy before the board is touched.
2. Check the port: it must answer as a MicroPython REPL of the same .mpy architecture.
3. Copy the files whose installed copy differs with `mpremote ... resume fs cp` into a
   staging directory on the board (/.deploy-new), then read back the SHA-256 of each staged
   file and compare. The staging dir is resumable: it names its build (/.deploy-new/.build,
   a hash of every file's name and hash), and a file already staged with the right hash is
   not copied again. A board that resets mid-copy (the app's watchdog, which mpremote's
   Ctrl-C cannot stop, fires 30 s later) is probed again once it is back and the copy goes
   on from there, up to `attempts` times; a staging dir of another build is emptied first.
4. Install (firmware/install.py, run on the board): write a marker in the staging dir (the
   build, the files to rename in order with their hashes, the old package's leftovers),
   rename each staged file over its final name (LittleFS renames are atomic, so a file is
   either the old or the new one, never half-written), delete the leftovers, drop any
   application update (/upd, docs/update.md) but its replay floors, so that the deployed
   set is the one that runs, and remove the staging dir, the marker last. install.mpy is
   renamed first and boot.py second: a reset after that is finished by boot.py at the next
   boot, before anything imports ppmid; this deploy, probing again, finds every file's hash
   right and says so.
5. Retire a ROMFS image an earlier `ppmid deploy --romfs` left in the romfs partition (its
   header zeroed: forget_romfs_image), so no boot imports that older package from /rom.
6. Soft-reset the board (Ctrl-D at the REPL) so it boots the new code.
Before all this, a real board whose Python heap (board.json "heap") is smaller than the
app's need (boards/app_heap.json, the 32-bit gauge's peak, rewritten by bench/bench_heap32.py)
is refused: the .mpy files would be loaded into that heap. Such a board takes the app frozen
into its MicroPython image (`make image BOARD=NAME`, then `ppmid deploy --scripts-only`);
--force deploys anyway, with a warning. The emulated board's heap is a 64-bit figure and is
not compared.
Works the same on a real ESP32 (USB serial port) and on the emulated board's REPL pty.
"""
import concurrent.futures
import hashlib
import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import tempfile
import time

from host_tools import board_scripts, boards
from host_tools.boards import FIRMWARE_DIR, mpy_cross_binary, tool
from host_tools.errors import ToolError
from host_tools.ports import PortLock, check_board_link

STAGING = "/.deploy-new"
SCRIPTS = ("boot.py", "main.py")  # stay source: MicroPython runs them by name
# modules beside them, compiled like the package: install.py, which boot.py imports only
# when an install was cut short (docs/platform.md `ppmid deploy`)
ROOT_MODULES = ("install.py",)
INSTALLER = "install.mpy"
PACKAGE = "ppmid"

# sys.implementation._mpy >> 10 -> mpy-cross -march name (py/persistentcode.h order)
MPY_ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
             "xtensa", "xtensawin", "rv32imc", "rv64imc")
MPY_VERSION = 6
APP_HEAP_JSON = os.path.join(boards.BOARDS_DIR, "app_heap.json")
# -O3: no line-number tables in the bytecode (~4 KB less heap for the app on 32 bits,
# docs/memory.md); tracebacks on the board name functions but not lines. The frozen images
# (boards/*/manifest.py, opt=3) and the heap gauge compile the same way.
MPY_OPTS = ("-O3",)
COPY_MIN_RATE = 2000  # bytes/s: slower than any serial link mpremote drives
PROBE_TIMEOUT_S = 8  # a REPL answers in well under a second; mpremote waits on a silent port
# mpremote can wait forever on a board that reset in the middle of a command (it never sees
# the raw REPL's end of output), so every call during a deploy is cut when it stops making
# progress: a copy when mpremote's progress bar has not moved for COPY_STALL_S (it moves
# every 256 bytes: ~0.1 s at 2,000 B/s), a board script when it prints no `@@` line for STALL_S.
COPY_STALL_S = 10
STALL_S = 15
ATTEMPTS = 8  # probe/copy rounds, each after a reset: ~226 KB of .mpy over a 115200 UART needs 2-4
RECONNECT_S = 30  # how long a board that reset gets to boot and answer the probe again
MANIFEST = ".build"  # = board_scripts/deploy_probe.py MANIFEST: the staged build's id


class DeployError(ToolError):
    code = "E_DEPLOY"


class InstallFailed(DeployError):
    """The board's install raised (a flash error: an OSError in a rename, a delete, the
    pointer write): the board did not reset, so it is not retried; said with what is new."""
    code = "E_INSTALL_FLASH"

    def __init__(self, port, line, new):
        _, k, n, error = line.split(" ", 3)
        if new:
            state = ("%s of the %s files to install are new (%s%s), the rest old; the install's marker stays: at "
                     "every boot the board tries the install again and, while it fails, stops before main.py (at "
                     "the REPL, no app) rather than run a mix of the two builds"
                     % (k, n, ", ".join(new[:5]), ", ..." if len(new) > 5 else ""))
        else:
            state = ("nothing was renamed: the old files are whole; the install's marker stays: every boot tries "
                     "the install again and, while it fails, boots the old set")
        super().__init__("install on %s failed on the board (%s: %s): %s; check the flash (`mpremote connect %s "
                         "resume df`, files in the way of a new one), then run the same deploy again: it resumes "
                         "from what is staged (docs/platform.md `ppmid deploy`)"
                         % (port, self.code, error, state, port))


class ImageOnProbation(DeployError):
    """The board runs an image update's first boot, not confirmed yet: a deploy would drop
    the probation (install.forget_updates), so the image would never be marked valid and
    the bootloader would boot the previous one at the next reset, under a root set built
    for this one, with no result reported (docs/update.md "Image updates")."""
    code = "E_DEPLOY_PROBATION"

    def __init__(self, port, label):
        super().__init__(
            "port %s runs firmware image %s on probation (E_DEPLOY_PROBATION: an image update's first boot, not "
            "confirmed yet): a deploy now would drop the probation, and the next reset would boot the previous "
            "image without a result for the update; nothing was copied. The probe stopped the app, so this image "
            "cannot confirm itself now: reset the board (button or power: the bootloader goes back to the "
            "previous image and the app reports the update rolled back), then deploy; to keep the new image, run "
            "the image update again and deploy once it has reported `applied` (docs/platform.md `ppmid deploy`)"
            % (port, label))


class BoardScriptFailed(DeployError):
    """A script the deploy sent raised on the board (mpremote exits 1 as for a lost board;
    the traceback tells them apart)."""


class BoardLost(DeployError):
    """A call to the board broke off or stalled: it reset (watchdog, power) or the link
    dropped. Worth probing again; anything else a deploy refuses is not."""


def app_heap_need(path=None):
    """The app's heap need in bytes and a note of where it comes from (boards/app_heap.json)."""
    path = path or APP_HEAP_JSON
    try:
        with open(path) as f:
            data = json.load(f)
        need = int(data["peak_4kb_command_bytes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError("cannot read the app's heap need from %s (%s): run bench/bench_heap32.py" % (path, exc))
    return need, "%s: the 32-bit gauge's peak during a 4 KB command, measured %s by %s" % (
        os.path.relpath(path, boards.ROOT), data.get("measured", "?"), data.get("by", "?"))


def heap_fits(board, definition, force=False, log=None):
    """DeployError when `board`'s Python heap cannot hold the app as .mpy files (force: a
    warning instead); emulated boards are not compared (their heap is a 64-bit figure)."""
    if definition.get("chip") == "unix":
        return True
    have = boards.heap_bytes(definition.get("heap", "0"))
    need, source = app_heap_need()
    if have >= need:
        return True
    message = ("board %s has a %d-byte Python heap (board.json heap %s), the app needs %d bytes at its peak "
               "(%s): its .mpy files would not fit" % (board, have, definition.get("heap"), need, source))
    if definition.get("romfs_bytes"):
        # the board's own image (make image) has a romfs partition and no app frozen in
        try:
            romfs_need, _ = romfs_heap_need()
        except DeployError:
            romfs_need = None
        if romfs_need is not None and have >= romfs_need:
            message += ("; put the package in the board's romfs partition instead with `ppmid deploy --romfs` (the "
                        "app then needs %d bytes, boards/app_heap.json romfs; the partition is in the image `make "
                        "image BOARD=%s` builds)" % (romfs_need, board))
        else:
            message += " (nor would it from the board's romfs partition: boards/app_heap.json romfs)"
    else:
        message += ("; freeze the app into the MicroPython image instead (`make image BOARD=%s`, flash it, then "
                    "`ppmid deploy --scripts-only`)%s" % (board, _romfs_route(have, _ROMFS_IMAGES)))
    if not force:
        raise DeployError(message + ", or deploy anyway with --force")
    (log or print)("WARNING: " + message + "; deploying anyway (--force)")
    return False


def romfs_heap_need(path=None):
    """The app's heap need when its package runs from a ROMFS image (`ppmid deploy --romfs`,
    host_tools/deploy_romfs.py), in bytes, and where the figure comes from
    (boards/app_heap.json `romfs`, frozen32.py's figure)."""
    path = path or APP_HEAP_JSON
    try:
        with open(path) as f:
            data = json.load(f)["romfs"]
        need = int(data["peak_4kb_command_bytes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError("cannot read the app's heap need from ROMFS from %s (%s: its `romfs` entry)" % (path, exc))
    return need, "%s `romfs`: %s, measured %s by %s" % (
        os.path.relpath(path, boards.ROOT), data.get("gauge", "?"), data.get("measured", "?"), data.get("by", "?"))


_ROMFS_IMAGES = ("an image with a romfs partition (MICROPY_VFS_ROM: `make image` builds one for the `-romfs` "
                 "board definitions, esp32-devkitc-romfs and esp32s3-devkitc-1-n8r8-romfs; none was built or run here)")


def _romfs_route(have, where):
    """The ROMFS route, when the heap holds the app from there (", or, on WHERE, ...")."""
    try:
        need, _ = romfs_heap_need()
    except DeployError:
        return ""
    if have < need:
        return ""
    return (", or, on %s, put the package there with `ppmid deploy --romfs` (the app then needs %d bytes, "
            "boards/app_heap.json romfs)" % (where, need))


def native_arch():
    """The local unix port's mpy-cross -march (e.g. x64), from its sys.implementation._mpy."""
    p = subprocess.run([boards.micropython_binary(), "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, timeout=30)
    return arch_of(int(p.stdout.strip()))


def arch_of(mpy):
    idx = mpy >> 10
    return MPY_ARCHS[idx] if idx < len(MPY_ARCHS) else "arch%d" % idx


def board_arch(definition):
    arch = definition.get("mpy_arch")
    return native_arch() if arch == "native" else arch


# The firmware package's host-side halves (ppmid/envelope_host.py, ppmid/mqtt/link_host.py,
# ...): what only the host tools and tests use of a module (signing, the ACL's topic lists,
# the counters' names), kept apart so that the gateway does not hold it (docs/memory.md).
# Nothing on the board imports one (tests/test_deploy.py checks), so no board gets them:
# they cost flash and, one manifest entry each, ~130 bytes of every update offer.
HOST_ONLY_SUFFIX = "_host.py"


def firmware_files(firmware_dir, exclude=()):
    """[(relative path of the source, kind)] with kind 'script' or 'module', sorted;
    `exclude`: paths relative to firmware_dir to leave out (and, always, the package's
    host-only modules: HOST_ONLY_SUFFIX)."""
    out = []
    for name in SCRIPTS:
        if os.path.isfile(os.path.join(firmware_dir, name)):
            out.append((name, "script"))
    for name in ROOT_MODULES:
        if os.path.isfile(os.path.join(firmware_dir, name)):
            out.append((name, "module"))
    pkg = os.path.join(firmware_dir, PACKAGE)
    if not os.path.isdir(pkg):
        raise DeployError("%s has no %s/ package" % (firmware_dir, PACKAGE))
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for f in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, f), firmware_dir)
            if f.endswith(".py") and not f.endswith(HOST_ONLY_SUFFIX) and rel.replace(os.sep, "/") not in exclude:
                out.append((rel, "module"))
    return out


def source_name(rel):
    """The source file name a deployed module's .mpy carries (mpy-cross -s; tracebacks name
    it): the path the board's importer finds that .mpy at, "ppmid/relay/core.mpy" for
    ppmid/relay/core.py. The deploy installs the package at the flash root, which the
    importer reaches through sys.path's first entry, '' (the current directory: the root at
    boot; the ESP32 port's sys.path is ['', '.frozen', '/lib'], the emulated board's ROM sets
    the same), and it interns that path as the module's __file__ (py/builtinimport.c
    do_load): with the same text in the .mpy, both are one interned name, not two
    (docs/memory.md, session 9), and a traceback names the file as it lies on the board.
    A set an update installed in a slot (/upd/a/ppmid/...) is the same build: its __file__
    has the slot in front, so there they stay two names, as before."""
    return rel.replace(os.sep, "/")[:-3] + ".mpy"


def build(board, firmware_dir=FIRMWARE_DIR, build_dir=None, arch=None):
    """Compile the firmware for `board` into build_dir; return (build_dir, [relative paths],
    [mpy-cross command lines]). Raises DeployError naming the first file that fails."""
    try:
        definition = boards.load_board(board)
    except boards.BoardError as exc:
        raise DeployError(str(exc))
    arch = arch or board_arch(definition)
    if not os.path.isdir(firmware_dir):
        raise DeployError("firmware directory %s %s" % (
            firmware_dir, "is a file, not a folder" if os.path.exists(firmware_dir) else "does not exist"))
    build_dir = build_dir or tempfile.mkdtemp(prefix="ppmid-build-")
    if os.path.isdir(build_dir):
        shutil.rmtree(build_dir)
    os.makedirs(build_dir)
    mpy_cross = mpy_cross_binary()
    jobs = []
    for rel, kind in firmware_files(firmware_dir, definition.get("firmware_exclude", ())):
        src = os.path.join(firmware_dir, rel)
        if kind == "script":
            dst_rel = rel
            # compiled too, only to catch syntax errors before touching the board
            out = os.path.join(build_dir, ".check-" + rel[:-3] + ".mpy")
        else:
            dst_rel = rel[:-3] + ".mpy"
            out = os.path.join(build_dir, dst_rel)
        os.makedirs(os.path.dirname(os.path.join(build_dir, dst_rel)) or build_dir, exist_ok=True)
        jobs.append((rel, kind, dst_rel, out, [mpy_cross, "-march=" + arch] + list(MPY_OPTS) + ["-o", out, "-s", source_name(rel) if kind == "module" else rel, src]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda job: subprocess.run(job[4], capture_output=True, text=True), jobs))
    files, commands = [], []
    for (rel, kind, dst_rel, out, cmd), p in zip(jobs, results):
        if p.returncode != 0:
            shutil.rmtree(build_dir, ignore_errors=True)
            raise DeployError("%s does not compile (mpy-cross -march=%s): %s"
                              % (rel, arch, (p.stderr or p.stdout).strip()))
        if kind == "script":
            shutil.copyfile(os.path.join(firmware_dir, rel), os.path.join(build_dir, dst_rel))
            os.unlink(out)
        else:
            commands.append(cmd)
        files.append(dst_rel)
    with open(os.path.join(build_dir, "board.json"), "w") as f:
        json.dump(definition, f, indent=1)
    files.append("board.json")
    return build_dir, files, commands


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def board_hashes(port, files, prefix):
    """{file: sha256 hex or 'missing'} for `files` under `prefix` on the board."""
    out = _exec(port, board_scripts.with_call("deploy_hash.py", "_hash_files", list(files), prefix), "hash files on %s" % port,
                timeout=120, stall_s=STALL_S)
    got = {}
    for line in out.splitlines():
        if line.startswith("@@H "):
            _, name, digest = line.split()
            got[name] = digest
    return got


def _install_order(files):
    # the install's own code first (install.mpy, then boot.py, which calls it at boot): a
    # reset after those two is finished by the next boot; one before them leaves the old
    # boot.py, main.py and package, whole. Then the package, the board definition, and
    # main.py last, as before the install finished itself.
    def rank(f):
        return (0 if f == INSTALLER else 1 if f == "boot.py" else 2 if "/" in f else 3 if f == "board.json" else 4, f)
    return sorted(files, key=rank)


def staging_dirs(files):
    """Every directory the staging dir needs for `files`, parents first."""
    dirs = sorted({os.path.dirname(f) for f in files if os.path.dirname(f)})
    return sorted({"/".join(d.split("/")[:i + 1]) for d in dirs for i in range(len(d.split("/")))})


def copy_commands(port, build_dir, files, mkdir=True):
    """The mpremote command lines that create the staging dirs and copy the files. mkdir:
    True on a board without a staging dir (all of them), or a list of those to make."""
    mp = tool("mpremote")
    args = [mp, "connect", port, "resume"]
    if mkdir is True:
        args += ["fs", "mkdir", ":" + STAGING]
        mkdir = staging_dirs(files)
    for d in mkdir or ():
        if args[-1] != "resume":
            args.append("+")
        args += ["fs", "mkdir", ":%s/%s" % (STAGING, d)]
    by_dir = {}
    for f in files:
        by_dir.setdefault(os.path.dirname(f), []).append(f)
    for d in sorted(by_dir):
        target = ":%s/%s/" % (STAGING, d) if d else ":%s/" % STAGING
        if args[-1] != "resume":
            args.append("+")
        args += ["fs", "cp", "-f"] + [os.path.join(build_dir, f) for f in by_dir[d]] + [target]
    return [args]


def build_id(local):
    """The id a staging dir carries for the build whose {file: sha256} is `local`."""
    h = hashlib.sha256()
    for f in sorted(local):
        h.update(("%s %s\n" % (f, local[f])).encode())
    return h.hexdigest()[:16]


def _run_mpremote(cmd, what, timeout, stall_s=None, progress="@@"):
    """Run mpremote; its stdout. stall_s: cut it (BoardLost) when it makes no progress for
    that long: no line starting with `progress` (a board script's `@@` lines: an app
    logging after a reset is not progress), or with progress=None no output at all (a copy:
    mpremote draws its per-file progress bar, every 256 bytes, when its stdout is a
    terminal, so it runs on a pty). A timeout, a stall or an mpremote error is a BoardLost:
    during a deploy they are what a board resetting under mpremote looks like; but a
    traceback from the sent script is a BoardScriptFailed."""
    if stall_s is None:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BoardLost("%s: mpremote timed out after %ss" % (what, timeout))
        if p.returncode != 0:
            _raised_on_board(what, p.stdout + p.stderr)
            raise BoardLost("%s: mpremote failed: %s" % (what, (p.stderr or p.stdout).strip()[-1500:]))
        return p.stdout
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                             env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        os.close(slave)
    data = b""
    seen = 0  # bytes of data already looked at for progress lines
    end = time.monotonic() + timeout
    stall_end = time.monotonic() + stall_s
    why = None
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                why = "mpremote timed out after %ss" % timeout
            elif now >= stall_end:
                why = "no progress for %g s (the board reset or stopped answering?)" % stall_s
            if why:
                p.kill()
                p.wait()
                raise BoardLost("%s: %s" % (what, why))
            ready, _, _ = select.select([master], [], [], min(end, stall_end) - now)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: mpremote exited and closed its end
                chunk = b""
            if not chunk:
                break
            data += chunk
            if progress is None:
                stall_end = time.monotonic() + stall_s
                continue
            cut = data.rfind(b"\n") + 1
            if any(line.lstrip(b"\r").startswith(progress.encode()) for line in data[seen:cut].split(b"\n")):
                stall_end = time.monotonic() + stall_s
            seen = max(seen, cut)
    finally:
        os.close(master)
    p.wait()
    # the pty's newlines are \r\n, and the progress bar redraws with \r
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    if p.returncode != 0:
        bare = re.sub(r" \.\.\. [a-z]+ +\d+% \[[#-]*\]", "", text).replace("\r", "\n")
        said = "\n".join(line for line in bare.splitlines()
                         if line.strip() and not line.startswith(("cp ", progress or "\0")))
        _raised_on_board(what, said)
        raise BoardLost("%s: mpremote failed: %s" % (what, said.strip()[-1500:] or "exit %d" % p.returncode))
    return text


def _raised_on_board(what, text):
    # mpremote exits 1 both when the board went away and when the script it sent raised:
    # a traceback through "<stdin>" (the script) is the board's answer, not a lost board,
    # and doing it again would fail the same way
    at = text.rfind("Traceback (most recent call last):")
    if at >= 0 and 'File "<stdin>"' in text[at:]:
        lines = [line for line in text[at:].splitlines() if line.strip()]
        raise BoardScriptFailed("%s: the board's script raised %s (the board did not reset; not retried)"
                                % (what, lines[-1].strip()[:300]))


def _exec(port, code, what, timeout=30, stall_s=None):
    with PortLock(port):
        return _run_mpremote([tool("mpremote"), "connect", port, "resume", "exec", code], what, timeout, stall_s)


def same_chip(reported, chip):
    """Whether the chip a board reports (the probe's: "ESP32S3" from an ESP32 port's
    _machine, "unix" from the emulated board) is board.json's `chip` (esptool's name)."""
    return reported.lower().replace("-", "").replace("_", "") == chip


def probe(port, arch, definition=None):
    """Check that `port` is a MicroPython REPL whose .mpy architecture matches `arch` and,
    given the board definition, on its `chip` (ESP32 and ESP32-S3 share xtensawin).
    Returns sys.implementation._mpy."""
    return probe_stage(port, arch, definition)[0]


def probe_stage(port, arch, definition=None, build=None):
    """probe(), and what the staging dir holds: (mpy, stage, staged, dirs) with stage "same"
    (it holds files of the build whose id is `build`; staged = {file: sha256} of them, dirs
    = its directories), "other" (another build's, or an interrupted start) or "none". A port that does not answer is a
    BoardLost; a board of the wrong kind a plain DeployError."""
    check_board_link(port)  # DIR/repl of a stopped board: E_BOARD_NOT_RUNNING, not lost
    if not (os.path.exists(port) or port.startswith(("rfc2217://", "socket://"))):
        # lost, not refused: a native USB port (the S3's) goes away while its board resets
        raise BoardLost("port %s does not exist" % port)
    code = board_scripts.source("deploy_hash.py") + board_scripts.with_call("deploy_probe.py", "_probe", STAGING,
                                                                            build or "-")
    try:
        out = _exec(port, code, "port %s" % port, timeout=PROBE_TIMEOUT_S + 120, stall_s=PROBE_TIMEOUT_S)
    except DeployError as exc:
        raise BoardLost("port %s is not a MicroPython REPL (%s)" % (port, exc))
    mpy, stage, staged, dirs, probation = None, "none", {}, set(), None
    for line in out.splitlines():
        if line.startswith("@@PROBE "):
            fields = line.split()
            _, name, mpy, platform = fields[:4]
            reported = fields[4] if len(fields) > 4 else "?"
            mpy = int(mpy)
            if name != "micropython":
                raise DeployError("port %s runs %s, not MicroPython" % (port, name))
            if definition is not None and not same_chip(reported, definition["chip"]):
                raise DeployError("port %s reports chip %s, but board %s is defined for %s: wrong --board? "
                                  "(nothing was copied)" % (port, reported, definition.get("name"), definition["chip"]))
            if mpy & 0xFF != MPY_VERSION:
                raise DeployError("port %s runs .mpy version %d, mpy-cross emits %d: update MicroPython"
                                  % (port, mpy & 0xFF, MPY_VERSION))
            if arch_of(mpy) not in (arch, None):
                raise DeployError("port %s is a %s (%s) board, but this build is for %s: wrong --board?"
                                  % (port, platform, arch_of(mpy), arch))
        elif line.startswith("@@PROBATION "):
            probation = line.split()[1]
        elif line.startswith("@@STAGE "):
            stage = line.split()[1]
        elif line.startswith("@@H "):
            _, name, digest = line.split()
            staged[name] = digest
        elif line.startswith("@@D "):
            dirs.add(line.split()[1])
    if mpy is None:
        raise BoardLost("port %s is not a MicroPython REPL (no answer to the probe; got %r)" % (port, out[-200:]))
    if probation:
        raise ImageOnProbation(port, probation)
    return mpy, stage, staged, dirs


def _first_probe(port, arch, definition, build, log):
    """The deploy's first probe. A port that stays silent through it may be a board busy
    with its boot (the first boot of a new image, a loaded host: CI saw a board's REPL
    silent for 8 s there): it gets one more probe before the port is called no REPL, which
    then takes twice PROBE_TIMEOUT_S. A port that does not exist fails at once."""
    try:
        return probe_stage(port, arch, definition, build)
    except BoardLost as exc:
        if not (os.path.exists(port) or port.startswith(("rfc2217://", "socket://"))):
            raise
        log("%s; probing once more (a board busy with its boot answers late)" % exc)
        return probe_stage(port, arch, definition, build)


def _reprobe(port, arch, definition, build):
    """After a BoardLost: probe until the board is back (it boots, the app starts and arms
    its watchdog afresh, the probe's Ctrl-C stops it again), for up to RECONNECT_S."""
    end = time.monotonic() + RECONNECT_S
    while True:
        try:
            return probe_stage(port, arch, definition, build)
        except BoardLost as exc:
            if time.monotonic() >= end:
                raise BoardLost("%s did not answer again within %ss of losing it (%s)" % (port, RECONNECT_S, exc))
            time.sleep(1)


def soft_reset(port):
    """Ctrl-C, leave the raw REPL, Ctrl-D: a soft reset on an ESP32; on the emulated board
    the process exits and the supervisor reboots it."""
    import serial
    try:
        with PortLock(port), serial.Serial(port, 115200, timeout=1, exclusive=True) as s:
            s.write(b"\r\x03\x03")
            time.sleep(0.1)
            s.write(b"\x02")
            time.sleep(0.1)
            s.write(b"\x04")
            s.flush()
            time.sleep(0.1)
    except (serial.SerialException, OSError) as exc:
        raise DeployError("soft reset on %s failed: %s" % (port, exc))


def _stage_and_install(port, arch, definition, build_dir, files, local, attempts, log, stage_only=(),
                       before_install=None):
    """Probe, copy what is not staged yet, verify, install: again after every BoardLost (a
    watchdog reset mid-copy), keeping what earlier attempts staged, up to `attempts` rounds.
    stage_only: files of `files` staged and verified but not installed (the ROMFS image's
    chunks, deploy_romfs.py); before_install(): run once all is staged, before the install,
    again in the next round when it or the install lost the board (it must resume)."""
    build = build_id(local)
    sizes = {f: os.path.getsize(os.path.join(build_dir, f)) for f in files}
    installed = changed = lost = None
    answered = installing = install_tried = False
    for attempt in range(1, attempts + 1):
        try:
            if lost is None:
                mpy, stage, staged, dirs = _first_probe(port, arch, definition, build, log)
            else:
                log("board lost (%s); attempt %d of %d: probing again" % (str(lost)[-300:], attempt, attempts))
                mpy, stage, staged, dirs = _reprobe(port, arch, definition, build)
            answered = True
            if installed is None:
                installed = board_hashes(port, [f for f in files if f not in stage_only], "")
                changed = [f for f in files if f in stage_only or installed.get(f) != local[f]]
                log("%d of %d files changed" % (len(changed), len(files)))
            ready = [f for f in changed if staged.get(f) == local[f]]
            todo = [f for f in changed if f not in ready]
            if ready:
                log("resumed: %d of %d files already staged" % (len(ready), len(changed)))
            if todo and stage != "same":
                if stage == "other":
                    log("%s held another build's files (or an interrupted start): emptied" % STAGING)
                out = _exec(port, board_scripts.with_call("deploy_probe.py", "_stage_begin", STAGING, build,
                                                          staging_dirs(files)),
                            "prepare %s on %s" % (STAGING, port), timeout=120, stall_s=STALL_S)
                if "@@STAGED" not in out:
                    raise BoardLost("prepare %s on %s: no answer (%r)" % (STAGING, port, out[-200:]))
                dirs = set(staging_dirs(files))
            if todo:
                nbytes = sum(sizes[f] for f in todo)
                # a directory missing from a staging dir of this build (removed by hand?) is made again
                missing = [d for d in staging_dirs(todo) if d not in dirs]
                for cmd in copy_commands(port, build_dir, todo, mkdir=missing):
                    _run_mpremote(cmd, "copy to %s" % port, timeout=60 + 2 * nbytes // COPY_MIN_RATE,
                                  stall_s=COPY_STALL_S, progress=None)
                check = board_hashes(port, todo, STAGING)
                bad = [f for f in todo if check.get(f) != local[f]]
                if bad:
                    # a reset in the middle of the hash, or a file that did not land whole
                    raise BoardLost("%d file(s) differ after the copy (%s)" % (len(bad), ", ".join(bad[:5])))
                log("copied and verified %d files" % len(todo))
            if install_tried and not changed and stage == "none":
                # the install was cut short, and the board finished it at boot (install.py) if
                # the cut did not come after the install's own end
                log("the install is complete on the board (one cut short is finished at boot): "
                    "all %d files have the build's hash" % len(files))
                return mpy
            if before_install is not None:
                before_install()
            install = board_scripts.with_call("deploy_install.py", "_install", build,
                                              [[f, local[f]] for f in _install_order(changed) if f not in stage_only],
                                              [f for f in files if f not in stage_only], PACKAGE)
            installing = install_tried = True
            # each rename prints a line: a call that goes silent lost its board (a reset)
            out = _exec(port, install, "install on %s" % port, timeout=120, stall_s=STALL_S)
            if "@@INSTALLED" not in out:
                failed = [line for line in out.splitlines() if line.startswith("@@FAILED ")]
                if failed:
                    raise InstallFailed(port, failed[0], [line[6:] for line in out.splitlines()
                                                          if line.startswith("@@NEW ")])
                refused = [line for line in out.splitlines() if line.startswith("@@REFUSED ")]
                raise DeployError("install on %s did not complete: %s"
                                  % (port, refused[0][10:] if refused else out[-500:]))
            return mpy
        except BoardLost as exc:
            if not answered:
                raise  # the port never answered: not a REPL, nothing to resume
            lost = exc
            if installing:
                installed = None  # some renames may have happened: hash the installed files again
                installing = False
    done = _staged_count(port, arch, definition, build, changed, local)
    outcome = cut_outcome(changed, install_tried)
    raise DeployError(
        "deploy to %s did not complete in %d attempts (the board reset or stopped answering each time; last: %s): "
        "%s of %d changed files staged and verified in %s, %s; run the same deploy again to resume "
        "(docs/platform.md `ppmid deploy`)"
        % (port, attempts, str(lost)[-300:], done, len(changed or ()), STAGING, outcome))


def forget_romfs_image(port, arch, definition, attempts, log):
    """After a plain or --scripts-only install: a ROMFS image that an earlier `--romfs`
    deploy left in the board's romfs partition loses its header (board_scripts/
    romfs_write.py _rom_invalidate), so no later boot imports that older package from /rom
    (a --scripts-only deploy removes the flash's /ppmid, which shadowed it: review_w10-5);
    an image file such a deploy left on the flash goes too (review_w10-11). A board without
    the partition answers so. Lost on the way (the app's watchdog): probed and asked again;
    a cut before it leaves the image whole, and the same deploy run again does it."""
    what = "forget the ROMFS image on %s" % port
    for attempt in range(1, attempts + 1):
        try:
            out = _exec(port, board_scripts.with_call("romfs_write.py", "_rom_invalidate"), what, timeout=60,
                        stall_s=STALL_S)
            break
        except BoardLost as exc:
            if attempt == attempts:
                raise BoardLost("%s: lost the board %d times (last: %s); the new files are installed, but a ROMFS "
                                "image may still be in the partition: run the same deploy again"
                                % (what, attempts, exc))
            log("board lost (%s); attempt %d of %d: probing again" % (str(exc)[-300:], attempt + 1, attempts))
            _reprobe(port, arch, definition, None)
    lines = [line.split() for line in out.splitlines() if line.startswith("@@")]
    if ["@@ROM", "invalidated"] in lines:
        log("the romfs partition's image (an earlier --romfs deploy's) lost its header: /rom is not mounted")
    if any(fields[0] == "@@GONE" for fields in lines):
        log("removed the ROMFS image file an earlier --romfs deploy left on the flash")
    bad = [fields for fields in lines if fields[0] == "@@ROMERR"]
    if bad:
        raise DeployError("%s: the partition refused the write (E_DEPLOY_ROMFS_WRITE: %s): the new files are "
                          "installed, but the image stays and boots when /%s is not on the flash; run the same "
                          "deploy again" % (what, " ".join(bad[0][1:]), PACKAGE))
    if not any(fields[0] in ("@@ROM", "@@GONE") for fields in lines):
        raise BoardLost("%s: no answer (%r)" % (what, out[-200:]))


def cut_outcome(changed, install_tried):
    """What the board does at its next boot with an install the deploy gave up on, said
    for the files this deploy changes: a board's boot.py finishes a cut install when it
    checks for the marker, which this build's does, and an older one may not."""
    if not install_tried:
        return "nothing installed, the old firmware is untouched"
    if "boot.py" in changed:
        order = _install_order(changed)
        return ("the install was cut short: the board finishes it at its next boot if its boot.py checks for the "
                "install's marker, as this build's does once renamed (rename %d of %d; a boot.py from before "
                "the marker does not), else the old files stay whole and the rest are staged"
                % (order.index("boot.py") + 1, len(order)))
    return ("the install was cut short: the board's boot.py, already this build's, finishes it at its next "
            "boot, before anything imports ppmid")


def _staged_count(port, arch, definition, build, changed, local):
    """How many of `changed` are staged with the right hash, for the final error ("?" when
    the board does not answer)."""
    if not changed:
        return 0
    try:
        staged = _reprobe(port, arch, definition, build)[2]
    except DeployError:
        return "?"
    return sum(1 for f in changed if staged.get(f) == local[f])


def deploy(port, board, firmware_dir=FIRMWARE_DIR, build_dir=None, reset=True, dry_run=False, log=None,
           scripts_only=False, force=False, attempts=ATTEMPTS):
    """Build, copy what changed, install, reset (the module's docstring). The port is held
    (ports.PortLock) from before the build to the reset: a port another tool has is refused
    (PortBusy) before anything is built, and no other tool's bytes land between two of the
    deploy's mpremote runs. A dry run opens no port and holds none."""
    with PortLock(None if dry_run else port):
        return _deploy(port, board, firmware_dir, build_dir, reset, dry_run, log, scripts_only, force, attempts)


def board_for_deploy(board, attempts):
    """The board's definition for a deploy (plain or --romfs), or DeployError: an unknown
    board, or fewer than one attempt."""
    if attempts < 1:
        raise DeployError("--attempts must be 1 or more (got %d)" % attempts)
    try:
        return boards.load_board(board)
    except boards.BoardError as exc:
        raise DeployError(str(exc))


def _deploy(port, board, firmware_dir, build_dir, reset, dry_run, log, scripts_only, force, attempts):
    log = log or (lambda msg: None)
    definition = board_for_deploy(board, attempts)
    if not scripts_only:
        heap_fits(board, definition, force, log)
    arch = board_arch(definition)
    keep_build = bool(build_dir) or dry_run
    if dry_run and not build_dir:  # the printed commands must stay runnable: a fixed place
        build_dir = os.path.join(tempfile.gettempdir(), "ppmid-build-" + board)
    build_dir, files, compile_cmds = build(board, firmware_dir, build_dir, arch)
    if scripts_only:  # the package is frozen into the MicroPython image (boards/NAME/manifest.py)
        files = [f for f in files if "/" not in f]
    try:
        size = sum(os.path.getsize(os.path.join(build_dir, f)) for f in files)
        log("built %d files (%d bytes, -march=%s) in %s" % (len(files), size, arch, build_dir))
        copy = copy_commands(port, build_dir, files)
        if dry_run:
            for cmd in compile_cmds:
                print(" ".join(shlex.quote(c) for c in cmd))
            for cmd in copy:
                print(" ".join(shlex.quote(c) for c in cmd))
            print("%s connect %s resume exec <verify sha256 of %d files in %s, rename into place>"
                  % (shlex.quote(tool("mpremote")), shlex.quote(port), len(files), STAGING))
            if reset:
                print("# then Ctrl-C, Ctrl-B, Ctrl-D on %s (soft reset)" % port)
            return files
        local = {f: sha256_file(os.path.join(build_dir, f)) for f in files}
        _stage_and_install(port, arch, definition, build_dir, files, local, attempts, log)
        forget_romfs_image(port, arch, definition, attempts, log)
        log("installed on %s" % port)
        if reset:
            soft_reset(port)
            log("soft reset")
        return files
    finally:
        if not keep_build:
            shutil.rmtree(build_dir, ignore_errors=True)
