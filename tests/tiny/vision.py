"""Tiny CLIP (open_clip) and tiny OWL-ViT (transformers): the real classes, random weights.

Both are saved to a folder the way a user's weights would be, and loaded back through
models/score/vision.py with the same options a config gives: open_clip from an architecture json
(`model_config`) plus a checkpoint file (`pretrained`), OWL-ViT with save_pretrained.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny.tokenizer import VOCAB_SIZE, write_clip_tokenizer

TINY_CLIP = "gen4gen-tiny-clip"  # the architecture name = the json file's stem
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": VOCAB_SIZE, "width": 32, "heads": 2, "layers": 2},
}


def tiny_clip(folder: str | Path, seed: int = 0) -> dict:
    """Write a tiny open_clip architecture and random weights; return vision.clip options."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_CLIP}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG, indent=1))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    weights = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"model": TINY_CLIP, "pretrained": str(weights), "model_config": str(config), "device": "cpu"}


def tiny_owlvit(folder: str | Path, seed: int = 0, image_size: int = 64, patch_size: int = 16) -> Path:
    """Save a tiny OwlViTForObjectDetection and its processor in `folder`; return the folder.

    The processor's tokenizer is CLIP's real BPE (tests/tiny/tokenizer.py) with OWL-ViT's
    settings: 16 tokens per query, padded with '!' (id 0, which the model reads as padding).
    """
    import torch
    from transformers import CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    folder = Path(folder)
    write_clip_tokenizer(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=16, pad_token="!")
    image_processor = OwlViTImageProcessor(
        size={"height": image_size, "width": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
    )
    OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    config = OwlViTConfig(
        text_config={"vocab_size": VOCAB_SIZE, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16,
                     "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0},
        vision_config={"image_size": image_size, "patch_size": patch_size, "hidden_size": 32,
                       "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = OwlViTForObjectDetection(config).eval()
    with torch.no_grad():
        # Random heads saturate every score at 1.0 and throw boxes off the image. With the
        # learnt shift at 0 and scale at 1, a score is sigmoid(cosine) in [0.27, 0.73] and
        # varies with the image and the word, so a threshold splits detections both ways;
        # a small box head keeps boxes near their patch (a quarter of the image).
        for layer in (model.class_head.logit_shift, model.class_head.logit_scale):
            layer.weight.zero_()
            layer.bias.zero_()
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias.zero_()
    model.save_pretrained(str(folder))
    return folder
