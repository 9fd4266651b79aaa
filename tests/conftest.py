"""Shared pytest fixtures."""
import pytest
import torch

from lip_mmdet.demo import DEMO_CLASSES, make_demo_dataset


@pytest.fixture(autouse=True)
def _one_intraop_thread():
    """Tests run small inputs: extra OpenMP threads mostly add synchronisation, and stall
    when other processes load the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def tiny_coco(tmp_path_factory):
    """A generated COCO dataset: 8 train / 4 val images of 128x128, 5 classes.

    All paths are absolute, so they work as mmdet ``ann_file`` / ``data_prefix`` values
    with or without ``data_root``. Image prefixes end with '/'.
    """
    root = tmp_path_factory.mktemp('tiny_coco')
    paths = make_demo_dataset(str(root), num_train=8, num_val=4, image_size=128, seed=0,
                              progress=False)
    return dict(
        data_root=paths['data_root'],
        train_ann=paths['train_ann'],
        val_ann=paths['val_ann'],
        train_img_prefix=paths['train_img_dir'] + '/',
        val_img_prefix=paths['val_img_dir'] + '/',
        classes=DEMO_CLASSES,
    )
