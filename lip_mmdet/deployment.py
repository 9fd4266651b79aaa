"""ONNX export of backbones and detectors' dense tensor paths, checked in ONNX Runtime.

The pooling ops' translations (:mod:`lip_mmdet.ops.onnx_export`) make a plain
``torch.onnx.export`` work; this module adds what ``tools/deployment/export_onnx.py`` and the
ONNX Runtime benchmark need around it: building the exportable part of a config's model,
exporting with either exporter and dynamic height and width, checking that a file holds
standard operators only, and running it in ONNX Runtime against PyTorch.

What a detector's exported graph holds (:class:`DenseTensorPath`): backbone, neck and the
raw outputs of the dense head (``bbox_head`` of a one-stage detector such as RetinaNet, the
``rpn_head`` of a two-stage one such as Faster R-CNN), per FPN level. Outside the graph stay
the data preprocessor (mean/std normalisation, padding to the size divisor), box decoding,
score thresholds and NMS, and a two-stage detector's RoI stage (proposals, RoIAlign, the box
head), which needs the proposals NMS picks.

onnx and onnxruntime are imported only by the functions that need them.
"""
import logging
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ['EXPORTERS', 'PARITY_TOLERANCE', 'DenseTensorPath', 'export_onnx',
           'non_standard_nodes', 'onnxruntime_outputs', 'onnxruntime_runs',
           'onnxruntime_session', 'file_opset', 'largest_relative_difference',
           'flatten_outputs', 'exportable_part', 'UnsupportedModelError', 'parity']

EXPORTERS = ('dynamo', 'torchscript')

#: Largest relative difference (max |ONNX - PyTorch| over max |PyTorch|, per output) accepted
#: for float32 files. The graphs compute the same arithmetic in another order (ONNX Runtime's
#: kernels, the translations' tap sums), so differences are rounding: measured at most
#: 3.5e-6 for single ops, 2.5e-6 for every backbone variant and 1.5e-6 for the LIP/DPP-R50
#: detectors' tensor paths (docs/deployment.md); 1e-4 leaves room for deeper models and other
#: CPUs, while a wrong window, padding or weight changes whole output values.
PARITY_TOLERANCE = 1e-4

#: ONNX domains of standard operators.
STANDARD_DOMAINS = ('', 'ai.onnx')


class UnsupportedModelError(ValueError):
    """The config's model has no part this module exports."""


class DenseTensorPath(nn.Module):
    """A detector's backbone, neck and dense head: image batch -> the head's raw outputs.

    ``forward(x)`` returns ``head(extract_feat(x))``: for RetinaNet / RPN heads a tuple
    ``(cls_scores, bbox_preds)`` of per-level lists.

    Args:
        detector: an mmdet detector with ``extract_feat`` and a ``bbox_head`` (one-stage) or
            ``rpn_head`` (two-stage).
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        head = getattr(detector, 'bbox_head', None) or getattr(detector, 'rpn_head', None)
        if head is None or not hasattr(detector, 'extract_feat'):
            raise UnsupportedModelError(
                f'{type(detector).__name__} has no dense head (bbox_head or rpn_head) after '
                'extract_feat: only backbones and the dense tensor path of one- and two-stage '
                'detectors export')
        self.detector, self.head = detector, head

    def forward(self, x: torch.Tensor):
        return self.head(self.detector.extract_feat(x))


def exportable_part(model: nn.Module) -> nn.Module:
    """The module to export: a detector's :class:`DenseTensorPath`, or a backbone itself
    (any module that is not an mmengine ``BaseModel``: backbones take an image batch and
    return feature maps).

    Raises:
        UnsupportedModelError: a model (with a data preprocessor) that is not a detector with
            a dense head.
    """
    from mmengine.model import BaseDataPreprocessor, BaseModel

    if hasattr(model, 'extract_feat'):
        return DenseTensorPath(model)
    if isinstance(model, (BaseModel, BaseDataPreprocessor)):
        raise UnsupportedModelError(
            f'{type(model).__name__} is neither a backbone nor a detector with extract_feat: '
            'only backbones and the dense tensor path of detectors export')
    return model


def flatten_outputs(outputs) -> List[torch.Tensor]:
    """The tensors of nested tuples/lists/dicts of outputs, in the exporters' order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [t for item in outputs for t in flatten_outputs(item)]
    raise TypeError(f'cannot export an output of type {type(outputs).__name__}')


