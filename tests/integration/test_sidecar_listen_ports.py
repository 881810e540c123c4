"""A sidecar's kernel-picked ports never take the port its own app is about to listen on."""

from __future__ import annotations

import trio

from sidecar import runtime


async def test_a_kernel_picked_port_equal_to_the_app_port_is_picked_again(monkeypatch):
    real_open = trio.open_tcp_listeners
    first = await real_open(0, host="127.0.0.1")
    taken = first[0].socket.getsockname()[1]
    handed = iter([first])

    async def open_listeners(port, host=None):
        try:
            return next(handed)  # the kernel "picks" the app's port once
        except StopIteration:
            return await real_open(port, host=host)

    monkeypatch.setattr(trio, "open_tcp_listeners", open_listeners)
    listeners = await runtime._open("127.0.0.1", 0, avoid=taken)
    try:
        assert listeners[0].socket.getsockname()[1] != taken
        assert first[0].socket.fileno() == -1  # the listener on the app's port was closed
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_a_port_asked_for_explicitly_is_kept():
    listeners = await runtime._open("127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    again = await runtime._open("127.0.0.1", port, avoid=port)
    try:
        assert again[0].socket.getsockname()[1] == port
    finally:
        for listener in again:
            await listener.aclose()
