"""The latent explorer: a local web page over the shipped AE, VAE and conditional VAE.

    python -m experiments.explore

models.py loads the checkpoints and decodes (the one module that imports from common/),
server.py is the HTTP server and its JSON API, static/ is the page, app.py the command line,
browser.py starts headless Chromium (tests and bench.py), bench.py measures the page. See
docs/explorer.md.
"""
