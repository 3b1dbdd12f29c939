"""The anomaly map over the frame (page and clips): clear below a normal frame's peak, glowing on a real defect."""

import numpy as np

from mambaout.monitor.overlay import overlay, upscale


def test_the_map_glows_above_a_normal_frames_peak_and_leaves_the_rest_of_the_frame_alone():
    image = np.full((32, 32, 3), 100, np.uint8)
    heat = np.full((8, 8), 0.8, np.float32)  # a normal frame's level: below `low`
    heat[2:4, 2:4] = 5.0  # a defect at the alarm's level, on a map coarser than the frame
    heat[6:8, 0:2] = 3.0  # half-way from a normal peak to the alarm
    out = overlay(image, heat, levels=(1.0, 5.0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[:4, 20:], image[:4, 20:])  # below a normal frame's peak: the frame as it was
    hot, half = out[10:14, 10:14].astype(int), out[26:, 1:6].astype(int)
    assert np.abs(hot - 100).max() > 60  # full opacity 0.65 of inferno's bright end
    assert 0 < np.abs(half - 100).max() < np.abs(hot - 100).max()
    assert overlay(image, None, levels=(1.0, 5.0)) is image and overlay(image, heat, None) is image


def test_small_frames_are_enlarged_by_whole_pixels_to_even_sides():
    image = np.arange(31 * 17 * 3, dtype=np.uint8).reshape(31, 17, 3)
    big = upscale(image, at_least=256)
    assert big.shape == (496, 272, 3)  # 16 times: the short side 17 -> 272 >= 256; both sides even
    assert np.array_equal(big[::16, ::16], image[: big.shape[0] // 16, : big.shape[1] // 16])


def warm_rise(shown: np.ndarray, raw: np.ndarray, defect: np.ndarray) -> tuple[np.ndarray, float]:
    """(mean RGB change on the defect's pixels, mean absolute change elsewhere) of `shown` over the `raw` frame."""
    change = shown.astype(float) - raw.astype(float)
    return change[defect].mean(0), float(np.abs(change[~defect]).mean())


def enlarged(image: np.ndarray, k: int) -> np.ndarray:
    return image.repeat(k, axis=0).repeat(k, axis=1)


def test_a_spot_glows_on_the_live_page_and_in_its_alarm_clip(line_run, tmp_path):
    import io
    import json
    import time

    import av
    import httpx
    from PIL import Image

    from mambaout.anomaly.detector import load_detector
    from mambaout.monitor import Monitor
    from mambaout.monitor.watch import watch
    from mambaout.video import open_video

    video, run, _, _ = line_run
    data = video.parents[1]
    detector, config = load_detector(run)
    frames = list(open_video(video, size=config["image_size"]))
    raw = detector.branch_scores(frames)
    z_t, z_p = detector.standardised(raw["temporal"], raw["patch"])
    threshold = float(detector.alarm_threshold)
    events = json.loads((data / "meta.json").read_text())["videos"]["test_00"]["intervals"]
    spots = [t for e in events if e["subtype"] == "spot" for t in range(e["start"], e["end"])]
    # the spot frame the patch branch alone raises highest: the stream stops there, so the page shows it
    last = max((t for t in spots if z_p[t] > threshold >= z_t[t]), key=lambda t: z_p[t])

    def mask(frame: int) -> np.ndarray:
        return np.asarray(Image.open(data / "test_masks" / "test_00" / f"{frame:06d}.png")) > 0

    evidence = tmp_path / "evidence"
    monitor = Monitor("line1", serve="127.0.0.1:0", evidence=str(evidence), clip_seconds=1, out=io.StringIO())
    try:
        watch(str(video), str(run), quiet=True, hook=monitor, max_frames=last + 1)
        url = f"http://127.0.0.1:{monitor.server.port}"
        alarms = httpx.get(url + "/api/alarms").json()
        deadline = time.monotonic() + 30
        while monitor.evidence.written < len(alarms) and time.monotonic() < deadline:
            time.sleep(0.05)
        page = httpx.get(url + "/").text
        png = httpx.get(url + "/api/frame.png")
    finally:
        monitor.close()

    # the page's frame: the spot's pixels glow warm (inferno's orange-yellow over the dark spot), the rest barely moves
    assert 'id="frame"' in page and 'src="/api/frame.png"' in page
    assert int(png.headers["X-Frame"]) == last
    shown = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    k = shown.shape[0] // frames[last].shape[0]
    on_defect, elsewhere = warm_rise(shown, enlarged(frames[last], k), enlarged(mask(last), k))
    assert on_defect[0] > 80 and on_defect[0] > on_defect[2] + 40, on_defect
    assert on_defect.mean() > 4 * elsewhere, (on_defect, elsewhere)

    # the spot's alarm: raised by the patch branch; its clip shows the map on the spot in every spot frame
    alarm = next(a for a in alarms if a["start"] <= last <= a["end"])
    assert alarm["branch"] == "patch" and alarm["evidence"]
    clip = evidence / alarm["evidence"]
    sidecar = json.loads(clip.with_suffix(".json").read_text())
    assert sidecar["alarm"]["branch"] == "patch"
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    k = decoded[0].shape[0] // frames[0].shape[0]
    shown_spots = [(i, f) for i, f in enumerate(sidecar["frames"]) if f in spots and z_p[f] > threshold]
    assert len(shown_spots) >= 3
    for i, f in shown_spots:
        on_defect, elsewhere = warm_rise(decoded[i], enlarged(frames[f], k), enlarged(mask(f), k))
        assert on_defect[0] > 60 and on_defect.mean() > 3 * elsewhere, (f, on_defect, elsewhere)
    # a calm frame before the alarm, on the same pixels, is left nearly as it was
    calm = next(i for i, f in enumerate(sidecar["frames"]) if f < alarm["start"] and z_p[f] < 0.5 * threshold)
    f = sidecar["frames"][calm]
    before, _ = warm_rise(decoded[calm], enlarged(frames[f], k), enlarged(mask(last), k))
    assert np.abs(before).max() < 0.5 * on_defect[0], before
