"""tools/check_mmcv_cuda.py: the GPU code it finds in a library, and its verdict on the
installed mmcv against mmcv's own record of how it was compiled."""
import struct
import subprocess

import mmcv._ext
import pytest

from tiny_run import REPO
from tool_scripts import tool_main

check_mmcv_cuda = tool_main('check_mmcv_cuda.py').__globals__


def _fatbin(*entries):
    """A fat binary as nvcc lays it out: a 16-byte header, then per entry a 64-byte header
    (kind, header size, payload size, ..., architecture at byte 28) and its payload."""
    body = b''
    for kind, arch, payload in entries:
        header = struct.pack('<HHIQII', kind, 0x101, 64, len(payload), 0, 0)
        header += struct.pack('<HHI', 0, arch // 10, arch) + bytes(32)
        body += header + payload
    return struct.pack('<IHHQ', 0xBA55ED50, 1, 16, len(body)) + body


def test_fatbin_entries_are_read_across_several_fat_binaries():
    library = (b'\x7fELF' + bytes(100) + _fatbin((2, 75, b'c' * 40), (2, 90, b'd' * 8))
               + bytes(13) + _fatbin((1, 90, b'.target sm_90\n'), (2, 80, bytes(24))) + bytes(7))
    assert check_mmcv_cuda['fatbin_entries'](library) == [
        ('cubin', 75), ('cubin', 90), ('ptx', 90), ('cubin', 80)]


def test_a_damaged_fat_binary_ends_the_listing_without_reading_past_the_data():
    whole = _fatbin((2, 86, b'x' * 16), (2, 89, b'y' * 16))
    assert check_mmcv_cuda['fatbin_entries'](whole[:-20]) == []
    assert check_mmcv_cuda['fatbin_entries'](b'\x50\xed\x55\xba' + bytes(3)) == []


def test_check_names_each_missing_launcher_and_architecture():
    launchers = b''.join(check_mmcv_cuda['CUDA_LAUNCHERS'].values())
    library = launchers + _fatbin((2, 80, bytes(8)), (2, 90, bytes(8)), (1, 90, bytes(8)))
    complete = check_mmcv_cuda['check']('ext.so', library, ['8.0', '9.0+PTX'])
    assert complete['missing'] == []
    assert (complete['cubins'], complete['ptx']) == (['sm_80', 'sm_90'], ['compute_90'])
    partial = check_mmcv_cuda['check']('ext.so', library[len(b'NMSCUDAKernelLauncher'):],
                                       ['7.5', '8.0+PTX'])
    assert partial['missing'] == ['nms CUDA launcher', 'sm_75 cubin', 'compute_80 PTX']


def test_verdict_on_the_installed_mmcv_matches_how_mmcv_says_it_was_compiled(capsys):
    code = tool_main('check_mmcv_cuda.py')([])
    out, err = capsys.readouterr()
    if mmcv._ext.get_compiling_cuda_version() == 'not available':
        assert code == 1 and out == ''
        assert len(err.strip().splitlines()) == 1
        assert 'lacks nms CUDA launcher, roi_align CUDA launcher' in err
    else:
        assert code == 0 and 'nms, roi_align launchers' in out, err


@pytest.mark.parametrize('archs', [['8.x'], ['90'], ['8.0;sm_90']])
def test_a_malformed_architecture_is_refused_with_exit_2(capsys, archs):
    assert tool_main('check_mmcv_cuda.py')(['--archs', *archs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is not a compute capability' in err[0]


def test_make_gpu_check_without_a_gpu_stops_before_the_set_up(tmp_path):
    """Where nvidia-smi lists no GPU, nothing is installed or built."""
    proc = subprocess.run(['make', '-s', 'gpu-check'], cwd=REPO, capture_output=True, text=True,
                          env={'PATH': f'{tmp_path}:/usr/bin:/bin'}, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ''
    assert proc.stderr.splitlines()[0] == (
        'error: make gpu-check needs an NVIDIA GPU, and nvidia-smi lists none here')
    assert '[setup]' not in proc.stderr
