"""`ppmid update`: offer a release to a gateway over MQTT and follow it (docs/update.md).

    ppmid update --state-dir BROKER_DIR --gateway EUI --release DIR [--timeout 600]

Publishes the signed offer on ppmid/v1/EUI/update/offer, serves the chunks the gateway
asks for, shows a progress bar on stderr and prints the final status as JSON. Exit 0 when
the gateway runs the new version ("applied"), 1 when it refused the update or rolled back
(the status names the E_UPDATE_... code), or nothing final came within --timeout.
"""

from host_tools.cli import CliError, broker_parties, check_wait, print_final


def add_arguments(p):
    p.add_argument("--state-dir", required=True, help="the broker's state dir (ppmid broker start)")
    p.add_argument("--gateway", required=True, metavar="EUI", help="target gateway EUI-64")
    p.add_argument("--release", required=True, metavar="DIR", help="release directory (ppmid release --out)")
    p.add_argument("--user", default="test", help="identity on the broker (certificate dcc-user-NAME)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a final status")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args):
    from host_tools import update as U
    eui, user = broker_parties(args.gateway, args.user)
    check_wait(args.timeout)
    rel = U.Release(args.release)
    try:
        sender = U.UpdateSender(args.state_dir, eui, rel, user=user,
                                progress=None if args.quiet else U.progress_bar)
    except RuntimeError as exc:
        raise CliError(str(exc))
    try:
        st = sender.run(args.timeout)
    finally:
        sender.close()
    return print_final(st, "applied", "update %s" % rel.version)
