"""`lowbit serve`: a board's registers and DMA buffers on the network, in PYNQ 4.0's remote protocol.

    lowbit serve [--port 7967] [--bitstream PATH]     on the board (PYNQ 3.x or 4.0 image)
    lowbit serve --simulated [--board zcu104] --port P  the simulated board (CI, 127.0.0.1)

The workstation opens it with ``lowbit.open_device("remote:HOST[:PORT]")`` or with pynq's own
``pynq.pl_server.RemoteDevice``. The server needs numpy, pynq, grpcio and protobuf: no torch.
It exposes only what the pynq client uses, and only there: MMIO inside the loaded overlay's IP
address ranges, DMA buffers it allocated itself, and a handful of files (the FPGA manager, the
firmware folder, /proc/version, the board name, and the served overlay under /lowbit/overlay/).
"""
from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import threading
import uuid
from concurrent import futures
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from lowbit.board import remote_protocol as proto

FPGA_MANAGER = "/sys/class/fpga_manager/fpga0/"
FIRMWARE = "/lib/firmware/"
OVERLAY_FILES = "/lowbit/overlay/"  # read-only: the overlay this server has loaded (bit, hwh, manifest.json)
BOARD_NAME = "/proc/device-tree/chosen/pynq_board"
READABLE = ("/proc/version", BOARD_NAME, FPGA_MANAGER + "state", FPGA_MANAGER + "flags")
# PS registers pynq's download touches on a board (PL clocks: pynq.ps; AXI port widths): ZynqMP
# CRF_APB/CRL_APB, Zynq-7000 SLCR, ZynqMP FPD/LPD SLCR and AFIFM blocks.
PS_WINDOWS = ((0xFD1A0000, 0x1000), (0xFF5E0000, 0x1000), (0xF8000000, 0x1000), (0xFD615000, 0x1000),
              (0xFF419000, 0x1000), (0xFD360000, 0x30000))


class Refused(Exception):
    """A request the server will not serve; becomes a gRPC error status with this message."""

    def __init__(self, code_name: str, message: str):
        super().__init__(message)
        self.code_name = code_name


# ------------------------------------------------------------------------------------------------
# targets: where the registers and buffers really are


class Target:
    """A pynq device with an overlay: the registers and buffers the protocol reaches."""

    def __init__(self, device, bitstream: Optional[Path], board: str):
        self.device = device
        self.bitstream = bitstream
        self.board = board
        self.windows: list = []  # (base, size) of the overlay's IPs
        self.ps_windows = PS_WINDOWS
        self.files: Dict[str, bytes] = {}  # firmware written by the client (simulated board)

    def load(self, download: bool) -> None:
        import pynq

        if self.bitstream is None:
            return
        overlay = pynq.Overlay(str(self.bitstream), download=download, device=self.device)
        self.windows = [(int(i["phys_addr"]), int(i["addr_range"])) for i in overlay.ip_dict.values()
                        if i.get("phys_addr") is not None and i.get("addr_range")]

    def check_window(self, base: int, length: int) -> None:
        inside = any(b <= base and base + length <= b + size for b, size in (*self.windows, *self.ps_windows))
        if self.windows and not inside:
            ranges = ", ".join(f"0x{b:x}+0x{s:x}" for b, s in self.windows)
            raise Refused("PERMISSION_DENIED", f"MMIO 0x{base:x}+0x{length:x} lies outside the overlay's IPs ({ranges}) "
                          "and the PS clock/port-width registers a download sets")

    def mmio(self, base: int, length: int):
        import pynq

        return pynq.MMIO(base, length, device=self.device)

    def allocate(self, size: int):
        import pynq

        return pynq.allocate(shape=(size,), dtype=np.uint8, target=self.device)

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write_file(self, path: str, data: bytes) -> None:
        Path(path).write_bytes(data)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)


class SimulatedTarget(Target):
    """``lowbit.board.sim.SimulatedBoard`` behind the protocol: files are virtual; writing a firmware
    name to the FPGA manager resets the simulated PL, as reprogramming resets a board's IPs."""

    def __init__(self, bitstream: Path, board: str, threaded: bool = True):
        from lowbit.board.sim import SimulatedBoard

        super().__init__(SimulatedBoard(threaded=threaded), bitstream, board)
        self.ps_windows = ()  # no PS model: a client opens the served overlay without downloading it
        self.virtual = {"/proc/version": b"Linux version (lowbit simulated board) aarch64\n",
                        BOARD_NAME: board.upper().encode() + b"\x00",
                        FPGA_MANAGER + "state": b"operating\n", FPGA_MANAGER + "flags": b"0\n"}

    def read_file(self, path: str) -> bytes:
        if path in self.virtual:
            return self.virtual[path]
        if path in self.files:
            return self.files[path]
        raise Refused("NOT_FOUND", f"{path} does not exist on the simulated board")

    def exists(self, path: str) -> bool:
        return path in self.virtual or path in self.files

    def write_file(self, path: str, data: bytes) -> None:
        if path == FPGA_MANAGER + "firmware":
            name = FIRMWARE + data.decode(errors="replace").strip()
            if name not in self.files:
                raise Refused("NOT_FOUND", f"the FPGA manager was asked to load {name}, which was never written")
            self.device.reset_pl()
        elif path == FPGA_MANAGER + "flags":
            self.virtual[path] = data
        else:
            self.files[path] = data


