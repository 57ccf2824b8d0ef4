"""Sampler tests run torch on one thread: the tiny models gain nothing from more threads, and one
thread keeps the summation order the same on every machine."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
