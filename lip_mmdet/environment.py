"""Whether the detection stack is installed: ``lip_mmdet.ops`` and ``lip_mmdet.models.layers``
need torch alone; everything that meets mmdet (backbones, metric, hooks, tools) needs it."""
import importlib.util

__all__ = ['mmdet_installed']


def mmdet_installed() -> bool:
    """Whether mmdet can be found (without importing it). A module that is found but fails to
    import raises at the import that needs it, with its own error."""
    try:
        return importlib.util.find_spec('mmdet') is not None
    except (ImportError, ValueError):  # ValueError: a None entry in sys.modules
        return False
