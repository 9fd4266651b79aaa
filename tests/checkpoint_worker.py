"""Load checkpoints in a child process that may crash, and say how each load ended.

A crafted checkpoint that makes the loader read memory it does not own kills the process
(SIGSEGV): run in pytest's own process it would end the test session instead of failing a
test. :class:`LoaderWorker` keeps one long-lived child that imports lip_mmdet once (about 4 s)
and then loads file after file through mmengine's ``_load_checkpoint`` (so through every part
of the product a checkpoint passes), uses what it got (every array, tensor storage and buffer
is read, and printed) and reports one line per file. A child that dies is restarted for the
next file; the file it died on is reported as a crash.

Run as a script, this file is that child: paths on stdin, JSON results on stdout.
"""
import collections
import json
import os
import os.path as osp
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_TAG = 'checkpoint-worker-result: '

#: Outcomes that mean the loader did its job: loaded (and the content checked out), or refused
#: with one of the package's checkpoint errors.
GOOD_OUTCOMES = ('loaded', 'UnsafeCheckpointError', 'UnreadableCheckpointError',
                 'CheckpointUnavailableError')

#: What loading one file may add to the child's peak resident memory beyond the file itself,
#: in KiB: the loader's own bound on what a file allocates outside its tensors (16 MiB plus 4
#: bytes per file byte), with room for the allocator's slack.
RSS_SLACK_KB = 48 * 1024


# --- the child ----------------------------------------------------------------------------

def _peak_rss_kb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _content_problem(result):
    """Why the loaded ``result`` holds something the allow-list should not have let through,
    or None. Reads every array, every tensor's whole storage and every buffer on the way."""
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    plain = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.Size,
             torch.device, torch.dtype, torch.layout, torch.serialization.StorageType)
    # torch's own allow-list: its classes and functions may come back as values
    torch_globals = {id(value) for value in
                     torch._weights_only_unpickler._get_allowed_globals().values()}
    seen, stack = set(), [result]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind in (dict, list, tuple, set) or isinstance(obj, dict):
            stack.extend(obj.keys() if isinstance(obj, dict) else obj)
            if isinstance(obj, dict):
                stack.extend(obj.values())
        elif kind in plain or id(obj) in torch_globals:
            continue
        elif kind in (torch.storage.TypedStorage, torch.UntypedStorage):
            untyped = obj._untyped_storage if kind is torch.storage.TypedStorage else obj
            if untyped.device.type == 'cpu':
                int(torch.empty(0, dtype=torch.uint8).set_(untyped).sum())
        elif kind is np.ndarray or isinstance(obj, np.generic):
            if obj.dtype.kind not in 'biufc' or obj.dtype.fields is not None:
                return f'a numpy value of dtype {obj.dtype}'
            np.asarray(obj).tolist()
            if kind is np.ndarray and obj.base is not None and type(obj.base) is not bytes:
                stack.append(obj.base)
        elif isinstance(obj, np.dtype):
            if obj.kind not in 'biufc' or obj.fields is not None or obj.subdtype is not None:
                return f'a numpy dtype {obj!r}'
        elif kind is HistoryBuffer:
            if set(obj.__dict__) != {'max_length', '_log_history', '_count_history'}:
                return f'a HistoryBuffer with attributes {sorted(obj.__dict__)}'
            logs, counts = obj._log_history, obj._count_history
            if (type(logs) is not np.ndarray or type(counts) is not np.ndarray
                    or logs.ndim != 1 or len(logs) != len(counts)):
                return 'a HistoryBuffer whose histories are not two 1-D arrays of one length'
            stack.extend(obj.__dict__.values())
        elif kind in (torch.Tensor, torch.nn.Parameter):
            if obj.layout is torch.strided and obj.device.type == 'cpu':
                storage = obj.untyped_storage()
                whole = torch.empty(0, dtype=torch.uint8).set_(storage)
                int(whole.sum())  # reads every byte the tensor may reach
                if obj.numel():
                    reach = obj.storage_offset() + sum(
                        (n - 1) * s for n, s in zip(obj.shape, obj.stride()))
                    if (reach + 1) * obj.element_size() > storage.nbytes():
                        return f'a tensor reaching beyond its storage ({reach})'
            stack.extend(vars(obj).values())
        else:
            return f'an object of type {kind.__module__}.{kind.__qualname__}'
    return None


class _ToolRun(collections.namedtuple('_ToolRun', 'code stderr')):
    """How a tool's ``main`` ended (a loaded checkpoint may be any tuple)."""


def _load(request):
    """Load ``request['path']`` the way ``request['how']`` names; returns what was loaded, or
    ``(exit code, stderr)`` for a tool."""
    how, path = request.get('how', 'mmengine'), request['path']
    if how == 'mmengine':
        from mmengine.runner.checkpoint import _load_checkpoint
        return _load_checkpoint(path, map_location='cpu')
    if how == 'torch.load':  # weights_only=True, torch's default
        import torch
        return torch.load(path)
    if how == 'preflight':
        from lip_mmdet.apis.preflight import check_checkpoint
        return check_checkpoint(path, 'checkpoint to test')
    if how == 'pretrained':
        from mmdet.models.backbones import ResNet
        ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
        return None
    if how == 'tool':
        import contextlib
        import io
        import runpy
        namespace = runpy.run_path(str(REPO / 'tools' / path), run_name='tool')
        # tools/train.py and test.py run launch's train_main / test_main
        main = next(namespace[name] for name in ('main', 'test_main', 'train_main')
                    if name in namespace)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(request['args'])
            except SystemExit as exit_:
                code = exit_.code
            except Exception:  # noqa: BLE001  a traceback is the finding
                import traceback
                traceback.print_exc()
                code = 1
        return _ToolRun(code, stderr.getvalue())
    raise ValueError(f'unknown way to load: {how}')


