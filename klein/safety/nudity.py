"""Image nudity detection: NudeNet's 320n ONNX detector run with onnxruntime, PIL and numpy (pure: no torch).

The pre- and post-processing follow nudenet/nudenet.py (3.4.2): pad the image to a square at the
bottom/right with black, resize to 320x320, RGB scaled to 0..1 in NCHW; the output is YOLOv8-style
(1, 4 + 18, N) rows of centre box + class scores, kept at score >= 0.2 and reduced by a class-agnostic
NMS (score 0.25, IoU 0.45). We do it ourselves because `import nudenet` imports cv2, which is slow to
import and heavy; only the model file is taken from the package.

NudeNet's code and model are AGPL-3.0 (the wheel's LICENSE; its PyPI metadata says MIT): see docs/safety.md.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

INPUT_SIZE = 320
MIN_SCORE = 0.2  # NudeNet keeps candidate rows from here
NMS_SCORE = 0.25
NMS_IOU = 0.45

LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)

# Groups the policy thresholds apply to; labels not listed (faces, feet, male chest) are never blocked.
GROUPS: dict[str, str] = {
    "FEMALE_GENITALIA_EXPOSED": "explicit",
    "MALE_GENITALIA_EXPOSED": "explicit",
    "ANUS_EXPOSED": "explicit",
    "FEMALE_BREAST_EXPOSED": "nudity",
    "BUTTOCKS_EXPOSED": "nudity",
    "FEMALE_GENITALIA_COVERED": "suggestive",
    "FEMALE_BREAST_COVERED": "suggestive",
    "BUTTOCKS_COVERED": "suggestive",
    "ANUS_COVERED": "suggestive",
    "BELLY_EXPOSED": "suggestive",
    "ARMPITS_EXPOSED": "suggestive",
}
GROUP_ORDER = ("explicit", "nudity", "suggestive")


@dataclass(frozen=True)
class Detection:
    """One detected region: NudeNet label, its group (or None), score 0..1 and box (x, y, w, h) in pixels."""

    label: str
    score: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def group(self) -> str | None:
        return GROUPS.get(self.label)


class Detector(Protocol):
    """Anything that finds nudity in an image; the moderator only needs this one method."""

    def detect(self, image: Image.Image) -> list[Detection]: ...


def model_path() -> Path:
    """The 320n.onnx file inside the installed nudenet package, found without importing it (it imports cv2)."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nudenet package is not installed (pip install nudenet==3.4.2)")
    path = Path(next(iter(spec.submodule_search_locations))) / "320n.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"NudeNet model not found at {path}")
    return path


class NudeNetDetector:
    """NudeNet 320n on onnxruntime, one thread; the session is created on first use and shared."""

    def __init__(self, path: Path | None = None):
        self._path = path
        self._session = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Create the onnxruntime session now (otherwise the first detect() does it)."""
        self._get_session()

    def detect(self, image: Image.Image) -> list[Detection]:
        """Detections in `image`, best first, after NudeNet's thresholds and NMS."""
        blob, scale = preprocess(image)
        session = self._get_session()
        output = session.run(None, {session.get_inputs()[0].name: blob})[0]
        return decode(output, scale, image.size)

    def _get_session(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _create_session(self._path or model_path())
        return self._session


def _create_session(path: Path):
    import onnxruntime  # here, not at module import: nothing heavy happens at import time

    options = onnxruntime.SessionOptions()
    # One thread: generation owns the CPU; the detector runs in ~10 ms anyway.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def preprocess(image: Image.Image) -> tuple[np.ndarray, float]:
    """Letterbox to INPUT_SIZE (top-left, black padding) -> (1, 3, 320, 320) float32 and the scale factor."""
    width, height = image.size
    scale = INPUT_SIZE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    small = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32)
    canvas[: size[1], : size[0]] = np.asarray(small, dtype=np.float32)
    blob = canvas.transpose(2, 0, 1)[None] * np.float32(1 / 255.0)
    return np.ascontiguousarray(blob), scale


def decode(output: np.ndarray, scale: float, image_size: tuple[int, int]) -> list[Detection]:
    """Model output (1, 22, N) -> detections in the original image's pixels, after NMS."""
    rows = output[0].T
    class_scores = rows[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), class_ids]
    keep = scores >= MIN_SCORE
    rows, class_ids, scores = rows[keep], class_ids[keep], scores[keep]
    boxes = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2, rows[:, 2], rows[:, 3]], axis=1)
    boxes = _clip(boxes / scale, image_size)
    return [
        Detection(LABELS[int(class_ids[i])], float(scores[i]), tuple(int(v) for v in boxes[i]))
        for i in nms(boxes, scores, NMS_SCORE, NMS_IOU)
    ]


def _clip(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    x = np.clip(boxes[:, 0], 0, width)
    y = np.clip(boxes[:, 1], 0, height)
    w = np.minimum(boxes[:, 2], width - x)
    h = np.minimum(boxes[:, 3], height - y)
    return np.stack([x, y, w, h], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float) -> list[int]:
    """Greedy class-agnostic non-maximum suppression over (x, y, w, h) boxes, like cv2.dnn.NMSBoxes."""
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= score_threshold]
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = boxes[:, 2] * boxes[:, 3]
    kept: list[int] = []
    remaining = np.array(order, dtype=int)
    while remaining.size:
        best, rest = remaining[0], remaining[1:]
        kept.append(int(best))
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        remaining = rest[iou <= iou_threshold]
    return kept
