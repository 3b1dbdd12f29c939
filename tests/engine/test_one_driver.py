"""Every model in this project is trained by one driver: outside `engine/`, no file builds an optimizer or a schedule,
assembles the training step's parts or runs the loop itself."""

import re
from pathlib import Path

import mambaout

SOURCE = Path(mambaout.__file__).parent
# what only the engine may do: timm's optimizer factory, the per-update cosine and mmcv's warm-up, the step's
# parts, the epoch loop (a bare `fit(`: scikit-learn's `estimator.fit(` trains no torch model) and the update loop
DRIVING = re.compile(
    r"create_optimizer_v2|cosine_per_update\(|with_warmup\(|TrainParts\(|(?<![.\w])fit\(|train_updates\("
)


def test_only_the_engine_drives_training():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 50  # the whole package is scanned
    outside = {
        f"{path.relative_to(SOURCE)}:{n}: {line.strip()}"
        for path in files
        if path.relative_to(SOURCE).parts[0] != "engine"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if DRIVING.search(line.split("#")[0])
    }
    assert outside == set()


def test_the_scan_finds_what_it_looks_for():
    engine = "".join(p.read_text() for p in (SOURCE / "engine").glob("*.py"))
    assert {m.group(0) for m in DRIVING.finditer(engine)} == {
        "create_optimizer_v2",
        "cosine_per_update(",
        "with_warmup(",
        "TrainParts(",
        "fit(",
        "train_updates(",
    }
