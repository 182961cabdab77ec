"""Driver for the lowbit block-scaled GEMM IP (AXI-Stream in/out, ap_ctrl_hs on s_axilite)."""
from __future__ import annotations

from pynq import DefaultIP

from lowbit.kernel import wire
from lowbit.kernel.wire import Reg


class VersionMismatch(RuntimeError):
    """The bitstream speaks a different wire protocol than this host library."""


def build_hint(board: str = "<board>") -> str:
    return (f"build a matching bitstream with `lowbit build --board {board}` or download the release "
            f"bitstream for lowbit wire version {wire.WIRE_VERSION} into bitstreams/{board}/")


class LowbitGemm(DefaultIP):
    """Registers by name (``lowbit.kernel.wire.Reg``); the data moves through the AXI DMA."""

    bindto = [wire.VLNV]

    def read_reg(self, reg: Reg) -> int:
        return self.read(int(reg))

    def write_reg(self, reg: Reg, value: int) -> None:
        self.write(int(reg), int(value))

    @property
    def id_version(self) -> int:
        return self.read_reg(Reg.ID_VERSION)

    def check_version(self, board: str = "<board>") -> None:
        """Refuse an IP that is not ours or speaks another WIRE_VERSION."""
        value = self.id_version
        ip_id, version = value >> 16, value & 0xFFFF
        if ip_id != wire.IP_ID:
            raise VersionMismatch(
                f"the IP at 0x{self.mmio.base_addr:x} reads ID_VERSION=0x{value:08x}: its ID 0x{ip_id:04x} is not "
                f"the lowbit GEMM (0x{wire.IP_ID:04x}); the loaded bitstream is not a lowbit overlay; "
                + build_hint(board))
        if version != wire.WIRE_VERSION:
            raise VersionMismatch(
                f"the lowbit IP speaks wire version {version}, this host library speaks {wire.WIRE_VERSION}; "
                + build_hint(board))

    def start_kernel(self) -> None:
        """ap_start for one GEMM call; the IP then waits for its input stream."""
        self.write_reg(Reg.CTRL, wire.CTRL_START)

    @property
    def idle(self) -> bool:
        return bool(self.read_reg(Reg.CTRL) & wire.CTRL_IDLE)

    def kernel_status(self) -> wire.Status:
        code = self.read_reg(Reg.STATUS)
        try:
            return wire.Status(code)
        except ValueError:
            raise RuntimeError(f"the lowbit IP's STATUS register reads {code}, which no wire version defines") from None

    def snapshot(self) -> dict:
        """Register state for error messages (reading CTRL clears ap_done, which is harmless here)."""
        return {reg.name: self.read_reg(reg) for reg in (Reg.CTRL, Reg.STATUS, Reg.CYCLES, Reg.ID_VERSION)}
