"""Tiny random models of the real classes, for tests (DESIGN.md §5).

Each builder makes a model from a small config, saves it with the library's own
`save_pretrained` (or open_clip's checkpoint format) into a folder and returns the folder;
the tests then load it through the same backend code a user's config uses, with
HF_HUB_OFFLINE=1. Nothing here is imported by the factory itself.
"""
