"""export/to_triton.py never writes outside its repository, refuses bad options before writing anything, and
``--force`` replaces only what it wrote (the ``to_triton.json`` marker in each model folder it wrote)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from banet.triton_marker import MARKER, MarkerError, ensemble_limits
from export.to_triton import main
from export.triton_repo import TritonRepoError, write_repository


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    """A real (tiny) ONNX model, so that a name or option that slipped through would really be written."""
    torch = pytest.importorskip("torch", reason="exporting the test network needs PyTorch")
    from banet.config import BANetConfig
    from banet.model import BANet
    from export.onnx_export import ExportOptions, export_onnx

    torch.manual_seed(0)
    model = BANet(BANetConfig(num_bams=1, dim_1=8, dim_2=16)).eval()
    path, _ = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx",
                          ExportOptions(verify_shapes=[(1, 32, 32)]), "0" * 64, "tiny", model.config)
    return path


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, bytes]]:
    """Every path under ``root`` (except under ``skip``): (mode, mtime_ns, bytes of files)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip is not None and (path == skip or skip in path.parents):
                continue
            stat = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            found[str(path.relative_to(root))] = (stat.st_mode, stat.st_mtime_ns, data)
    return found


HOSTILE_NAMES = ["../x", "..", ".", "", "a/b", "a\\b", "..\\x", "x/../../y", "a b", "a.b", "-x", "n" * 300,
                 "banet\n", "é"]


def test_hostile_names_write_nothing_anywhere(tmp_path, onnx_file, capsys):
    """'../x', '/abs', '', '.', '..', 'a/b', 'a\\b', a 300-character name...: with and without --force, one-line
    refusal, exit code 1, no file outside the repository touched, and nothing written inside it either."""
    work = tmp_path / "work"
    (work / "x").mkdir(parents=True)
    (work / "x" / "config.pbtxt").write_text("the user's own file\n")  # what '--name ../x --force' overwrote
    (work / "abs").mkdir()
    repo = work / "R"
    before = snapshot(tmp_path)
    for name in [*HOSTILE_NAMES, str(work / "abs"), str(work / "x")]:
        for force in ([], ["--force"]):
            argv = ["--onnx", str(onnx_file), "--repository", str(repo), f"--name={name}", *force]
            assert main(argv) == 1, (name, force)
            err = capsys.readouterr().err.strip()
            assert err.startswith("error: invalid model name") and "\n" not in err, (name, err)
            assert len(err) < 300
            assert snapshot(tmp_path) == before, (name, force)
    assert not repo.exists()


