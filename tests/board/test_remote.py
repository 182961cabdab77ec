"""Remote boards end to end on 127.0.0.1: `lowbit serve --simulated` in its own process, pynq's own
RemoteDevice client, the same results as a local board, and the faults (server killed mid-call,
stalled link, restarted server)."""
import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from lowbit import quantize
from lowbit.board import remote_protocol as proto
from lowbit.board import simulated_overlay
from lowbit.board.remote import RemoteBoardError, parse_address
from lowbit.board.device import open_device, open_pynq

pytest.importorskip("grpc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lowbit serve --simulated` as a child process on a fixed port (restartable on the same port)."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "lowbit.board.remote_server", "--simulated", "--host",
                                      "127.0.0.1", "--port", str(self.port)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert "lowbit serve: simulated zcu104" in line, line
        return self

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server():
    s = Server().start()
    yield s
    s.stop()


@pytest.fixture
def own_server():
    s = Server().start()
    yield s
    s.stop()


def operands(fmt, m, n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    block = 32 if fmt.startswith("mls") else None
    a = quantize(torch.randn(m, k, generator=g), fmt, rounding="nearest", block=block)
    b = quantize(torch.randn(n, k, generator=g), fmt, rounding="nearest", block=block)
    return a, b


def test_the_protocol_table_matches_pynq_4_field_for_field():
    from pynq.remote import buffer_pb2, mmio_pb2, remote_device_pb2

    for module in (remote_device_pb2, mmio_pb2, buffer_pb2):
        package = module.DESCRIPTOR.package
        theirs = {name: tuple((f.name, f.number, f.type) for f in d.fields)
                  for name, d in module.DESCRIPTOR.message_types_by_name.items()}
        assert theirs == proto.MESSAGES[package]
        for service in module.DESCRIPTOR.services_by_name.values():
            methods = {m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
                       for m in service.methods}
            assert methods == proto.SERVICES[service.full_name][1]
    # and our classes serialize to the same bytes as pynq's
    ours = proto.message("buffer", "BufferWriteRequest", buffer_id="b-1", data=b"\x01\x02", start=3, end=5)
    assert ours.SerializeToString() == buffer_pb2.BufferWriteRequest(buffer_id="b-1", data=b"\x01\x02", start=3,
                                                                     end=5).SerializeToString()


@pytest.mark.parametrize("text, expected", [("remote:10.0.0.2", ("10.0.0.2", 7967)), ("remote:board:9000", ("board", 9000)),
                                            ("remote:[::1]:7000", ("::1", 7000)), ("host.lan", ("host.lan", 7967))])
def test_addresses(text, expected):
    assert parse_address(text) == expected


def test_a_bad_address_says_what_is_expected():
    with pytest.raises(ValueError, match=r"port must be a number, as in remote:192\.168\.2\.99:7967"):
        parse_address("remote:board:http")


def test_no_server_is_a_clear_error_naming_the_address():
    port = free_port()
    with pytest.raises(RemoteBoardError, match=rf"remote board 127\.0\.0\.1:{port}: connect failed: nothing answered "
                                               r"within 1 s; start `lowbit serve` there"):
        open_device(f"remote:127.0.0.1:{port}", connect_timeout_s=1.0)


@pytest.mark.parametrize("fmt", ["mls:2,1", "pot:4"])
def test_the_unmodified_pynq_client_drives_lowbit_serve(server, emulation, fmt):
    from pynq.pl_server.remote_device import RemoteDevice

    device = RemoteDevice(0, "127.0.0.1", server.port)  # pynq 4.0's own class, as a notebook would make it
    assert (device.arch, device.name) == ("aarch64", "ZCU104")
    backend = open_pynq(simulated_overlay("zcu104"), device=device, download=False)
    a, b = operands(fmt, 40, 24, 96)
    assert torch.equal(backend.gemm(a, b), emulation.gemm(a, b))
    backend.close()


def test_open_device_remote_equals_a_local_board_bit_for_bit(server, board, emulation):
    remote = open_device(f"remote:127.0.0.1:{server.port}")  # the overlay comes from the server
    assert remote.name == "board" and f"remote at 127.0.0.1:{server.port}" in remote.capabilities().description
    for fmt, (m, n, k) in [("mls:2,1", (70, 33, 200)), ("pot:4", (16, 130, 64)), ("mogami:fp32", (9, 17, 40))]:
        a, b = operands(fmt, m, n, k, seed=3)
        out = remote.gemm(a, b)
        assert torch.equal(out, board.gemm(a, b)) and torch.equal(out, emulation.gemm(a, b)), fmt
    remote.close()


def test_the_server_refuses_what_the_protocol_does_not_need(server):
    from pynq.pl_server.remote_device import RemoteDevice

    device = RemoteDevice(0, "127.0.0.1", server.port)
    with pytest.raises(Exception, match="lowbit serve does not serve /etc/shadow"):
        device.read_file("/etc/shadow")
    with pytest.raises(Exception, match="lowbit serve does not write /root/x"):
        device.write_file("/root/x", b"no")
    with pytest.raises(Exception, match="MMIO 0x0\\+0x1000 lies outside the overlay's IPs"):
        device.mmap(0, 0x1000)


def kill_after(server, backend, rpcs: int):
    """Kill the server once the client has sent ``rpcs`` more RPCs: the GEMM is mid-flight then."""
    start = backend.traffic.calls

    def watch():
        while backend.traffic.calls < start + rpcs:
            time.sleep(0.001)
        server.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_server_killed_mid_call_then_restarted(own_server, emulation):
    backend = open_device(f"remote:127.0.0.1:{own_server.port}")
    a, b = operands("mls:2,1", 64, 300, 512, seed=1)  # several tiles: dozens of RPCs
    expected = emulation.gemm(a, b)
    watcher = kill_after(own_server, backend, 12)
    with pytest.raises(RemoteBoardError, match=rf"remote board 127\.0\.0\.1:{own_server.port}: "
                                               r"(mmio\.Mmio|buffer\.RemoteBuffer)/\w+ failed: the server is unreachable "
                                               r"or went away.*the next call reconnects.*64x300x512 FORWARD GEMM"):
        backend.gemm(a, b)
    watcher.join()
    with pytest.raises(RemoteBoardError, match="connect failed"):  # still down: says so, does not hang
        backend.connect_timeout_s = 1.0
        backend.gemm(a, b)
    own_server.start()  # same port: a fresh server that knows none of the old handles
    assert torch.equal(backend.gemm(a, b), expected)
    assert backend.reconnects == 1
    backend.close()


class Proxy:
    """A TCP relay that can stall: while frozen it stops forwarding bytes (the link hangs, nothing closes)."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.frozen.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_stalled_link_hits_the_deadline_and_the_next_call_works(server, emulation):
    proxy = Proxy(server.port)
    backend = open_device(f"remote:127.0.0.1:{proxy.port}", rpc_timeout_s=2.0)
    a, b = operands("pot:4", 32, 48, 64, seed=2)
    expected = emulation.gemm(a, b)
    assert torch.equal(backend.gemm(a, b), expected)
    proxy.frozen.set()
    t0 = time.monotonic()
    with pytest.raises(RemoteBoardError, match=rf"remote board 127\.0\.0\.1:{proxy.port}: \S+/\w+ failed: no answer "
                                               r"within 2 s \(a stalled link or a hung server\)"):
        backend.gemm(a, b)
    assert time.monotonic() - t0 < 30
    proxy.frozen.clear()
    assert torch.equal(backend.gemm(a, b), expected)
    backend.close()


def _step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()


def _digits_model(backend):
    from lowbit import models
    from lowbit.nn import convert

    torch.manual_seed(0)
    return convert(models.get("digits_cnn"), "mls:2,1", backend=backend)


def test_a_failed_step_takes_no_optimizer_step_and_the_next_equals_a_local_board(own_server, board):
    remote = open_device(f"remote:127.0.0.1:{own_server.port}")
    model = _digits_model(remote)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    watcher = kill_after(own_server, remote, 20)
    with pytest.raises(RemoteBoardError, match=rf"127\.0\.0\.1:{own_server.port}"):
        torch.manual_seed(1)
        _step(model, optimizer, x, y)
    watcher.join()
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())  # (BN running stats may move)
    assert not optimizer.state  # no momentum buffer: the step never ran

    own_server.start()
    torch.manual_seed(1)
    _step(model, optimizer, x, y)
    local = _digits_model(board)
    local_opt = torch.optim.SGD(local.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    _step(local, local_opt, x, y)
    for (name, p), q in zip(model.named_parameters(), local.parameters()):
        assert torch.equal(p, q), name
    remote.close()


def test_lowbit_train_remote(server, tmp_path):
    cmd = [sys.executable, "-m", "lowbit.cli", "train", "--remote", f"127.0.0.1:{server.port}", "--format", "mls:2,1",
           "--epochs", "1", "--limit-train", "64", "--limit-test", "64", "--batch-size", "32", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["backend"] == "board"


def test_lowbit_train_backend_board_without_a_board_fails_with_the_way_out(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lowbit.cli", "train", "--backend", "board", "--format", "mls:2,1",
                           "--epochs", "1", "--limit-train", "32", "--quiet"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no board here" in proc.stderr and "--remote HOST" in proc.stderr and "--backend emulation" in proc.stderr


def test_open_device_pynq_and_board_off_a_board_say_why_and_what_to_do():
    from lowbit.backends import get_backend
    from lowbit.board.device import NoBoardError

    with pytest.raises(NoBoardError, match=r"open_device\('pynq'\): this machine is not a PYNQ board.*remote:HOST"):
        open_device("pynq", bitstream=simulated_overlay("zcu104"))
    with pytest.raises(NoBoardError, match="no board here"):
        open_device("board")
    with pytest.raises(NoBoardError, match="no board here"):
        get_backend("board")
