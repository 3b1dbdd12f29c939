"""A memory probe: can a linear read-out of a temporal model's features tell where the line is in its cycle?

On normal video the built-in line knows, per frame, the cycle position of the newest item in view
(`Line.cycle_positions`); "items since the last marker" is (position + 1) mod P. A frame shows one item, and the
items of a cycle repeat (square disc triangle ...), so the frame alone cannot say which block of the cycle it is
in: a model whose features say it has remembered the marker. The probe is scikit-learn's multinomial logistic
regression, fitted on the features of the training part of each normal video and scored (accuracy) on the held-out
tail, both read as the continuation of their video and after the burn-in. It shows whether memory was learnt,
whatever the anomaly score does; `chance` (the most frequent position's share) and the same probe on the frame
embedding alone (no memory) frame it.

Example:
    >>> memory_probe(features, positions, splits, burn_in=56)  # doctest: +SKIP
    {'accuracy': 0.97, 'chance': 0.17, 'frames': 1280}
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def memory_probe(
    features: list[np.ndarray], targets: list[np.ndarray], splits: list[int], burn_in: int = 0
) -> dict[str, float]:
    """Accuracy of a linear probe from per-frame features (T, F) to a per-frame class (T,) (-1: none), trained on
    frames [burn_in, split) of every video and scored on [split, T)."""

    def part(train: bool):
        x, y = [], []
        for f, t, s in zip(features, targets, splits):
            sl = slice(burn_in, s) if train else slice(s, len(t))
            keep = np.asarray(t[sl]) >= 0
            x.append(np.asarray(f[sl])[keep])
            y.append(np.asarray(t[sl])[keep])
        return np.concatenate(x), np.concatenate(y)

    x_train, y_train = part(True)
    x_test, y_test = part(False)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))
    probe.fit(x_train, y_train)
    chance = float(np.bincount(y_test).max() / len(y_test))
    return dict(accuracy=float(probe.score(x_test, y_test)), chance=chance, frames=int(len(y_test)))
