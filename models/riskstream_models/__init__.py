"""riskstream models: train a recurrent risk model and export one step to ONNX."""
