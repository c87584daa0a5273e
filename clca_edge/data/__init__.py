"""Datasets (ImageFolder trees, seeded val splits, UFG CSV split files), transforms, synthetic leaves."""