def export_onnx(model: nn.Module, inputs: Tuple[torch.Tensor, ...], path: str, *,
                exporter: str = 'dynamo', opset: int = 18, dynamic: bool = True,
                input_names: Optional[Sequence[str]] = None, optimize: bool = True) -> str:
    """Exports ``model`` (put in eval mode) to ``path`` with plain ``torch.onnx.export``.

    Args:
        model: the module; its outputs may be nested tuples/lists of tensors.
        inputs: example inputs, (N, C, H, W) tensors.
        path: the .onnx file to write (its folder is created).
        exporter: 'dynamo' (``torch.export``) or 'torchscript' (the tracer mmdeploy uses).
        opset: ONNX opset version (the translations are tested with 17 and 18).
        dynamic: height and width of every input are dynamic axes (the batch stays as
            exported: ``torch.export`` fixes a batch of 1).
        input_names: graph input names (default ``input``, ``input_1``, ...).
        optimize: run the dynamo exporter's graph optimizer (constant folding, dead code):
            about 70% of the export time of a graph of thousands of nodes, and ONNX Runtime
            optimises a graph when it loads it anyway.

    Returns:
        ``path``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    model.eval()
    names = list(input_names or [f'input_{i}' if i else 'input' for i in range(len(inputs))])
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # the dynamo exporter logs a warning per torchvision op it skips (torchvision is absent)
    registry_log = logging.getLogger('torch.onnx._internal.exporter._registration')
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # the tracer's warnings on Python values taken from sizes, the exporters' notes
            warnings.simplefilter('ignore')
            if exporter == 'dynamo':
                shapes = None
                if dynamic:
                    dim = torch.export.Dim.DYNAMIC
                    shapes = tuple({2: dim, 3: dim} for _ in inputs)
                torch.onnx.export(model, tuple(inputs), path, dynamo=True, opset_version=opset,
                                  input_names=names, dynamic_shapes=shapes, verbose=False,
                                  external_data=False, optimize=optimize)
            else:
                axes = {name: {2: 'height', 3: 'width'} for name in names} if dynamic else None
                torch.onnx.export(model, tuple(inputs), path, dynamo=False,
                                  opset_version=opset, input_names=names, dynamic_axes=axes)
    finally:
        registry_log.setLevel(level)
    return path


def non_standard_nodes(path: str) -> List[str]:
    """``'domain::op_type'`` of every node (in the graph, its subgraphs and its functions)
    whose domain is not a standard ONNX one; empty for a file of standard operators."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    found = []

    def visit(graph):
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS:
                found.append(f'{node.domain}::{node.op_type}')
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField('g') else []) + list(attr.graphs):
                    visit(sub)

    visit(model.graph)
    for function in model.functions:
        found.append(f'{function.domain}::{function.name} (a function)')
    return sorted(set(found))


def file_opset(path: str) -> int:
    """The default-domain opset version the file imports."""
    import onnx

    imports = onnx.load(path, load_external_data=False).opset_import
    return next(o.version for o in imports if o.domain in STANDARD_DOMAINS)


def onnxruntime_session(path: str, threads: int = 1):
    """An ONNX Runtime CPU session of the file with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def _feed(session, inputs):
    return {arg.name: t.detach().cpu().numpy() for arg, t in zip(session.get_inputs(), inputs)}


def onnxruntime_runs(path: str, batches: Sequence[Sequence[torch.Tensor]],
                     threads: int = 1) -> List[List[np.ndarray]]:
    """The file's outputs for each tuple of inputs in ``batches`` (one session for all)."""
    session = onnxruntime_session(path, threads)
    return [session.run(None, _feed(session, inputs)) for inputs in batches]


def onnxruntime_outputs(path: str, inputs: Sequence[torch.Tensor],
                        threads: int = 1) -> List[np.ndarray]:
    """Runs the file in ONNX Runtime (CPU) on ``inputs``; returns its outputs in order."""
    return onnxruntime_runs(path, [inputs], threads)[0]


def largest_relative_difference(reference: Sequence[torch.Tensor],
                                outputs: Sequence[np.ndarray]) -> float:
    """max over outputs of ``max |output - reference| / max |reference|`` (infinite where a
    shape differs or a value is not finite)."""
    if len(reference) != len(outputs):
        return float('inf')
    worst = 0.0
    for ref, out in zip(reference, outputs):
        ref = ref.detach().double().cpu()
        out = torch.from_numpy(np.asarray(out)).double()
        if tuple(ref.shape) != tuple(out.shape) or not torch.isfinite(out).all():
            return float('inf')
        if ref.numel() == 0:
            continue
        scale = ref.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
        worst = max(worst, float((out - ref).abs().max() / scale))
    return worst


def parity(model: nn.Module, path: str,
           batches: Sequence[Sequence[torch.Tensor]]) -> List[float]:
    """:func:`largest_relative_difference` of the file against ``model`` for each tuple of
    inputs in ``batches`` (one ONNX Runtime session for all)."""
    with torch.no_grad():
        references = [flatten_outputs(model(*inputs)) for inputs in batches]
    return [largest_relative_difference(reference, outputs)
            for reference, outputs in zip(references, onnxruntime_runs(path, batches))]
