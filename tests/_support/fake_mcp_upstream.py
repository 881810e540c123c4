"""A scripted MCP upstream for response-filtering tests, independent of any SDK.

It answers ``POST /mcp?scenario=NAME`` with exactly the bytes a scenario prescribes, so a test can
put a notification, a server→client request, a list response and a broken event on one stream
in a known order and see what the sidecar lets through. Every list it returns holds ``add``,
``echo`` and ``get_weather_alert``, answering the request's own id unless a scenario says
otherwise.

Resumption (2025-11-25): scenarios whose name starts with ``resume`` store the events of the POST
stream per ``Mcp-Session-Id``; ``GET`` with ``Last-Event-ID`` replays the stored events after that
id, as an SDK event store does (``replay_events_after``). ``GET`` without a known id gets 404.

Tasks (2025-11-25): a ``tools/call`` with ``params.task`` creates a task (a fresh id);
``tasks/get``/``tasks/cancel``/``tasks/result`` answer for any task id, and ``tasks/list`` lists
every task it ever created, whoever created it — as a server that trusts its caller would
behind a proxy that multiplexes callers.

With ``$MCP_REQUEST_LOG`` set, every request (method, headers, body) is appended to that file
as one JSON line before it is answered, as ``mcp_logging_server`` does.

Sessions: ``initialize`` without an ``Mcp-Session-Id`` is answered with a fresh one (the sidecar
only forwards a session id to the caller whose request it was issued to).

A held stream: ``scenario=gated`` answers any request on an SSE stream (chunked) with one
progress notification at once and its result only after ``GET /release`` (or 30 s). A GET
resuming a session with ``scenario=gated`` replays what is stored, then holds the stream and
sends one ``the gated result`` notification after ``GET /release``. ``scenario=resume-long``
is ``resume`` with ``LONG_REPLAY`` notifications stored behind the id-only event.
``scenario=gated-json`` answers with one JSON body (Content-Length) holding the result, only
after ``GET /release``; ``GET /held`` returns once such a request is held (or after 10 s).
``scenario=gated-json-body`` sends that answer's head at once and its body after the release.

Prints ``{"event": "ready", "port": N}`` once listening on 127.0.0.1 (port from the OS).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOOLS = [
    {"name": "add", "inputSchema": {"type": "object"}},
    {"name": "echo", "inputSchema": {"type": "object"}},
    {"name": "get_weather_alert", "inputSchema": {"type": "object"}},
]
NOTIFICATION = {
    "jsonrpc": "2.0",
    "method": "notifications/message",
    "params": {"level": "info", "data": "listing tools"},
}
SERVER_REQUEST = {
    "jsonrpc": "2.0",
    "id": "srv-1",
    "method": "sampling/createMessage",
    "params": {"messages": [], "maxTokens": 1},
}
# A list response cut short: a lax reader could still find the hidden tool in it.
MALFORMED = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather_alert"}'

STORE: dict[str, list[tuple[str, bytes]]] = {}
STORE_LOCK = threading.Lock()
TASKS: list[str] = []


def log_request(method: str, headers, body: bytes) -> None:
    path = os.environ.get("MCP_REQUEST_LOG")
    if not path:
        return
    entry = {
        "method": method,
        "headers": [[k.lower(), v] for k, v in headers.items()],
        "body_b64": base64.b64encode(body).decode("ascii"),
    }
    with STORE_LOCK, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def task_answer(message: dict) -> dict | None:
    """The result of a task-related request, or None when the request is not one."""
    method, params = message.get("method"), message.get("params") or {}
    if method == "tools/call" and "task" in params:
        task_id = uuid.uuid4().hex
        with STORE_LOCK:
            TASKS.append(task_id)
        return {"task": {"taskId": task_id, "status": "working"}}
    if method in ("tasks/get", "tasks/cancel"):
        return {"taskId": params.get("taskId"), "status": "completed"}
    if method == "tasks/result":
        return {"content": [{"type": "text", "text": f"result of {params.get('taskId')}"}]}
    if method == "tasks/list":
        with STORE_LOCK:
            return {"tasks": [{"taskId": t, "status": "completed"} for t in TASKS]}
    return None


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def list_response(request_id, **extra) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS, **extra}}


def event(data: bytes, event_id: str | None = None) -> bytes:
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"event: message\ndata: " + data + b"\n\n"


GATE = threading.Event()  # set by GET /release: the gated stream sends its result
HELD = threading.Event()  # set while a gated-json request waits for GATE (GET /held)


LONG_REPLAY = 1100  # more event ids than a sidecar keeps per caller (MAX_EVENT_IDS_PER_CALLER)
GATED_NOTICE = {
    "jsonrpc": "2.0",
    "method": "notifications/message",
    "params": {"data": "the gated result"},
}


def gated_result(request_id) -> dict:
    content = [{"type": "text", "text": "the gated result"}]
    return {"jsonrpc": "2.0", "id": request_id, "result": {"content": content}}


SECRET_URI = "file:///payroll.csv"
GRANTED_URI = "file:///granted.txt"


def resource_updated(uri: str) -> dict:
    return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}


def js_number(value):
    """What a JavaScript server echoes for a numeric id: the nearest double."""
    return int(float(value)) if isinstance(value, int) else value


def post_answer(scenario: str, request_id, session: str | None) -> tuple[str, bytes]:
    """(content type, body) for one POSTed request."""
    sse = "text/event-stream"
    if scenario == "sse-mixed":
        return sse, b"".join(
            [
                event(dumps(NOTIFICATION)),
                event(dumps(SERVER_REQUEST)),
                event(dumps(list_response(request_id))),
                event(MALFORMED),
            ]
        )
    if scenario == "sse-resource-updates":  # a server announcing every update to every stream
        return sse, b"".join(
            [
                event(dumps(resource_updated(SECRET_URI))),
                event(dumps(resource_updated(GRANTED_URI))),
                event(dumps(list_response(request_id))),
            ]
        )
    if scenario == "sse-case-twins":  # members a case-insensitive (Go) client reads as real ones
        answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}
        updated = "notifications/resources/updated"
        twin_uri = {"uri": GRANTED_URI, "URI": SECRET_URI}
        return sse, b"".join(
            [
                event(dumps({"jsonrpc": "2.0", "Method": updated, "params": {"uri": SECRET_URI}})),
                event(dumps({"jsonrpc": "2.0", "method": updated, "params": twin_uri})),
                event(dumps(resource_updated(GRANTED_URI))),
                event(dumps(answer)),
            ]
        )
    if scenario == "sse-task-status":  # every task's status, to whoever asks (2025-11-25)
        with STORE_LOCK:
            known = list(TASKS)
        status = [
            {"jsonrpc": "2.0", "method": "notifications/tasks/status",
             "params": {"taskId": task_id, "status": "working"}}
            for task_id in known
        ]  # fmt: skip
        answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}
        return sse, b"".join(event(dumps(m)) for m in (*status, answer))
    if scenario == "json-list-case-twin":  # a second, unfiltered list under "Tools"
        return "application/json", dumps(
            {"jsonrpc": "2.0", "id": request_id, "result": {"tools": TOOLS[:1], "Tools": TOOLS}}
        )
    if scenario == "json-batch-resource-update":  # a 2025-03-26 style batch body
        answer = {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}
        return "application/json", dumps([answer, resource_updated(SECRET_URI)])
    if scenario == "sse-malformed-first":
        return sse, event(MALFORMED) + event(dumps(list_response(request_id)))
    if scenario == "sse-page":
        return sse, event(dumps(list_response(request_id, nextCursor="page-2")))
    if scenario == "json-page":
        return "application/json", dumps(list_response(request_id, nextCursor="page-2"))
    if scenario == "json-invalid":
        return "application/json", MALFORMED
    if scenario == "sse-js-id":
        return sse, event(dumps(list_response(js_number(request_id))))
    if scenario == "json-js-id":
        return "application/json", dumps(list_response(js_number(request_id)))
    if scenario.startswith("resume") and session:
        if scenario == "resume":  # the POST stream is cut after an id-only event
            events = [(f"{session}-0", b"id: " + f"{session}-0".encode() + b"\n\n")]
            pending = [(f"{session}-1", event(dumps(list_response(request_id)), f"{session}-1"))]
        elif scenario == "resume-priming":  # the spec's priming event: an id and empty data
            events = [(f"{session}-0", b"id: " + f"{session}-0".encode() + b"\ndata:\n\n")]
            pending = [(f"{session}-1", event(dumps(list_response(request_id)), f"{session}-1"))]
            events += pending
            pending = []
        elif scenario == "resume-updates":  # the id-only event; the replay holds two updates
            events = [(f"{session}-0", b"id: " + f"{session}-0".encode() + b"\n\n")]
            pending = [
                (f"{session}-1", event(dumps(resource_updated(SECRET_URI)), f"{session}-1")),
                (f"{session}-2", event(dumps(resource_updated(GRANTED_URI)), f"{session}-2")),
                (f"{session}-3", event(dumps(list_response(request_id)), f"{session}-3")),
            ]
        elif scenario == "resume-long":  # the id-only event, then a long stored replay
            events = [(f"{session}-0", b"id: " + f"{session}-0".encode() + b"\n\n")]
            pending = [
                (f"{session}-{i}", event(dumps(NOTIFICATION), f"{session}-{i}"))
                for i in range(1, LONG_REPLAY + 1)
            ]
        else:  # resume-delivered: the list is answered on the POST stream, and stored
            events = [
                (f"{session}-0", event(dumps(NOTIFICATION), f"{session}-0")),
                (f"{session}-1", event(dumps(list_response(request_id)), f"{session}-1")),
            ]
            pending = []
        with STORE_LOCK:
            STORE[session] = events + pending
        return sse, b"".join(raw for _, raw in events)
    return "application/json", dumps(list_response(request_id))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, content_type: str, body: bytes, session=None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        if session:
            self.send_header("mcp-session-id", session)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        log_request("POST", self.headers, body)
        scenario = parse_qs(urlsplit(self.path).query).get("scenario", [""])[0]
        session = self.headers.get("mcp-session-id")
        message = json.loads(body)
        if "id" not in message:
            self._send(202, "application/json", b"")
            return
        if message.get("method") == "initialize" and not session:
            result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}}
            answer = dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})
            self._send(200, "application/json", answer, uuid.uuid4().hex)
            return
        tasks = task_answer(message)
        if tasks is not None and scenario == "tasks-case-twin" and "tasks" in tasks:
            # Every task, every key capitalised: a case-insensitive (Go) client reads it as tasks.
            tasks = {"Tasks": [{"TaskId": t["taskId"]} for t in tasks["tasks"]]}
        if tasks is not None:
            answer = dumps({"jsonrpc": "2.0", "id": message["id"], "result": tasks})
            self._send(200, "application/json", answer, session)
            return
        if scenario == "gated":
            self._gated(message["id"])
            return
        if scenario == "gated-json":
            HELD.set()
            GATE.wait(30)
            GATE.clear()
            self._send(200, "application/json", dumps(gated_result(message["id"])), session)
            return
        if scenario == "gated-json-body":  # the head at once, the body after /release
            answer = dumps(gated_result(message["id"]))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.flush()
            HELD.set()
            GATE.wait(30)
            GATE.clear()
            self.wfile.write(answer)
            return
        content_type, answer = post_answer(scenario, message["id"], session)
        self._send(200, content_type, answer, session)

    def _gated(self, request_id) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for data, wait in ((dumps(NOTIFICATION), False), (dumps(gated_result(request_id)), True)):
            if wait:
                GATE.wait(30)
                GATE.clear()
            chunk = event(data)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/release":
            GATE.set()
            self._send(200, "application/json", b"{}")
            return
        if urlsplit(self.path).path == "/held":
            held = HELD.wait(10)
            HELD.clear()
            self._send(200, "application/json", dumps({"held": held}))
            return
        log_request("GET", self.headers, b"")
        session = self.headers.get("mcp-session-id") or ""
        last = self.headers.get("last-event-id")
        with STORE_LOCK:
            events = list(STORE.get(session, ()))
        ids = [event_id for event_id, _ in events]
        if last not in ids:
            self._send(404, "application/json", b'{"error":"unknown session or event"}')
            return
        replay = b"".join(raw for _, raw in events[ids.index(last) + 1 :])
        if parse_qs(urlsplit(self.path).query).get("scenario") == ["gated"]:
            self._held_replay(replay, session)
            return
        self._send(200, "text/event-stream", replay, session)

    def _held_replay(self, replay: bytes, session: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("mcp-session-id", session)
        self.end_headers()
        for chunk, wait in ((replay, False), (event(dumps(GATED_NOTICE)), True)):
            if wait:
                GATE.wait(30)
                GATE.clear()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_DELETE(self) -> None:
        log_request("DELETE", self.headers, b"")
        if self.headers.get("mcp-session-id"):
            self._send(200, "application/json", b"")
            return
        self._send(405, "application/json", b"")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"event": "ready", "port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
    sys.exit(0)
