"""The package's drawing functions leave matplotlib's process-wide state alone: each draws on
its own ``Figure`` and writes a file, without pyplot, so a program that uses pyplot with a
backend of its own (an interactive one, a notebook's) keeps it and its figures."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter with MPLBACKEND=svg: a backend other than Agg that imports
# anywhere. mmengine imports pyplot; its entry points that make figures or switch the backend
# are counted. Prints the state before and after, the calls and the files written.
SCRIPT = r'''
import functools
import json
import os
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from lip_mmdet.evaluation.compare import plot_ap_by_size
from lip_mmdet.evaluation.seed_study import summarize_study
from lip_mmdet.visualization import draw_pooling_maps, plot_pooling_runs, plot_seed_study
from lip_mmdet.visualization.pooling_maps import LayerMap


def state():
    return dict(backend=matplotlib.get_backend(), figures=plt.get_fignums(),
                rc=repr(sorted(matplotlib.rcParams.items())))


def counted(name):
    original = getattr(plt, name)

    @functools.wraps(original)
    def call(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    return call


calls = []
for name in ('figure', 'subplots', 'switch_backend', 'close', 'savefig'):
    setattr(plt, name, counted(name))
out = sys.argv[1]
before = state()
written = [
    plot_ap_by_size(
        [dict(coco={}, bins={'tiny': 0.4, 'small': -1.0}, num_gt={'tiny': 5, 'small': 0},
              bin_areas={'tiny': [0, 256], 'small': [256, 1024]})],
        ['run'], os.path.join(out, 'ap.png')),
    plot_pooling_runs([dict(series={'eff_window': {'backbone.layer2.0.pool': {1: 9.0,
                                                                              50: 6.0}}})],
                      ['run'], os.path.join(out, 'pooling.png')),
    draw_pooling_maps([dict(image=np.zeros((16, 16, 3), np.uint8),
                            maps=[LayerMap('layer2.0.pool', 8, np.linspace(0.5, 1.5, 256)
                                           .reshape(16, 16))],
                            boxes=np.array([[2., 2., 9., 9.]]))],
                      os.path.join(out, 'maps.png'), 'maps'),
    plot_seed_study(summarize_study({'a': {0: dict(AP=0.1), 1: dict(AP=0.2)},
                                     'b': {0: dict(AP=0.3), 1: dict(AP=0.3)}}),
                    os.path.join(out, 'study.png')),
]
print(json.dumps(dict(before=before, after=state(), calls=calls, written=written)))
'''


def test_drawing_keeps_the_backend_and_does_not_use_pyplot(tmp_path):
    env = dict(os.environ, MPLBACKEND='svg',
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    done = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path)], env=env, text=True,
                          capture_output=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['before']['backend'] == 'svg'
    assert report['after'] == report['before']
    assert report['calls'] == []
    for path in report['written']:
        assert Path(path).read_bytes().startswith(b'\x89PNG'), path
