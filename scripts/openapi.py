#!/usr/bin/env python3
"""Writes crates/syncmgr-web/assets/openapi.json: the web API's routes, with
the JSON shapes of docs/cli.md (the one place they are documented) as its
component schemas. Run it after changing either; a test checks that the
served document still matches docs/cli.md.

    python3 scripts/openapi.py
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
OUT = ROOT / "crates" / "syncmgr-web" / "assets" / "openapi.json"


def schemas():
    text = DOC.read_text()
    found = {}
    for m in re.finditer(r"<!-- schema: (\S+) -->\s*```json\n(.*?)```", text, re.S):
        found[m.group(1)] = json.loads(m.group(2))
    return found


def refs(value):
    """`{"$ref": "counts"}` → `{"$ref": "#/components/schemas/counts"}`."""
    if isinstance(value, dict):
        return {
            k: ("#/components/schemas/" + v if k == "$ref" else refs(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [refs(v) for v in value]
    return value


def ref(name):
    return {"$ref": "#/components/schemas/" + name}


def json_body(name):
    return {"required": True, "content": {"application/json": {"schema": ref(name)}}}


def answer(description, name=None):
    out = {"description": description}
    if name:
        out["content"] = {"application/json": {"schema": ref(name)}}
    return out


ERRORS = {
    "400": answer("Bad input: what was wrong", "apiError"),
    "401": answer("No or wrong credentials", "apiError"),
    "403": answer("Refused: Host, origin or CSRF", "apiError"),
    "409": answer("Not now (nothing running, a guard asks)", "apiError"),
    "413": answer("The request body is too large", "apiError"),
    "503": answer("No daemon answers", "apiError"),
}


def op(summary, ok, body=None, params=None, errors=("400", "401", "403")):
    out = {"summary": summary, "responses": dict(ok)}
    for code in errors:
        out["responses"][code] = ERRORS[code]
    if body:
        out["requestBody"] = json_body(body)
        out["responses"]["413"] = ERRORS["413"]
        out["responses"].setdefault("400", ERRORS["400"])
    if params:
        out["parameters"] = params
    return out


def query(name, schema, description):
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def path_param(name, schema):
    return {"name": name, "in": "path", "required": True, "schema": schema}


EVENT = {"enum": ["manual", "invoke", "idle", "scheduled", "connect", "pendingDisconnect"]}
LEVEL = {"enum": ["information", "warning", "error"]}


def document():
    components = {name: refs(s) for name, s in schemas().items()}
    components["event"] = {"oneOf": [ref(n) for n in sorted(components) if n.startswith("event.")]}
    paths = {
        "/api/health": {"get": dict(op("Whether the server answers (no auth)",
                                       {"200": answer("It answers", "health")}, errors=("403",)),
                                    security=[])},
        "/api/v1/status": {"get": op("The daemon, its sessions, every registration and trigger",
                                     {"200": answer("The `status --json` object", "status")},
                                     errors=("401", "403", "503"))},
        "/api/v1/handlers": {"get": op("Every registration",
                                       {"200": answer("The `handlers --json` array", "handlers")},
                                       errors=("401", "403"))},
        "/api/v1/items": {"get": op(
            "Asks the handlers for their items",
            {"200": answer("The `items --json` array", "items")},
            params=[query("event", EVENT, "Whose check boxes (default `manual`)"),
                    query("handler", {"type": "string"}, "Only this registration")])},
        "/api/v1/choices": {"put": op("Checks or unchecks an item for an event",
                                      {"200": answer("The choice as stored", "choice")},
                                      body="choice", errors=("400", "401", "403", "409"))},
        "/api/v1/sync": {"post": op("Queues a session in the daemon",
                                    {"200": answer("Its id", "sessionRef")}, body="syncRequest",
                                    errors=("400", "401", "403", "409", "503"))},
        "/api/v1/cancel": {"post": op("Stops items, handlers or everything running",
                                      {"200": answer("How many sessions were told", "cancelReply")},
                                      body="cancelRequest", errors=("400", "401", "403", "409"))},
        "/api/v1/log": {"get": op(
            "The results log, oldest first",
            {"200": answer("The `log --json` array", "log")},
            params=[query("level", {"enum": [""] + LEVEL["enum"]},
                          "This level or more severe (empty: every level)"),
                    query("handler", {"type": "string"}, "Only about this registration"),
                    query("session", {"type": "string"}, "Only from this session"),
                    query("after", {"type": "integer", "format": "int64"}, "Only entries with a larger id")])},
        "/api/v1/log/{id}": {"delete": op(
            "Deletes an entry", {"204": answer("Deleted")},
            params=[path_param("id", {"type": "integer", "format": "int64"})])},
        "/api/v1/log/{id}/show": {"post": op(
            "Acts on an entry (asks its handler, retries); a guarded retry needs `confirm`",
            {"200": answer("The session that acted on it", "sessionRef"),
             "202": answer("The session, queued behind another of its registration: "
                           "it acts when it starts (a question it asks then is answered "
                           "with `confirm`)", "sessionRef")},
            body="showRequest",
            params=[path_param("id", {"type": "integer", "format": "int64"})],
            errors=("400", "401", "403", "409", "503"))},
        "/api/v1/conflicts": {"get": op(
            "The open conflicts, oldest first",
            {"200": answer("The `conflicts --json` array", "conflicts")},
            params=[query("handler", {"type": "string"}, "Only this registration's")])},
        "/api/v1/conflicts/{id}": {"get": op(
            "One conflict, with a diff of two text files",
            {"200": answer("The `conflicts show --json` object", "conflictDetail")},
            params=[path_param("id", {"type": "integer", "format": "int64"})])},
        "/api/v1/conflicts/{id}/resolve": {"post": op(
            "Asks the handler to apply a decision, then syncs the item "
            "(`conflicts resolve`); the outcome comes as `conflictResolved` or "
            "`conflictRefused` events",
            {"202": answer("The session that applies it", "sessionRef")},
            body="resolveRequest",
            params=[path_param("id", {"type": "integer", "format": "int64"})],
            errors=("400", "401", "403", "409", "503"))},
        "/api/v1/history": {"get": op(
            "Sessions, newest first", {"200": answer("The `history --json` array", "history")},
            params=[query("limit", {"type": "integer", "minimum": 0}, "At most this many")])},
        "/api/v1/schedules": {
            "get": op("The schedules", {"200": answer("The `schedule list --json` array", "schedules")},
                      errors=("401", "403")),
            "post": op("Adds a schedule", {"201": answer("The schedule as listed", "scheduleRow")},
                       body="newSchedule"),
        },
        "/api/v1/schedules/{name}": {"delete": op(
            "Removes a schedule", {"204": answer("Removed")},
            params=[path_param("name", {"type": "string"})])},
        "/api/v1/events": {"get": op(
            "Server-sent events: each `data:` an `events --json` line (`event`), `id:` rising by one; "
            "`Last-Event-ID` (or `after`) replays, a `resync` event says the replay is gone",
            {"200": {"description": "An event stream",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            params=[query("after", {"type": "integer", "minimum": 0}, "Replay events after this id")])},
        "/api/v1/login-token": {"post": op(
            "A one-time login link (API key only)", {"200": answer("The link", "loginUrl")},
            errors=("401", "403"))},
        "/metrics": {"get": op("Prometheus metrics",
                               {"200": {"description": "Prometheus text format",
                                        "content": {"text/plain": {"schema": {"type": "string"}}}}},
                               errors=("401", "403"))},
    }
    components["scheduleRow"] = components["schedules"]["items"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "syncmgr dashboard API",
            "version": "1",
            "description": "Sync Center's REST API, served by `syncmgr daemon`. Every route but "
                           "/api/health needs the API key (`Authorization: Bearer KEY` or "
                           "`X-API-Key`, the file `api-key` in the home) or a browser session.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(document(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
