"""Helpers the tests share (no tests here): tiny models (``tiny``), a trained class-folder
workspace (``workspace``), a tiny runtime bundle, leaf-like images and a video (``runtime_bundle``),
and the check that a shared fixture was left as it was made (``unchanged``)."""
