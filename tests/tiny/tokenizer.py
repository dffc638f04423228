"""A real CLIP tokenizer built offline from the BPE file that open_clip ships.

open_clip's `bpe_simple_vocab_16e6.txt.gz` holds CLIP's merges; CLIP's vocabulary is the
256 byte symbols, the same with `</w>`, one entry per merge, then the two special tokens.
Written as vocab.json + merges.txt, transformers' CLIPTokenizer loads it like the hub's.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


def _byte_symbols() -> list[str]:
    # GPT-2's printable stand-ins for the 256 byte values, in CLIP's order.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    from gen4gen.models.caption.captioner import clip_merges

    merges = list(clip_merges())
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path) -> Path:
    """vocab.json and merges.txt for CLIPTokenizer in `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def clip_tokenizer(folder: str | Path, max_length: int = 77):
    """A transformers CLIPTokenizer saved in `folder` (loadable with from_pretrained)."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(str(folder), model_max_length=max_length)
    tok.save_pretrained(str(folder))
    return tok


VOCAB_SIZE = 49408