def _load_one(request):
    from mmengine.logging.history_buffer import HistoryBuffer

    methods = dict(HistoryBuffer._statistics_methods)
    saved_env = {key: os.environ.get(key) for key in request.get('env', {})}
    os.environ.update(request.get('env', {}))
    try:
        result = _load(request)
    except Exception as error:  # noqa: BLE001  reported, whatever it is
        lines = str(error).strip().splitlines()
        return type(error).__name__, (lines[0] if lines else '')[:2000]
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if type(result) is _ToolRun:
        return f'exit {result.code}', result.stderr[-3000:]
    try:
        problem = _content_problem(result)
    except Exception as error:  # noqa: BLE001  reading what loaded failed: also a finding
        problem = f'reading the loaded content raised {type(error).__name__}: {error}'
    try:
        repr(result)  # prints every array and tensor, as a user looking at it would
    except (ValueError, OverflowError, RuntimeError):
        pass  # torch.Size reprs only sizes that fit in int64
    table = HistoryBuffer._statistics_methods
    if any(method is not getattr(HistoryBuffer, name) for name, method in table.items()):
        problem = 'HistoryBuffer\'s class-wide statistics table was changed'
        HistoryBuffer._statistics_methods = methods
    return ('unchecked content', problem) if problem else ('loaded', '')


def worker_main():
    """Child: run each request (a JSON line) read from stdin, print one result line for it."""
    sys.path.insert(0, str(REPO))
    import lip_mmdet  # noqa: F401  installs the checkpoint loader, as every tool does

    print(_TAG + json.dumps(dict(ready=os.getpid())), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        before = _peak_rss_kb()
        outcome, detail = _load_one(request)
        grown = _peak_rss_kb() - before
        print(_TAG + json.dumps(dict(outcome=outcome, detail=detail, rss_growth_kb=grown)),
              flush=True)


# --- the parent ---------------------------------------------------------------------------

class LoaderWorker:
    """A child process loading checkpoints; :meth:`load` returns how loading one ended.

    Args:
        log_dir (str | Path): where the child's stderr goes (one file per child started).
        timeout (float): seconds one file may take before the child is killed ('timeout').
    """

    def __init__(self, log_dir, timeout=60):
        self.log_dir = Path(log_dir)
        self.timeout = timeout
        self.proc = None
        self.started = 0
        self._buffer = b''

    def _start(self):
        self.started += 1
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), os.environ.get('PYTHONPATH', '')]), OMP_NUM_THREADS='1')
        stderr = open(self.log_dir / f'worker-{self.started}.log', 'wb')
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=stderr, env=env,
                                     cwd=str(self.log_dir))
        stderr.close()
        self._buffer = b''
        ready = self._result(timeout=120)
        if not isinstance(ready, dict) or 'ready' not in ready:
            raise RuntimeError(f'the checkpoint worker did not start: {self.stderr_tail()}')

    def stderr_tail(self):
        log = self.log_dir / f'worker-{self.started}.log'
        return log.read_text(errors='replace')[-2000:] if log.exists() else ''

    def _result(self, timeout):
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                while b'\n' in self._buffer:
                    line, self._buffer = self._buffer.split(b'\n', 1)
                    text = line.decode(errors='replace')
                    if text.startswith(_TAG):
                        return json.loads(text[len(_TAG):])
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    return 'timeout'
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self._buffer += chunk

    def load(self, path, how='mmengine', args=(), env=None):
        """``dict(outcome=..., detail=..., rss_growth_kb=...)``: how loading ``path`` ended.

        Args:
            path (str | Path): the checkpoint (a source such as ``torchvision://resnet18``
                too), or for ``how='tool'`` the script under tools/.
            how (str): 'mmengine' (its ``_load_checkpoint``), 'torch.load' (torch's default,
                ``weights_only=True``), 'preflight' (the tools' check), 'pretrained' (an
                mmdet ResNet's ``init_cfg=dict(type='Pretrained')``) or 'tool' (the script's
                ``main(args)``).
            args (Sequence[str]): the tool's arguments.
            env (dict, optional): environment variables set around the load.

        ``outcome`` is 'loaded', an exception's class name, 'exit N' for a tool (``detail``:
        its stderr), 'unchecked content', 'crash' (the child died; ``detail`` names the
        signal) or 'timeout'.
        """
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        request = dict(path=str(path), how=how, args=[str(a) for a in args], env=env or {})
        self.proc.stdin.write((json.dumps(request) + '\n').encode())
        self.proc.stdin.flush()
        result = self._result(self.timeout)
        if isinstance(result, dict):
            if result['rss_growth_kb'] > RSS_SLACK_KB:
                # the peak only grows: a fresh child sees the same file grow it again
                self.close()
            return result
        if result == 'timeout':
            self.proc.kill()
            self.proc.wait()
            return dict(outcome='timeout', detail=f'over {self.timeout} s', rss_growth_kb=0)
        code = self.proc.wait()  # its output ended: it died
        name = signal.Signals(-code).name if code < 0 else f'exit code {code}'
        return dict(outcome='crash', detail=f'{name}: {self.stderr_tail()[-300:]}',
                    rss_growth_kb=0)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_bound_kb(path):
    """The growth of the child's peak memory a file of this size may cause, in KiB."""
    return RSS_SLACK_KB + 4 * osp.getsize(path) // 1024 + 1


if __name__ == '__main__':
    worker_main()
