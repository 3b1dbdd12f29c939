"""A tiny version of the built-in digits run (16 px, 96 images, 6 updates per epoch) for training tests."""

import pytest
from safetensors.torch import load_file

from mambaout.train.recipe import Recipe, resolve_recipe


def tiny_recipe(output, **overrides) -> Recipe:
    values = dict(
        epochs=2,
        input_size=16,
        batch_size=16,
        train_images=96,
        val_images=64,
        tensorboard=False,
        output=str(output),
    )
    return resolve_recipe({**values, **overrides})


def weights(run_dir, name="last.safetensors"):
    return load_file(str(run_dir / name))


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    worst = max((x - b[k]).abs().max().item() for k, x in a.items())
    assert worst <= atol, f"weights differ by up to {worst}"


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
