"""The argparse types every command line shares (banet.cli_types)."""

import argparse
from pathlib import Path

import pytest

from banet.cli_types import path_arg


@pytest.mark.parametrize("text", ["", " ", "\t"])
def test_an_empty_path_is_refused(text):
    """``--repository "$REPO"`` with REPO unset wrote a Triton repository into the working folder."""
    with pytest.raises(argparse.ArgumentTypeError, match="an empty path .*unset shell variable"):
        path_arg(text)


def test_a_path_is_a_path():
    assert path_arg("out/a b.png") == Path("out/a b.png")


def test_a_command_refuses_an_empty_path(tmp_path, monkeypatch, capsys):
    """The commands' parsers use it: an empty --repository is a usage error (exit 2), and nothing is written in the
    working folder."""
    from export.to_triton import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["--repository", ""])
    assert info.value.code == 2
    assert "argument --repository: an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
