"""A tiny SAM: segment-anything's real classes (ImageEncoderViT, PromptEncoder, MaskDecoder,
TwoWayTransformer), random weights, saved as a state-dict checkpoint like Meta's files.

128 px input with 16 px patches: an 8x8 embedding grid, 32-dim prompts; it runs in
milliseconds on a CPU. `ENCODER` is the `encoder` option that loads it.
"""

from __future__ import annotations

from pathlib import Path

ENCODER = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": [1],
    "image_size": 128,
    "patch_size": 16,
    "window_size": 4,
    "prompt_dim": 32,
    "decoder_depth": 1,
    "decoder_heads": 2,
    "decoder_mlp_dim": 32,
    "iou_hidden_dim": 32,
}


def tiny_sam(folder: str | Path, seed: int = 0, name: str = "sam_tiny.pth", gain: float = 1000.0) -> dict:
    """Save a tiny SAM checkpoint in `folder`; returns the backend options that load it.

    `gain` scales the mask decoder's hypernetwork outputs: random weights give logits near
    0 (every alpha about 0.5); scaled, the masks have solid, empty and soft parts that
    depend on the image, so tests can see masks change.
    """
    import torch

    from gen4gen.models.segment.sam import build_sam

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sam = build_sam("vit_b", ENCODER)
    with torch.no_grad():
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(gain)
            mlp.layers[-1].bias.mul_(gain)
    path = folder / name
    torch.save(sam.state_dict(), path)
    return {"checkpoint": str(path), "model_type": "vit_b", "encoder": dict(ENCODER), "device": "cpu"}
