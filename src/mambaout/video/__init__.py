"""Video in: files, frame folders, cameras, URLs and stdin read frame by frame; labelled datasets in four layouts, with
their pixel masks where they have them (`read_masks`)."""

from mambaout.video.decode import VIDEO_EXTENSIONS
from mambaout.video.folder import IMAGE_EXTENSIONS
from mambaout.video.frames import VideoSource, to_rgb
from mambaout.video.labels import read_label_file
from mambaout.video.layouts import LAYOUTS, LabelledVideo, VideoDataset, detect_layout, load_dataset
from mambaout.video.masks import read_masks
from mambaout.video.open import count_frames, open_video
from mambaout.video.write import write_video

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "VIDEO_EXTENSIONS",
    "LabelledVideo",
    "VideoDataset",
    "VideoSource",
    "count_frames",
    "detect_layout",
    "load_dataset",
    "open_video",
    "read_label_file",
    "read_masks",
    "to_rgb",
    "write_video",
]
