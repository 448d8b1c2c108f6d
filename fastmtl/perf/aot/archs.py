"""The NVIDIA targets the compile gate checks, their per-SM limits, and an occupancy estimate.

Limits (CUDA C Programming Guide, "Compute capabilities" table; same for 8.0, 9.0, 10.0 except
shared memory): 64K 32-bit registers per SM, at most 255 per thread, allocated per warp in units
of 256 registers; at most 64 resident warps (2048 threads) and 32 resident blocks per SM (48
warps is the limit of sm_86/sm_89 consumer parts, not of these); shared memory per SM 164 KB on
A100 (sm_80) and 228 KB on H100/H200 (sm_90) and B200 (sm_100), of which the runtime reserves
1 KB per resident block. SM counts: A100 108, H100/H200 132 (SXM), B200 148.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict


@dataclass(frozen=True)
class Arch:
    """One compile target: ``cc`` is the compute capability as Triton's ``GPUTarget`` takes it."""

    cc: int
    gpu: str
    sms: int
    smem_per_sm: int
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    reg_alloc_unit: int = 256  # registers, per warp
    smem_reserved_per_block: int = 1024

    @property
    def name(self) -> str:
        return f"sm_{self.cc}"

    @property
    def ptxas_arch(self) -> str:
        """What ``ptxas -arch`` takes for Triton's PTX of this target (9.0 and 10.0 use the ``a`` variants)."""
        return f"sm_{self.cc}a" if self.cc >= 90 else f"sm_{self.cc}"


ARCHS: Dict[int, Arch] = {
    80: Arch(80, "A100", sms=108, smem_per_sm=164 * 1024),
    90: Arch(90, "H100/H200", sms=132, smem_per_sm=228 * 1024),
    100: Arch(100, "B200", sms=148, smem_per_sm=228 * 1024),
}


def blocks_per_sm(arch: Arch, regs_per_thread: int, num_warps: int, smem_bytes: int) -> int:
    """Resident programs (CTAs) per SM of a kernel using ``regs_per_thread`` registers,
    ``num_warps`` warps and ``smem_bytes`` shared memory per program: the smallest of the warp,
    block, register and shared-memory limits (0 if one program does not fit)."""
    by_warps = arch.max_warps_per_sm // num_warps
    regs_per_warp = -(-max(regs_per_thread, 1) * 32 // arch.reg_alloc_unit) * arch.reg_alloc_unit
    by_regs = arch.regs_per_sm // (regs_per_warp * num_warps)
    by_smem = arch.smem_per_sm // (smem_bytes + arch.smem_reserved_per_block)
    return max(0, min(arch.max_blocks_per_sm, by_warps, by_regs, by_smem))


def occupancy(arch: Arch, regs_per_thread: int, num_warps: int, smem_bytes: int) -> float:
    """Resident warps per SM as a fraction of the maximum (an estimate: ignores the register
    file's bank granularity and the L1/shared-memory carve-out the driver picks)."""
    return blocks_per_sm(arch, regs_per_thread, num_warps, smem_bytes) * num_warps / arch.max_warps_per_sm


def waves(arch: Arch, programs: int, resident_per_sm: int) -> float:
    """How many times the launch fills the GPU: ``programs / (SMs * resident programs per SM)``."""
    return programs / (arch.sms * max(resident_per_sm, 1))
