"""The ONNX half of the model contract: one recurrence step run by onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from riskstream.core.errors import ModelContractError
from riskstream.core.manifest import Manifest, load_manifest


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    # Batches are small and the machine is shared with the web workers: few threads, no spinning.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


class OnnxRiskModel:
    """Loads ``model.onnx`` + ``manifest.json`` and checks that they agree."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.manifest: Manifest = load_manifest(model_dir)
        path = model_dir / "model.onnx"
        if not path.is_file():
            raise ModelContractError(f"no model.onnx in {model_dir}")
        try:
            self._session = ort.InferenceSession(
                str(path), _session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelContractError(f"onnxruntime cannot load {path}: {exc}") from exc
        self._state_names = tuple(s.name for s in self.manifest.states)
        self._output_names = ["risk", *(f"{name}_next" for name in self._state_names)]
        self._check_contract()

    def _check_contract(self) -> None:
        m = self.manifest
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        expected_inputs = {"x": [None, len(m.features)], "dt": [None, 1]}
        expected_inputs |= {s.name: [s.shape[0], None, s.shape[1]] for s in m.states}
        expected_outputs = {"risk": [None, len(m.outputs)]}
        expected_outputs |= {f"{s.name}_next": [s.shape[0], None, s.shape[1]] for s in m.states}
        for kind, found, expected in (
            ("input", inputs, expected_inputs),
            ("output", outputs, expected_outputs),
        ):
            missing = sorted(set(expected) - set(found))
            if missing:
                raise ModelContractError(f"the graph lacks {kind}s {missing} named in the manifest")
            for name, shape in expected.items():
                actual = found[name]
                if len(actual) != len(shape) or any(
                    want is not None and isinstance(got, int) and got != want
                    for got, want in zip(actual, shape)
                ):
                    raise ModelContractError(
                        f"{kind} {name!r} has shape {actual}, the manifest implies {shape}"
                    )
        extra = sorted(set(inputs) - set(expected_inputs))
        if extra:
            raise ModelContractError(f"the graph takes inputs {extra} the contract does not name")

    def step(
        self, x: np.ndarray, dt: np.ndarray, states: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        feed = {"x": x, "dt": dt}
        feed.update(states)
        risk, *next_states = self._session.run(self._output_names, feed)
        return risk, dict(zip(self._state_names, next_states))
