"""Reading frames: every kind of source yields uint8 RGB (H, W, 3) one frame at a time; bad frames are skipped."""

import io

import numpy as np
import pytest
from PIL import Image
from replicas import clip, frame_folder, video_file

from mambaout.errors import UserError
from mambaout.video import count_frames, open_video, write_video


def test_lossless_video_file_decodes_to_the_written_frames(tmp_path):
    path = video_file(tmp_path / "a.avi", 20)
    video = open_video(path)
    frames = list(video)
    assert len(frames) == 20 == count_frames(path) == video.frame_count
    assert video.fps == 25 and video.skipped == 0 and video.decoded == 20
    assert frames[0].dtype == np.uint8 and frames[0].shape == (32, 32, 3)
    assert all(np.array_equal(got, want) for got, want in zip(frames, clip(20)))
    assert len(list(video)) == 20  # a file can be read again


def test_mp4_is_close_to_the_written_frames_and_resized_on_request(tmp_path):
    path = tmp_path / "a.mp4"
    write_video(path, clip(16), codec="libx264")
    frames = list(open_video(path))
    assert len(frames) == 16
    error = np.mean([np.abs(g.astype(int) - w).mean() for g, w in zip(frames, clip(16))])
    assert error < 6  # lossy yuv420p: a few grey levels on average
    small = next(iter(open_video(path, size=(16, 24))))
    assert small.shape == (16, 24, 3)


def test_frames_come_lazily_one_at_a_time(tmp_path):
    video = open_video(video_file(tmp_path / "a.avi", 24))
    frames = video.indexed()
    index, first = next(frames)
    assert index == 0 and video.decoded == 1
    assert abs(first.mean() - clip(1)[0].mean()) < 1e-9


def test_grayscale_frame_folder_is_read_as_rgb_in_numeric_name_order(tmp_path):
    folder = frame_folder(tmp_path / "frames", 12, ext=".png", gray=True, digits=1)  # 1.png ... 12.png
    video = open_video(folder)
    frames = list(video)
    assert video.frame_count == 12 == count_frames(folder)
    assert frames[0].shape == (32, 32, 3) and np.array_equal(frames[3][:, :, 0], frames[3][:, :, 2])
    greys = [int(f[0, 0, 0]) for f in frames]
    assert greys == [8 * i for i in range(12)]  # 10.png after 9.png, not after 1.png


def test_a_frame_that_fails_to_decode_is_skipped_and_counted_and_the_rest_keep_their_index(tmp_path):
    path = video_file(tmp_path / "cam.avi", 12, codec="mjpeg")
    import av

    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    data = bytearray(path.read_bytes())
    pos, size = packets[5]
    data[pos : pos + size] = bytes(size)  # frame 5's JPEG data zeroed, as a dropped network packet would
    path.write_bytes(bytes(data))

    video = open_video(path)
    got = dict(video.indexed())
    assert video.skipped == 1 and video.decoded == 11
    assert sorted(got) == [i for i in range(12) if i != 5]
    assert abs(got[6][0, 0].astype(int).mean() - 48) < 6  # frame 6 is still frame 6 (grey 8*6)
    assert count_frames(path) == 12


def test_an_unreadable_image_in_a_frame_folder_is_skipped_and_counted(tmp_path):
    folder = frame_folder(tmp_path / "frames", 6, ext=".jpg")
    (folder / "004.jpg").write_bytes(b"not a jpeg")
    video = open_video(folder)
    assert [i for i, _ in video.indexed()] == [0, 1, 2, 4, 5]
    assert video.skipped == 1


def test_raw_rgb24_frames_on_stdin(tmp_path):
    frames = clip(3)
    data = b"".join(f.tobytes() for f in frames) + frames[0].tobytes()[:100]  # the writer stopped mid-frame
    video = open_video("-", raw_size="32x32", stdin=io.BytesIO(data))
    got = list(video)
    assert len(got) == 3 and np.array_equal(got[2], frames[2])
    assert video.skipped == 1 and video.live
    with pytest.raises(UserError, match="--raw-size WxH"):
        open_video("-", stdin=io.BytesIO(data))
    with pytest.raises(UserError, match="not WxH"):
        open_video("-", raw_size="32", stdin=io.BytesIO(data))


def test_a_stream_url_is_read_live(tmp_path):
    path = video_file(tmp_path / "a.avi", 16)
    video = open_video(f"file:{path}", size=8)
    assert video.live and video.frame_count is None
    frames = list(video)
    video.close()
    assert len(frames) == 16 and frames[0].shape == (8, 8, 3)


def test_bad_input_says_what_was_wrong_and_what_to_do(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(UserError, match=r"notes.mp4 is not a video .* give a video file"):
        open_video(fake)
    with pytest.raises(UserError, match=r"notes.mp4 is not a video"):
        count_frames(fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty has no frame images.*add the frames"):
        open_video(tmp_path / "empty")
    video_file(tmp_path / "videos" / "a.avi", 16)
    with pytest.raises(UserError, match=r"holds video files \(a.avi, ...\): give one of them"):
        open_video(tmp_path / "videos")
    with pytest.raises(UserError, match="does not exist"):
        open_video(tmp_path / "missing.avi")
    with pytest.raises(UserError, match="cannot open the stream or camera"):
        open_video(f"file:{tmp_path / 'missing.avi'}")
    Image.new("RGB", (4, 4)).save(tmp_path / "one.png")
    with pytest.raises(UserError, match="one.png is a single image, not a video; put a video's frames in a folder"):
        open_video(tmp_path / "one.png")
