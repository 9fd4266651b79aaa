"""The command-line tools' ``main(argv)`` functions, run in the test process.

A tool's whole logic runs this way without a new interpreter's start-up, which costs about
4 s of imports on a 2-core machine. The path through the interpreter (exit code, nothing but
the message on stderr) has its own process tests, one per kind of tool.
"""
import runpy
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def tool_main(script):
    """``main(argv=None) -> exit code`` of ``tools/<script>``, e.g. 'analysis/plot_pooling.py'."""
    return runpy.run_path(str(TOOLS / script), run_name='tool')['main']
