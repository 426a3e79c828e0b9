"""App side of the upgraderd trigger protocol, for a Python web backend.

    from upgrade_client import request_upgrade, read_status
    upgrade_id = request_upgrade("/data", "2.14.0")   # the "Upgrade now" handler
    read_status("/data", upgrade_id)                  # what GET /api/upgrade/status/<id> returns

Each request is its own file in the spool `.upgrade-trigger.d/`: a temp
file (a name starting with a dot, which upgraderd ignores) flushed and renamed
to `<nanoseconds>-<id>.json`, so a request never replaces another one still
waiting (a rename over the single `.upgrade-trigger` file would). upgraderd
never trusts it beyond the request: image, compose files and policy are the
host's.
"""

import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timezone

SPOOL = ".upgrade-trigger.d"
STATUS = ".upgrade-status.json"
STALE_AFTER_S = 30  # upgraderd refreshes updatedAt every few seconds during an upgrade


def request_upgrade(data_dir, version="latest", backup=True):
    upgrade_id = str(uuid.uuid4())
    body = {
        "upgradeId": upgrade_id,
        "version": version,
        "backup": backup,
        "timestamp": int(time.time() * 1000),
    }
    spool = os.path.join(data_dir, SPOOL)
    os.makedirs(spool, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=spool)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(spool, "%d-%s.json" % (time.time_ns(), upgrade_id)))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return upgrade_id


def read_status(data_dir, upgrade_id):
    """The status of `upgrade_id`: the status file's JSON, {"status": "pending"} before
    upgraderd picked the request up, and "stale" when the file stopped being refreshed
    mid-upgrade (upgraderd is not running; it recovers the upgrade when it starts)."""
    try:
        with open(os.path.join(data_dir, STATUS)) as f:
            status = json.load(f)
    except (OSError, ValueError):
        return {"upgradeId": upgrade_id, "status": "pending"}
    if status.get("upgradeId") != upgrade_id:
        return {"upgradeId": upgrade_id, "status": "pending"}
    if status.get("status") not in ("complete", "rolled_back", "failed"):
        updated = datetime.fromisoformat(status["updatedAt"].replace("Z", "+00:00"))
        if (datetime.now(timezone.utc) - updated).total_seconds() > STALE_AFTER_S:
            status["stale"] = True
    return status
