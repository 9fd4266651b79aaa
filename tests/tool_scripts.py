"""The command-line tools run in the test process: their ``main(argv)`` functions, and their
``__main__`` blocks as ``python tools/<script>`` runs them.

A tool's whole logic runs this way without a new interpreter's start-up, which costs about
4 s of imports on a 2-core machine. A fresh interpreter shows what only it can (output of the
imports themselves): train.py, run_demo.py and benchmark_backbone.py have process tests.
"""
import runpy
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def tool_main(script):
    """``main(argv=None) -> exit code`` of ``tools/<script>``, e.g. 'analysis/plot_pooling.py'."""
    return runpy.run_path(str(TOOLS / script), run_name='tool')['main']


def run_as_script(script, argv, monkeypatch):
    """Run ``tools/<script> argv`` through its ``if __name__ == '__main__'`` block (``sys.argv``
    set, ``sys.path`` restored afterwards) and return the exit code it gives ``sys.exit``."""
    path = str(TOOLS / script)
    monkeypatch.setattr(sys, 'argv', [path, *map(str, argv)])
    monkeypatch.setattr(sys, 'path', list(sys.path))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(path, run_name='__main__')
    return exit_info.value.code


def assert_clean_failure(code, stderr, *words):
    """A user error as a tool reports it: exit code 2, one ``error: `` line holding every one
    of ``words``, no traceback."""
    assert code == 2, stderr[-3000:]
    assert 'Traceback' not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, stderr
    for word in words:
        assert word in stderr
