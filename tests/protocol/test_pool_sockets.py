"""The pool's socket path: readability checked at acquire, one sweeper, no task per park.

Real loopback sockets (the in-memory streams of the other pool tests have no file descriptor);
time runs on trio's autojump clock where idle expiry is involved.
"""

from __future__ import annotations

import h11
import trio

from sidecar.http.connection import HttpConnection
from sidecar.proxy.pool import ConnectionPool


class Server:
    """A loopback listener whose accepted connections the test drives by hand."""

    def __init__(self) -> None:
        self.accepted: list[HttpConnection] = []
        self.arrived = trio.Event()

    async def serve(self, nursery, *, task_status=trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        async def handle(stream):
            self.accepted.append(HttpConnection(stream, h11.SERVER))
            self.arrived.set()
            await trio.sleep_forever()

        nursery.start_soon(trio.serve_listeners, handle, listeners)
        task_status.started(port)


async def exchange(client: HttpConnection, server: HttpConnection) -> None:
    await client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    await client.send(h11.EndOfMessage())
    assert isinstance(await server.next_event(), h11.Request)
    assert isinstance(await server.next_event(), h11.EndOfMessage)
    await server.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
    await server.send(h11.EndOfMessage())
    assert isinstance(await client.next_event(), h11.Response)
    assert isinstance(await client.next_event(), h11.EndOfMessage)
    server.start_next_cycle()


async def make_pool(nursery, idle_timeout=30.0):
    server = Server()
    port = await nursery.start(server.serve, nursery)
    dialled = []

    async def connect(key):
        dialled.append(key)
        return HttpConnection(await trio.open_tcp_stream("127.0.0.1", port), h11.CLIENT)

    pool = ConnectionPool(nursery, connect, idle_timeout=idle_timeout)
    return pool, server, dialled


async def test_a_parked_socket_connection_is_reused_without_a_watcher(nursery):
    pool, server, dialled = await make_pool(nursery)
    conn = await pool.acquire("app")
    await server.arrived.wait()
    await exchange(conn, server.accepted[0])
    tasks_before = len(nursery.child_tasks)
    pool.release("app", conn)
    assert len(nursery.child_tasks) == tasks_before + 1  # the pool's one sweeper, nothing else
    assert await pool.acquire("app") is conn
    await exchange(conn, server.accepted[0])
    pool.release("app", conn)
    assert len(nursery.child_tasks) == tasks_before + 1  # still one: no task per park
    assert len(dialled) == 1
    nursery.cancel_scope.cancel()


async def test_a_connection_the_server_closed_while_parked_is_not_reused(nursery):
    pool, server, dialled = await make_pool(nursery)
    conn = await pool.acquire("app")
    await server.arrived.wait()
    await exchange(conn, server.accepted[0])
    pool.release("app", conn)
    await server.accepted[0].stream.aclose()  # the server times the keep-alive out
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(conn.stream.socket)  # the FIN crossed loopback
    fresh = await pool.acquire("app")
    assert fresh is not conn
    assert len(dialled) == 2
    nursery.cancel_scope.cancel()


async def test_idle_connections_are_swept(nursery, autojump_clock):
    pool, server, dialled = await make_pool(nursery, idle_timeout=30.0)
    conn = await pool.acquire("app")
    await server.arrived.wait()
    await exchange(conn, server.accepted[0])
    pool.release("app", conn)
    await trio.sleep(29)
    assert await pool.acquire("app") is conn  # still fresh enough
    await exchange(conn, server.accepted[0])
    pool.release("app", conn)
    await trio.sleep(46)  # past the timeout and a sweep
    # The sweeper closed it: the server sees the connection end.
    assert isinstance(await server.accepted[0].next_event(), h11.ConnectionClosed)
    assert await pool.acquire("app") is not conn
    assert len(dialled) == 2
    nursery.cancel_scope.cancel()
