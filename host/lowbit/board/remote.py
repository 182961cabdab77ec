"""A board on the network: ``open_device("remote:HOST[:PORT]")`` from the workstation.

The connection is pynq 4.0's own client (``pynq.pl_server.RemoteDevice``), so the board side is
either a PYNQ 4.0 image's remote service or ``lowbit serve`` (PYNQ 3.x images, the simulated
board). Over it runs the same ``PynqBackend`` as on the board itself: the same tiling, packing and
register sequence, so results are bit for bit those of a local board.

What this module adds is failure handling: every RPC gets a deadline; a failed RPC becomes a
``RemoteBoardError`` naming the host, the port and the call; the connection is dropped, and the
next GEMM reconnects (a restarted server is picked up). A failed GEMM raises before its layer
returns, so the training step it belongs to never reaches ``optimizer.step()``.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

from lowbit.backends.base import Backend, Capabilities
from lowbit.numerics.qtensor import QTensor
from lowbit.kernel.wire import Op
from lowbit.board import remote_protocol as proto
from lowbit.board.errors import BoardError

PREFIX = "remote:"
OVERLAY_FILES = ("lowbit_gemm.bit", "lowbit_gemm.hwh", "manifest.json")


class RemoteBoardError(BoardError):
    """An RPC to a remote board failed (unreachable, deadline passed, server restarted)."""


def parse_address(text: str) -> Tuple[str, int]:
    """"remote:HOST[:PORT]" or "HOST[:PORT]" -> (host, port); IPv6 literals in brackets."""
    rest = text[len(PREFIX):] if text.startswith(PREFIX) else text
    host, port = rest, proto.DEFAULT_PORT
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = tail[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number, as in remote:192.168.2.99:{proto.DEFAULT_PORT}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"{text!r}: expected remote:HOST[:PORT], as in remote:192.168.2.99:{proto.DEFAULT_PORT}")
    return host, port


@dataclass
class Traffic:
    """What went over the wire: RPCs and serialized message bytes each way."""

    calls: int = 0
    sent: int = 0
    received: int = 0

    def snapshot(self) -> "Traffic":
        return Traffic(self.calls, self.sent, self.received)

    def since(self, earlier: "Traffic") -> "Traffic":
        return Traffic(self.calls - earlier.calls, self.sent - earlier.sent, self.received - earlier.received)


# ------------------------------------------------------------------------------------------------
# the channel: deadlines, byte counts, errors that name host and call


def _explain(code_name: str, details: str, timeout_s: float) -> str:
    if code_name == "UNAVAILABLE":
        return (f"the server is unreachable or went away ({details}); check that `lowbit serve` (or the board's "
                "pynq remote service) runs there; the next call reconnects")
    if code_name == "DEADLINE_EXCEEDED":
        return (f"no answer within {timeout_s:g} s (a stalled link or a hung server); the connection was dropped "
                "and the next call reconnects (raise rpc_timeout_s= for slow links)")
    return f"{code_name}: {details}"


def _interceptor(host: str, port: int, timeout_s: float, traffic: Traffic):
    import grpc

    class Details(collections.namedtuple("Details", "method timeout metadata credentials wait_for_ready compression"),
                  grpc.ClientCallDetails):
        pass

    def fail(method: str, err: "grpc.RpcError") -> RemoteBoardError:
        code = err.code().name if hasattr(err, "code") and err.code() else "UNKNOWN"
        details = err.details() if hasattr(err, "details") else str(err)
        return RemoteBoardError(f"remote board {host}:{port}: {method.strip('/')} failed: "
                                + _explain(code, details, timeout_s))

    def with_deadline(details):
        return Details(details.method, timeout_s if details.timeout is None else details.timeout, details.metadata,
                       details.credentials, getattr(details, "wait_for_ready", None),
                       getattr(details, "compression", None))

    def counted(iterator):
        for message in iterator:
            traffic.sent += message.ByteSize()
            yield message

    class Interceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor):
        def _finish(self, method, outcome):
            try:
                response = outcome.result()
            except grpc.RpcError as err:
                raise fail(method, err) from None
            traffic.received += response.ByteSize()
            return outcome

        def intercept_unary_unary(self, continuation, details, request):
            traffic.calls += 1
            traffic.sent += request.ByteSize()
            return self._finish(details.method, continuation(with_deadline(details), request))

        def intercept_stream_unary(self, continuation, details, request_iterator):
            traffic.calls += 1
            return self._finish(details.method, continuation(with_deadline(details), counted(request_iterator)))

        def intercept_unary_stream(self, continuation, details, request):
            traffic.calls += 1
            traffic.sent += request.ByteSize()
            stream = continuation(with_deadline(details), request)

            def responses():
                try:
                    for response in stream:
                        traffic.received += response.ByteSize()
                        yield response
                except grpc.RpcError as err:
                    raise fail(details.method, err) from None

            return responses()

    return Interceptor()


def connect(host: str, port: int, *, rpc_timeout_s: float = 30.0, connect_timeout_s: float = 5.0,
            traffic: Optional[Traffic] = None):
    """pynq's ``RemoteDevice`` for HOST:PORT on a channel with deadlines and error translation."""
    import grpc

    traffic = traffic if traffic is not None else Traffic()
    raw = grpc.insecure_channel(f"{host}:{port}", options=[
        ("grpc.max_receive_message_length", 2 * proto.CHUNK_BYTES + 4096)])
    try:
        grpc.channel_ready_future(raw).result(timeout=connect_timeout_s)
    except grpc.FutureTimeoutError:
        raw.close()
        raise RemoteBoardError(f"remote board {host}:{port}: connect failed: nothing answered within "
                               f"{connect_timeout_s:g} s; start `lowbit serve` there (or the board's pynq remote "
                               "service), check the address and that the port is open") from None
    cls = _remote_device_class()
    device = cls.__new__(cls)
    device._open(host, port, grpc.intercept_channel(raw, _interceptor(host, port, rpc_timeout_s, traffic)), raw)
    device.traffic = traffic
    return device


