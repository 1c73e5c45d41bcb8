"""ESP-IDF partition tables the repository ships (boards/NAME/partitions.csv, named by
board.json "partition_table"), read and checked before `make image` hands one to the build
(host_tools/image.py) and by tests/test_partition_tables.py. Nothing here was flashed.

The rules are ESP-IDF's (its partition table docs and gen_esp32part.py): the table itself
sits at 0x8000 (one 4 KB sector), so partitions start at 0x9000 or later; every offset and
size is a whole number of 4 KB flash sectors, app partitions start on a 64 KB boundary (the
MMU maps code in 64 KB pages); no two overlap; all end within the flash. What MicroPython
adds: its ESP32 port mounts the filesystem from the data partition labelled "vfs", and maps
the partition labelled "romfs" as the ROMFS (ports/esp32/esp32_partition.c,
mp_vfs_rom_ioctl: found by label, any data subtype; its own partitions-4MiB-romfs.csv gives
subtype 0x8f, which these tables give too). Our tables name every offset and size (no
gaps filled in by the generator) so that the sizes board.json states can be checked.
"""
import os

from host_tools import boards
from host_tools.errors import ToolError

TABLE_OFFSET = 0x8000
TABLE_SIZE = 0x1000
SECTOR = 0x1000
APP_ALIGN = 0x10000
ROMFS_SUBTYPE = 0x8F

TYPES = {"app": 0x00, "data": 0x01}
APP_SUBTYPES = {"factory": 0x00, "test": 0x20, **{"ota_%d" % i: 0x10 + i for i in range(16)}}
DATA_SUBTYPES = {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04, "efuse": 0x05,
                 "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83}


class PartitionTableError(ToolError):
    code = "E_PARTITIONS"


class Partition:
    def __init__(self, name, type_, subtype, offset, size, flags, line):
        self.name, self.type, self.subtype = name, type_, subtype
        self.offset, self.size, self.flags, self.line = offset, size, flags, line

    @property
    def end(self):
        return self.offset + self.size

    def __repr__(self):
        return "<%s %#x %#x+%#x>" % (self.name, self.subtype, self.offset, self.size)


def size_value(text, what):
    """0x... , decimal, or with a K / M suffix (as ESP-IDF's tables write sizes)."""
    t = text.strip()
    scale = 1
    if t[-1:] in ("K", "k", "M", "m"):
        scale = 1024 if t[-1] in "Kk" else 1024 * 1024
        t = t[:-1]
    try:
        return int(t, 0) * scale
    except ValueError:
        raise PartitionTableError("%s: %r is not a number" % (what, text))


def parse(text, where="partition table"):
    """[Partition] of an ESP-IDF CSV table, or PartitionTableError naming the line."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")]
        fields += [""] * (6 - len(fields))
        name, type_, subtype, offset, size, flags = fields[:6]
        what = "%s line %d" % (where, n)
        if not name or len(name) > 16:
            raise PartitionTableError("%s: a partition name of 1 to 16 characters, not %r" % (what, name))
        if type_ not in TYPES:
            raise PartitionTableError("%s: type %r (app or data)" % (what, type_))
        names = APP_SUBTYPES if type_ == "app" else DATA_SUBTYPES
        sub = names.get(subtype)
        if sub is None:
            sub = size_value(subtype, what + " subtype") if subtype[:1].isdigit() else None
            if sub is None or not 0 <= sub <= 0xFE:
                raise PartitionTableError("%s: subtype %r is not a %s subtype" % (what, subtype, type_))
        if not offset or not size:
            raise PartitionTableError("%s: %s has no %s (our tables give every offset and size)"
                                      % (what, name, "offset" if not offset else "size"))
        out.append(Partition(name, type_, sub, size_value(offset, what + " offset"),
                             size_value(size, what + " size"), flags, n))
    if not out:
        raise PartitionTableError("%s has no partitions" % where)
    return out


def problems(table, flash_bytes):
    """Sentences naming each rule a table breaks (empty: valid) on a flash of flash_bytes."""
    out = []
    seen = set()
    for p in table:
        if p.name in seen:
            out.append("partition %s appears twice" % p.name)
        seen.add(p.name)
        if p.offset < TABLE_OFFSET + TABLE_SIZE:
            out.append("%s starts at %#x, inside the bootloader or the partition table (before %#x)"
                       % (p.name, p.offset, TABLE_OFFSET + TABLE_SIZE))
        if p.offset % SECTOR or p.size % SECTOR or p.size <= 0:
            out.append("%s (%#x, %#x bytes) is not whole 4 KB sectors" % (p.name, p.offset, p.size))
        if p.type == "app" and p.offset % APP_ALIGN:
            out.append("app partition %s starts at %#x, not on a 64 KB boundary" % (p.name, p.offset))
        if p.end > flash_bytes:
            out.append("%s ends at %#x, past the %d-byte flash" % (p.name, p.end, flash_bytes))
    ordered = sorted(table, key=lambda p: p.offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.offset < a.end:
            out.append("%s (%#x-%#x) overlaps %s (from %#x)" % (a.name, a.offset, a.end, b.name, b.offset))
    if not any(p.type == "app" for p in table):
        out.append("no app partition")
    if ota_slots(table) and not any(p.type == "data" and p.subtype == DATA_SUBTYPES["ota"] for p in table):
        out.append("OTA app slots without an otadata partition")
    romfs = [p for p in table if p.name == "romfs"]
    if romfs and (romfs[0].type != "data" or romfs[0].subtype != ROMFS_SUBTYPE):
        out.append("partition romfs is not of type data, subtype 0x8f")
    return out


def ota_slots(table):
    """The OTA app partitions (subtypes ota_0 .. ota_15), in table order."""
    return [p for p in table if p.type == "app" and 0x10 <= p.subtype <= 0x1F]


def by_name(table, name):
    for p in table:
        if p.name == name:
            return p
    return None


def board_table(board, definition=None):
    """(path, [Partition]) of the table board.json "partition_table" names, checked: its
    flash_size holds it, and its romfs and vfs partitions are the romfs_bytes and fs_size the
    definition states; PartitionTableError otherwise. (None, None) for a board without one."""
    definition = definition or boards.load_board(board)
    name = definition.get("partition_table")
    if not name:
        return None, None
    path = os.path.join(boards.BOARDS_DIR, board, name)
    try:
        with open(path) as f:
            table = parse(f.read(), os.path.relpath(path, boards.ROOT))
    except OSError as exc:
        raise PartitionTableError("board %s: cannot read its partition table %s (%s)" % (board, path, exc))
    flash = boards.heap_bytes(definition.get("flash_size", "0"))  # the same "4M" notation
    bad = problems(table, flash)
    romfs, vfs = by_name(table, "romfs"), by_name(table, "vfs")
    want = definition.get("romfs_bytes") or 0
    if (romfs.size if romfs else 0) != want:
        bad.append("its romfs partition is %d bytes, board.json romfs_bytes %d" % (romfs.size if romfs else 0, want))
    if vfs is None or vfs.size != definition.get("fs_size"):
        bad.append("its vfs partition is %s bytes, board.json fs_size %s"
                   % (vfs.size if vfs else "no", definition.get("fs_size")))
    if bad:
        raise PartitionTableError("board %s: partition table %s: %s" % (board, path, "; ".join(bad)))
    return path, table