def make_target(simulated: bool, bitstream: Optional[str], board: str) -> Target:
    if simulated:
        from lowbit.board import simulated_overlay

        bit = Path(bitstream) if bitstream else simulated_overlay(board)
        target = SimulatedTarget(bit, board)
        target.load(download=False)
        return target
    import pynq

    device = pynq.Device.active_device
    bit = Path(bitstream) if bitstream else None
    target = Target(device, bit, board)
    target.load(download=True)
    return target


# ------------------------------------------------------------------------------------------------
# the services


class Services:
    """The RemoteDevice, Mmio and RemoteBuffer services of pynq.remote over one ``Target``.

    One lock serialises every request: a board has one DMA engine and one client at a time."""

    def __init__(self, target: Target):
        self.target = target
        self.lock = threading.Lock()
        self.boot = uuid.uuid4().hex[:8]  # ids from an earlier run of the server are recognisably stale
        self.ids = itertools.count(1)
        self.mmios: dict = {}
        self.buffers: dict = {}
        self.calls = 0

    # -- helpers
    def _new_id(self, kind: str) -> str:
        return f"{kind}-{self.boot}-{next(self.ids)}"

    def _lookup(self, table: dict, key: str, kind: str):
        if key not in table:
            started = "an earlier run of this server" if not key.startswith(f"{kind}-{self.boot}-") else "no one"
            raise Refused("FAILED_PRECONDITION", f"unknown {kind} id {key!r} (made by {started}): the server was "
                          "restarted or the handle was freed; reopen the device")
        return table[key]

    # -- RemoteDevice: files and the FPGA manager
    def existsfile(self, request, _context):
        return self._msg("remote_device", "ExistsFileResponse", exists=self._exists(request.file_path))

    def _exists(self, path: str) -> bool:
        if path.startswith(OVERLAY_FILES):
            return self._overlay_file(path) is not None
        return path in READABLE and self.target.exists(path) or (path.startswith(FIRMWARE) and self.target.exists(path))

    def readfile(self, request, _context):
        data = self._read(request.file_path)
        for i in range(0, max(len(data), 1), proto.CHUNK_BYTES):
            yield self._msg("remote_device", "ReadFileResponse", data=data[i:i + proto.CHUNK_BYTES])

    def _read(self, path: str) -> bytes:
        if path.startswith(OVERLAY_FILES):
            found = self._overlay_file(path)
            if found is None:
                raise Refused("NOT_FOUND", f"{path}: this server has no such overlay file")
            return found.read_bytes()
        if path not in READABLE:
            raise Refused("PERMISSION_DENIED", f"lowbit serve does not serve {path}; readable: {', '.join(READABLE)}")
        return self.target.read_file(path)

    def _overlay_file(self, path: str) -> Optional[Path]:
        bit = self.target.bitstream
        if bit is None:
            return None
        name = path[len(OVERLAY_FILES):]
        files = {"lowbit_gemm.bit": bit, "lowbit_gemm.hwh": bit.with_suffix(".hwh"),
                 "manifest.json": bit.parent / "manifest.json"}
        found = files.get(name)
        return found if found is not None and found.is_file() else None

    def writefile(self, request_iterator, _context):
        path, chunks = None, []
        for request in request_iterator:
            path = path or request.file_path
            chunks.append(request.data)
        if path is None:
            raise Refused("INVALID_ARGUMENT", "writefile carried no file path")
        self._check_writable(path)
        with self.lock:
            self.target.write_file(path, b"".join(chunks))
        return self._msg("remote_device", "WriteFileResponse")

    @staticmethod
    def _check_writable(path: str) -> None:
        firmware = path.startswith(FIRMWARE) and "/" not in path[len(FIRMWARE):] and path.endswith(".bin")
        if not (firmware or path in (FPGA_MANAGER + "firmware", FPGA_MANAGER + "flags")):
            raise Refused("PERMISSION_DENIED", f"lowbit serve does not write {path}; writable: {FIRMWARE}<name>.bin, "
                          f"{FPGA_MANAGER}firmware, {FPGA_MANAGER}flags")

    def set_bitstream_attrs(self, _request, _context):
        return self._msg("remote_device", "SetBitstreamAttrsResponse", status=True)

    def shutdown(self, _request, _context):
        return self._msg("remote_device", "ShutdownResponse", status=True)

    def set_pl_clk(self, request, _context):
        if not isinstance(self.target, SimulatedTarget):
            from pynq.ps import Clocks

            Clocks.set_pl_clk(request.i, request.div0, request.div1, request.clk_mhz)
        return self._msg("remote_device", "SetPlClkResponse", status=True)

    def download(self, _request_iterator, _context):
        raise Refused("UNIMPLEMENTED", "download: write the .bin to /lib/firmware and its name to the FPGA manager")

    # -- Mmio
    def get_mmio(self, request, _context):
        self.target.check_window(request.base_addr, request.length)
        with self.lock:
            key = self._new_id("mmio")
            self.mmios[key] = self.target.mmio(request.base_addr, request.length)
        return self._msg("mmio", "GetMmioResponse", status=True, mmio_id=key)

    def read(self, request, _context):
        if request.length != 4 or request.offset % 4:
            raise Refused("INVALID_ARGUMENT", f"MMIO reads are 4 aligned bytes, got {request.length} at {request.offset}")
        with self.lock:
            value = int(self._lookup(self.mmios, request.mmio_id, "mmio").read(request.offset, 4))
        return self._msg("mmio", "ReadResponse", status=True, data=value & 0xFFFFFFFF)

    def write(self, request, _context):
        data = bytes(request.data)
        if len(data) % 4 or request.offset % 4:
            raise Refused("INVALID_ARGUMENT", f"MMIO writes are whole aligned words, got {len(data)} bytes at {request.offset}")
        with self.lock:
            mmio = self._lookup(self.mmios, request.mmio_id, "mmio")
            for i in range(0, len(data), 4):
                mmio.write(request.offset + i, int.from_bytes(data[i:i + 4], "little"))
        return self._msg("mmio", "WriteResponse", status=True)

    # -- RemoteBuffer
    def allocate(self, request, _context):
        if request.size <= 0:
            raise Refused("INVALID_ARGUMENT", f"allocate: size must be positive, got {request.size}")
        with self.lock:
            try:
                buffer = self.target.allocate(request.size)
            except (RuntimeError, MemoryError, OSError) as err:
                raise Refused("RESOURCE_EXHAUSTED", f"allocate {request.size} bytes: {err}") from err
            key = self._new_id("buffer")
            self.buffers[key] = buffer
        return self._msg("buffer", "AllocateResponse", buffer_id=key)

    def buffer_write(self, request_iterator, _context):
        with self.lock:
            buffer, offset = None, 0
            for request in request_iterator:
                buffer = buffer if buffer is not None else self._lookup(self.buffers, request.buffer_id, "buffer")
                start = request.start if request.end > request.start else offset
                data = np.frombuffer(request.data, np.uint8)
                if start + len(data) > len(buffer):
                    raise Refused("OUT_OF_RANGE", f"buffer write of {len(data)} bytes at {start} overruns its {len(buffer)}")
                buffer[start:start + len(data)] = data
                offset = start + len(data)
        return self._msg("buffer", "BufferWriteResponse")

    def buffer_read(self, request, _context):
        with self.lock:
            buffer = self._lookup(self.buffers, request.buffer_id, "buffer")
            end = request.end if request.end > request.start else len(buffer)
            data = bytes(np.asarray(buffer[request.start:end]).view(np.uint8))
        for i in range(0, max(len(data), 1), proto.CHUNK_BYTES):
            yield self._msg("buffer", "BufferReadResponse", data=data[i:i + proto.CHUNK_BYTES])

    def freebuffer(self, request, _context):
        with self.lock:
            self._lookup(self.buffers, request.buffer_id, "buffer").freebuffer()
            del self.buffers[request.buffer_id]
        return self._msg("buffer", "FreeBufferResponse")

    def flush(self, request, _context):
        with self.lock:
            self._lookup(self.buffers, request.buffer_id, "buffer").flush()
        return self._msg("buffer", "FlushResponse")

    def invalidate(self, request, _context):
        with self.lock:
            self._lookup(self.buffers, request.buffer_id, "buffer").invalidate()
        return self._msg("buffer", "InvalidateResponse")

    def physical_address(self, request, _context):
        with self.lock:
            address = int(self._lookup(self.buffers, request.buffer_id, "buffer").device_address)
        return self._msg("buffer", "AddressResponse", address=address)

    def virtual_address(self, request, _context):
        with self.lock:
            buffer = self._lookup(self.buffers, request.buffer_id, "buffer")
        return self._msg("buffer", "AddressResponse", address=int(getattr(buffer, "virtual_address", 0) or 0))

    def cacheable(self, request, _context):
        with self.lock:
            buffer = self._lookup(self.buffers, request.buffer_id, "buffer")
        return self._msg("buffer", "CacheableResponse", cacheable=bool(getattr(buffer, "cacheable", True)))

    @staticmethod
    def _msg(package: str, name: str, **fields):
        return proto.message(package, name, **fields)


