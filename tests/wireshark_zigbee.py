"""Feeding our ZCL frames to Wireshark's Zigbee dissectors (tshark), for the reference
tests of the clusters we speak directly (Prepayment 0x0705, Key Establishment 0x0800).

tshark dissects a ZCL frame only inside 802.15.4 / NWK / APS headers, and cannot read an
APS- or NWK-encrypted one without its key, so each frame is wrapped in unsecured headers
on the Smart Energy profile; the pcap is made by text2pcap from a hex dump with the
802.15.4 link type (230: IEEE 802.15.4 without FCS)."""
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET

TSHARK = shutil.which("tshark")
TEXT2PCAP = shutil.which("text2pcap")
MISSING = "tshark/text2pcap not installed"
SE_PROFILE = 0x0109
LINKTYPE_IEEE802_15_4_NOFCS = 230


def air_frame(zcl, cluster, src, dst, s2c):
    """The ZCL frame in unsecured 802.15.4 data / NWK data / APS data headers, between the
    short addresses src and dst; the APS endpoints say which side is the cluster's server."""
    mac = struct.pack("<HBHHH", 0x8841, 1, 0xBEEF, dst, src)
    nwk = struct.pack("<HHHBB", 0x0008, dst, src, 30, 7)
    aps = struct.pack("<BBHHBB", 0x40, 1 if s2c else 9, cluster, SE_PROFILE, 9 if s2c else 1, 5)
    return mac + nwk + aps + zcl


def dissect(tmp_path, frames):
    """tshark's reading of frames (bytes each), one dict per packet: field name -> shown
    value, protocols included (so that `_ws.malformed` and `_ws.expert` show)."""
    txt = tmp_path / "frames.txt"
    with open(txt, "w") as fh:
        for m in frames:
            for off in range(0, len(m), 16):
                fh.write("%06x %s\n" % (off, " ".join("%02x" % x for x in m[off:off + 16])))
    pcap = tmp_path / "frames.pcap"
    subprocess.run([TEXT2PCAP, "-q", "-l", str(LINKTYPE_IEEE802_15_4_NOFCS), str(txt), str(pcap)], check=True,
                   capture_output=True)
    out = subprocess.run([TSHARK, "-r", str(pcap), "-T", "pdml"], check=True, capture_output=True).stdout
    return [{f.get("name"): f.get("show") for f in pkt.iter() if f.get("name")}
            for pkt in ET.fromstring(out).iter("packet")]
