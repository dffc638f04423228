"""A tiny LLaVA-1.5: the real classes (LlavaForConditionalGeneration, LlavaProcessor),
random weights, built offline.

The language side is a 2-layer Llama, the vision side a 2-layer CLIP ViT on 32-pixel
images (8-pixel patches: 16 image tokens, as "default" feature selection drops CLS). The
tokenizer is a byte-level BPE trained on a few sentences with the `tokenizers` library and
wrapped in a fast tokenizer, with Llama's special tokens, `<image>` and `<pad>`, and the
processor carries LLaVA-1.5's chat template ("USER: <image>\\n... ASSISTANT:"), so the
backend formats its prompt the same way for this model and for llava-hf/llava-1.5-7b-hf.
"""

from __future__ import annotations

from pathlib import Path

IMAGE = 32
PATCH = 8
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
# LLaVA-1.5's conversation format, as llava-hf's processors carry it (written here, not copied).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if message['role'] == 'user' %} {% else %}</s>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
CORPUS = [
    "USER: Describe what you see in this image in detail. The number of words is limited to 30. ASSISTANT:",
    "The image shows a cat sitting next to a mug on a kitchen table in a living room.",
    "Two people stand beside a motorcycle and a rocket at a launch site on a sunny day.",
    "A dog and a teddy bear lie on the grass in a garden, with houseplants behind them.",
]


def tiny_tokenizer():
    """A fast tokenizer with Llama's specials, trained on CORPUS (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS, trainer)
    # Llama prepends <s> to every text.
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, padding_side="left",
    )


def tiny_llava(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny LlavaForConditionalGeneration and its LlavaProcessor in `folder`."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = Path(folder)
    tokenizer = tiny_tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE, patch_size=PATCH, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_id,
        vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(folder))
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}),
        tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(folder))
    return folder
