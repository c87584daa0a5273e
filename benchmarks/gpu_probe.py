"""Device check of the torch-free engine helpers on a real CUDA GPU: GPU identification through each
probe, and a CUDA memory round trip through _CudaRt (what TrtRunner uses). No TensorRT needed.
Usage: python benchmarks/gpu_probe.py   (prints JSON)
"""

import json

import numpy as np

from clca_edge.runtime import tensorrt_engine as te

out = {"gpu_info": te.gpu_info().to_dict()}
for probe in ("_cuda_python_info", "_pycuda_info", "_nvidia_smi_info", "_tegra_info"):
    info = getattr(te, probe)()
    out[probe] = info.to_dict() if info else None
rt = te._CudaRt()
x = np.arange(3 * 64 * 64, dtype=np.float32).reshape(1, 3, 64, 64)
y = np.zeros_like(x)
ptr = rt.malloc(x.nbytes)
stream = rt.stream()
rt.htod(ptr, x)
rt.sync(stream)
rt.dtoh(y, ptr)
rt.free(ptr)
out["cuda_round_trip_equal"] = bool(np.array_equal(x, y))
try:
    import tensorrt  # noqa: F401
    out["tensorrt"] = tensorrt.__version__
except ImportError:
    out["tensorrt"] = None
print(json.dumps(out, indent=1))
