"""What this host last gave each gateway as its `users` section: STATE_DIR/keys/EUI.users.json,
{"sequence": N, "users": {...}}, written by `ppmid provision` and by every applied
`ppmid users push` (host_tools/users_update.py), read by them and by the signing tools,
which must know whether a DCC User signs with an envelope key or a P-256 key. A module of
its own so that mqtt_tools can read it without importing the users update (which imports
mqtt_tools)."""
import json
import os

from host_tools.errors import ToolError


class UsersUpdateError(ToolError):
    code = "E_USERS_UPDATE"


def registry_path(state_dir, eui):
    from host_tools.broker import gateway_identity
    return os.path.join(state_dir, "keys", gateway_identity(eui) + ".users.json")


def read_registry(state_dir, eui):
    """{"sequence", "users"} last given to the gateway, or a sequence-0 empty one."""
    path = registry_path(state_dir, eui)
    if not os.path.exists(path):
        return {"sequence": 0, "users": {"keys": {}, "roles": {}, "legacy_key": True}}
    try:
        with open(path) as f:
            reg = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsersUpdateError("cannot read %s: %s" % (path, exc))
    if not isinstance(reg, dict) or not isinstance(reg.get("sequence"), int) or not isinstance(reg.get("users"), dict):
        raise UsersUpdateError("%s is not a users registry ({\"sequence\", \"users\"})" % path)
    return reg


def write_registry(state_dir, eui, sequence, users):
    path = registry_path(state_dir, eui)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"sequence": sequence, "users": users}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
