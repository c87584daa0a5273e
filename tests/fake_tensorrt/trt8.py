"""TensorRT 8.5 (JetPack 5.1) flavour of the fake module."""
from . import make_module

tensorrt = make_module("8.5.2.2")
