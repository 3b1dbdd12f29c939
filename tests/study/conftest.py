import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads spin against other jobs (measured: a
    mambaout_pico forward at batch 1 took 180 ms with 2 threads and 8 ms with 1). The tests check numbers, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
