"""The built-in web client: static files only (``static/``), served by ``chatd/net/static.py``.

No Python code runs here; the package exists so the files install with chatd and are found with
``importlib.resources``.
"""
