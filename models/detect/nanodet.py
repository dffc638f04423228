"""NanoDet on onnxruntime: an RGB image -> COCO detections (class, score, box in pixels).

The model (fetched and converted by models/detect/weights.py) takes 1x3x416x416 in BGR order
with NanoDet's own mean and std (its training config; RGB scaled to 0..1 gives wrong labels:
a dog read as a vase). The image is letterboxed into the square (aspect kept, grey padding),
so a tall cut-out is not squashed. Six outputs, per stride 8, 16, 32 (52x52, 26x26, 13x13
points, row-major): class scores (sigmoid already applied, 80) and box sides as
distributions (4 sides x 11 bins, GFL: the side's distance is the softmax-weighted bin
index, in units of the stride, from the point's centre). Boxes are decoded for every class over
`min_score` at a point, and cut by per-class non-maximum suppression (NanoDet's own way).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIDE = 416
STRIDES = (8, 16, 32)
BINS = 11  # reg_max 10, plus zero
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
PAD = 114  # the letterbox's grey: the mid-grey NanoDet's augmentation pads with
MIN_SCORE = 0.2  # detections below this are not kept at all (checks use higher thresholds)
NMS_IOU = 0.6
MAX_DETECTIONS = 100

COCO = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
ANIMALS = frozenset(COCO[14:24])  # bird .. giraffe


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels

    def as_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 3), "box": [round(v, 1) for v in self.box]}


def letterbox(rgb: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The image scaled into SIDE x SIDE with its aspect kept: (square, scale, (dx, dy))."""
    h, w = rgb.shape[:2]
    scale = SIDE / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    square = np.full((SIDE, SIDE, 3), PAD, np.uint8)
    dx, dy = (SIDE - nw) // 2, (SIDE - nh) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    square[dy: dy + nh, dx: dx + nw] = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (nw, nh), interpolation=interp)
    return square, scale, (dx, dy)


def preprocess(square_rgb: np.ndarray) -> np.ndarray:
    bgr = square_rgb[..., ::-1].astype(np.float32)
    return ((bgr - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)[None].copy()


def decode(scores: list[np.ndarray], boxes: list[np.ndarray], min_score: float = MIN_SCORE,
           iou: float = NMS_IOU) -> list[tuple[int, float, np.ndarray]]:
    """(class index, score, box x0 y0 x1 y1 in the SIDE square) per kept detection, best first.
    `scores[k]`: (points, 80) at STRIDES[k]; `boxes[k]`: (points, 4 * BINS)."""
    found_boxes, found_scores, found_classes = [], [], []
    for stride, cls, reg in zip(STRIDES, scores, boxes):
        g = SIDE // stride
        if cls.shape[0] != g * g or reg.shape != (g * g, 4 * BINS):
            raise ValueError(f"stride {stride}: outputs {cls.shape} and {reg.shape}, expected {g * g} points")
        # Every class over the bar at a point is a candidate (NanoDet's own multi-class NMS):
        # a plush wolf scored both bear and teddy bear at one point keeps both.
        points, classes = np.nonzero(cls >= min_score)
        if not len(points):
            continue
        logits = reg[points].reshape(-1, 4, BINS).astype(np.float64)
        prob = np.exp(logits - logits.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        dist = (prob * np.arange(BINS)).sum(axis=2) * stride  # left, top, right, bottom
        cx = (points % g + 0.5) * stride
        cy = (points // g + 0.5) * stride
        found_boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], 1))
        found_scores.append(cls[points, classes])
        found_classes.append(classes)
    if not found_boxes:
        return []
    b = np.clip(np.concatenate(found_boxes), 0, SIDE)
    s = np.concatenate(found_scores).astype(np.float64)
    c = np.concatenate(found_classes)
    kept = []
    for k in np.unique(c):
        idx = np.nonzero(c == k)[0]
        kept += [int(idx[i]) for i in nms(b[idx], s[idx], iou)]
    kept.sort(key=lambda i: -s[i])
    return [(int(c[i]), float(s[i]), b[i]) for i in kept[:MAX_DETECTIONS]]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: the indices kept, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    kept = []
    while order:
        i = order.pop(0)
        kept.append(i)
        rest = np.array(order, int)
        if not len(rest):
            break
        x0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = [int(j) for j, o in zip(rest, overlap) if o <= iou]
    return kept


class NanoDet:
    """``detect(rgb) -> [Detection]``: COCO detections in the image's own pixel frame."""

    name = "nanodet"

    def __init__(self, weights: str | None = None, threads: int | None = None):
        import onnxruntime as ort

        from gen4gen.models.detect.weights import weights_file

        self.path = Path(weights_file(weights))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or _threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for a file that is not a model
            raise ValueError(f"detector (nanodet): {self.path} is not an ONNX model onnxruntime can load: "
                             f"{str(err).strip()[:300]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape) != [1, 3, SIDE, SIDE] or len(outputs) != 6:
            raise ValueError(f"detector (nanodet): {self.path} takes {[i.shape for i in inputs]} and gives "
                             f"{len(outputs)} outputs; NanoDet takes 1x3x{SIDE}x{SIDE} and gives 6")
        self.input = inputs[0].name
        self.outputs = [o.name for o in outputs]
        self._lock = threading.Lock()  # one image at a time per model: the task runner's threads share it

    def raw(self, rgb: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The model's six outputs for an image: (scores per stride, box bins per stride)."""
        square, _, _ = letterbox(rgb)
        with self._lock:
            out = self.session.run(self.outputs, {self.input: preprocess(square)})
        # Which outputs are which, by their widths: 80 class scores or 44 box bins, and by points.
        scores = sorted((o[0] for o in out if o.shape[-1] == len(COCO)), key=lambda a: -a.shape[0])
        boxes = sorted((o[0] for o in out if o.shape[-1] == 4 * BINS), key=lambda a: -a.shape[0])
        return scores, boxes

    def detect(self, rgb: np.ndarray, min_score: float = MIN_SCORE) -> list[Detection]:
        h, w = rgb.shape[:2]
        scale, (dx, dy) = SIDE / max(h, w), _offsets(h, w)  # as letterbox placed the image
        scores, boxes = self.raw(rgb)
        found = []
        for k, score, box in decode(scores, boxes, min_score):
            x0, y0, x1, y1 = box
            found.append(Detection(COCO[k], score, (
                float(np.clip((x0 - dx) / scale, 0, w)), float(np.clip((y0 - dy) / scale, 0, h)),
                float(np.clip((x1 - dx) / scale, 0, w)), float(np.clip((y1 - dy) / scale, 0, h)))))
        return found


def _offsets(h: int, w: int) -> tuple[int, int]:
    scale = SIDE / max(h, w)
    return (SIDE - max(1, round(w * scale))) // 2, (SIDE - max(1, round(h * scale))) // 2


def _threads() -> int:
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
