"""AP numbers as text tables: what the size-aware metric logs and what the run comparison
prints, in one format.

A separate module so that the registered metric and the comparison of finished runs share the
format without the metric depending on the analysis code.
"""
from typing import Iterable, List, Optional, Sequence

from terminaltables import AsciiTable

__all__ = ['NO_GT', 'NO_GT_NOTE', 'ap_table', 'format_ap']

# AP of -1 is COCO's marker for "no ground truth in this bin": AP is undefined there. The
# reports and logged scalars keep -1 (JSON has no NaN); tables print this instead (mmdet's
# per-class table prints nan for the same case).
NO_GT = 'n/a'
NO_GT_NOTE = f'{NO_GT}: no ground truth in this bin, AP undefined (-1 in JSON and logs, as COCO)'


def format_ap(value: Optional[float]) -> str:
    """A table cell: 3 decimals, ``n/a`` for -1 (no ground truth), ``-`` for no value."""
    if value is None:
        return '-'
    return NO_GT if value < 0 else f'{value:.3f}'


def ap_table(rows: Sequence[List[str]], right_aligned: Iterable[int] = ()) -> str:
    """``rows`` (the first is the header) as an ASCII table, the ``right_aligned`` columns
    justified right, followed by :data:`NO_GT_NOTE` when a cell reads :data:`NO_GT`."""
    table = AsciiTable([list(row) for row in rows])
    for column in right_aligned:
        table.justify_columns[column] = 'right'
    text = table.table
    if any(NO_GT in row for row in rows):
        text += '\n' + NO_GT_NOTE
    return text
