"""What this host last sent each gateway in a document signed with the operator's update key:
one small JSON record per gateway and kind, STATE_DIR/keys/EUI.KIND.json (the users section
of `ppmid users push`, host_tools/users_registry.py; the sequence of `ppmid commission`,
host_tools/commission_order.py). The one place that reads and writes them."""
import json
import os


def path(state_dir, eui, kind):
    from host_tools.broker import gateway_identity
    return os.path.join(state_dir, "keys", gateway_identity(eui) + "." + kind + ".json")


def read(path, error, missing):
    """The JSON the record at `path` holds (the caller checks its shape), `missing` when
    there is no record yet; `error` (the caller's ToolError class) "cannot read PATH: why"
    when the file cannot be read or is not JSON."""
    if not os.path.exists(path):
        return missing
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise error("cannot read %s: %s" % (path, exc))


def write(path, record):
    """Written whole to PATH.tmp, then renamed over the record: a reader (or a crash) never
    sees half of one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
