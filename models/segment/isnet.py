"""IS-Net (DIS) segmenter on onnxruntime: the salient-object model the paper cut its concepts
out with, with real weights that run on a CPU.

Any IS-Net ONNX with the published contract works: input `1x3xSxS` float32 RGB scaled as
`x/255 - 0.5` (std 1), output `1x1xSxS`, a sigmoid map. S is the model's static input side
(1024 for the two fetched models; 1024 when the file leaves it dynamic). The map is
normalised min-max, resized to the photo (bilinear), cut at 0.5 and given the same small
Gaussian feather as the offline segmenter, so masks from both look alike at the edge.

Weights: `weights` (a path to the user's own ONNX) or the fetched model of `size`
(`medium`, float32, the default; `small`, 8-bit: faster, loses parts of objects on some
photos). `gen4gen weights fetch isnet` fetches them (models/segment/weights.py). `weights_sha256`,
put in by models/segment/weights.py: resolve_segment, is the file's digest, so the mask cache key
follows the weights; given, the file must still have it when the model loads.

Threads: `threads`, default the worker's share of the CPUs: OMP_NUM_THREADS when set (Dask's
nanny and Ray set it to a worker's share), else the CPUs this process may run on. One photo
runs at a time per model (a lock): the task runner's threads share one loaded model, and
concurrent runs would each take every thread. CUDA: onnxruntime's CUDA provider when the
installed onnxruntime has it, else the CPU.

Photos with a real transparency channel keep it as their mask (models/segment/segmenter.py:
alpha_cutout), as with the offline and SAM segmenters.
"""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np

# The options live with the weights they name (weights.py resolves them when a run is planned).
from gen4gen.models.segment.weights import WHAT, IsNetOptions, parse_options  # noqa: F401
from gen4gen.models.segment.segmenter import _check_rgb, alpha_cutout, batch_categories

DEFAULT_SIDE = 1024  # the input side of the published models, used when the file says none


def worker_threads() -> int:
    """This worker's share of the CPUs: OMP_NUM_THREADS when set (Dask and Ray workers get
    their share there), else the CPUs this process may run on."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class IsNetSegmenter:
    """``segment_batch([(rgb, alpha|None), ...], categories) -> [HxW float32 mask in [0, 1]]``."""

    name = "isnet"

    def __init__(self, **options):
        import onnxruntime as ort

        from gen4gen.models.segment import weights as fetched

        self.options = parse_options(options)
        self.path = fetched.weights_file(self.options.weights, self.options.size)
        self.sha256 = fetched.file_sha256(self.path)
        if self.options.weights_sha256 and self.options.weights_sha256 != self.sha256:
            raise fetched.WeightsMissing(  # the weights planned are not there: retrying will not help
                f"{WHAT}: weights file {self.path} has sha256 {self.sha256}, not {self.options.weights_sha256} "
                "as when the run was planned (replaced during the run?); run again")
        self.threads = self.options.threads or worker_threads()
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # onnxruntime's warnings about unused initialisers are not ours
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for a file that is not a model
            raise ValueError(f"{WHAT}: {self.path} is not an ONNX model onnxruntime can load: "
                             f"{str(err).strip()[:300]}") from None
        # Not `device`: models/lifecycle.py budgets torch weights on a device, and an ONNX
        # session has none for it to weigh or move.
        self.providers = self.session.get_providers()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{WHAT}: {self.path} takes {[(i.name, i.shape) for i in inputs]}; "
                             "an IS-Net takes one 1x3xSxS image")
        self.input = inputs[0].name
        self.output = outputs[0].name
        h, w = inputs[0].shape[2:]
        # A dynamic side (a name or None in the file): the published models' 1024.
        self.side = (h if isinstance(h, int) and h > 0 else DEFAULT_SIDE,
                     w if isinstance(w, int) and w > 0 else DEFAULT_SIDE)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def segment(self, rgb: np.ndarray, alpha: np.ndarray | None = None, category: str | None = None) -> np.ndarray:
        return self.segment_batch([(rgb, alpha)], [category])[0]

    def segment_batch(
        self,
        items: list[tuple[np.ndarray, np.ndarray | None]],
        categories: list[str | None] | None = None,
    ) -> list[np.ndarray]:
        # IS-Net takes no class words (checked only). The published models take one image
        # per run (a static batch of 1), so a batch is a loop.
        batch_categories(items, categories)
        out = []
        for rgb, alpha in items:
            _check_rgb(rgb)
            given = alpha_cutout(alpha, rgb.shape[:2])
            out.append(given if given is not None else self._predict(rgb))
        return out

    def soft_map(self, rgb: np.ndarray) -> np.ndarray:
        """The model's map at its own input size, normalised to [0, 1] (min-max)."""
        sh, sw = self.side
        x = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = (x / 255.0 - 0.5).transpose(2, 0, 1)[None]
        with self._lock:
            y = self.session.run([self.output], {self.input: np.ascontiguousarray(x)})[0]
        y = np.asarray(y, np.float32).reshape(y.shape[-2:])
        lo, hi = float(y.min()), float(y.max())
        if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-6:
            return np.zeros_like(y)  # a flat map: nothing stands out
        return (y - lo) / (hi - lo)

    def _predict(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        soft = cv2.resize(self.soft_map(rgb), (w, h), interpolation=cv2.INTER_LINEAR)
        mask = (soft >= 0.5).astype(np.float32)
        if self.options.feather > 0:
            mask = cv2.GaussianBlur(mask, (0, 0), self.options.feather)
        return np.clip(mask, 0.0, 1.0).astype(np.float32)
