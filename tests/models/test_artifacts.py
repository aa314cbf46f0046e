"""The committed artifacts follow docs/model-contract.md (onnxruntime only)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ARTIFACTS = [
    "tests/fixtures/models/tiny/0.1.0",
    "models/aki-lstm/1.0.0",
    "models/aki-lstm/1.1.0",
    "models/aki-lstm/1.2.0",
    "models/aki-lstm-gbm/1.0.0",
    "models/aki-lstm-gbm/1.1.0",
]


@pytest.mark.parametrize("folder", ARTIFACTS)
def test_artifact_contract(folder):
    d = Path(folder)
    man = json.loads((d / "manifest.json").read_text())
    assert man["format"] == "riskstream-model/1"
    assert f"{man['name']}/{man['version']}" == "/".join(d.parts[-2:])
    assert hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest() == man["onnx"]["sha256"]
    assert man["onnx"]["opset"] == 17 and man["onnx"]["parity_max_abs_diff"] <= 1e-5
    assert [o["name"] for o in man["outputs"]] == ["aki_48h", "sepsis"]
    F, K, B = len(man["features"]), len(man["outputs"]), 3
    states = {s["name"]: s["shape"] for s in man["states"]}
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    ins = {i.name: i.shape for i in sess.get_inputs()}
    outs = {o.name: o.shape for o in sess.get_outputs()}
    assert ins == {
        "x": ["batch", F],
        "dt": ["batch", 1],
        **{n: [s[0], "batch", s[1]] for n, s in states.items()},
    }
    assert outs == {
        "risk": ["batch", K],
        **{f"{n}_next": [s[0], "batch", s[1]] for n, s in states.items()},
    }
    feed = {n: np.zeros((s[0], B, s[1]), np.float32) for n, s in states.items()}
    x = np.full((B, F), np.nan, np.float32)
    x[1, :5] = [90, 97, 37.2, 120, 80]
    for dt in (0.0, 1.0, 2.5):
        res = sess.run(None, {"x": x, "dt": np.full((B, 1), dt, np.float32), **feed})
        assert res[0].shape == (B, K) and np.all((res[0] >= 0) & (res[0] <= 1))
        feed = dict(zip(states, res[1:], strict=True))
