"""A tiny version of the built-in digits run (16 px, 48 images, 6 updates per epoch) and weight comparison."""

from safetensors.torch import load_file

from mambaout.train.recipe import Recipe, resolve_recipe


def tiny_recipe(output, **overrides) -> Recipe:
    values = dict(
        epochs=2,
        input_size=16,
        batch_size=8,
        train_images=48,
        val_images=32,
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
