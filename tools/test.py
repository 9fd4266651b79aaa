#!/usr/bin/env python
"""Test (and evaluate) a detector checkpoint with mmengine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
        [--show] [--show-dir DIR] [--tta] [--cfg-options KEY=VALUE ...] [--launcher pytorch]

Multi-GPU: tools/dist_test.sh CONFIG CHECKPOINT GPUS [ARGS]. See docs/detection.md.
"""
import os.path as osp
import sys

# runs from a checkout without PYTHONPATH or an installed lip_mmdet
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import lip_mmdet  # noqa: E402,F401  (registers modules, safe checkpoint loading)
from lip_mmdet.apis.launch import test_main  # noqa: E402

if __name__ == '__main__':
    sys.exit(test_main())
