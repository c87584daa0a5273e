"""Field capture: frame sources, the grabber thread, the capture loop, smoothing, field logs."""
