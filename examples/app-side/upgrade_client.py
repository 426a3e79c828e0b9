"""App side of the upgraderd trigger protocol, for a Python web backend.

    from upgrade_client import request_upgrade, read_status
    upgrade_id = request_upgrade("/data", "2.14.0")   # the "Upgrade now" handler
    read_status("/data", upgrade_id)                  # what GET /api/upgrade/status/<id> returns

The trigger is written atomically: a temp file in the same directory,
flushed, then renamed over `.upgrade-trigger`. upgraderd never trusts it
beyond the request: image, compose files and policy are the host's.
"""

import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timezone

TRIGGER = ".upgrade-trigger"
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
    fd, tmp = tempfile.mkstemp(prefix=".upgrade-trigger.", dir=data_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(data_dir, TRIGGER))
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
