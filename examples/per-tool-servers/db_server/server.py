"""One SQLite inventory, four MCP servers: each exposes one group of tools, chosen by ``DB_ROLE``.

The run file starts this module four times, as four App IDs, so that each group of tools sits
behind its own sidecar and its own App-ID ACL — per-tool authorization through separate servers:

========== ============== ===============================================================
DB_ROLE    App ID         tools
========== ============== ===============================================================
schema     mcp-db-schema  ``list_tables``, ``describe_table`` (introspection, read-only)
query      mcp-db-query   ``query`` (one SELECT; the file is opened with ``mode=ro``)
write      mcp-db-write   ``add_item``, ``set_quantity`` (parameterised INSERT/UPDATE on
                          ``items``; no free SQL)
ddl        mcp-db-ddl     ``create_table``, ``drop_table`` (destructive)
========== ============== ===============================================================

Written with the official ``mcp`` SDK (``MCPServer``) and nothing trustmesh-specific; it listens
on ``127.0.0.1:$APP_PORT``. The database is ``$DB_PATH`` (default
``trustmesh-per-tool-servers/inventory.db`` in the system's temporary directory: not in the
source tree, and writable by the unprivileged user ``trustmesh run`` starts apps as under root),
created and seeded on first start by whichever server starts first.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

ROLE = os.environ.get("DB_ROLE", "")
DEFAULT_DB = Path(tempfile.gettempdir()) / "trustmesh-per-tool-servers" / "inventory.db"
DB_PATH = Path(os.environ.get("DB_PATH") or DEFAULT_DB).absolute()
APP_PORT = int(os.environ.get("APP_PORT", "8000"))

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
COLUMN = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,62}) (TEXT|INTEGER|REAL|BLOB)", re.IGNORECASE)
SEED = (("widgets", 10), ("gadgets", 4), ("gizmos", 7))


# --- the database ------------------------------------------------------------------------------


def ensure_database() -> None:
    """Create the inventory (table ``items``, three rows) unless it exists. Idempotent."""
    DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    with connect(writable=True) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS items ("
            "id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, quantity INTEGER NOT NULL)"
        )
        db.executemany("INSERT OR IGNORE INTO items (name, quantity) VALUES (?, ?)", SEED)


@contextlib.contextmanager
def connect(*, writable: bool) -> Iterator[sqlite3.Connection]:
    """One connection for one tool call: committed (or rolled back) and closed on the way out.

    Read-only connections use ``mode=ro``: SQLite itself refuses every write on them, whatever
    the SQL says.
    """
    if writable:
        db = sqlite3.connect(DB_PATH)
    else:
        db = sqlite3.connect(f"{DB_PATH.as_uri()}?mode=ro", uri=True)
    try:
        with db:
            yield db
    finally:
        db.close()


def _identifier(name: str, what: str = "table") -> str:
    if not IDENTIFIER.fullmatch(name):
        raise ToolError(f"{what} name {name!r} must match {IDENTIFIER.pattern}")
    return name


def _tables(db: sqlite3.Connection) -> list[str]:
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [name for (name,) in rows]


# --- the four tool groups ----------------------------------------------------------------------


def schema_tools(server: MCPServer) -> None:
    @server.tool()
    def list_tables() -> str:
        """List the tables in the inventory database."""
        with connect(writable=False) as db:
            return json.dumps(_tables(db))

    @server.tool()
    def describe_table(table: str) -> str:
        """Describe one table: its columns with their types and constraints."""
        with connect(writable=False) as db:
            if table not in _tables(db):
                raise ToolError(f"no table {table!r}")
            rows = db.execute(
                'SELECT name, type, "notnull", pk FROM pragma_table_info(?)', (table,)
            ).fetchall()
        columns = []
        for name, kind, not_null, primary_key in rows:
            flags = (" NOT NULL" if not_null else "") + (" PRIMARY KEY" if primary_key else "")
            columns.append(f"{name} {kind}{flags}")
        return f"{table}({', '.join(columns)})"


def query_tools(server: MCPServer) -> None:
    @server.tool()
    def query(sql: str) -> str:
        """Run one read-only SELECT statement; answer its rows as JSON objects."""
        if not sql.lstrip().lower().startswith("select"):
            raise ToolError("only SELECT statements are allowed on mcp-db-query")
        with connect(writable=False) as db:
            try:
                cursor = db.execute(sql)  # one statement only: sqlite3 refuses a second
            except (sqlite3.Error, sqlite3.Warning) as exc:
                raise ToolError(f"query failed: {exc}") from None
            names = [d[0] for d in cursor.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchmany(100)]
        return json.dumps(rows)


def write_tools(server: MCPServer) -> None:
    @server.tool()
    def add_item(name: str, quantity: int) -> str:
        """Insert an item into the items table."""
        with connect(writable=True) as db:
            try:
                cursor = db.execute(
                    "INSERT INTO items (name, quantity) VALUES (?, ?)", (name, quantity)
                )
            except sqlite3.IntegrityError as exc:
                raise ToolError(f"cannot add {name!r}: {exc}") from None
        return f"inserted {name!r} as id {cursor.lastrowid}"

    @server.tool()
    def set_quantity(name: str, quantity: int) -> str:
        """Update the quantity of an existing item."""
        with connect(writable=True) as db:
            cursor = db.execute("UPDATE items SET quantity = ? WHERE name = ?", (quantity, name))
        if cursor.rowcount == 0:
            raise ToolError(f"no item {name!r}")
        return f"updated {name!r}: quantity = {quantity}"


def ddl_tools(server: MCPServer) -> None:
    @server.tool()
    def create_table(table: str, columns: list[str]) -> str:
        """Create a table (if it does not exist) from columns like "note TEXT"."""
        _identifier(table)
        specs = []
        for column in columns:
            match = COLUMN.fullmatch(column.strip())
            if match is None:
                raise ToolError(f"column {column!r} must be '<name> TEXT|INTEGER|REAL|BLOB'")
            specs.append(f'"{match[1]}" {match[2].upper()}')
        if not specs:
            raise ToolError("give at least one column")
        # Identifiers cannot be bound as parameters: both were checked against strict patterns.
        with connect(writable=True) as db:
            db.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({", ".join(specs)})')
        return f"table {table!r} exists"

    @server.tool()
    def drop_table(table: str) -> str:
        """Drop a table and every row in it."""
        _identifier(table)
        with connect(writable=True) as db:
            db.execute(f'DROP TABLE IF EXISTS "{table}"')
        return f"table {table!r} dropped"


TOOL_GROUPS = {
    "schema": schema_tools,
    "query": query_tools,
    "write": write_tools,
    "ddl": ddl_tools,
}


class RequireAppToken:
    """ASGI middleware: refuse (401) any request that did not come through our sidecar.

    ``trustmesh run`` gives the app ``APP_API_TOKEN`` and its sidecar sends it as
    ``dapr-api-token`` on every request it forwards (as Dapr does); another local process that
    posts to this port directly does not have it. Exactly one header, compared in constant time.
    """

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            sent = [v for k, v in scope["headers"] if k == b"dapr-api-token"]
            if len(sent) != 1 or not hmac.compare_digest(sent[0], self.token):
                body = b'{"error": "this app is reached through its sidecar only"}'
                headers = [(b"content-type", b"application/json")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve(server: MCPServer, **options) -> None:
    """``server.run("streamable-http", …)``, behind :class:`RequireAppToken` when
    ``$APP_API_TOKEN`` is set."""
    app = server.streamable_http_app(host="127.0.0.1", **options)
    if token := os.environ.get("APP_API_TOKEN"):
        app.add_middleware(RequireAppToken, token=token)
    uvicorn.run(app, host="127.0.0.1", port=APP_PORT, log_level=server.settings.log_level.lower())


def main() -> None:
    if ROLE not in TOOL_GROUPS:
        raise SystemExit(f"set DB_ROLE to one of {', '.join(TOOL_GROUPS)} (got {ROLE!r})")
    ensure_database()
    server = MCPServer(f"mcp-db-{ROLE}")
    TOOL_GROUPS[ROLE](server)
    print(f"mcp-db-{ROLE}: {DB_PATH} on 127.0.0.1:{APP_PORT}", flush=True)
    serve(server)


if __name__ == "__main__":
    main()
