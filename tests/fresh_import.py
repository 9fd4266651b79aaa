"""Run code in a fresh interpreter where chosen packages of lip_mmdet import without their
``__init__`` files, to see what one module does and imports on its own (importing
``lip_mmdet.x.y`` normally runs ``lip_mmdet/__init__.py`` first, which imports everything)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PRELUDE = '''
import json
import sys
import types

for name in {packages!r}:
    package = types.ModuleType(name)
    package.__path__ = [{root!r} + '/' + name.replace('.', '/')]
    sys.modules[name] = package
'''


def run_fresh(code, bare_packages=(), timeout=300):
    """Run ``code`` in a new interpreter (this checkout first on its path) after putting
    ``bare_packages`` (e.g. ``('lip_mmdet', 'lip_mmdet.utils')``) into ``sys.modules`` as empty
    packages of this checkout's folders; ``code`` prints a JSON value as its last line, which
    is returned."""
    prelude = _PRELUDE.format(packages=tuple(bare_packages), root=str(REPO))
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    done = subprocess.run([sys.executable, '-c', prelude + code], env=env, text=True,
                          capture_output=True, timeout=timeout, cwd=str(REPO))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
