"""TensorRT 10.3 (JetPack 6.1/6.2) flavour of the fake module."""
from . import make_module

tensorrt = make_module("10.3.0.30")
