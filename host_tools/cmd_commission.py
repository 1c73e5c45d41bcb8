"""`ppmid commission`: order a gateway to leave the HAN and commission again (a changed
Communications Hub: new install, change of tenancy), by a signed order over MQTT
(docs/zigbee.md "Re-commission on order").

    ppmid commission --state-dir DIR --gateway EUI --key operator.pem [--sequence N]

Signs the order with the operator's update key (ppmid release --make-key) and prints the
gateway's status as JSON. Exit 0 when it says "accepted"; the commissioning itself then
shows in the gateway's info ("commissioning") and HAN status (ppmid status).
"""

from host_tools.cli import add_signed_order_arguments, broker_parties, check_wait, print_final


def add_arguments(p):
    add_signed_order_arguments(p, "the order's sequence (default: the last one sent + 1)")


def run(args):
    from host_tools import commission_order as O
    eui, ident = broker_parties(args.gateway, args.broker_user)
    check_wait(args.timeout, args.sequence)
    st = O.push(args.state_dir, eui, args.key, user=ident, timeout=args.timeout, sequence=args.sequence)
    return print_final(st, "accepted", "commission order")