@functools.lru_cache(maxsize=None)
def _remote_device_class():  # built on first use: pynq is imported only then
    from pynq.pl_server import remote_device as rd

    class RemoteDevice(rd.RemoteDevice):
        """pynq's RemoteDevice, unchanged but for the channel it is given (pynq's own __init__
        opens a channel without deadlines)."""

        def _open(self, host, port, channel, raw):
            rd.Device.__init__(self, "remote0")
            self.ip_addr, self.port = host, port
            self.client = type("Channel", (), {"channel": channel})()
            self._raw_channel = raw
            self._buffers = {}  # id -> weakref.ref(RemoteBuffer) (ndarrays are unhashable)
            self._stub = {
                "device": rd.remote_device_pb2_grpc.RemoteDeviceStub(channel),
                "mmio": rd.mmio_pb2_grpc.MmioStub(channel),
                "buffer": rd.buffer_pb2_grpc.RemoteBufferStub(channel),
                "gpio": rd.gpio_pb2_grpc.GpioStub(channel),
            }
            self.arch = self.get_arch()
            self.name = self.get_board_name()
            self.capabilities = {"REMOTE": True}

        def allocate(self, shape, dtype, **kwargs):
            buffer = super().allocate(shape, dtype, **kwargs)
            self._buffers = {k: r for k, r in self._buffers.items() if r() is not None}
            self._buffers[id(buffer)] = weakref.ref(buffer)
            return buffer

        def close_channel(self):
            """Close the channel; the buffers allocated through it forget their server-side twins (a
            RemoteBuffer's __del__ would otherwise call the closed channel during garbage collection)."""
            for ref in self._buffers.values():
                buffer = ref()
                if buffer is not None:
                    buffer.freed = True
            self._raw_channel.close()

    return RemoteDevice


# ------------------------------------------------------------------------------------------------
# the overlay: the local copy pynq parses, and whether the board already runs it


def served_overlay(device, cache: Path) -> Optional[Path]:
    """The overlay ``lowbit serve`` has loaded, copied into ``cache``; None when the server serves none."""
    prefix = "/lowbit/overlay/"
    if not device.exists_file(prefix + "manifest.json").exists:
        return None
    manifest = device.read_file(prefix + "manifest.json")
    folder = cache / hashlib.sha256(manifest).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    for name in OVERLAY_FILES:
        target = folder / name
        if not target.is_file():
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(device.read_file(prefix + name))
            partial.replace(target)
    return folder / "lowbit_gemm.bit"


