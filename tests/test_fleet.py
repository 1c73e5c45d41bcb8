"""The fleet load machinery (host_tools/fleet_load.py, bench/bench_fleet.py) with N=3 on the
project's mosquitto: every command reaches its gateway and comes back accepted then
answered, a malformed command is rejected like the gateway does, and a fleet larger than
the certificates issued is refused. No timing assertions (figures are bench rows)."""
import asyncio

import pytest

from host_tools import fleet_load as F
from ppmid.mqtt.contract import Topics


def test_three_simulated_gateways_answer_every_command(tmp_path):
    async def malformed(dcc, gateways):
        # not a command JSON: the gateway answers `rejected` (id null), as the real intake
        dcc.conn.publish(Topics(gateways[0].eui).cmd, b"{not json")
        for _ in range(500):
            if dcc.rejected:
                return
            await asyncio.sleep(0.01)

    with F.FleetBroker(tmp_path / "broker", 3) as fb:
        r = asyncio.run(F.run_fleet(fb, 3, 9, window=4, rate=50, paced=6, timeout_s=60, extra=malformed))
    assert r["gateways"] == 3 and r["commands"] == 15
    assert r["answered"] == 15 and r["lost"] == 0 and r["gateway_answered"] == 15
    assert r["rejected"] == 1
    ids = ["t%d" % i for i in range(9)] + ["p%d" % i for i in range(6)]
    assert all(r["statuses"][i] == ["accepted", "response"] for i in ids), r["statuses"]
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["max"]
    rss = r["broker_rss_bytes"]
    assert rss["idle"] > 0 and rss["connected"] > 0
    from bench.bench_fleet import rows_for
    names = [row["name"] for row in rows_for(r)]
    assert "fleet N=3 commands/s" in names and "fleet N=3 broker RSS" in names


def test_more_gateways_than_certificates_is_refused(tmp_path):
    with F.FleetBroker(tmp_path / "broker", 2) as fb:
        with pytest.raises(F.FleetError, match="certificates for 2 gateways, not 3"):
            asyncio.run(F.run_fleet(fb, 3, 1))
