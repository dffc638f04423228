"""The LLaVA recaptioner: LLaVA-1.5 describes each final image, then concept tokens go in.

The paper recaptioned part of MyCanvas with LLaVA-1.5 and the prompt below (30 words keep
a caption inside CLIP's 77 tokens). The description is rewritten into a training caption
by `models.captioner.finish_caption`: each concept's word gets its token, unmentioned
concepts are appended or the template caption is used, and the length is checked against
CLIP's limit; every such decision is returned as a note for the sample's record.

Loaded once per process (models/registry.py); weights from a local folder or a hub id
with a pinned revision, device and dtype from models/hf.py. Images are described in
batches of `batch_size` with greedy decoding (deterministic; the seed matters only with
`do_sample: true`, and is then set per batch).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from gen4gen.models import hf, lifecycle
from gen4gen.models.caption.captioner import (
    CLIP_MAX_TOKENS,
    DEFAULT_SYNONYMS,
    OPENINGS,
    Caption,
    Obj,
    TemplateCaptioner,
    finish_caption,
)

PROMPT = "Describe what you see in this image in detail. The number of words is limited to 30."
DEFAULT_MODEL = "llava-hf/llava-1.5-7b-hf"
# LLaVA-1.5's own format, for a processor saved without a chat template.
PLAIN_FORMAT = "USER: <image>\n{prompt} ASSISTANT:"


class LlavaCaptioner:
    name = "llava"
    needs_image = True  # the caption stage reads each sample's final image for it

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        prompt: str = PROMPT,
        batch_size: int = 8,
        max_new_tokens: int = 60,
        do_sample: bool = False,
        synonyms: dict[str, list[str]] | None = None,
        default_synonyms: bool = True,
        form: str = "token_word",
        unnamed: str = "append",
        max_tokens: int = CLIP_MAX_TOKENS,
        openings: list[str] | tuple[str, ...] = OPENINGS,
    ):
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        if batch_size < 1:
            raise ValueError(f"stages.caption.options.batch_size: must be at least 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"stages.caption.options.max_new_tokens: must be at least 1, got {max_new_tokens}")
        if form not in ("token_word", "token"):
            raise ValueError(f"stages.caption.options.form: {form!r}, expected 'token_word' or 'token'")
        if unnamed not in ("append", "template"):
            raise ValueError(f"stages.caption.options.unnamed: {unnamed!r}, expected 'append' or 'template'")
        if synonyms is not None and not (
            isinstance(synonyms, dict) and all(isinstance(v, list) and all(isinstance(w, str) for w in v) for v in synonyms.values())
        ):
            raise ValueError("stages.caption.options.synonyms: expected a mapping of category -> list of words")
        opts: dict[str, Any] = {"model": model, "revision": revision, "device": device, "dtype": dtype}
        src = hf.source(opts, "model", what="stages.caption (llava)")
        self.device, self.dtype = hf.placement(opts)
        self.prompt = prompt
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.form, self.unnamed, self.max_tokens = form, unnamed, max_tokens
        merged = {k.lower(): list(v) for k, v in DEFAULT_SYNONYMS.items()} if default_synonyms else {}
        for cat, words in (synonyms or {}).items():
            merged[cat.lower()] = merged.get(cat.lower(), []) + [w for w in words if w not in merged.get(cat.lower(), [])]
        self.synonyms = merged
        self.template = TemplateCaptioner(openings)
        self._torch = torch
        self._lock = threading.Lock()  # one generate at a time: threads share the model

        self.processor = AutoProcessor.from_pretrained(src.path, **src.kwargs())
        # Decoder-only batches are padded on the left, so every prompt ends where generation starts.
        self.processor.tokenizer.padding_side = "left"
        self.model = LlavaForConditionalGeneration.from_pretrained(src.path, dtype=self.dtype, **src.kwargs())
        lifecycle.place(self.model, self.device).eval()
        self.text = self._format(prompt)

    # ------------------------------------------------------------------ lifecycle

    def memory_parts(self) -> list:
        return [self.model]

    def working_bytes(self) -> int:
        """One batch's generation: the KV cache at full length (image tokens + prompt + new
        tokens, keys and values in every layer), about 16 hidden-state maps of the prefill and
        the last position's fp32 logits (benchmarks/memory_plan.py measures 3.3 GiB for
        LLaVA-1.5-7B at batch 8)."""
        cfg = self.model.config
        text = cfg.text_config
        vision = cfg.vision_config
        image_tokens = (vision.image_size // vision.patch_size) ** 2
        length = image_tokens + 64 + self.max_new_tokens  # 64: the prompt's own tokens, at most
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        size = self.dtype.itemsize
        cache = 2 * text.num_hidden_layers * kv_heads * head_dim * size * length
        per_seq = cache + 16 * length * text.hidden_size * size + 2 * text.vocab_size * 4
        return self.batch_size * per_seq

    def _format(self, prompt: str) -> str:
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return PLAIN_FORMAT.format(prompt=prompt)

    def describe(self, images: list[np.ndarray], seed: int = 0) -> list[str]:
        """LLaVA's description of each image (RGB uint8 arrays), in batches."""
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            out += self._batch(images[start : start + self.batch_size], seed + start)
        return out

    def _batch(self, images: list[np.ndarray], seed: int) -> list[str]:
        torch = self._torch
        # PIL images: the processor would warn about (and could write to) read-only arrays.
        pictures = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]
        inputs = self.processor(images=pictures, text=[self.text] * len(images), padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with self._lock, torch.inference_mode():
            torch.manual_seed(seed % 2**32)
            generated = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.do_sample,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new = generated[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def caption(self, objects: list[Obj], scene: str, seed: int) -> str:
        """The template caption (what a sample gets when its description cannot be used)."""
        return self.template.caption(objects, scene, seed)

    def caption_batch(
        self, images: list[np.ndarray], objects: list[list[Obj]], scenes: list[str], seeds: list[int]
    ) -> list[Caption]:
        """One caption per image, naming that image's objects by their tokens."""
        if not (len(images) == len(objects) == len(scenes) == len(seeds)):
            raise ValueError("caption_batch: images, objects, scenes and seeds differ in length")
        descriptions = self.describe(images, seeds[0] if seeds else 0)
        return [
            finish_caption(
                d, objs, self.caption(objs, scene, seed), self.synonyms, self.form, self.unnamed, self.max_tokens
            )
            for d, objs, scene, seed in zip(descriptions, objects, scenes, seeds)
        ]
