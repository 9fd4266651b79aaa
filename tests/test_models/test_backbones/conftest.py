"""Backbone tests run small inputs: one intra-op thread (OpenMP threads would mostly add
synchronisation, and stall when other processes load the machine)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intraop_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
