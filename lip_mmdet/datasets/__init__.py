from .demo_data import DEMO_CLASSES, DEMO_SIZE_BINS, make_demo_dataset

__all__ = ['DEMO_CLASSES', 'DEMO_SIZE_BINS', 'make_demo_dataset']
