# An image update's download into the board's next OTA app partition (docs/update.md
# "Image updates"), for ppmid.update.service: chunks arrive in order (the service's pull
# protocol ignores any other), are gathered into one 4 KB block and written a block at a
# time through the board's image slots (esp32.Partition on an ESP32, the stand-in on the
# emulated board); once all is there, the SHA-256 is checked by reading the partition back.
from hashlib import sha256
from binascii import hexlify

from ppmid.update.manifest import UpdateError, E_UPDATE_MANIFEST
from ppmid.update.service import E_UPDATE_HASH, E_UPDATE_SPACE  # loaded already: it imports this module


class ImageWriter:
    """slots: the board's image_slots(); entry: the manifest's "image" {sha256, size}."""

    def __init__(self, slots, entry):
        if slots is None:
            raise UpdateError(E_UPDATE_MANIFEST, "this board has no OTA app partitions: an image update cannot apply")
        self.slots = slots
        self.label, capacity = slots.next_update()
        self.size = entry["size"]
        self.sha256 = entry["sha256"]
        if self.size > capacity:
            raise UpdateError(E_UPDATE_SPACE, "the image is %d bytes, partition %s holds %d"
                              % (self.size, self.label, capacity))
        self.block = bytearray(slots.BLOCK)
        self.offset = 0     # bytes taken so far (written, or waiting in self.block)
        self.written = 0    # bytes on flash (multiples of BLOCK, then the padded last block)

    def write(self, mv):
        """Take the next bytes (the caller checked they start at self.offset)."""
        n = len(mv)
        if self.offset + n > self.size:
            raise UpdateError(E_UPDATE_HASH, "the image: more data than its size %d: download refused" % self.size)
        B = len(self.block)
        i = 0
        while i < n:
            at = self.offset % B
            k = min(B - at, n - i)
            self.block[at:at + k] = mv[i:i + k]
            i += k
            self.offset += k
            if at + k == B:
                self._flush(B)

    def _flush(self, used):
        B = len(self.block)
        if used < B:
            for j in range(used, B):
                self.block[j] = 0xFF  # what erased flash holds: the hash covers only `size` bytes
        self.slots.write_block(self.label, self.written // B, self.block)
        self.written += B

    def complete(self):
        return self.offset >= self.size

    def check(self):
        """Write the last partial block, read the partition back and compare the digest."""
        B = len(self.block)
        if self.written < self.size:
            self._flush(self.size - self.written)
        h = sha256()
        buf = self.block
        left = self.size
        n = 0
        while left > 0:
            self.slots.read_block(self.label, n, buf)
            h.update(memoryview(buf)[:min(B, left)])
            left -= B
            n += 1
        if hexlify(h.digest()).decode() != self.sha256:
            raise UpdateError(E_UPDATE_HASH, "the image in partition %s: SHA-256 differs from the manifest's: "
                              "download refused" % self.label)
