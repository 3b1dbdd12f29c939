"""Training and evaluation: the paper's recipe as data, one CPU to many GPUs, resumable, on built-in data by default.

Example:
    >>> from mambaout.train import resolve_recipe, train
    >>> recipe = resolve_recipe({"epochs": 2})  # the built-in digits task
    >>> result = train(recipe)  # doctest: +SKIP
"""

from mambaout.train.recipe import PRESETS, Recipe, resolve_recipe

__all__ = ["PRESETS", "Recipe", "RunResult", "resolve_recipe", "train"]


def __getattr__(name: str):
    if name in ("RunResult", "train"):  # torch and timm load with the trainer, not with the recipe
        from mambaout.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'mambaout.train' has no attribute {name!r}")
