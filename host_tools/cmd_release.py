"""`ppmid release`: build and sign an application update (docs/update.md).

    ppmid release --make-key KEY.pem            new operator key; prints the public key for
                                                 the gateways' config (update.public_key)
    ppmid release --board NAME --key KEY.pem --out DIR [--version 0.2.0] [--expires-in S]
                  [--gateway EUI ...] [--downgrade] [--seq N]   a downgrade must name its gateways
                  [--manifest-format 1]         the old manifest form, for gateways that know only it
    ppmid release --board NAME --key KEY.pem --out DIR --version 0.3.0 --image FIRMWARE.bin
                                                 a firmware image for the OTA app partitions

The release directory holds files/ (the compiled set), manifest.json (the signed text) and
offer.json (text, signature, public key); a release whose offer would not fit a gateway's
MQTT cap is refused (E_UPDATE_OFFER_SIZE). Exit 0, or `ppmid: message` and 1.
"""
from host_tools.cli import CliError


def add_arguments(p):
    p.add_argument("--make-key", metavar="KEY.pem", help="write a new P-256 signing key and print its public key")
    p.add_argument("--board", help="board the release is for (boards/NAME)")
    p.add_argument("--key", metavar="KEY.pem", help="the operator's signing key (--make-key writes one)")
    p.add_argument("--out", metavar="DIR", help="release directory to write")
    p.add_argument("--version", help="version to give the release (default: ppmid.VERSION of the tree)")
    p.add_argument("--min-config-version", type=int, default=1, help="oldest gateway config version it runs with")
    p.add_argument("--downgrade", action="store_true", help="sign it as a downgrade (may replace a newer version; "
                   "needs --gateway)")
    p.add_argument("--gateway", action="append", metavar="EUI", help="a gateway the release is for (repeat; "
                   "default: every gateway of the board; a downgrade must name them)")
    p.add_argument("--expires-in", type=int, default=30 * 86400, metavar="S",
                   help="the gateways refuse the release this many seconds after signing (default 2592000: "
                   "30 days), as --expires-in of ppmid send and sign")
    p.add_argument("--seq", type=int, metavar="N",
                   help="the manifest's rising number: a gateway refuses one not above the last it installed "
                   "(E_UPDATE_REPLAY); default: now in unix seconds, so a later release is always above; 1 to "
                   "4294967295")
    p.add_argument("--image", metavar="FIRMWARE.bin", help="sign this firmware image (an image update, "
                   "docs/update.md) instead of building the application set; needs --version")
    p.add_argument("--manifest-format", type=int, default=2, metavar="1|2",
                   help="2 (default): the compact manifest; 1: the form gateways before format 2 know, for "
                   "the stepping-stone release that brings format 2 to them (docs/update.md); an image's manifest is "
                   "format 1 always")
    p.add_argument("--firmware-dir", help="firmware tree to build (default: this checkout's firmware/)")


def run(args):
    from host_tools import update as U
    if args.make_key:
        print(U.make_key(args.make_key))
        return 0
    if not (args.board and args.key and args.out):
        raise CliError("--board, --key and --out are needed (or --make-key KEY.pem)")
    if not 0 < args.expires_in <= 10 * 366 * 86400:
        raise CliError("--expires-in must be 1 s to 10 years (in seconds), not %d" % args.expires_in)
    import time
    limits = {"expires": int(time.time()) + args.expires_in, "gateways": args.gateway, "seq": args.seq}
    if args.image:
        if not args.version:
            raise CliError("--image needs --version (an image's version cannot be read from the tree)")
        m = U.release_image(args.board, args.key, args.out, args.version, args.image, args.min_config_version,
                            args.downgrade, log=print, **limits)
        print("written %s (image %s, %d bytes)" % (args.out, m["version"], m["image"]["size"]))
        return 0
    m = U.release(args.board, args.key, args.out, args.version, args.firmware_dir, args.min_config_version,
                  args.downgrade, log=print, manifest_format=args.manifest_format, **limits)
    print("written %s (version %s, %d files)" % (args.out, m["version"], len(m["files"])))
    return 0
