"""The optional reference of bench measurement 1: mrprov's two measured routes
in FastAPI, served by uvicorn (Debian's python3-fastapi, python3-uvicorn).

GET /health answers a fixed JSON body (as mrprov's, built per request);
GET /api/v1/status/{subscription_id} reads the instance and its latest job
from mrprov's own SQLite store (BENCH_STATE_DB, opened read-only) and
answers the same JSON shape as mrprov. Run by bench/bench.lua:

    BENCH_STATE_DB=... /usr/bin/python3 -m uvicorn --app-dir bench \
        reference_fastapi:app --host 127.0.0.1 --port N
"""

import json
import os
import sqlite3
import threading
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse

DB = os.environ.get("BENCH_STATE_DB", "data/mrprov.db")
STARTED = time.monotonic()
app = FastAPI()
local = threading.local()


def conn():
    c = getattr(local, "conn", None)
    if c is None:
        c = sqlite3.connect("file:" + DB + "?mode=ro", uri=True, check_same_thread=False)
        c.row_factory = sqlite3.Row
        local.conn = c
    return c


@app.get("/health")
def health():
    return {"status": "healthy", "version": "0.1.0", "uptime_s": round(time.monotonic() - STARTED, 3),
            "config_generation": 1, "dokku_mode": "dry-run"}


@app.get("/api/v1/status/{subscription_id}")
def status(subscription_id: str):
    c = conn()
    inst = c.execute("SELECT * FROM instances WHERE subscription_id = ?", (subscription_id,)).fetchone()
    if inst is None:
        return JSONResponse({"error": {"code": "not_found", "message": "no instance for this subscription",
                                       "field": "subscription_id"}}, status_code=404)
    job = c.execute("SELECT * FROM jobs WHERE subscription_id = ? ORDER BY rowid DESC LIMIT 1",
                    (subscription_id,)).fetchone()
    urls = json.loads(inst["urls"] or "{}")
    view = {
        "subscription_id": inst["subscription_id"], "account_id": inst["account_id"],
        "app_name": inst["app_name"], "tier": inst["tier"], "status": inst["status"],
        "urls": {k: urls.get(k) for k in ("frontend", "backend", "matrix")},
        "limits": json.loads(inst["limits"] or "{}"),
        "created_at": inst["created_at"], "updated_at": inst["updated_at"], "error": inst["error"],
        "dry_run": inst["dry_run"] == 1, "job": None,
    }
    if job is not None:
        view["job"] = {"id": job["id"], "operation": job["operation"], "state": job["state"], "step": job["step"],
                       "steps_done": job["steps_done"], "steps_total": job["steps_total"]}
    return view
