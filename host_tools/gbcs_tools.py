"""GBCS messages for the host tools, with the firmware codec (ppmid.gbcs): the JSON form of a
decoded message, reading hex messages from files, folders or stdin, and GBT reassembly of
blocks that come in any order (`GbtCollector`). `ppmid gbcs` (cmd_gbcs) is built on it."""
import binascii
import os
import sys

from host_tools import mpcompat
from host_tools.errors import ToolError

mpcompat.install()

from ppmid.gbcs import decode, GbcsError, codes, gbt, reassembly  # noqa: E402


class GbcsInputError(ToolError):
    """The input cannot be read (a missing file, a folder without .HEX files)."""
    code = "E_INPUT"


def _hex(mv):
    return None if mv is None else binascii.hexlify(bytes(mv)).decode().upper()


def message_json(msg):
    """The decoded fields of one message as a JSON-ready dict."""
    out = {
        "form": msg.form,
        "cra": msg.cra_name,
        "counter": msg.counter,
        "originator": _hex(msg.originator),
        "recipient": _hex(msg.recipient),
        "message_code": msg.message_code,
        "message_name": codes.name(msg.message_code),
        "date_time": _hex(msg.date_time),
        "content_type": msg.content_type,
        "content_len": None if msg.is_gbt else msg.content_len,
        "signature_len": None if msg.signature is None else len(msg.signature),
        "mac": _hex(msg.mac),
    }
    if msg.is_gbt:
        out["block_number"] = msg.block_number
        out["last_block"] = msg.last_block
        out["block_ack"] = msg.block_ack
        out["block_data_len"] = len(msg.block_data)
    return out


def error_json(code, message):
    return {"error": {"code": code, "message": message}}


def parse_hex(text):
    text = "".join(text.split())
    if not text:
        return None
    if len(text) % 2:
        raise ValueError("odd number of hex digits (%d)" % len(text))
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        bad = [c for c in text if c not in "0123456789abcdefABCDEF"][:1]
        raise ValueError("not hex: %r is not a hex digit" % (bad[0] if bad else text[:8]))


