"""The wire protocol of PYNQ 4.0's remote devices (``pynq.remote``), described here as data.

PYNQ 4.0's ``pynq.pl_server.RemoteDevice`` talks gRPC to a board: file access (the bitstream
goes to ``/lib/firmware`` and the FPGA manager), MMIO register reads and writes, and DMA
buffers (allocate, write, read, flush, invalidate, physical address). ``lowbit serve`` speaks the
same protocol, so the unmodified pynq client drives it. PYNQ 3.x images lack ``pynq.remote``, so
the message types are built at run time from the table below (field names, numbers and types
as pynq's .proto files define them) in a private descriptor pool: no generated code, and any
protobuf runtime from 3.20 on. ``tests/board/test_remote.py`` checks the table against the
pynq 4.0 descriptors field for field.
"""
from __future__ import annotations

import functools
from typing import Dict, Tuple

# Protobuf scalar types used by the protocol (descriptor.proto numbering).
BOOL, UINT64, INT32, STRING, BYTES, UINT32 = 8, 4, 5, 9, 12, 13

# file -> {message: ((field, number, type), ...)}
MESSAGES: Dict[str, Dict[str, Tuple[Tuple[str, int, int], ...]]] = {
    "remote_device": {
        "ReadFileRequest": (("file_path", 1, STRING),),
        "ReadFileResponse": (("data", 1, BYTES),),
        "WriteFileRequest": (("file_path", 1, STRING), ("data", 2, BYTES)),
        "WriteFileResponse": (),
        "ExistsFileRequest": (("file_path", 1, STRING),),
        "ExistsFileResponse": (("exists", 1, BOOL),),
        "SetBitstreamAttrsRequest": (("binfile_name", 1, STRING), ("partial", 2, BOOL)),
        "SetBitstreamAttrsResponse": (("status", 1, BOOL),),
        "ShutdownRequest": (),
        "ShutdownResponse": (("status", 1, BOOL),),
        "SetPlClkRequest": (("i", 1, INT32), ("div0", 2, INT32), ("div1", 3, INT32), ("clk_mhz", 4, INT32)),
        "SetPlClkResponse": (("status", 1, BOOL),),
        "DownloadRequest": (("buffer", 1, BYTES),),
        "DownloadResponse": (("status", 1, BOOL),),
    },
    "mmio": {
        "GetMmioRequest": (("base_addr", 1, UINT64), ("length", 2, UINT64)),
        "GetMmioResponse": (("status", 1, BOOL), ("msg", 2, STRING), ("mmio_id", 3, STRING)),
        "ReadRequest": (("mmio_id", 1, STRING), ("length", 2, UINT64), ("offset", 3, UINT64), ("word_order", 4, STRING)),
        "ReadResponse": (("status", 1, BOOL), ("msg", 2, STRING), ("data", 3, UINT32)),
        "WriteRequest": (("mmio_id", 1, STRING), ("offset", 2, UINT64), ("data", 3, BYTES)),
        "WriteResponse": (("status", 1, BOOL), ("msg", 2, STRING)),
    },
    "buffer": {
        "CacheableRequest": (("buffer_id", 1, STRING),),
        "CacheableResponse": (("msg", 2, STRING), ("cacheable", 3, BOOL)),
        "AddressRequest": (("buffer_id", 1, STRING),),
        "AddressResponse": (("msg", 2, STRING), ("address", 3, UINT64)),
        "InvalidateRequest": (("buffer_id", 1, STRING),),
        "InvalidateResponse": (("msg", 2, STRING),),
        "FlushRequest": (("buffer_id", 1, STRING),),
        "FlushResponse": (("msg", 2, STRING),),
        "AllocateRequest": (("size", 1, INT32), ("dtype", 2, STRING), ("cacheable", 3, BOOL)),
        "AllocateResponse": (("msg", 2, STRING), ("buffer_id", 3, STRING)),
        "BufferWriteRequest": (("buffer_id", 1, STRING), ("data", 2, BYTES), ("start", 3, INT32), ("end", 4, INT32)),
        "BufferWriteResponse": (("msg", 2, STRING),),
        "BufferReadRequest": (("buffer_id", 1, STRING), ("start", 2, INT32), ("end", 3, INT32)),
        "BufferReadResponse": (("msg", 2, STRING), ("data", 3, BYTES)),
        "FreeBufferRequest": (("buffer_id", 1, STRING),),
        "FreeBufferResponse": (("msg", 2, STRING),),
    },
}

# service -> (file, {method: (request, response, client_streaming, server_streaming)})
SERVICES = {
    "remote_device.RemoteDevice": ("remote_device", {
        "set_bitstream_attrs": ("SetBitstreamAttrsRequest", "SetBitstreamAttrsResponse", False, False),
        "download": ("DownloadRequest", "DownloadResponse", True, False),
        "set_pl_clk": ("SetPlClkRequest", "SetPlClkResponse", False, False),
        "shutdown": ("ShutdownRequest", "ShutdownResponse", False, False),
        "readfile": ("ReadFileRequest", "ReadFileResponse", False, True),
        "writefile": ("WriteFileRequest", "WriteFileResponse", True, False),
        "existsfile": ("ExistsFileRequest", "ExistsFileResponse", False, False),
    }),
    "mmio.Mmio": ("mmio", {
        "get_mmio": ("GetMmioRequest", "GetMmioResponse", False, False),
        "read": ("ReadRequest", "ReadResponse", False, False),
        "write": ("WriteRequest", "WriteResponse", False, False),
    }),
    "buffer.RemoteBuffer": ("buffer", {
        "allocate": ("AllocateRequest", "AllocateResponse", False, False),
        "write": ("BufferWriteRequest", "BufferWriteResponse", True, False),
        "read": ("BufferReadRequest", "BufferReadResponse", False, True),
        "freebuffer": ("FreeBufferRequest", "FreeBufferResponse", False, False),
        "flush": ("FlushRequest", "FlushResponse", False, False),
        "invalidate": ("InvalidateRequest", "InvalidateResponse", False, False),
        "physical_address": ("AddressRequest", "AddressResponse", False, False),
        "virtual_address": ("AddressRequest", "AddressResponse", False, False),
        "cacheable": ("CacheableRequest", "CacheableResponse", False, False),
    }),
}

# What gRPC's default 4 MiB message limit would refuse: pynq streams buffers in 2 MiB chunks.
CHUNK_BYTES = 2 << 20
DEFAULT_PORT = 7967  # pynq.pl_server.remote_device.PYNQ_PORT


def _file_proto(package: str):
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(name=f"lowbit_{package}.proto", package=package, syntax="proto3")
    for name, fields in MESSAGES[package].items():
        message = proto.message_type.add(name=name)
        for field, number, kind in fields:
            message.field.add(name=field, number=number, type=kind, label=1, json_name=_camel(field))
    return proto


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@functools.lru_cache(maxsize=None)
def messages() -> Dict[str, type]:
    """{"mmio.ReadRequest": class, ...}: message classes in a private descriptor pool."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    classes = {}
    for package in MESSAGES:
        pool.Add(_file_proto(package))
        for name in MESSAGES[package]:
            classes[f"{package}.{name}"] = _message_class(pool.FindMessageTypeByName(f"{package}.{name}"))
    return classes


def _message_class(descriptor) -> type:
    from google.protobuf import message_factory

    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)  # protobuf 3.20


def message(package: str, name: str, **fields):
    return messages()[f"{package}.{name}"](**fields)
