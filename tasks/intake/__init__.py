"""Intake: the photos people bring, before a run: concept folders and a look at their cut-outs.

ingest.py (a folder of concept folders -> a recipe's concepts, `gen4gen init`), preview.py
(`gen4gen segment`: the segment stage and its checks on photos, with a contact sheet from
views/templates/). May import the stage layer, the segment stage, models and infra.
"""
