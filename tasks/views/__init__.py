"""Views: what people look at and rate: the report page, the gallery, the human review.

report.py (what the page shows, as plain rows and numbers; report.css and report.js),
gallery.py (the Prefect artifact of a version), review.py (people's ratings over the
filter's keeps), templates/ (Jinja2, autoescaped: every HTML page the factory writes).
May import publishing, the stage layer, models and infra; not the stages, training or
evaluation.
"""