@pytest.mark.parametrize("option, value", [
    ("--max-batch", "-4"), ("--max-batch", "0"), ("--max-batch", "100000"), ("--instances", "0"),
    ("--instances", "-1"), ("--threads", "-1"), ("--max-megapixels", "0"), ("--max-megapixels", "nan"),
    ("--max-megapixels", "-2"), ("--max-megapixels", "1e12"), ("--max-megapixels", "1e308"),
])
def test_bad_numbers_are_refused_before_writing(tmp_path, onnx_file, capsys, option, value):
    repo = tmp_path / "R"
    assert main(["--onnx", str(onnx_file), "--repository", str(repo), f"{option}={value}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and option.lstrip("-") in err, err
    assert not repo.exists()


def test_force_replaces_only_what_it_wrote(tmp_path, onnx_file):
    repo = tmp_path / "R"
    write_repository(onnx_file, repo)
    assert all((repo / m / MARKER).is_file() for m in ("banet", "banet_ort", "banet_pre", "banet_post"))
    # Byte-code the server leaves behind is tolerated; a file the user added is not (named, nothing removed).
    (repo / "banet_pre" / "1" / "__pycache__").mkdir()
    (repo / "banet_pre" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"pyc")
    (repo / "banet_pre" / "1" / "notes.txt").write_text("mine")
    with pytest.raises(TritonRepoError, match=r"holds 1/notes.txt, which export/to_triton.py did not write"):
        write_repository(onnx_file, repo, force=True)
    assert (repo / "banet_pre" / "1" / "notes.txt").read_text() == "mine"
    (repo / "banet_pre" / "1" / "notes.txt").unlink()
    # Another flavour's folder that this tool did not write (no marker) is refused, and left alone.
    (repo / "banet_trt" / "1").mkdir(parents=True)
    (repo / "banet_trt" / "1" / "model.plan").write_bytes(b"theirs")
    with pytest.raises(TritonRepoError, match=r"banet_trt was not written by export/to_triton.py"):
        write_repository(onnx_file, repo, force=True)
    assert (repo / "banet_trt" / "1" / "model.plan").read_bytes() == b"theirs"
    (repo / "banet_trt" / "1" / "model.plan").unlink()
    (repo / "banet_trt" / "1").rmdir()
    (repo / "banet_trt").rmdir()
    # A model folder that is a link to a folder outside: refused, the outside untouched.
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    (outside / "1" / "keep.txt").write_text("keep")
    os.rename(repo / "banet_post", tmp_path / "moved_post")
    (repo / "banet_post").symlink_to(outside)
    with pytest.raises(TritonRepoError, match="banet_post"):
        write_repository(onnx_file, repo, force=True)
    assert (outside / "1" / "keep.txt").read_text() == "keep" and sorted(os.listdir(outside)) == ["1"]
    (repo / "banet_post").unlink()
    os.rename(tmp_path / "moved_post", repo / "banet_post")
    # Everything ours again: --force replaces it (a smaller batch this time), the marker records the limits.
    write_repository(onnx_file, repo, force=True, max_batch=2, max_pixels=10_000)
    assert not (repo / "banet_pre" / "1" / "__pycache__").exists()
    name, limits = ensemble_limits(repo)
    assert (name, limits.max_batch, limits.max_pixels, limits.min_side) == ("banet", 2, 10_000, 2)


def test_force_refuses_a_readme_it_did_not_write_and_an_input_inside_what_it_replaces(tmp_path, onnx_file):
    repo = tmp_path / "R"
    repo.mkdir()
    (repo / "README_banet.md").write_text("the user's notes\n")
    with pytest.raises(TritonRepoError, match="README_banet.md was not written by"):
        write_repository(onnx_file, repo, force=True)
    assert (repo / "README_banet.md").read_text() == "the user's notes\n" and os.listdir(repo) == ["README_banet.md"]
    (repo / "README_banet.md").unlink()
    write_repository(onnx_file, repo)
    inside = repo / "banet_ort" / "1" / "model.onnx"
    with pytest.raises(TritonRepoError, match="lies inside"):
        write_repository(inside, repo, force=True)
    assert inside.read_bytes() == onnx_file.read_bytes()


def test_the_launcher_needs_the_limits_a_repository_was_written_with(tmp_path, onnx_file):
    """serving.triton_server reads the limits from the ensemble's marker and refuses a repository without one."""
    repo = tmp_path / "R"
    with pytest.raises(MarkerError, match="holds no ensemble written by export/to_triton.py"):
        ensemble_limits(repo)
    write_repository(onnx_file, repo, max_batch=3)
    write_repository(onnx_file, repo, name="other", max_batch=5)
    with pytest.raises(MarkerError, match=r"several ensembles \(banet, other\); pick one with --model"):
        ensemble_limits(repo)
    assert ensemble_limits(repo, "other")[1].max_batch == 5
    (repo / "other" / MARKER).write_text((repo / "other" / MARKER).read_text().replace('"max_batch": 5',
                                                                                       '"max_batch": -5'))
    with pytest.raises(MarkerError, match="max-batch must be an integer from 1 to 256, got -5"):
        ensemble_limits(repo, "other")


def test_force_is_suggested_only_where_it_would_work(tmp_path, onnx_file):
    """``--name banet_pre`` beside ensemble banet: the existing folder is another ensemble's model. The tool said
    "pass --force to replace them", and with --force refused anyway; now the first answer names the ensemble."""
    repo = tmp_path / "R"
    write_repository(onnx_file, repo)
    before = snapshot(repo)
    for force in (False, True):
        with pytest.raises(TritonRepoError) as info:
            write_repository(onnx_file, repo, name="banet_pre", force=force)
        assert "banet_pre is a model of ensemble 'banet'" in str(info.value) and "--force" not in str(info.value)
    # A folder with no marker of ours is named without force too.
    (repo / "mine" / "1").mkdir(parents=True)
    with pytest.raises(TritonRepoError, match="mine was not written by export/to_triton.py"):
        write_repository(onnx_file, repo, name="mine")
    # The ensemble's own models: --force is the answer, and it works.
    with pytest.raises(TritonRepoError, match="already has .*pass --force"):
        write_repository(onnx_file, repo)
    assert {k: v for k, v in snapshot(repo).items() if not k.startswith("mine")} == before
    write_repository(onnx_file, repo, force=True)
