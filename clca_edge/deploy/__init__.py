"""The deploy pipeline: ONNX export and graph rules, parity, FP16, INT8 (Q/DQ) with calibration,
the accuracy gate and bundle writing. Runs where torch is; the device never imports it."""
