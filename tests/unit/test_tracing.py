"""Tracing without a server: --trace-config parsing, the settings API's rules, sampling and
the files written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trident.runtime.errors import InvalidArgumentError, UnsupportedError
from trident.runtime.observability.trace_settings import TraceSettings, parse_trace_config
from trident.runtime.observability.tracing import TraceConfig, TraceLevel, Tracer, tensor_text
from trident.runtime.types import Tensor


def test_trace_config_follows_tritonserver_syntax():
    settings = parse_trace_config(
        [
            "triton,file=/tmp/t.json",
            "level=TIMESTAMPS",
            "level=tensors",
            "rate=1",
            "count=-1",
            "triton,log-frequency=50",
            "mode=triton",
        ]
    )
    assert settings == {
        "trace_file": ["/tmp/t.json"],
        "trace_level": ["TIMESTAMPS", "TENSORS"],
        "trace_rate": ["1"],
        "trace_count": ["-1"],
        "log_frequency": ["50"],
    }
    # A comma inside the value belongs to the value; the mode is case-insensitive.
    assert parse_trace_config(["TRITON,file=/tmp/a,b.json"]) == {"trace_file": ["/tmp/a,b.json"]}
    assert parse_trace_config(["triton,log_frequency=2"]) == {"log_frequency": ["2"]}


def test_trace_config_level_off_wins():
    assert parse_trace_config(["level=TIMESTAMPS", "level=OFF"])["trace_level"] == ["OFF"]
    assert parse_trace_config(["level=max"])["trace_level"] == ["TIMESTAMPS"]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (",rate=1", "format"),
        ("rate", "format"),
        ("rate=", "setting and a value"),
        ("rate=fast", "integer"),
        ("rate=-1", "integer"),
        ("count=99999999999", "integer"),
        ("level=LOUD", "trace level"),
        ("opentelemetry,url=localhost", "not supported"),
        ("mode=opentelemetry", "not supported"),
        ("file=/tmp/x", "unknown setting 'file'"),
        ("triton,rate=1", "unknown setting 'triton,rate'"),
    ],
)
def test_trace_config_errors_name_the_problem(argument, message):
    with pytest.raises(ValueError, match=message):
        parse_trace_config([argument])


def test_the_api_never_moves_the_trace_file_and_refuses_a_level_without_one():
    settings = TraceSettings()
    with pytest.raises(UnsupportedError, match="through network protocol"):
        settings.update("", {"trace_file": ["/etc/passwd"]})
    with pytest.raises(InvalidArgumentError, match="trace file name is not given"):
        settings.update("", {"trace_level": ["TIMESTAMPS"]})
    with pytest.raises(InvalidArgumentError, match="cannot be combined"):
        settings.update("", {"trace_level": ["OFF", "TENSORS"]})
    with pytest.raises(InvalidArgumentError, match="from 0 to"):
        settings.update("", {"trace_rate": ["-3"]})
    assert settings.get()["trace_level"] == ["OFF"]


def test_per_model_settings_fall_back_to_global_and_clear(tmp_path):
    path = str(tmp_path / "t.json")
    settings = TraceSettings({"trace_file": [path], "trace_level": ["TIMESTAMPS"]})
    settings.update("m", {"trace_rate": ["1"], "trace_count": ["2"]})
    settings.update("", {"trace_rate": ["5"]})
    assert settings.get("m")["trace_rate"] == ["1"]
    assert settings.get("other")["trace_rate"] == ["5"]
    tracer = settings.tracer
    assert tracer.sample("m") is not None
    assert settings.get("m")["trace_count"] == ["1"]  # what is left, as Triton reports
    # A change elsewhere keeps what is left of the count.
    settings.update("m", {"log_frequency": ["0"]})
    assert settings.get("m")["trace_count"] == ["1"]
    assert tracer.sample("m") is not None
    assert tracer.sample("m") is None  # the count is spent
    settings.update("m", {"trace_rate": None, "trace_count": None, "log_frequency": None})
    assert settings.get("m")["trace_rate"] == ["5"]
    settings.update("", {"trace_rate": None})
    assert settings.get()["trace_rate"] == ["1000"]  # back to the startup value
    settings.close()


def test_rate_samples_every_nth_request_and_off_samples_none(tmp_path):
    tracer = Tracer()
    config = TraceConfig(TraceLevel.TIMESTAMPS, rate=3, file=str(tmp_path / "t.json"))
    tracer.configure(config, {"quiet": TraceConfig(TraceLevel.OFF, file=config.file)})
    sampled = [tracer.sample("m") is not None for _ in range(9)]
    assert sampled == [False, False, True] * 3
    assert all(tracer.sample("quiet") is None for _ in range(6))
    tracer.close()


def test_the_file_stays_valid_json_and_numbered_files_hold_log_frequency_traces(tmp_path):
    path = tmp_path / "t.json"
    tracer = Tracer()
    tracer.configure(TraceConfig(TraceLevel.TIMESTAMPS, rate=1, file=str(path)), {})
    for index in range(2):
        trace = tracer.sample("m")
        assert trace is not None
        trace.request_start(100 + index, "")
        trace.finish()
        assert [r["id"] for r in json.loads(path.read_text()) if "model_name" in r] == [
            t for t in range(trace.id - index, trace.id + 1)
        ]
    tracer.configure(
        TraceConfig(TraceLevel.TIMESTAMPS, rate=1, log_frequency=2, file=str(path)), {}
    )
    for _ in range(3):
        trace = tracer.sample("m")
        assert trace is not None
        trace.stamp("REQUEST_START", 1)
        trace.finish()
    assert len(json.loads((tmp_path / "t.json.0").read_text())) == 2
    assert not (tmp_path / "t.json.1").exists()
    tracer.close()  # the third trace
    assert len(json.loads((tmp_path / "t.json.1").read_text())) == 1


def test_an_unfinished_trace_is_written_when_the_server_stops(tmp_path):
    path = tmp_path / "t.json"
    tracer = Tracer()
    tracer.configure(TraceConfig(TraceLevel.TIMESTAMPS, rate=1, file=str(path)), {})
    trace = tracer.sample("m")
    assert trace is not None
    trace.stamp("HTTP_RECV_START", 5)
    tracer.close()
    assert json.loads(path.read_text()) == [
        {"id": trace.id, "timestamps": [{"name": "HTTP_RECV_START", "ns": 5}]}
    ]


@pytest.mark.parametrize(
    ("datatype", "values", "text"),
    [
        ("FP32", np.array([1.5, 1e-7, 100000000.0], np.float32), "1.5,1e-07,1e+08"),
        ("INT8", np.array([-3, 4], np.int8), "-3,4"),
        ("UINT64", np.array([2**64 - 1], np.uint64), "18446744073709551615"),
        ("BOOL", np.array([True, False]), "1,0"),
        ("BYTES", np.array([b"a", b"b,c"], dtype=object), '"a","b,c"'),
        ("FP16", np.array([0.5], np.float16), "0.5"),
    ],
)
def test_tensor_values_print_as_triton_streams_them(datatype, values, text):
    assert tensor_text(Tensor("t", datatype, values.shape, values)) == text


def test_the_command_line_checks_each_trace_config_value(capsys):
    from trident.runtime.cli import build_parser, settings_from_args

    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--trace-config", "triton,file=/tmp/t.json", "--trace-config=rate=1"]
    )
    assert settings_from_args(args).trace_config == ["triton,file=/tmp/t.json", "rate=1"]
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--trace-config", "rate=often"])
    assert "'rate' must be an integer" in capsys.readouterr().err
