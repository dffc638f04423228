"""Recipes and prompt sets shipped with the package (gen4gen.configs; read with infra/config.py: shipped)."""
