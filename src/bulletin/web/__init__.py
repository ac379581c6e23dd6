"""Web apps: the live preview (``bulletin preview``); later the public pages.

Starlette apps served by uvicorn on 127.0.0.1. They read content and render results; they
never import the command line (``bulletin.cli``) or click.
"""