# Methods whose name is taken by another service's method of the same name.
_RENAMED = {("buffer.RemoteBuffer", "write"): "buffer_write", ("buffer.RemoteBuffer", "read"): "buffer_read"}


def _handler(services: Services, service: str, method: str, spec: tuple):
    import grpc

    package = proto.SERVICES[service][0]
    request, response, client_streaming, server_streaming = spec
    function = getattr(services, _RENAMED.get((service, method), method))
    wrapped = _guarded(services, f"{service}/{method}", function, server_streaming)
    make = {(False, False): grpc.unary_unary_rpc_method_handler, (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    classes = proto.messages()
    return make[(client_streaming, server_streaming)](
        wrapped, request_deserializer=classes[f"{package}.{request}"].FromString,
        response_serializer=classes[f"{package}.{response}"].SerializeToString)


def _guarded(services: Services, name: str, function, streaming: bool):
    """Refused and unexpected errors become gRPC statuses with a message naming the call."""
    import grpc

    def fail(context, err):
        code = getattr(grpc.StatusCode, getattr(err, "code_name", "INTERNAL"))
        text = str(err) if isinstance(err, Refused) else f"{type(err).__name__}: {err}"
        context.abort(code, f"{name}: {text}")

    def unary(request, context):
        services.calls += 1
        try:
            return function(request, context)
        except Exception as err:  # noqa: BLE001  every failure goes back to the client, the server stays up
            fail(context, err)

    def stream(request, context):
        services.calls += 1
        try:
            yield from function(request, context)
        except Exception as err:  # noqa: BLE001
            fail(context, err)

    return stream if streaming else unary


def make_server(target: Target, port: int, host: str = "0.0.0.0", workers: int = 4):
    """A started gRPC server for ``target``; returns (server, bound port, services)."""
    import grpc

    services = Services(target)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[
        ("grpc.so_reuseport", 0),  # a second server on a port in use must fail, not share it
        ("grpc.max_receive_message_length", 2 * proto.CHUNK_BYTES + 4096),
        ("grpc.max_send_message_length", 2 * proto.CHUNK_BYTES + 4096)])
    for service, (_, methods) in proto.SERVICES.items():
        handlers = {m: _handler(services, service, m, spec) for m, spec in methods.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port} (in use? pick another with --port)")
    server.start()
    return server, bound, services


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit serve", description="serve this board (or a simulated one) to "
                                "lowbit.open_device('remote:HOST[:PORT]') in PYNQ 4.0's remote protocol")
    p.add_argument("--port", type=int, default=proto.DEFAULT_PORT, help=f"TCP port (default {proto.DEFAULT_PORT}, pynq's)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default all; 127.0.0.1 for this machine only)")
    p.add_argument("--bitstream", help="the lowbit overlay (.bit with .hwh and manifest.json beside it) to load and serve")
    p.add_argument("--simulated", action="store_true", help="serve the simulated board (emulation kernel) instead of the PL")
    p.add_argument("--board", default="zcu104", help="simulated board: zcu104 or pynq-z2 (default zcu104)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    _check_dependencies()
    target = make_target(args.simulated, args.bitstream, args.board)
    server, port, services = make_server(target, args.port, args.host)
    what = f"simulated {args.board}" if args.simulated else f"{target.device.name}"
    overlay = target.bitstream or "no overlay (the client downloads one)"
    print(f"lowbit serve: {what} with {overlay} on {args.host}:{port} (pid {os.getpid()})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(grace=1.0)
    print(f"lowbit serve: stopped after {services.calls} calls", file=sys.stderr)
    return 0


def _check_dependencies() -> None:
    missing = [name for name in ("grpc", "google.protobuf", "pynq") if not _importable(name)]
    if missing:
        from lowbit.cli import UserError

        raise UserError(f"lowbit serve needs {', '.join(missing)}: pip install grpcio protobuf (pynq comes with the "
                        "board image; off a board: pip install 'lowbit[remote]')")


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
