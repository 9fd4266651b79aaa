#!/usr/bin/env python
"""Train a detector with mmengine's Runner (MMDetection's command line).

    python tools/train.py configs/faster_rcnn_lip_r50.py [--work-dir DIR] [--resume [CKPT]]
        [--amp] [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher pytorch]

Multi-GPU: tools/dist_train.sh CONFIG GPUS [ARGS]; Slurm: tools/slurm_train.sh. See
docs/detection.md.
"""
import os.path as osp
import sys

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import lip_mmdet  # noqa: E402,F401  (registers modules, safe checkpoint loading)
from lip_mmdet.apis.launch import train_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(train_main())
