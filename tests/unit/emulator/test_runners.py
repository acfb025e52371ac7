"""The three ways to start it: console script, `python -m`, and the context manager (thread or process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from segmind_provider.testing.emulator import FaultRule, ModelSpec, SegmindEmulator
from segmind_provider.testing.emulator.cli import (
    READY_PREFIX,
    build_parser,
    options_to_argv,
    server_from_args,
)

H = {"x-api-key": "k"}


def _start(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(READY_PREFIX), line
    return proc, json.loads(line[len(READY_PREFIX) :])


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "segmind_provider.testing.emulator"],
        [str(Path(sys.executable).with_name("segmind-emulator"))],
    ],
    ids=["python-m", "console-script"],
)
def test_command_line_starts_on_free_ports_and_stops_on_sigterm(command: list[str]) -> None:
    if not Path(command[0]).exists():
        pytest.skip("console script not installed in this environment")
    proc, info = _start(
        [*command, "--port", "0", "--time-scale", "0.001", "--credits", "2", "--block-word", "nope"]
    )
    try:
        assert info["base_url"] != info["media_url"]
        assert info["storage_url"] == info["base_url"] + "/storage"
        assert info["account_url"] == info["base_url"] + "/account"
        assert info["time_scale"] == 0.001
        assert info["connection"]["host"] == info["base_url"]
        assert info["connection"]["extra"] == {"time_scale": 0.001}  # storage and account follow the host
        config = httpx.get(info["base_url"] + "/_emulator/config").json()
        assert (config["time_scale"], config["credits"], config["blocked_words"]) == (0.001, 2.0, ["nope"])
        assert httpx.get(info["base_url"] + "/v1/get-user-credits", headers=H).json()["credits"] == 2.0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_thread_mode_context_manager_stops_cleanly() -> None:
    with SegmindEmulator(time_scale=0.01) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.media_url.startswith("http://127.0.0.1:") and emu.media_url != emu.base_url
        assert httpx.get(emu.base_url + "/_emulator/health").json()["ok"] is True
        url = emu.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_emulator/health")


def test_process_mode_applies_options() -> None:
    options = {
        "time_scale": 0.01,
        "rate_limit": 100,
        "latency": {"flux-1.1-pro": 3.0},
        "models": {"extra": ModelSpec("extra", latency=1.0, output="text")},
        "faults": [FaultRule(endpoint="credits", status=502, count=1)],
    }
    with SegmindEmulator(process=True, cpu_affinity=[0], **options) as emu:  # type: ignore[arg-type]
        assert emu.pid is not None
        config = emu.config()
        assert config["rate_limit"] == 100
        assert config["models"]["flux-1.1-pro"]["latency"] == 3.0
        assert config["models"]["extra"]["output"] == "text"
        assert httpx.get(emu.base_url + "/v1/get-user-credits", headers=H).status_code == 502
        url = emu.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/_emulator/health")


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="time_scael"):
        SegmindEmulator(time_scael=0.1)


def test_cli_flags_round_trip_through_options_to_argv() -> None:
    options = {
        "time_scale": 0.5,
        "workers": 4,
        "credits": 1.5,
        "rate_limit": 9,
        "blocked_words": ["a", "b"],
        "failing_words": ["c"],
        "retention_scaled": True,
        "retention": 7,
        "latency": {"flux-1.1-pro": 2.0},
        "cold_start": {"flux-1.1-pro": 30.0},
        "models": {"m": ModelSpec("m", latency=3.0, output="json")},
        "faults": [FaultRule(endpoint="status", kind="drop", probability=0.25)],
    }
    args = build_parser().parse_args(options_to_argv(options))
    server = server_from_args(args)
    config = server.state.config
    assert (config.time_scale, config.workers, config.credits, config.rate_limit) == (0.5, 4, 1.5, 9)
    assert (config.blocked_words, config.retention, config.retention_scaled) == (["a", "b"], 7.0, True)
    assert config.failing_words == ["c"]  # the process-mode emulator gets them too
    assert server.state.models["flux-1.1-pro"].latency == 2.0
    assert server.state.models["flux-1.1-pro"].cold_start == 30.0
    assert server.state.models["m"].output == "json"
    rule = server.state.faults.rules[0]
    assert (rule.endpoint, rule.kind, rule.probability) == ("status", "drop", 0.25)


def test_cli_rejects_latency_for_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    from segmind_provider.testing.emulator.cli import main

    with pytest.raises(SystemExit):
        main(["--latency", "ghost=1"])
    assert "unknown model" in capsys.readouterr().err


def test_latency_for_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="ghost"), SegmindEmulator(latency={"ghost": 1.0}):
        pass
