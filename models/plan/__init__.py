"""Planning backends: a composition -> layouts (boxes, scene).

planner.py (offline, from sizes.csv: real-world sizes per category), llm_planner.py (an
OpenAI-compatible LLM, checked and repaired; offline as fallback). May import the shared
models/*.py (contracts, registry, options, scenes, ...) and infra; no other family.
"""
