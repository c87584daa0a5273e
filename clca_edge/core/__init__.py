"""Torch-free pieces every layer uses: errors and the one exit-code table, file I/O, image listing,
the preprocessing spec and its numpy/OpenCV implementation."""
