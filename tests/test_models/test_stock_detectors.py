"""The stock mmdet detectors build from their ``mmdet::`` configs with lip_mmdet imported and run
on CPU with mmcv's compiled ops."""
import importlib

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData

import lip_mmdet  # noqa: F401


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    register_all_modules()


def _sample(height=96, width=128):
    sample = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                         pad_shape=(height, width), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 20.0, 100.0, 70.0]]),
        labels=torch.tensor([1, 3]))
    return sample


@pytest.mark.parametrize('config', ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
                                    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'])
def test_stock_detector_forward_on_cpu(config, monkeypatch, tmp_path):
    config_file = tmp_path / 'inherits_stock.py'
    config_file.write_text(f"_base_ = '{config}'\n"
                           "custom_imports = dict(imports=['lip_mmdet'], "
                           "allow_failed_imports=False)\n")
    cfg = Config.fromfile(str(config_file))
    cfg.model.backbone.init_cfg = None  # no network: nothing pretrained to fetch
    # An untrained head scores below the stock thresholds; keep every box so NMS runs.
    test_cfg = cfg.model.test_cfg.get('rcnn', cfg.model.test_cfg)
    test_cfg.score_thr = 0.0
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()

    # Count calls into mmcv's compiled extension to prove the real ops ran.
    ext_module = importlib.import_module('mmcv.ops.nms').ext_module
    calls = {'nms': 0, 'roi_align_forward': 0}

    def counting(name):
        impl = getattr(ext_module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return impl(*args, **kwargs)
        return wrapper

    for name in calls:
        monkeypatch.setattr(ext_module, name, counting(name))

    data = dict(inputs=[torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)],
                data_samples=[_sample()])
    with torch.no_grad():
        batch = model.data_preprocessor(data, training=False)
        results = model(**batch, mode='predict')
    assert len(results) == 1
    predictions = results[0].pred_instances
    assert predictions.bboxes.shape[1] == 4
    assert calls['nms'] > 0
    if 'faster' in config:
        assert calls['roi_align_forward'] > 0

    model.train()
    batch = model.data_preprocessor(data, training=True)
    losses = model(**batch, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
