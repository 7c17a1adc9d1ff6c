"""Smoke run of examples/simsiam (3 epochs on 512 digits) and the checks it rests on.

References: PyTorch's own loss for the exported graph; ORT's gradient graphs with and
without the stops; and the two runs themselves, which see identical weights and views,
so any difference between them comes from the stops.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime.training")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

pytestmark = pytest.mark.training

SIMSIAM_DIR = Path(__file__).resolve().parents[2] / "examples" / "simsiam"
sys.path.insert(0, str(SIMSIAM_DIR))
simsiam = importlib.import_module("simsiam")
networks = importlib.import_module("networks")

import torch


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("simsiam")
    runs = simsiam.run(simsiam.parse_args(["--smoke", "--out", str(out)]))
    return out, runs


def test_exported_loss_matches_pytorch(tmp_path: Path) -> None:
    import onnxruntime as ort

    from onnx_stopgrad import insert_stop_gradient, session_options

    torch.manual_seed(3)
    net = networks.SimSiam()
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(32, 64)
    view_a, view_b = networks.augment(x, generator), networks.augment(x, generator)
    with torch.no_grad():
        expected = networks.SimSiamLoss(net)(view_a, view_b).item()
    plain = networks.export_loss_graph(net, tmp_path / "loss.onnx")
    stopped, _ = insert_stop_gradient(plain, list(networks.TARGET_TENSORS))
    feeds = {"view_a": view_a.numpy(), "view_b": view_b.numpy()}
    for model in (plain, stopped):
        session = ort.InferenceSession(
            model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"]
        )
        assert session.run(["loss"], feeds)[0] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # every parameter is its own initializer (the exporter's merging of equal ones undone)
    names = [init.name for init in plain.graph.initializer]
    assert sorted(names) == sorted(name for name, _ in networks.SimSiamLoss(net).named_parameters())


def test_ort_gradients_equal_pytorch_detach_at_the_same_places(tmp_path: Path) -> None:
    plain, stopped, _, net = simsiam.prepare(tmp_path, seed=5)
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(48, 64, generator=generator)
    views = (networks.augment(x, generator).numpy(), networks.augment(x, generator).numpy())
    detached = simsiam.torch_gradients(net, *views, detach=True)
    attached = simsiam.torch_gradients(net, *views, detach=False)
    names = list(detached)
    simsiam.build(stopped, tmp_path / "stop")
    simsiam.build(plain, tmp_path / "plain")
    with_stop = simsiam.ort_gradients(tmp_path / "stop", *views, names)
    without_stop = simsiam.ort_gradients(tmp_path / "plain", *views, names)
    assert simsiam.gradient_difference(with_stop, detached) < 1e-5
    assert simsiam.gradient_difference(without_stop, attached) < 1e-5
    # the check can fail: the two formulations give clearly different encoder gradients
    assert simsiam.gradient_difference(with_stop, attached) > 1e-2
    for name in names:  # the predictor is on the prediction side only: same gradient either way
        if name.startswith("net.predictor."):
            np.testing.assert_allclose(with_stop[name], without_stop[name], rtol=1e-4, atol=1e-7)


def test_stops_remove_only_the_target_branch_gradients(smoke: tuple[Path, list]) -> None:
    _, (with_stop, without_stop) = smoke
    assert with_stop.report.trainable == without_stop.report.trainable  # all train: shared encoder
    assert len(with_stop.report.trainable) == 16 and not with_stop.report.frozen

    def grad_scopes(run) -> set[str]:
        model = onnx.load(str(run.directory / "training_model.onnx"), load_external_data=False)
        return {
            n.name.split("/")[1] for n in model.graph.node if "_Grad/" in n.name and n.name.startswith("/")
        }

    assert {"target_a", "target_b"} <= grad_scopes(without_stop)
    assert not {"target_a", "target_b"} & grad_scopes(with_stop)
    assert with_stop.report.gradient_nodes < without_stop.report.gradient_nodes


def test_smoke_runs_differ_as_simsiam_predicts(smoke: tuple[Path, list]) -> None:
    _, (with_stop, without_stop) = smoke
    for run in (with_stop, without_stop):
        assert len(run.std) == 4 and all(np.isfinite(run.loss[1:]))
    assert with_stop.std[0] == without_stop.std[0]  # same initial weights
    # Without the stop the loss falls much faster (the trivial solution is reachable) and
    # the output spread shrinks; with it the spread stays near 1/sqrt(d).
    assert without_stop.loss[-1] < with_stop.loss[-1] - 0.1
    assert without_stop.std[-1] < 0.8 * with_stop.std[-1]
    assert with_stop.std[-1] > 0.5 * networks.EMBED_DIM**-0.5


def test_plot_is_written(smoke: tuple[Path, list]) -> None:
    out, _ = smoke
    png = out / "simsiam_collapse.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_knn_accuracy_reference() -> None:
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05], [0.05, 1.0]])
    labels = np.array([0, 0, 1, 1, 0, 1])
    queries = np.array([[1.0, 0.2], [0.2, 1.0]])
    assert simsiam.knn_accuracy(bank, labels, queries, np.array([0, 1])) == 1.0
    assert simsiam.knn_accuracy(bank, labels, queries, np.array([1, 0])) == 0.0
