"""What the Triton kernels of :mod:`lip_mmdet.ops.triton_pooling` cost on real GPUs, measured
without one: each kernel is compiled by Triton for an SM architecture (to PTX) and assembled by
the ``ptxas`` Triton ships, whose report gives registers per thread, spill bytes, stack and
static shared memory; the occupancy follows from the launch configuration and the
architecture's per-SM limits.

Needs triton only (no CUDA device, no driver).
"""
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

__all__ = ['KERNELS', 'SM_LIMITS', 'compile_kernel', 'kernel_resources', 'occupancy']

#: (op, pass, kernel name) of every kernel, in the order the ops run them.
KERNELS = (
    ('lip2d', 'forward', '_lip_forward_kernel'),
    ('lip2d', 'backward: window statistics', '_lip_window_stats_kernel'),
    ('lip2d', 'backward: pixels', '_lip_backward_kernel'),
    ('dpp2d', 'forward', '_dpp_forward_kernel'),
    ('dpp2d', 'backward: window statistics', '_dpp_window_stats_kernel'),
    ('dpp2d', 'backward: pixels', '_dpp_backward_kernel'),
)

# The pointers of each kernel that hold the input dtype (the maps, their gradients and the
# output, as triton_pooling launches them); every other pointer is a float32 statistic or
# parameter.
_DATA_POINTERS = {
    '_lip_forward_kernel': ('x_ptr', 'l_ptr', 'out_ptr'),
    '_lip_window_stats_kernel': ('x_ptr', 'l_ptr', 'g_ptr'),
    '_lip_backward_kernel': ('x_ptr', 'l_ptr', 'gx_ptr', 'gl_ptr'),
    '_dpp_forward_kernel': ('x_ptr', 'g_ptr', 'out_ptr'),
    '_dpp_window_stats_kernel': ('x_ptr', 'g_ptr', 'grad_ptr', 'gg_ptr'),
    '_dpp_backward_kernel': ('x_ptr', 'g_ptr', 'gx_ptr'),
}

#: Per-SM limits (CUDA programming guide, compute capabilities): 32-bit registers, resident
#: warps, resident blocks, shared memory bytes usable by blocks.
SM_LIMITS = {
    80: dict(registers=65536, warps=64, blocks=32, shared=164 * 1024),  # A100
    86: dict(registers=65536, warps=48, blocks=16, shared=100 * 1024),  # RTX 30xx, A40
    89: dict(registers=65536, warps=48, blocks=24, shared=100 * 1024),  # RTX 40xx, L40
    90: dict(registers=65536, warps=64, blocks=32, shared=228 * 1024),  # H100, H200
}
# Registers are allocated per warp in units of 256.
_REGISTER_UNIT = 256

_TRITON_TYPES = {torch.float32: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}


