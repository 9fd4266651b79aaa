"""Registers, spills, shared memory and occupancy of every Triton kernel of the pooling ops,
compiled for real GPU architectures on any machine (no GPU needed).

    python tools/analysis/triton_resources.py --arch 80 90
    python tools/analysis/triton_resources.py --arch 90 --dtype bfloat16 --maxnreg 96
    python tools/analysis/triton_resources.py --arch 90 --block 256 --num-warps 8

Each kernel (LIP and DPP; forward and both backward passes) is compiled by Triton for
``sm_<arch>`` with 3x3 windows (``--kernel-size``) and maps of each ``--dtype`` (statistics in
float32), and assembled by the ptxas Triton ships, whose report gives registers per thread,
spill bytes and shared memory. Occupancy (resident warps / the SM's maximum) follows from the
launch configuration (128 elements per program, 4 warps; ``--block`` and ``--num-warps`` try
others) and the architecture's limits.
Prints a table and writes JSON (``--out``).
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import sys

import torch

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def parse_args(argv=None):
    from lip_mmdet.ops.triton_resources import SM_LIMITS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--arch', nargs='+', type=int, default=[80, 90],
                        choices=sorted(SM_LIMITS), help='SM architectures (80: A100, 90: H100)')
    parser.add_argument('--dtype', nargs='+', default=['float32', 'bfloat16'],
                        choices=sorted(DTYPES), help='dtype of the pooled maps')
    parser.add_argument('--kernel-size', nargs=2, type=int, default=[3, 3],
                        metavar=('KH', 'KW'), help='pooling window the kernels unroll')
    parser.add_argument('--maxnreg', type=int, default=None,
                        help='cap on registers per thread (default: ptxas chooses, as the '
                        'ops launch them)')
    parser.add_argument('--block', type=int, default=None,
                        help='elements per program (default: the launches\' 128)')
    parser.add_argument('--num-warps', type=int, default=None,
                        help='warps per program (default: the launches\' 4)')
    parser.add_argument('--out', default='work_dirs/triton_resources.json',
                        help='JSON report path')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    if importlib.util.find_spec('triton') is None:
        print('error: triton is not installed (pip install triton)', file=sys.stderr)
        return 2
    args = parse_args(argv)
    from lip_mmdet.ops.triton_resources import KERNELS, kernel_resources
    rows = []
    print('| op | pass | arch | dtype | registers | spill stores / loads (B) | shared (B) | '
          'warps | blocks/SM | occupancy |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for arch in args.arch:
        for dtype in args.dtype:
            for op, what, name in KERNELS:
                found = kernel_resources(name, arch, DTYPES[dtype], tuple(args.kernel_size),
                                         maxnreg=args.maxnreg, block=args.block,
                                         num_warps=args.num_warps)
                rows.append({'op': op, 'pass': what, 'kernel': name, 'arch': f'sm_{arch}',
                             'dtype': dtype, **found})
                print(f"| {op} | {what} | sm_{arch} | {dtype} | {found['registers']} | "
                      f"{found['spill_stores']} / {found['spill_loads']} | {found['shared']} | "
                      f"{found['num_warps']} | {found['blocks_per_sm']} | "
                      f"{found['occupancy']:.0%} |")
    import triton
    report = dict(triton=triton.__version__, kernel_size=args.kernel_size,
                  maxnreg=args.maxnreg, block=args.block, num_warps=args.num_warps,
                  kernels=rows)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
