"""A SPIFFE Workload API server on a Unix socket, for tests: FetchX509SVID streaming only.

Built from grpcio and the proto stubs py-spiffe ships (``spiffe._proto``), so the client side
under test speaks to the real wire protocol. Like SPIRE's agent it refuses calls without the
``workload.spiffe.io: true`` metadata. ``publish`` pushes a new X.509 context to every open
stream (a rotation); ``fail_streams`` ends open streams with UNAVAILABLE (an agent restart).
"""

from __future__ import annotations

import queue
import threading
import warnings
from concurrent import futures
from pathlib import Path

import grpc

from identity import TrustBundle, X509Svid

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from spiffe._proto import workload_pb2, workload_pb2_grpc

from cryptography.hazmat.primitives import serialization


def _der_chain(svid: X509Svid) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in svid.chain)


def _der_key(svid: X509Svid) -> bytes:
    return svid.private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def x509_response(svids: list[X509Svid], bundle: TrustBundle) -> workload_pb2.X509SVIDResponse:
    bundle_der = b"".join(c.public_bytes(serialization.Encoding.DER) for c in bundle.authorities)
    return workload_pb2.X509SVIDResponse(
        svids=[
            workload_pb2.X509SVID(
                spiffe_id=str(svid.identity),
                x509_svid=_der_chain(svid),
                x509_svid_key=_der_key(svid),
                bundle=bundle_der,
            )
            for svid in svids
        ]
    )


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, server: FakeWorkloadApi) -> None:
        self.server = server

    def FetchX509SVID(self, request, context):
        metadata = dict(context.invocation_metadata())
        if metadata.get("workload.spiffe.io") != "true":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing")
        inbox: queue.Queue = queue.Queue()
        with self.server.lock:
            self.server.streams.append(inbox)
            current = self.server.current
        self.server.connections += 1
        if current is not None:
            inbox.put(current)
        try:
            while context.is_active():
                try:
                    item = inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "agent restarting")
                yield item
        finally:
            with self.server.lock:
                self.server.streams.remove(inbox)


class FakeWorkloadApi:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.lock = threading.Lock()
        self.streams: list[queue.Queue] = []
        self.current: workload_pb2.X509SVIDResponse | None = None
        self.connections = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(_Servicer(self), self._server)
        self._server.add_insecure_port(f"unix:{socket_path}")

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> FakeWorkloadApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)

    def publish(self, svids: list[X509Svid], bundle: TrustBundle) -> None:
        response = x509_response(svids, bundle)
        with self.lock:
            self.current = response
            for inbox in self.streams:
                inbox.put(response)

    def fail_streams(self) -> None:
        with self.lock:
            for inbox in self.streams:
                inbox.put(None)
