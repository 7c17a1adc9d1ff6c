"""The package's layout rules: one subgraph walk, one differentiability rule, one IR cap,
and no package reaching into another's private modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import onnx_stopgrad
from onnx_stopgrad._ort119 import readable_ort_message

PACKAGE = Path(onnx_stopgrad.__file__).parent
SOURCES = {path.relative_to(PACKAGE).as_posix(): path.read_text() for path in PACKAGE.rglob("*.py")}


def test_only_the_graph_package_walks_subgraphs() -> None:
    walkers = [name for name, text in SOURCES.items() if "AttributeProto.GRAPH" in text]
    assert walkers and all(name.startswith("graph/") for name in walkers), walkers


def test_one_differentiability_rule_and_one_ir_cap() -> None:
    tables = [
        name for name, text in SOURCES.items() if re.search(r'"Pow": \(?frozenset\(\{?1|"Pow": \(1,\)', text)
    ]
    assert tables == ["graph/_differentiable.py"], tables
    caps = [name for name, text in SOURCES.items() if re.search(r"MAX_IR_VERSION\s*=\s*\d", text)]
    assert caps == ["_ort119.py"], caps


def test_no_package_imports_another_packages_private_module() -> None:
    offenders = []
    for name, text in SOURCES.items():
        package = name.split("/")[0] if "/" in name else ""
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
                parts = node.module.split(".")
                target = parts[0] if node.level == 2 or (node.level == 1 and not package) else package
                private = any(part.startswith("_") for part in parts[1:]) if node.level == 2 else False
                if private and target != package:
                    offenders.append(f"{name}: from {'.' * node.level}{node.module}")
    assert not offenders, offenders


def test_ort_messages_lose_cxx_locations_and_signatures() -> None:
    raw = (
        "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/graph_utils.cc:27 int "
        "onnxruntime::graph_utils::GetIndexFromName(const onnxruntime::Node&, const std::string&, bool) "
        "itr != node_args.end() was false. Attempting to get index by a name which does not exist"
    )
    assert readable_ort_message(RuntimeError(raw)) == "Attempting to get index by a name which does not exist"
