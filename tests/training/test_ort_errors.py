"""ONNX Runtime's exceptions become one short, readable TrainingError line."""

from __future__ import annotations

from onnx_stopgrad.training._ort import ort_error

_SIGNATURE = (
    "/onnxruntime_src/orttraining/orttraining/training_api/optimizer.cc:233 void "
    "onnxruntime::training::api::Optimizer::Initialize("
    "const onnxruntime::training::api::ModelIdentifiers&, "
    "const std::vector<std::shared_ptr<onnxruntime::IExecutionProvider> >&, "
    "gsl::span<OrtCustomOpDomain* const>) "
)


def test_missing_gradient_names_the_op_and_the_node() -> None:
    error = ort_error(
        RuntimeError("... The gradient builder has not been registered: Round for node no_grad_node ..."),
        "build",
    )
    assert "Round" in str(error) and "no_grad_node" in str(error) and "\n" not in str(error)


def test_cxx_locations_are_dropped_and_long_messages_cut() -> None:
    short = ort_error(RuntimeError(_SIGNATURE + "[ONNXRuntimeError] : 1 : FAIL : model is bad"), "load")
    assert str(short) == "ONNX Runtime could not load: model is bad"
    long = ort_error(RuntimeError(_SIGNATURE + "detail " * 200), "load")
    assert len(str(long)) < 330 and "onnxruntime_src" not in str(long) and "-v" in str(long)


def test_lambda_signatures_are_dropped() -> None:
    raised = RuntimeError(
        "/onnxruntime_src/orttraining/orttraining/python/orttraining_pybind_state.cc:621 "
        "onnxruntime::python::addObjectMethodsForTraining(pybind11::module&)::<lambda(onnxruntime::python::"
        "PyGradientGraphBuilderContext*)> [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Cannot compute the "
        "partial derivative for 'W' as it's unreachable from the output node(s)."
    )
    assert str(ort_error(raised, "build the gradient graph")) == (
        "ONNX Runtime could not build the gradient graph: Cannot compute the partial derivative for 'W' "
        "as it's unreachable from the output node(s)."
    )