def _read_text(path):
    """A hex input file's text, or GbcsInputError naming the file (unreadable, or not
    UTF-8: a binary file given where hex text goes)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise GbcsInputError("cannot read %s: %s" % (path, exc.strerror or exc))
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise GbcsInputError("%s is not UTF-8 text (byte 0x%02x at offset %d): give hex, a message per line"
                             % (path, data[exc.start], exc.start))


def iter_inputs(path):
    """Yield (source, text) for each message in PATH or stdin."""
    if path == "-":
        for i, line in enumerate(sys.stdin, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield "-:%d" % i, line
        return
    if os.path.isdir(path):
        found = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files) if f.upper().endswith(".HEX"))
        if not found:
            raise GbcsInputError("no .HEX files under %s" % path)
        for f in found:
            yield f, _read_text(f)
        return
    text = _read_text(path)
    if path.upper().endswith(".HEX"):
        yield path, text
        return
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield "%s:%d" % (path, i), line


E_GBT_INCOMPLETE = "E_GBT_INCOMPLETE"   # host only: the input ended before every block came


class _Group:
    # the blocks of one GBT message seen so far, deduplicated by block number
    def __init__(self, msg):
        self.counter = msg.counter
        self.originator = _hex(msg.originator)
        self.recipient = _hex(msg.recipient)
        self.blocks = {}       # block number -> (block bytes, block data bytes, source)
        self.conflicts = {}    # block number -> sources of copies whose data differ from the first
        self.lasts = set()     # numbers of the blocks flagged last (more than one: refused)


class GbtCollector:
    """Collects GBT blocks from one input for `decode --reassemble`. The host keeps every
    block until the input ends (no memory bound, no timeout: those are the gateway's
    concerns), then hands each message's blocks, sorted and deduplicated, to the firmware's
    Reassembler so that the checks on the rebuilt message are the gateway's own."""

    def __init__(self):
        self.groups = {}       # (originator, recipient, counter) -> _Group, in first-seen order

    def add(self, raw, msg, source):
        """Record one decoded message; non-GBT messages and acknowledgements are ignored.
        Returns an error dict for a block that cannot belong to any message, else None."""
        if not msg.is_gbt or len(msg.block_data) == 0:
            return None
        if msg.block_number == 0:
            # the Reassembler would refuse it and drop the whole message with it
            return error_json(gbt.E_GBT_INCONSISTENT, "GBT block number 0 (numbers start at 1); block ignored")
        key = (bytes(msg.originator), bytes(msg.recipient), bytes(msg.counter_bytes))
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = _Group(msg)
        num = msg.block_number
        data = bytes(msg.block_data)
        old = g.blocks.get(num)
        if old is None:
            g.blocks[num] = (bytes(raw), data, source)
        elif old[1] != data:
            # which copy is right cannot be known: the message is reported, never rebuilt
            g.conflicts.setdefault(num, [old[2]]).append(source)
        if msg.last_block:
            g.lasts.add(num)
        return None

    def results(self):
        """One JSON-ready dict per message, in the order their first block was seen."""
        return [self._result(g) for g in self.groups.values()]

    def _result(self, g):
        head = {"reassembled": False, "counter": g.counter, "originator": g.originator,
                "recipient": g.recipient, "blocks": len(g.blocks)}
        nums = sorted(g.blocks)
        if g.conflicts:
            bad = sorted(g.conflicts)
            head["conflicting_blocks"] = bad
            head["sources"] = [s for n in bad for s in g.conflicts[n]]
            head.update(error_json(gbt.E_GBT_INCONSISTENT,
                               "block(s) %s received more than once with different data; message not "
                               "reassembled" % ",".join(str(n) for n in bad)))
            return head
        # checked here, not left to the Reassembler: fed in order it would deliver at the
        # first last block and silently ignore anything numbered beyond it
        last = min(g.lasts) if g.lasts else None
        if len(g.lasts) > 1 or (last is not None and nums[-1] > last):
            extra = sorted(n for n in nums if n > last)
            head["sources"] = [g.blocks[n][2] for n in extra]
            head.update(error_json(gbt.E_GBT_INCONSISTENT, "block(s) %s follow the last block %d; message not "
                               "reassembled" % (",".join(str(n) for n in extra), last)))
            return head
        upto = last if last is not None else nums[-1]
        missing = [i for i in range(1, upto + 1) if i not in g.blocks]
        if missing or last is None:
            head["incomplete"] = True
            head["missing_blocks"] = missing
            head["last_block_seen"] = last is not None
            what = ",".join(str(i) for i in missing)
            if last is None:
                what = (what + " and " if what else "") + "the last block (after %d)" % upto
            head.update(error_json(E_GBT_INCOMPLETE, "GBT message incomplete at the end of the input; "
                               "missing block(s): " + what))
            return head
        head["sources"] = [g.blocks[n][2] for n in nums]
        # CRA or message code that differ, a rebuilt message that is malformed or does not match its routing header: the
        # firmware Reassembler checks all of these, fed in block-number order
        r = reassembly.Reassembler(max_bytes=sum(len(b[1]) + gbt.BLOCK_OVERHEAD for b in g.blocks.values())
                                   + reassembly.PENDING_OVERHEAD + 1, timeout_ms=1)
        whole = None
        try:
            for n in nums:
                whole = r.feed(g.blocks[n][0], 0)
        except GbcsError as exc:
            head.update(error_json(exc.code, exc.message))
            return head
        if whole is None:  # cannot happen with blocks 1..last all present; said, not hidden
            head.update(error_json(gbt.E_GBT_INCONSISTENT, "the blocks did not rebuild a message"))
            return head
        out = {"reassembled": True, "hex": _hex(whole)}
        out.update(message_json(decode(whole)))
        out["blocks"] = len(nums)
        out["sources"] = head["sources"]
        return out
