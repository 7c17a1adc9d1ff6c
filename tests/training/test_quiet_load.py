"""ONNX Runtime's session warnings stay off the terminal unless asked for (-v, or logging at INFO).

A model with an initializer no node reads makes ORT warn "Removing initializer ..." on fd 2
each time a training session opens: the test sees it when asked for, so it can fail.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("onnxruntime.training")
torch = pytest.importorskip("torch")

from click.testing import CliRunner
from onnx import numpy_helper
from training_cases import CASES, by_helper

from onnx_stopgrad.cli import main
from onnx_stopgrad.training import generate_artifacts, load

pytestmark = pytest.mark.training

WARNING = "Removing initializer 'unused'"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    case = CASES["backbone"]
    torch.manual_seed(0)
    model = by_helper(case, case.make())
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    directory = tmp_path_factory.mktemp("quiet") / "a"
    generate_artifacts(model, loss="crossentropy", optimizer="adamw", artifact_directory=directory)
    return directory


def test_load_is_quiet_by_default(artifacts, capfd):
    load(artifacts)
    assert WARNING not in capfd.readouterr().err


def test_load_warns_when_logging_asks(artifacts, capfd, caplog):
    with caplog.at_level(logging.INFO, logger="onnx_stopgrad"):
        load(artifacts)
    assert WARNING in capfd.readouterr().err


def test_caller_options_decide(artifacts, capfd):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 2
    load(artifacts, options=options)
    assert WARNING in capfd.readouterr().err


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_train_quiet_unless_verbose(artifacts, tmp_path, capfd, verbose):
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.standard_normal((8, 6)).astype(np.float32), labels=rng.integers(0, 3, 8))
    args = ["-v"] * verbose + ["train", str(artifacts), "--data", str(data)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (WARNING in capfd.readouterr().err) == verbose
