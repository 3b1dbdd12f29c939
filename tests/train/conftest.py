"""Fixtures of the training tests: one intra-op thread, and a run that is killed after its n-th checkpoint."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")  # module scope: set before the module's other fixtures run
def one_thread():
    """One intra-op thread: on 2 cores shared with other jobs, two spinning OpenMP threads are ~4x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def interrupt_after_saves(monkeypatch):
    """Make the n-th `last.pt` save of a run be its last act (as if the process were killed right after it)."""

    def arm(n: int):
        import mambaout.train.trainer as trainer

        real, calls = trainer.save_checkpoint, []

        def save_then_maybe_die(path, state):
            real(path, state)
            calls.append((state["epoch"], state["updates_done"]))
            if len(calls) == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(trainer, "save_checkpoint", save_then_maybe_die)
        return calls

    return arm
