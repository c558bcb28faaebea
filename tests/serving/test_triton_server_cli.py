"""``python -m serving.triton_server``'s command line next to ``serving.serve``'s: bad options are exactly one
``error:`` line and exit code 2 from the same parser class; the front's options (queue, deadline, request and
response timeouts, body size) exist in both with the same checks and reach the front's limits; every other option
of serve's is either taken here too or named in --help as not applying to a Triton repository. In-process, with a
stand-in ``tritonserver`` (a shell script) where start-up is needed, so the tests take about a second."""

from __future__ import annotations

import errno
import re
import stat
from pathlib import Path

import pytest

import serving.triton_server as triton_server
from banet.triton_marker import RequestLimits
from serving import serve
from serving.request_rules import FrontLimits, OneLineParser


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    assert "usage:" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--http-port", "70000"], "--http-port"), (["--http-port", "x"], "--http-port"),
    (["--grpc-port", "-1"], "--grpc-port"), (["--metrics-port", "x"], "--metrics-port"),
    (["--timeout", "0"], "--timeout"), (["--timeout", "x"], "--timeout"), (["--timeout", "inf"], "--timeout"),
    (["--request-timeout", "nan"], "--request-timeout"), (["--response-timeout", "0"], "--response-timeout"),
    (["--queue-size", "-1"], "--queue-size"), (["--deadline-s", "0"], "--deadline-s"),
    (["--deadline-s", "inf"], "--deadline-s"), (["--max-body-mb", "0"], "--max-body-mb"),
    (["--log-verbose", "-1"], "--log-verbose"), (["--no-such-option"], "--no-such-option"),
])
def test_bad_options_are_one_line_and_exit_code_2(capsys, tmp_path, args, expected):
    with pytest.raises(SystemExit) as exited:
        triton_server.main([str(tmp_path), *args])
    assert exited.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert expected in line and "python -m serving.triton_server --help" in line, line


def test_a_missing_repository_argument_is_one_line(capsys):
    with pytest.raises(SystemExit) as exited:
        triton_server.main([])
    assert exited.value.code == 2
    assert "repository" in _one_error_line(capsys.readouterr().err)


def test_both_commands_refuse_with_the_same_parser_and_words(capsys, tmp_path):
    """One implementation: the same parser class, and the same line for the same bad front option."""
    assert type(triton_server._parser()) is type(serve._parser()) is OneLineParser
    lines = []
    for main, argv in ((serve.main, []), (triton_server.main, [str(tmp_path)])):
        with pytest.raises(SystemExit):
            main([*argv, "--deadline-s", "-3"])
        lines.append(_one_error_line(capsys.readouterr().err).replace("serving.triton_server", "serving.serve"))
    assert lines[0] == lines[1], lines


