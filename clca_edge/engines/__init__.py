"""All TensorRT and torch-tensorrt code. ``tensorrt`` wraps the TensorRT Python API (engine keys,
building, running; imports only core and bundle, so the device runtime may use it); ``build`` is
the ``build-engine`` pipeline (engines per precision, their gate, the manifest records);
``torch_trt`` is the torch-tensorrt builder; ``report`` holds the report types both builders return."""