def _already_loaded(device, bit: Path) -> bool:
    """True when the server says it runs this very overlay (same manifest.json bytes)."""
    prefix = "/lowbit/overlay/"
    manifest = bit.parent / "manifest.json"
    if not manifest.is_file() or not device.exists_file(prefix + "manifest.json").exists:
        return False
    return device.read_file(prefix + "manifest.json") == manifest.read_bytes()


# ------------------------------------------------------------------------------------------------
# the backend


class RemoteBackend(Backend):
    """A ``PynqBackend`` over a ``RemoteDevice``, reopened after any failure of the connection."""

    name = "board"

    def __init__(self, host: str, port: int, *, bitstream=None, timeout_s: float = 10.0, rpc_timeout_s: float = 30.0,
                 connect_timeout_s: float = 5.0, download: Optional[bool] = None):
        self.host, self.port = host, port
        self.bitstream = None if bitstream is None else Path(bitstream)
        self.timeout_s, self.rpc_timeout_s, self.connect_timeout_s = timeout_s, rpc_timeout_s, connect_timeout_s
        self.download = download
        self.traffic = Traffic()
        self.reconnects = -1
        self._board = None
        self._device = None
        self._open()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _open(self):
        from lowbit.runtime.native import cache_dir
        from lowbit.board.overlay import open_pynq

        device = connect(self.host, self.port, rpc_timeout_s=self.rpc_timeout_s,
                         connect_timeout_s=self.connect_timeout_s, traffic=self.traffic)
        try:
            bit = self.bitstream or served_overlay(device, cache_dir() / "remote-overlays")
            if bit is None:
                raise ValueError(f"remote board {self.address} serves no lowbit overlay: pass bitstream= (the .bit "
                                 "with its .hwh and manifest.json beside it), or start `lowbit serve --bitstream PATH`")
            download = self.download if self.download is not None else not _already_loaded(device, Path(bit))
            board = open_pynq(bit, device=device, download=download, timeout_s=self.timeout_s)
            board.reset()  # a dropped connection may have left a transfer behind
        except Exception:
            device.close_channel()
            raise
        self._device, self._board = device, board
        self.reconnects += 1
        return board

    def _backend(self):
        return self._board if self._board is not None else self._open()

    def _drop(self) -> None:
        if self._device is not None:
            self._device.close_channel()  # the buffers stay on the server until it restarts
        self._device = self._board = None

    def capabilities(self) -> Capabilities:
        inner = self._backend().capabilities()
        return Capabilities(self.name, inner.kinds, inner.exact_integer, inner.devices,
                            f"{inner.description}, remote at {self.address} (pynq.remote gRPC protocol)")

    def gemm(self, a: QTensor, b: QTensor, *, op: Op = Op.FORWARD) -> torch.Tensor:
        try:
            return self._backend().gemm(a, b, op=op)
        except Exception as err:
            remote = _first_remote_error(err)
            if remote is None:
                raise
            self._drop()
            raise RemoteBoardError(f"{remote} (during a {a.shape[0]}x{b.shape[0]}x{a.shape[1]} {op.name} GEMM; "
                                   "the layer's result was not produced)") from err

    @property
    def calls_run(self) -> int:
        return 0 if self._board is None else self._board.calls_run

    def close(self) -> None:
        if self._board is not None:
            try:
                self._board.close()
            except Exception:  # noqa: BLE001  a dead server cannot take its buffers back; it frees them on restart
                pass
        self._drop()


def _first_remote_error(err: BaseException) -> Optional[RemoteBoardError]:
    """The earliest RemoteBoardError in ``err``'s cause/context chain (the board backend may wrap it)."""
    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, RemoteBoardError):
            found = err
        err = err.__cause__ or err.__context__
    return found


def open_remote(address: str, *, bitstream=None, **kwargs) -> RemoteBackend:
    host, port = parse_address(address)
    return RemoteBackend(host, port, bitstream=bitstream, **kwargs)
