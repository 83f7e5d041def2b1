"""The inference runtimes behind one seam (base.ModelRuntime): TensorFlow Lite (with external delegates) and
OpenVINO."""
