"""A stand-in for OpenTrace, as small as the upgrade flow needs.

GET /api/health answers {"status": "ok", "version": ...} (what upgraderd's
health gate asks), GET / counts a visit in data/ (what upgraderd backs up) and
shows the upgrade status upgraderd writes, and the "Install Update" button
(POST /api/update) writes data/updates/trigger as OpenTrace's backend does.
"""

import html
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(os.environ.get("DATA_DIR", "data"))
UPDATES = DATA / "updates"
VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
SITE_NAME = os.environ.get("SITE_NAME", "OpenTrace")

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
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