def compile_kernel(name: str, arch: int, dtype: torch.dtype, window: Tuple[int, int] = (3, 3),
                   asym: bool = True, maxnreg: Optional[int] = None,
                   block: Optional[int] = None, num_warps: Optional[int] = None):
    """Compiles kernel ``name`` of triton_pooling for ``sm_<arch>`` with maps of ``dtype``
    (float32 statistics) and the ``window`` (kh, kw); DPP kernels for the ``asym`` reward;
    ``maxnreg`` caps the registers per thread (None: ptxas chooses, as the launches do);
    ``block`` (elements per program) and ``num_warps`` (per program) default to the launch's
    (``PROGRAM_BLOCK``, Triton's default of 4). Returns Triton's CompiledKernel (its
    ``asm['ptx']``, ``asm['cubin']``, ``metadata``)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import triton_pooling

    kernel = getattr(triton_pooling, name)
    constants = dict(KH=window[0], KW=window[1], BLOCK=block or triton_pooling.PROGRAM_BLOCK,
                     ACC=tl.float32)
    if name.startswith('_dpp'):
        constants['ASYM'] = asym
    names = kernel.arg_names
    data = _TRITON_TYPES[dtype]

    def type_of(arg: str) -> str:
        if arg in constants:
            return 'constexpr'
        if arg.endswith('_ptr'):
            return f'*{data}' if arg in _DATA_POINTERS[name] else '*fp32'
        return 'i64'

    source = ASTSource(fn=kernel, signature={arg: type_of(arg) for arg in names},
                       constexprs={(names.index(k), ): v for k, v in constants.items()})
    options = {} if maxnreg is None else {'maxnreg': maxnreg}
    if num_warps is not None:
        options['num_warps'] = num_warps
    return triton.compile(source, target=GPUTarget('cuda', arch, 32), options=options)


def _ptxas_report(ptx: str, arch: int) -> Dict[str, int]:
    """Registers, spill stores and loads, stack frame and static shared memory (bytes) that
    ``ptxas -v`` reports for the kernel in ``ptx``."""
    import inspect

    from triton.backends.nvidia.compiler import get_ptxas

    # Triton 3.9 ships a second ptxas for sm_90 and newer and picks it by architecture; older
    # releases ship one, and their get_ptxas() takes no argument.
    ptxas = get_ptxas(arch) if inspect.signature(get_ptxas).parameters else get_ptxas()
    target = re.search(r'^\.target\s+(\w+)', ptx, re.MULTILINE).group(1)  # sm_90a for 90
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / 'kernel.ptx'
        source.write_text(ptx)
        result = subprocess.run(
            [ptxas.path, '-v', f'--gpu-name={target}', str(source), '-o',
             str(Path(folder) / 'kernel.cubin')], capture_output=True, text=True, check=True)
    report = result.stdout + result.stderr

    def number(pattern: str) -> int:
        found = re.search(pattern, report)
        return int(found.group(1)) if found else 0

    registers = number(r'Used (\d+) registers')
    if registers == 0:
        raise RuntimeError(f'ptxas reported no register count:\n{report}')
    return dict(registers=registers, spill_stores=number(r'(\d+) bytes spill stores'),
                spill_loads=number(r'(\d+) bytes spill loads'),
                stack=number(r'(\d+) bytes stack frame'), static_shared=number(r'(\d+) bytes smem'))


def occupancy(registers: int, shared: int, num_warps: int, arch: int) -> Tuple[int, float]:
    """(resident blocks per SM, occupancy = resident warps / the SM's maximum) of a kernel
    using ``registers`` per thread and ``shared`` bytes per block, launched with
    ``num_warps`` warps per block on ``sm_<arch>``."""
    limits = SM_LIMITS[arch]
    per_warp = -(-registers * 32 // _REGISTER_UNIT) * _REGISTER_UNIT
    blocks = min(limits['blocks'], limits['warps'] // num_warps,
                 limits['registers'] // per_warp // num_warps)
    if shared:
        blocks = min(blocks, limits['shared'] // shared)
    return blocks, blocks * num_warps / limits['warps']


def kernel_resources(name: str, arch: int, dtype: torch.dtype,
                     window: Tuple[int, int] = (3, 3),
                     maxnreg: Optional[int] = None, block: Optional[int] = None,
                     num_warps: Optional[int] = None) -> Dict[str, float]:
    """Registers per thread, spill bytes, stack, shared memory (static + Triton's dynamic),
    warps per block, resident blocks per SM and occupancy of kernel ``name`` compiled for
    ``sm_<arch>`` with maps of ``dtype`` (arguments as :func:`compile_kernel`)."""
    compiled = compile_kernel(name, arch, dtype, window, maxnreg=maxnreg, block=block,
                              num_warps=num_warps)
    report = _ptxas_report(compiled.asm['ptx'], arch)
    num_warps = compiled.metadata.num_warps
    shared = report.pop('static_shared') + compiled.metadata.shared
    blocks, fraction = occupancy(report['registers'], shared, num_warps, arch)
    return dict(report, shared=shared, num_warps=num_warps, blocks_per_sm=blocks,
                occupancy=round(fraction, 4))
