"""Fixtures of the training tests: a run that is killed after its n-th checkpoint."""

import pytest


@pytest.fixture
def interrupt_after_saves(monkeypatch):
    """Make the n-th `last.pt` save of a run be its last act (as if the process were killed right after it)."""

    def arm(n: int):
        import mambaout.engine.run as driver

        real, calls = driver.save_checkpoint, []

        def save_then_maybe_die(path, state):
            real(path, state)
            calls.append((state["epoch"], state["updates_done"]))
            if len(calls) == n:
                raise KeyboardInterrupt

        monkeypatch.setattr(driver, "save_checkpoint", save_then_maybe_die)
        return calls

    return arm
