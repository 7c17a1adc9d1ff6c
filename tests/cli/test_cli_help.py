"""Every command's --help shows examples and the defaults it really uses."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from onnx_stopgrad.cli import main


@pytest.mark.parametrize("command", sorted(main.commands))
def test_help_has_examples(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, command


@pytest.mark.parametrize("command,default", [("insert", ".stopgrad"), ("remove", ".nostopgrad")])
def test_help_names_the_real_default_output(command: str, default: str) -> None:
    text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
    assert f"MODEL with {default} before the suffix" in text
