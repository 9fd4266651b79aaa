"""A pytest plugin (``-p without_detection_stack``, with tests/ on the path) that makes mmdet,
mmengine and mmcv unimportable for the whole run, as on a machine with torch alone: every
``import`` of them (or of a submodule) raises ModuleNotFoundError, and
``importlib.util.find_spec`` does not find them."""
import sys

DETECTION_STACK = ('mmdet', 'mmengine', 'mmcv')

for _name in DETECTION_STACK:
    if _name in sys.modules and sys.modules[_name] is not None:
        raise RuntimeError(f'{_name} was imported before the plugin could block it')
    sys.modules[_name] = None


def stack_blocked() -> bool:
    return all(sys.modules.get(name, 0) is None for name in DETECTION_STACK)
