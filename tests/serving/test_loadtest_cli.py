"""serving.loadtest's results files: benchmarks/results holds committed ones, so one already there is replaced
only with --force, refused before any server starts (before: a second run on the same machine and day replaced
it silently)."""

import pytest

import runtime
from serving import loadtest


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the command gets as far as its work (a Deblurrer for the expected answers)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the load test started before refusing its output")

    monkeypatch.setattr(runtime, "Deblurrer", refuse)


@pytest.mark.parametrize("existing", [".json", ".md"])
def test_results_already_there_are_refused_before_any_work(tmp_path, no_work, capsys, existing):
    output = tmp_path / "loadtest.json"
    output.with_suffix(existing).write_text("committed results\n")
    assert loadtest.main(["--concurrency", "1,4", "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and len(err.strip().splitlines()) == 1, err
    assert output.with_suffix(existing).read_text() == "committed results\n"
    with pytest.raises(AssertionError, match="started"):  # with --force it goes on to the work
        loadtest.main(["--concurrency", "1,4", "--output", str(output), "--force"])


def test_the_default_results_file_is_refused_too(tmp_path, no_work, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default is benchmarks/results/... from the current folder
    default = loadtest.default_output("triton")
    default.parent.mkdir(parents=True)
    default.write_text("{}\n")
    assert loadtest.main(["--target", "triton"]) == 1  # its default concurrency 1,4,8 writes results
    assert "--force" in capsys.readouterr().err and default.read_text() == "{}\n"


@pytest.mark.parametrize("extra", ["--http-port 5", "--deadline-s 3 --host=0.0.0.0", "--no-metrics"])
def test_server_args_that_move_the_server_are_refused_before_it_starts(monkeypatch, capsys, extra):
    monkeypatch.setattr(loadtest, "burst", lambda *a, **k: pytest.fail("a server was started"))
    # before: the server listened where told and the load test waited 180 s on its own port
    assert loadtest.main(["--burst", "2", f"--server-args={extra}"]) == 2
    err = capsys.readouterr().err
    assert "--server-args may not set" in err and len(err.strip().splitlines()) == 1, err
