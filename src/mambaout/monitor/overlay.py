"""The anomaly map over the frame, as the page and the evidence clips show it.

The map (float32, any H x W) is resized to the frame and blended in the inferno colormap on the alarm's scale
(`Detector.map_levels`): clear up to `low`, the map's peak on a typical normal frame, rising linearly to full colour
at `high`, the value at which one pixel alone raises the alarm. So a normal frame stays clear, a defect glows, and
the same defect looks the same whatever else the stream has shown. Small frames are enlarged by whole pixels
(`upscale`) so they can be looked at.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_LUT: np.ndarray | None = None


def _inferno() -> np.ndarray:
    global _LUT
    if _LUT is None:
        import matplotlib

        _LUT = (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)
    return _LUT


def overlay(
    image: np.ndarray, heat: np.ndarray | None, levels: tuple[float, float] | None, opacity: float = 0.65
) -> np.ndarray:
    """uint8 RGB (H, W, 3) with `heat` blended over it between `levels` (low, high); `image` itself when there is no
    map or no levels."""
    if heat is None or levels is None:
        return image
    low, high = levels
    h, w = image.shape[:2]
    m = np.asarray(heat, np.float32)
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m).resize((w, h), Image.BILINEAR))
    level = np.clip((m - low) / max(high - low, 1e-12), 0.0, 1.0)
    color = _inferno()[(level * 255).astype(np.uint8)]
    alpha = (opacity * level)[..., None]
    return (image * (1 - alpha) + color * alpha).astype(np.uint8)


def upscale(image: np.ndarray, at_least: int = 256) -> np.ndarray:
    """Enlarge by a whole factor (nearest pixel) until the short side is at least `at_least`; sides made even."""
    h, w = image.shape[:2]
    k = max(1, -(-at_least // min(h, w)))
    if k > 1:
        image = image.repeat(k, axis=0).repeat(k, axis=1)
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[: h - h % 2, : w - w % 2])