def _options(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def test_every_serve_option_is_taken_or_said_not_to_apply():
    """Each option of serve's is one of triton_server's, or its --help says why it does not apply."""
    parser = triton_server._parser()
    help_text = parser.format_help()
    missing = {option for option in _options(serve._parser()) - _options(parser) if option not in help_text}
    assert not missing, missing
    for option in ("--queue-size", "--deadline-s", "--request-timeout", "--response-timeout", "--max-body-mb",
                   "--no-metrics", "--triton-log", "-v"):
        assert option in _options(parser), option
    assert "do not apply here" in help_text and "export/to_triton.py --max-batch" in help_text


@pytest.fixture
def fake_launch(tmp_path, monkeypatch):
    """main() up to the front: a repository of one model, limits as to_triton.json would give, a stand-in
    tritonserver that only sleeps (ready at once); the front is not opened, its limits are recorded."""
    repository = tmp_path / "repo"
    (repository / "banet").mkdir(parents=True)
    (repository / "banet" / "config.pbtxt").write_text('name: "banet"\nplatform: "ensemble"\n')
    binary = tmp_path / "tritonserver"
    binary.write_text("#!/bin/sh\nexec sleep 30\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    seen: dict = {}

    def recording_front(host, port, limits, upstream):
        seen["limits"] = limits
        raise OSError(errno.EADDRINUSE, "stop here: the limits were recorded")

    monkeypatch.setattr(triton_server, "ensemble_limits", lambda repo, model: ("banet", RequestLimits(4, 10_000, 2)))
    monkeypatch.setattr(triton_server.TritonServer, "wait_ready", lambda self, timeout=0: None)
    monkeypatch.setattr(triton_server, "start_front", recording_front)

    def run(*options: str) -> FrontLimits:
        argv = [str(repository), "--http-port", "0", "--tritonserver", str(binary), "--log",
                str(tmp_path / "server.log"), *options]
        assert triton_server.main(argv) == 1
        return seen.pop("limits")

    return run


def test_the_front_options_reach_the_fronts_limits(fake_launch, capsys):
    limits = fake_launch("--queue-size", "3", "--deadline-s", "7", "--request-timeout", "7.5",
                         "--response-timeout", "2.5", "--max-body-mb", "2")
    assert (limits.queue_size, limits.deadline_s, limits.request_timeout_s, limits.response_timeout_s,
            limits.max_body_bytes) == (3, 7.0, 7.5, 2.5, 2 << 20)
    assert (limits.max_batch, limits.max_pixels, limits.min_side) == (4, 10_000, 2)  # from the repository
    assert "stop here" in _one_error_line(capsys.readouterr().err)


def test_the_defaults_are_the_fronts_and_serves(fake_launch):
    limits = fake_launch()
    defaults = FrontLimits()
    served = serve._config(serve._parser().parse_args([]), None).limits()
    for name in ("queue_size", "deadline_s", "request_timeout_s", "response_timeout_s", "max_body_bytes"):
        assert getattr(limits, name) == getattr(defaults, name) == getattr(served, name), name


def test_no_metrics_turns_metrics_off(monkeypatch, tmp_path):
    passed: dict = {}

    def fake_start(*args, **kwargs):
        passed["metrics_port"] = args[4]
        raise triton_server.TritonLaunchError("stop here")

    monkeypatch.setattr(triton_server, "start", fake_start)
    assert triton_server.main([str(tmp_path), "--metrics-port", "9100", "--no-metrics"]) == 1
    assert passed["metrics_port"] is None
    assert triton_server.main([str(tmp_path), "--metrics-port", "9100", "--triton-log", str(Path("x.log"))]) == 1
    assert passed["metrics_port"] == 9100


def test_both_commands_take_port_0_for_grpc_and_metrics_and_refuse_the_same_ports(capsys, tmp_path):
    """One definition of the ports: 0 is any free port in both (serve used to refuse it, triton_server took it),
    and a bad port is the same line in both."""
    for parser, argv in ((serve._parser(), []), (triton_server._parser(), [str(tmp_path)])):
        args = parser.parse_args([*argv, "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"])
        assert (args.http_port, args.grpc_port, args.metrics_port) == (0, 0, 0)
    for option in ("--grpc-port", "--metrics-port"):
        lines = []
        for main, argv in ((serve.main, []), (triton_server.main, [str(tmp_path)])):
            with pytest.raises(SystemExit):
                main([*argv, option, "70000"])
            lines.append(_one_error_line(capsys.readouterr().err).replace("serving.triton_server", "serving.serve"))
        assert lines[0] == lines[1] and option in lines[0] and "at most 65535" in lines[0], lines


def test_serve_picks_free_ports_for_0_and_names_them(monkeypatch, caplog):
    """serving.serve with --grpc-port 0 --metrics-port 0: free loopback ports, distinct from the front's and
    Triton's own, given to Triton and named in the start-up line."""
    config = serve.ServeConfig("127.0.0.1", 0, grpc_port=0, metrics_port=0)
    front = serve.bind_front(config)
    given = {}

    class StandIn:  # Triton, as far as start() and stop() see it
        def stop(self) -> None:
            given["stopped"] = True

    def fake_triton(deblurrer, config_, triton_port):
        given.update(grpc=config_.grpc_port, metrics=config_.metrics_port)
        return StandIn()

    monkeypatch.setattr(serve, "_start_triton", fake_triton)
    with caplog.at_level("INFO", logger="serving.serve"):
        serve.start(None, config, front).stop()
    ports = {config.grpc_port, config.metrics_port, front.port, front.upstream[1]}
    assert 0 not in ports and len(ports) == 4, ports
    assert given == {"grpc": config.grpc_port, "metrics": config.metrics_port, "stopped": True}
    assert f"metrics on http://127.0.0.1:{config.metrics_port}/metrics" in caplog.text, caplog.text
    assert f"unvalidated gRPC on 127.0.0.1:{config.grpc_port}" in caplog.text, caplog.text


def test_triton_server_names_the_ports_it_picked_for_0(tmp_path, monkeypatch, capsys):
    """The ready line names the gRPC and metrics ports picked for 0, so a client can reach them."""
    repository = tmp_path / "repo"
    (repository / "banet").mkdir(parents=True)
    (repository / "banet" / "config.pbtxt").write_text('name: "banet"\nplatform: "ensemble"\n')
    binary = tmp_path / "tritonserver"
    binary.write_text("#!/bin/sh\nexit 0\n")  # gone at once: main() reports it after printing the ready line
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(triton_server, "ensemble_limits", lambda repo, model: ("banet", RequestLimits(4, 10_000, 2)))
    monkeypatch.setattr(triton_server.TritonServer, "wait_ready", lambda self, timeout=0: None)
    monkeypatch.setattr(triton_server.TritonServer, "models", lambda self: [{"name": "banet", "state": "READY"}])
    monkeypatch.setattr(triton_server.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    assert triton_server.main([str(repository), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                               "--tritonserver", str(binary), "--log", str(tmp_path / "server.log")]) == 1
    ready = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("serving "))
    grpc = re.search(r"unvalidated gRPC on 127\.0\.0\.1:(\d+)", ready)
    metrics = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", ready)
    assert grpc and metrics, ready
    assert int(grpc[1]) and int(metrics[1]) and grpc[1] != metrics[1], ready


@pytest.mark.parametrize("host", ["", "  "])
def test_an_empty_host_is_refused_by_both_servers(tmp_path, capsys, host):
    """Before: "serving banet on http://:39233", listening on 0.0.0.0 (an unset $HOST in --host "$HOST")."""
    for parser, argv in ((serve._parser(), []), (triton_server._parser(), [str(tmp_path)])):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args([*argv, "--host", host])
        assert stopped.value.code == 2 and "an empty host would listen on every interface" in capsys.readouterr().err
    assert serve._parser().parse_args(["--host", "0.0.0.0"]).host == "0.0.0.0"  # all interfaces, on purpose
