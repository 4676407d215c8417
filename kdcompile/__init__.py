"""kdcompile: distil a PyTorch model, export it to ONNX and TVM, tune it for the target, benchmark it.

Importing this package stays light: torch, tvm and onnxruntime are imported by the stage that needs them
(a test checks that tvm and onnxruntime are not imported here).
"""

__version__ = "0.1.0"
