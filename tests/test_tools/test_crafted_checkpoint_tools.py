"""The tools given a crafted checkpoint that used to crash the process (SIGSEGV) on loading:
each runs in a child process (checkpoint_worker), so that a crash fails the test, and must
end in one error line and exit code 2."""
import pytest
from checkpoint_worker import LoaderWorker
from crafted_pickles import dct, dumps, object_pointer_array, zip_checkpoint
from mmengine.config import Config
from PIL import Image

from tiny_run import REPO, SMALL_RETINANET, tiny_options, to_cli
from tool_scripts import assert_clean_failure

RETINA_LIP_R50 = REPO / 'configs' / 'retinanet_lip_r50.py'
LIP_DEMO = REPO / 'configs' / 'demo' / 'faster_rcnn_lip_r18_demo.py'


@pytest.fixture(scope='module')
def worker(tmp_path_factory):
    child = LoaderWorker(tmp_path_factory.mktemp('tools_worker'))
    yield child
    child.close()


@pytest.fixture
def crafted(tmp_path):
    path = tmp_path / 'crafted.pth'
    path.write_bytes(zip_checkpoint(dumps(dct(('state_dict', dct()),
                                              ('meta', object_pointer_array())))))
    return path


def _assert_refused(result, path):
    assert result['outcome'] == 'exit 2', result
    assert_clean_failure(2, result['detail'], f'Refusing to load checkpoint {path}',
                         "numpy.dtype('O8'")


def test_test_tool(worker, crafted, tiny_coco, tmp_path):
    options = tiny_options(Config.fromfile(str(RETINA_LIP_R50)), tiny_coco)
    options.update(SMALL_RETINANET)
    result = worker.load('test.py', how='tool', args=[
        RETINA_LIP_R50, crafted, '--work-dir', tmp_path / 'w', '--cfg-options',
        *to_cli(options)])
    _assert_refused(result, crafted)


def test_converter(worker, crafted, tmp_path):
    result = worker.load('model_converters/lip2mmdet.py', how='tool',
                         args=[crafted, tmp_path / 'out.pth'])
    _assert_refused(result, crafted)
    assert not (tmp_path / 'out.pth').exists()


def test_show_pooling(worker, crafted, tmp_path):
    image = tmp_path / 'image.png'
    Image.new('RGB', (64, 64)).save(image)
    result = worker.load('analysis/show_pooling.py', how='tool', args=[
        LIP_DEMO, crafted, '--images', image, '--out-dir', tmp_path / 'out'])
    _assert_refused(result, crafted)
