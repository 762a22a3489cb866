"""The browser as an edge target: web-ready model folders for transformers.js, and onnxruntime-web
timed in a real headless Chromium."""
