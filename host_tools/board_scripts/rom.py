# Emulated board ROM: the first program the emulated board's MicroPython process runs
# (host_tools/emuboard.py writes it to STATE_DIR/rom.py; it is not part of the flash).
import sys, os, vfs, json, gc, time, binascii
_T0 = time.ticks_ms()


class _Flash:
    # Block device over the flash image file: what LittleFS2 sees as the SPI flash.
    def __init__(self, f, blocks, size):
        self.f = f
        self.blocks = blocks
        self.size = size

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * self.size + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * self.size + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.size
        if op == 6:
            return 0
        return None


class _Hw:
    pass


def _rom_open():
    # everything the board needs from the host, while the host filesystem is still "/"
    d = os.getenv("EMUBOARD_DIR")
    with open(d + "/board.json") as f:
        st = json.load(f)
    hw = _Hw()
    hw.info = st["definition"]
    hw.uarts = st["board_uarts"]
    hw.unique_id = binascii.unhexlify(st["unique_id"])
    hw.boot = st["restarts"]
    hw.rtc_ms = st.get("rtc_ms")  # the RTC as the supervisor kept it (None: power-on)
    hw.t0 = _T0
    hw.ctl = open(d + "/hw.fifo", "wb")
    hw.wifi = open(d + "/wifi", "rb")
    # the UART ptys are opened now: once "/" is the flash, host paths are out of reach
    hw.uart_files = {}
    for name in hw.uarts:
        hw.uart_files[name] = open(hw.uarts[name], "r+b")
    # the stand-in partition table: two app partitions and the OTA data (the supervisor
    # chose the partition that boots: st["ota"]["running"])
    ota = st.get("ota") or {}
    if ota.get("running"):
        hw.ota_running = ota["running"]
        hw.ota_size = ota["size"]
        hw.ota_files = {"ota_0": open(d + "/ota_0.bin", "r+b"), "ota_1": open(d + "/ota_1.bin", "r+b")}
        hw.otadata = open(d + "/otadata", "r+b")
    img = open(d + "/flash.img", "r+b")
    hw.flash = _Flash(img, st["flash_size"] // 4096, 4096)
    # the romfs partition, when the board has one (romfs_partition.py: mounted at /rom)
    romfs = st.get("romfs")
    hw.romfs = None
    if romfs:
        with open(d + "/romfs_partition.py") as f:
            hw.romfs = (open(romfs["path"], "r+b"), romfs["size"], f.read())
    return hw


def _rom_mount(hw):
    # "/" becomes the flash, like on the real board. Safe to run again if interrupted.
    try:
        vfs.umount("/")
    except OSError:
        pass
    try:
        fs = vfs.VfsLfs2(hw.flash)
    except OSError as e:
        buf = bytearray(hw.flash.size)
        hw.flash.readblocks(0, buf)
        if buf != b"\xff" * hw.flash.size:
            print("flash: mount failed (%s): reformatting" % e)
        vfs.VfsLfs2.mkfs(hw.flash)
        fs = vfs.VfsLfs2(hw.flash)
        print("flash: formatted")
    vfs.mount(fs, "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    sys.modules["_emuboard"] = hw
    if hw.romfs:
        g = {}
        exec(hw.romfs[2], g)
        g["install"](hw.romfs[0], hw.romfs[1], vfs)
        hw.romfs = None  # its source text is not kept on the heap


# The unix port raises a Ctrl-C's KeyboardInterrupt from its SIGINT handler wherever its C
# code is (MICROPY_ASYNC_KBD_INTR); one that lands in the garbage collector leaves the heap
# locked and its marks half done: nothing can be allocated any more (the chip died of it, a
# "crash", so a hard reset: the bootloader's step rolled back an image on probation under a
# deploy's probe), and what is on the heap cannot be trusted. An ESP32 raises it at the
# next bytecode and stays at the REPL, not reset: this line asks the supervisor to start
# the chip again at the REPL, as the Ctrl-C would have left it (emuboard EXIT_INTERRUPTED).
# Made now: with the heap locked nothing can be allocated.
_INTERRUPTED = b"R6\n"


def _heap_locked():
    # the collector's own lock is a flag beside heap_lock()'s depth, which heap_unlock()
    # does not report: the heap is locked when the least allocation fails (a full heap is
    # collected first)
    try:
        bytearray(16)
    except MemoryError:
        return True
    return False


def _rom_interrupted(hw):
    hw.ctl.write(_INTERRUPTED)
    while True:
        time.sleep(1)


def _rom_run(name):
    try:
        os.stat(name)
    except OSError:
        return True  # none: nothing failed
    try:
        with open(name) as f:
            src = f.read()
        g = {"__name__": "__main__", "__file__": name}
        exec(src, g)
    except SystemExit as e:
        # sys.exit() in boot.py/main.py = soft reset, as on a real board
        _rom_reset(e.args[0] if e.args and isinstance(e.args[0], int) else 0)
    except KeyboardInterrupt:
        if _heap_locked():
            _rom_interrupted(sys.modules["_emuboard"])
        print("KeyboardInterrupt (%s)" % name)
    except Exception as e:
        # the same Ctrl-C, turned into a MemoryError by a handler on its way out that
        # allocates (nothing of the firmware's locks the heap)
        if _heap_locked():
            _rom_interrupted(sys.modules["_emuboard"])
        sys.print_exception(e)
        return False
    return True


def _rom_reset(code):
    hw = sys.modules["_emuboard"]
    hw.ctl.write(b"R%d\n" % code)
    while True:
        time.sleep(1)


_hw = None
while True:  # a Ctrl-C from a tool connecting during boot must not leave the board unmounted
    try:
        if _hw is None:
            _hw = _rom_open()
        _rom_mount(_hw)
        break
    except KeyboardInterrupt:
        if _hw is not None and _heap_locked():
            _rom_interrupted(_hw)
del _hw
gc.collect()
# a soft reset in raw-REPL mode skips main.py; so does a boot.py that raised, as on the
# ESP32 port (main.c runs main.py only after a boot.py that ended without an exception):
# the board stays at the REPL; and so does the start after a Ctrl-C that landed in the
# garbage collector (_INTERRUPTED): the Ctrl-C stopped the app
if (_rom_run("boot.py") and os.getenv("EMUBOARD_RAW_REPL") != "1"
        and os.getenv("EMUBOARD_INTERRUPTED") != "1"):
    _rom_run("main.py")
del _rom_open, _rom_mount, _rom_run, _Hw, _T0
gc.collect()
