"""Field robustness: accuracy under a fixed suite of field perturbations (``suite``: exposure,
white balance, contrast, saturation, JPEG, blur, noise, zoom-out, rotation; three severities
each), for checkpoints, bundles and deploy's gate.

Torch-free, so it runs on the device against photos taken there: ``suite`` and ``evaluate`` import
only ``core``; ``bundle_runners`` opens a bundle's variants through the device runtime (``runtime``);
``report`` renders tables, CSV and PNG. The PyTorch path for a checkpoint lives in
``training.robustness``; ``deploy`` records the report per variant in the manifest.
"""
