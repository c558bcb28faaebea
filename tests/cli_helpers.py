"""Assertions shared by the command-line robustness tests: a refusal is one line, never a traceback."""


def refused(capsys, code: int, *needles: str) -> str:
    """Exit 1 with one ``error:`` line (containing ``needles``) and no traceback; returns the line."""
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
