"""Rendering: Jinja2 over templates/ -> MJML -> HTML (mjml-python) -> inlined CSS, plus text.

Pure: no network, no database. See :mod:`bulletin.render.pipeline` for the entry point.
"""
