"""Whether the installed mmcv holds CUDA kernels, checked without a GPU.

    python tools/check_mmcv_cuda.py [--archs 7.5 8.0 ...] [--json FILE]

Imports ``mmcv._ext``, looks in its file for the CUDA launchers of the two ops every mmdet
detector runs (``nms``, ``roi_align``), and lists the GPU code embedded in it: one cubin per
compiled architecture (``sm_XY``) and PTX (``compute_XY``) that the driver compiles for newer
GPUs. With ``--archs`` every listed architecture must have a cubin (``9.0+PTX``: a cubin and
PTX). Exit 0 when all holds, 1 with one line saying what is missing, 2 for bad arguments.
"""
import argparse
import json
import re
import struct
import sys
from typing import Dict, List, Tuple

# Host-side launchers of mmcv's CUDA ops: present only when mmcv was compiled with
# MMCV_WITH_CUDA, whatever the machine.
CUDA_LAUNCHERS = {
    'nms': b'NMSCUDAKernelLauncher',
    'roi_align': b'ROIAlignForwardCUDAKernelLauncher',
}

_FATBIN_MAGIC = 0xBA55ED50
_PTX, _CUBIN = 1, 2


def fatbin_entries(data: bytes) -> List[Tuple[str, int]]:
    """The GPU code in a shared library's fat binaries.

    Args:
        data: the bytes of an ELF shared library (or of bare fat binaries).

    Returns:
        ``(kind, arch)`` pairs, ``kind`` being ``'cubin'`` or ``'ptx'`` and ``arch`` the
        compute capability times ten (``90`` for 9.0), one per embedded entry.
    """
    entries = []
    magic = struct.pack('<I', _FATBIN_MAGIC)
    start = data.find(magic)
    while start != -1:
        resume = start + 4  # past a magic that starts no valid fat binary
        # header: magic u32, version u16, header size u16, size of the entries u64
        if start + 16 <= len(data):
            header_size, body_size = struct.unpack_from('<HQ', data, start + 6)
            offset, end = start + header_size, start + header_size + body_size
            if header_size >= 16 and end <= len(data):
                # entry: kind u16, u16, header size u32, payload size u64, ..., arch u32 at 28
                while offset + 32 <= end:
                    kind, entry_header, payload = struct.unpack_from('<H2xIQ', data, offset)
                    if entry_header < 32 or kind not in (_PTX, _CUBIN):
                        break
                    arch, = struct.unpack_from('<I', data, offset + 28)
                    entries.append(('ptx' if kind == _PTX else 'cubin', arch))
                    offset += entry_header + payload
                resume = end
        start = data.find(magic, resume)
    return entries


def _arch_number(text: str) -> Tuple[int, bool]:
    match = re.fullmatch(r'(\d+)\.(\d)(\+PTX)?', text)
    if not match:
        raise ValueError(f'--archs: {text!r} is not a compute capability like 8.0 or 9.0+PTX')
    return int(match[1]) * 10 + int(match[2]), bool(match[3])


def check(path: str, data: bytes, archs: List[str]) -> Dict:
    """The report of one ``mmcv._ext`` file: its CUDA launchers, its GPU code, what is missing.

    Args:
        path: the file's path, for the report.
        data: its bytes.
        archs: compute capabilities that must have a cubin (``'9.0+PTX'``: and PTX).
    """
    entries = fatbin_entries(data)
    cubins = sorted({arch for kind, arch in entries if kind == 'cubin'})
    ptx = sorted({arch for kind, arch in entries if kind == 'ptx'})
    launchers = [op for op, symbol in CUDA_LAUNCHERS.items() if symbol in data]
    missing = [f'{op} CUDA launcher' for op in CUDA_LAUNCHERS if op not in launchers]
    for text in archs:
        number, with_ptx = _arch_number(text)
        if number not in cubins:
            missing.append(f'sm_{number} cubin')
        if with_ptx and number not in ptx:
            missing.append(f'compute_{number} PTX')
    return dict(file=path, cuda_launchers=launchers, cubins=[f'sm_{a}' for a in cubins],
                ptx=[f'compute_{a}' for a in ptx], missing=missing)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--archs', nargs='+', default=[], metavar='X.Y',
                        help='compute capabilities that must be compiled in (X.Y or X.Y+PTX)')
    parser.add_argument('--json', help='also write the report here')
    args = parser.parse_args(argv)
    archs = [a for text in args.archs for a in re.split(r'[;\s]+', text) if a]
    try:
        for text in archs:
            _arch_number(text)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    try:
        import mmcv._ext as ext
    except ImportError as error:
        print(f'error: mmcv._ext does not import: {error}', file=sys.stderr)
        return 1
    with open(ext.__file__, 'rb') as f:
        report = check(ext.__file__, f.read(), archs)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    if report['missing']:
        print(f"error: {report['file']} lacks {', '.join(report['missing'])}: mmcv was not "
              'compiled with CUDA for these (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST)', file=sys.stderr)
        return 1
    print(f"mmcv._ext imports and holds CUDA code: {', '.join(report['cuda_launchers'])} "
          f"launchers; cubins {' '.join(report['cubins']) or 'none'}; "
          f"PTX {' '.join(report['ptx']) or 'none'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
