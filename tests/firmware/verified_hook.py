# Test helper (not a test module): the envelope checks the relay makes, wrapped around an
# accept hook, so that the intake can be tested on its own. The same wrapper runs in the
# MQTT-only test gateway (host_tools/board_scripts/mqtt_gateway.py); the firmware has no
# use for it, the relay checks the envelope itself.
from ppmid.errors import PpmidError, E_CLOCK


def verified(accept, key, now):
    """accept, behind the mac then the expiry check; a command with `expires` is refused
    with E_CLOCK while now() is None (clock not set)."""
    async def accept_verified(env, via):
        t = now()
        env.verify(key, t)
        if env.expires is not None and t is None:
            raise PpmidError(E_CLOCK, "gateway clock is not set: cannot check expiry")
        await accept(env, via)
    return accept_verified
