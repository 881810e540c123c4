"""Plain and TLS sockets driven directly by trio's I/O waits, without ``trio.SSLStream``.

``trio.SSLStream`` runs TLS through memory BIOs: every record is copied between Python buffers
and goes through a retry loop of its own, on top of trio's socket wrapper (#11 measured both at
~80 µs per request through two sidecars). Here a non-blocking ``ssl.SSLSocket`` (or a plain
socket) is called directly and, when OpenSSL wants to read or write first, the task waits with
``trio.lowlevel.wait_readable``/``wait_writable`` — in either direction, since a TLS read may
need to write and a write may need to read. Operations that complete at once do not yield;
trio's cancellation reaches a task at its next wait.

Closing calls ``notify_closing`` first (so a task still waiting on the socket wakes up with
``ClosedResourceError`` instead of waiting on a reused descriptor), sends TLS close_notify
once without waiting for the peer's, and closes. A write interrupted half-way (cancelled, or
the peer gone) leaves the stream ``broken``: its framing is unknown, so it is never reused.

A write that has to wait is bounded by ``send_timeout`` (when set): a peer that takes none of
our bytes for that long — a caller that asks for a large answer and never reads it — would
otherwise hold the connection, its slot and the upstream exchange behind it for ever. The wait
is woken by the run's deadline sweeper (:mod:`.deadlines`), as a waiting read is; a write that
completes at once costs nothing more.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

from .deadlines import sweeper

_WOULD_BLOCK = (BlockingIOError, InterruptedError)
_wait_readable = trio.lowlevel.wait_readable


class DirectStream(trio.abc.Stream):
    """A trio stream over one non-blocking socket (plain, or TLS after :meth:`do_handshake`)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self.fd = sock.fileno()  # for the pool's parked-connection checks
        self.broken = False
        self._closed = False
        # Seconds a write may wait for the peer to take bytes (None: unbounded); set by the
        # connection from its per-read timeout.
        self.send_timeout: float | None = None
        self.stalled: str | None = None  # why a write gave up (a read woken by it says so)
        # Set by the connection when the deadline of the read under way passed: a read woken
        # by bytes that leave TLS still short of a record must not wait again (the sweeper's
        # wake-up reached it only if it was waiting at that moment).
        self.read_expired = False
        # The calls that move bytes. For TLS, the SSL object's own read/write: ``SSLSocket``'s
        # Python wrappers add two frames per call and nothing this stream needs (it checks for
        # closing itself, and maps a ragged EOF to b"" as ``suppress_ragged_eofs`` would).
        tls = getattr(sock, "_sslobj", None) if isinstance(sock, ssl.SSLSocket) else None
        self._recv = tls.read if tls is not None else sock.recv
        self._send = tls.write if tls is not None else sock.send

    # --- TLS ------------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        sock = self.socket
        while True:
            try:
                sock.do_handshake()  # type: ignore[attr-defined]
                return
            except ssl.SSLWantReadError:
                await self._wait_readable()
            except ssl.SSLWantWriteError:
                await self._wait_writable()
            except OSError as exc:
                raise trio.BrokenResourceError(f"TLS handshake failed: {exc}") from exc

    def getpeercert(self, binary_form: bool = False):
        return self.socket.getpeercert(binary_form)  # type: ignore[attr-defined]

    def buffered(self) -> bool:
        """True if TLS holds decrypted bytes nobody has read yet."""
        pending = getattr(self.socket, "pending", None)
        return bool(pending()) if pending is not None else False

    # --- trio.abc.Stream ------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = max_bytes or 65536
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            try:
                return self._recv(size)
            except (ssl.SSLWantReadError, *_WOULD_BLOCK):
                if self.read_expired:
                    raise trio.ClosedResourceError("the read's deadline passed") from None
                await self._wait_readable()
            except ssl.SSLWantWriteError:
                await self._wait_writable()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except OSError as exc:
                self.broken = True
                raise trio.BrokenResourceError(f"receive failed: {exc!r}") from exc

    async def receive_after_wait(self, max_bytes: int) -> bytes:
        """:meth:`receive_some` for a caller that just found nothing to read: wait first,
        rather than try (and fail) once more."""
        await self._wait_readable()
        return await self.receive_some(max_bytes)

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What can be read without waiting (b"" at EOF), or None if nothing is there yet."""
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        try:
            return self._recv(max_bytes)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, *_WOULD_BLOCK):
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        except OSError as exc:
            self.broken = True
            raise trio.BrokenResourceError(f"receive failed: {exc!r}") from exc

    async def send_all(self, data) -> None:
        view = data  # a memoryview only once a write was partial
        send = self._send
        try:
            while view:
                if self._closed:
                    raise trio.ClosedResourceError("stream was closed")
                try:
                    sent = send(view)
                    if sent == len(view):
                        return
                    if type(view) is not memoryview:
                        view = memoryview(view)
                except (ssl.SSLWantWriteError, *_WOULD_BLOCK):
                    await self._send_wait(trio.lowlevel.wait_writable)
                    continue
                except ssl.SSLWantReadError:
                    await self._send_wait(_wait_readable)
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc
                view = view[sent:]
        except BaseException:
            if view:
                self.broken = True  # part of a message may be out: never reuse this stream
            raise

    async def _send_wait(self, wait) -> None:
        """One wait inside :meth:`send_all`, within ``send_timeout`` if one is set."""
        timeout = self.send_timeout
        if timeout is None:
            await wait(self.fd)
            return
        stall = _SendStall(self, trio.current_time() + timeout)
        swept = sweeper()
        swept.watch(stall)
        try:
            await wait(self.fd)
        except trio.ClosedResourceError:
            if stall.expired:
                raise trio.BrokenResourceError(self.stalled) from None
            raise
        finally:
            swept.unwatch(stall)

    async def wait_send_all_might_not_block(self) -> None:
        await self._wait_writable()

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        sock = self.socket
        trio.lowlevel.notify_closing(sock)
        if isinstance(sock, ssl.SSLSocket) and not self.broken:
            with contextlib.suppress(OSError, ValueError):
                sock.unwrap()  # our close_notify; the peer's is not waited for
        sock.close()
        await trio.lowlevel.checkpoint()

    async def _wait_readable(self) -> None:
        try:
            await _wait_readable(self.fd)  # the descriptor itself: no fileno() call per wait
        except trio.ClosedResourceError:
            if self.stalled is not None:  # woken because our own write to this peer gave up
                raise trio.BrokenResourceError(self.stalled) from None
            raise
        except OSError as exc:  # pragma: no cover - a descriptor gone under us
            raise trio.BrokenResourceError(str(exc)) from exc

    async def _wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.fd)


class _SendStall:
    """A write waiting under ``send_timeout``, as the deadline sweeper sees it."""

    __slots__ = ("expired", "stream", "wait_deadline")

    def __init__(self, stream: DirectStream, deadline: float) -> None:
        self.stream = stream
        self.wait_deadline = deadline
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        stream = self.stream
        stream.stalled = f"peer took none of our bytes for {stream.send_timeout:g} s"
        trio.lowlevel.notify_closing(stream.socket)  # wakes the waiting write (and any read)


def detach(stream: trio.SocketStream) -> socket.socket:
    """The stdlib socket under a trio ``SocketStream`` (the stream must not be used after)."""
    trio_sock = stream.socket
    return socket.socket(trio_sock.family, trio_sock.type, trio_sock.proto, trio_sock.detach())


def tls_server_stream(stream: trio.abc.Stream, context: ssl.SSLContext):
    """The server side of TLS over an accepted connection, handshake not yet done: a socket
    driven directly, or ``trio.SSLStream`` over anything else (memory streams in tests)."""
    if isinstance(stream, trio.SocketStream):
        raw = context.wrap_socket(detach(stream), server_side=True, do_handshake_on_connect=False)
        return DirectStream(raw)
    return trio.SSLStream(stream, context, server_side=True)


def tls_client_stream(tcp: trio.abc.Stream, context: ssl.SSLContext):
    """The client side of TLS over a fresh connection, handshake not yet done: a socket driven
    directly, or ``trio.SSLStream`` over anything else. No host-name check: the caller checks
    the peer's SPIFFE ID, as on every mesh connection."""
    if isinstance(tcp, trio.SocketStream):
        raw = context.wrap_socket(
            detach(tcp), server_side=False, server_hostname=None, do_handshake_on_connect=False
        )
        return DirectStream(raw)
    return trio.SSLStream(tcp, context, server_hostname=None)
