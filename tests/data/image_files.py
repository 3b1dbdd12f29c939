"""Image folders written into tmp_path: real PNG/JPEG files, plus the broken kinds users have on disk."""

import numpy as np
from PIL import Image


def write_image(path, seed: int, size: int = 20, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def make_folder(root, layout: dict[str, dict[str, int]], ext: str = ".png"):
    """layout = {'train': {'cat': 4, 'dog': 4}, 'val': {'cat': 2}} -> root/train/cat/0.png ..."""
    seed = 0
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(root / split / name / f"{i}{ext}", seed)
                seed += 1
    return root


def break_images(folder) -> list:
    """Three unreadable files next to good ones: empty, truncated JPEG, text named .png."""
    folder.mkdir(parents=True, exist_ok=True)
    empty, truncated, text = folder / "empty.jpg", folder / "truncated.jpg", folder / "notes.png"
    empty.write_bytes(b"")
    write_image(truncated, 99, fmt="JPEG")
    truncated.write_bytes(truncated.read_bytes()[:120])
    text.write_text("this is not an image")
    return [empty, truncated, text]
