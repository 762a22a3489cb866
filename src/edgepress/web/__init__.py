"""The browser as an edge target: web-ready model folders for transformers.js (written by the export
and quantize stages), the browser target's set-up, its local server and headless Chromium. Timing
models there is bench's (``bench/browser.py``)."""
