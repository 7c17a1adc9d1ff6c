"""Home of the built op library, libonnx_stopgrad.so (made by the build, never committed)."""
