"""A stand-in for OpenTrace, as small as the upgrade flow needs.

At start it migrates its two databases, as OpenTrace does: its metadata in
PostgreSQL (through psql; POSTGRES_HOST and libpq's PG* variables) and its
traces in ClickHouse (over HTTP; CLICKHOUSE_URL), each from migrations/<db>/,
in order, recorded in the database's schema_migrations table. A database that
holds a migration this version does not know (written by a newer version) is
refused: the app does not start, which is why a rollback must restore the
data, not only the image. Without those variables (a development run) it
keeps only its files.

GET /api/health answers {"status": "ok", "version": ...} (what upgraderd's
health gate asks) once the migrations are done, GET / counts a visit in data/
and shows the upgrade status upgraderd writes, and the "Install Update" button
(POST /api/update) writes data/updates/trigger as OpenTrace's backend does.
"""

import html
import json
import os
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(os.environ.get("DATA_DIR", "data"))
UPDATES = DATA / "updates"
VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
SITE_NAME = os.environ.get("SITE_NAME", "OpenTrace")
MIGRATIONS = Path(__file__).parent / "migrations"

PAGE = """<!doctype html>
<title>{site} {version}</title>
<h1>{site} {version}</h1>
<p>{visits} visits</p>
<form method="post" action="/api/update"><button>Install Update</button></form>
<pre>{status}</pre>
"""


def count_visit():
    counter = DATA / "visits"
    visits = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(f"{visits}\n")
    return visits


def request_update():
    """Asks upgraderd for the latest version: written aside, then renamed into place."""
    UPDATES.mkdir(parents=True, exist_ok=True)
    partial = UPDATES / ".trigger.partial"
    partial.write_text("update_requested\n")
    partial.replace(UPDATES / "trigger")


def psql(sql):
    """One statement in PostgreSQL: its rows, one a line."""
    run = subprocess.run(["psql", "-h", os.environ["POSTGRES_HOST"], "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip())
    return run.stdout.split()


def clickhouse(sql):
    """One statement in ClickHouse, over its HTTP interface: its rows, one a line."""
    with urllib.request.urlopen(os.environ["CLICKHOUSE_URL"], data=sql.encode(), timeout=60) as answer:
        return answer.read().decode().split()


DATABASES = {
    "postgres": (psql, "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY)",
                 "POSTGRES_HOST"),
    "clickhouse": (clickhouse, "CREATE TABLE IF NOT EXISTS schema_migrations (version String) ENGINE = TinyLog",
                   "CLICKHOUSE_URL"),
}


def wait_for(name, run):
    """The database may still be starting (or restarting after upgraderd restored it)."""
    for _ in range(120):
        try:
            return run("SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure means "not yet"
            last = error
            time.sleep(1)
    sys.exit(f"{name} did not answer in 120 s: {last}")


def migrate(name):
    run, create, setting = DATABASES[name]
    if setting not in os.environ:
        return
    wait_for(name, run)
    run(create)
    known = sorted(path.stem for path in (MIGRATIONS / name).glob("*.sql"))
    applied = set(run("SELECT version FROM schema_migrations"))
    newer = sorted(applied - set(known))
    if newer:
        # Exit code 3: upgraderd's health gate sees a crash, and its rollback restores the data.
        print(f"{name} holds migrations this version does not know ({', '.join(newer)}); "
              "it was written by a newer OpenTrace: restore the backup taken before that upgrade", file=sys.stderr)
        sys.exit(3)
    for version in (v for v in known if v not in applied):
        print(f"{name}: applying migration {version}", file=sys.stderr)
        run((MIGRATIONS / name / f"{version}.sql").read_text())
        run(f"INSERT INTO schema_migrations (version) VALUES ('{version}')")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/api/health":
            self.reply(200, "application/json", json.dumps({"status": "ok", "version": VERSION}))
        elif self.path == "/":
            status_file = UPDATES / ".upgrade-status.json"
            status = status_file.read_text() if status_file.exists() else "no upgrade yet"
            page = PAGE.format(site=html.escape(SITE_NAME), version=VERSION, visits=count_visit(),
                               status=html.escape(status))
            self.reply(200, "text/html; charset=utf-8", page)
        else:
            self.reply(404, "text/plain", "not found\n")

    def do_POST(self):
        if self.path != "/api/update":
            self.reply(404, "text/plain", "not found\n")
            return
        request_update()
        self.reply(202, "application/json", json.dumps({"requested": True}))

    def reply(self, code, content_type, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    for database in DATABASES:
        migrate(database)
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
