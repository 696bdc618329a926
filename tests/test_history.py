"""rrdtool history: file layout, batched writes, restarts, failures, graphs."""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rrdtool

from firmware.core import history as history_module
from firmware.core.history import (
    History,
    describe_seconds,
    parse_since,
    validate_metric,
)

from helpers import wait_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEP = 10


def aligned_past(seconds_ago: int = 3600) -> int:
    """A step-aligned timestamp `seconds_ago` before now (explicit timestamps: no waiting)."""
    return (int(time.time()) - seconds_ago) // STEP * STEP


@pytest.fixture
def histories() -> Iterator[Callable[..., History]]:
    """Open History objects, closing every one at the end of the test."""
    opened: list[History] = []

    def open_history(directory: Path, **kwargs: Any) -> History:
        history = History(directory, **kwargs)
        opened.append(history)
        return history

    yield open_history
    for history in opened:
        history.close()


def values_at(history: History, metric: str, start: int, end: int) -> dict[int, float | None]:
    return dict(history.fetch(metric, end - start, end=end))


# ------------------------------------------------------------------ files


def test_files_are_created_on_first_use_with_the_right_layout(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    at = aligned_past()
    history.record("psu1.vin", 230.5, "V", at=at)
    history.record("health", 100, "%", at=at)
    assert history.metrics() == []
    assert not (tmp_path / "psu1").exists()

    history.flush()

    assert history.metrics() == ["health", "psu1.vin"]
    assert (tmp_path / "health.rrd").is_file()
    info = rrdtool.info(str(tmp_path / "psu1" / "vin.rrd"))
    assert info["step"] == 10
    assert info["ds[value].type"] == "GAUGE"
    assert info["ds[value].minimal_heartbeat"] == 30
    assert info["ds[value].min"] is None and info["ds[value].max"] is None
    assert [key for key in info if key.startswith("ds[") and key.endswith("].index")] == ["ds[value].index"]
    rras = set()
    index = 0
    while f"rra[{index}].cf" in info:
        rras.add((info[f"rra[{index}].cf"], info[f"rra[{index}].pdp_per_row"], info[f"rra[{index}].rows"]))
        index += 1
    assert rras == {
        (cf, steps, rows)
        for cf in ("AVERAGE", "MIN", "MAX")
        for steps, rows in ((1, 8640), (30, 8928), (360, 17520))
        if steps > 1 or cf == "AVERAGE"  # MIN/MAX of one step would repeat AVERAGE
    }
    assert history.status()["files"] == 2


def test_recorded_values_are_fetched_back(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    start = aligned_past()
    readings = [20.0, 21.5, 23.0, None, 24.5, 26.0]
    for index, value in enumerate(readings):
        history.record("inlet.temp", value, "°C", at=start + STEP * index)

    history.flush()

    status = history.status()
    assert status["writes"] == 1, "all pending steps of a file go in one rrdtool.update"
    assert status["values"] == len(readings)
    assert status["errors"] == 0 and status["pending"] == 0
    got = values_at(history, "inlet.temp", start - STEP, start + STEP * (len(readings) - 1))
    assert [got[start + STEP * index] for index in range(len(readings))] == readings


def test_values_recorded_out_of_order_are_written_in_time_order(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    start = aligned_past()
    for index in (2, 0, 1):
        history.record("fan1.rpm", 1000.0 * index, "rpm", at=start + STEP * index)
    history.flush()
    got = values_at(history, "fan1.rpm", start - STEP, start + 2 * STEP)
    assert [got[start], got[start + STEP], got[start + 2 * STEP]] == [0.0, 1000.0, 2000.0]
    assert history.status()["errors"] == 0


def test_unknown_values_are_stored_as_unknown(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    start = aligned_past()
    for index, value in enumerate([1.0, math.nan, math.inf, None, 5.0]):
        history.record("psu1.iout", value, at=start + STEP * index)
    history.flush()
    got = values_at(history, "psu1.iout", start - STEP, start + 4 * STEP)
    assert [got[start + STEP * index] for index in range(5)] == [1.0, None, None, None, 5.0]


def test_last_value_within_a_step_wins(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    start = aligned_past()
    history.record("inlet.temp", 30.0, at=start + 1)
    history.record("inlet.temp", 31.0, at=start + 4)
    history.record("inlet.temp", 32.0, at=start + 9)
    history.flush()
    assert history.status()["values"] == 1


def test_two_records_in_the_same_second_make_one_update_and_no_error(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    at = aligned_past()
    history.record("psu1.vin", 229.0, "V", at=at + 0.2)
    history.record("psu1.vin", 231.0, "V", at=at + 0.7)
    history.flush()
    status = history.status()
    assert (status["writes"], status["values"], status["errors"]) == (1, 1, 0)
    assert values_at(history, "psu1.vin", at - STEP, at)[at] == 231.0

    # Same second again after it was written: rrdtool would refuse it, so it is skipped.
    history.record("psu1.vin", 240.0, "V", at=at + 0.9)
    history.flush()
    status = history.status()
    assert (status["writes"], status["skipped"], status["errors"]) == (1, 1, 0)
    assert status["last_error"] is None


# ---------------------------------------------------------------- restarts


def test_history_survives_a_restart_without_overwriting(tmp_path: Path) -> None:
    start = aligned_past()
    first = History(tmp_path)
    for index in range(3):
        first.record("inlet.temp", 20.0 + index, "°C", at=start + STEP * index)
    first.close()
    path = tmp_path / "inlet" / "temp.rrd"
    last_update = rrdtool.last(str(path))

    second = History(tmp_path)
    try:
        assert second.metrics() == ["inlet.temp"]
        assert second.unit("inlet.temp") == "°C"
        assert second.status()["files"] == 1
        # Older than the file's last update (e.g. replayed after a restart): skipped, no error.
        second.record("inlet.temp", 99.0, at=start + STEP)
        second.record("inlet.temp", 23.0, at=start + 3 * STEP)
        second.flush()
        status = second.status()
        assert (status["skipped"], status["errors"], status["writes"]) == (1, 0, 1)
        assert rrdtool.last(str(path)) == last_update + STEP
        got = values_at(second, "inlet.temp", start - STEP, start + 3 * STEP)
        assert [got[start + STEP * index] for index in range(4)] == [20.0, 21.0, 22.0, 23.0]
    finally:
        second.close()


def test_units_are_persisted_atomically(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    history.record("psu1.vin", 230.0, "V", at=aligned_past())
    history.record("psu1.vin", 231.0, at=aligned_past() + 1)  # no unit: keeps "V"
    history.record("health", 100.0, "%", at=aligned_past())
    history.flush()
    assert json.loads((tmp_path / "units.json").read_text(encoding="utf-8")) == {"health": "%", "psu1.vin": "V"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_unreadable_units_file_is_an_error_not_an_exception(tmp_path: Path, histories) -> None:
    (tmp_path / "units.json").write_text("{not json")
    history = histories(tmp_path)
    assert history.status()["errors"] == 1
    assert "units" in history.status()["last_error"]
    history.record("psu1.vin", 230.0, "V", at=aligned_past())
    history.flush()
    assert json.loads((tmp_path / "units.json").read_text(encoding="utf-8")) == {"psu1.vin": "V"}


# ---------------------------------------------------------- writer thread


def test_close_flushes_what_is_pending(tmp_path: Path) -> None:
    history = History(tmp_path, flush_interval_s=3600)
    history.start()
    at = aligned_past()
    history.record("health", 87.0, "%", at=at)
    assert history.status()["pending"] == 1
    history.close()
    assert history.status()["pending"] == 0
    assert values_at(history, "health", at - STEP, at)[at] == 87.0


def test_the_writer_thread_flushes_every_interval(tmp_path: Path, histories) -> None:
    history = histories(tmp_path, flush_interval_s=0.05)
    history.start()
    history.record("fan2.rpm", 4200.0, "rpm", at=aligned_past())
    wait_for(lambda: history.status()["writes"] == 1)
    assert history.metrics() == ["fan2.rpm"]


def test_record_does_no_io(tmp_path: Path, histories, monkeypatch: pytest.MonkeyPatch) -> None:
    history = histories(tmp_path)

    def forbidden(*args: Any) -> None:
        raise AssertionError("record() must not touch rrdtool")

    for name in ("create", "update", "last"):
        monkeypatch.setattr(rrdtool, name, forbidden)
    at = aligned_past()
    for index in range(100):
        history.record(f"sensor{index}.temp", float(index), "°C", at=at)
    assert history.status()["pending"] == 100
    monkeypatch.undo()
    history.flush()
    assert history.status()["writes"] == 100


# ---------------------------------------------------------------- failures


def test_a_corrupt_file_is_counted_and_other_metrics_are_still_written(
    tmp_path: Path, histories, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "psu2").mkdir()
    (tmp_path / "psu2" / "vin.rrd").write_bytes(b"this is not an rrd file" * 100)
    history = histories(tmp_path)
    start = aligned_past()
    with caplog.at_level(logging.ERROR, logger="firmware.core.history"):
        for round_ in range(2):
            history.record("psu2.vin", 230.0, "V", at=start + STEP * round_)
            history.record("psu1.vin", 231.0 + round_, "V", at=start + STEP * round_)
            history.flush()  # must not raise

    status = history.status()
    assert status["errors"] == 2
    assert status["writes"] == 2
    assert status["last_error"].startswith("psu2.vin: ")
    assert len([r for r in caplog.records if "psu2.vin" in r.getMessage()]) == 1, "logged once, counted always"
    got = values_at(history, "psu1.vin", start - STEP, start + STEP)
    assert [got[start], got[start + STEP]] == [231.0, 232.0]


def test_an_unwritable_directory_does_not_raise(tmp_path: Path, histories) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the history directory should be")
    history = histories(blocker / "history")
    history.record("health", 100.0, "%", at=aligned_past())
    history.flush()
    assert history.status()["errors"] >= 1


@pytest.mark.parametrize(
    "metric",
    ["", "psu1", "psu1.", ".vin", "psu1.vin.x", "../etc.passwd", "a/b.c", "psu1./vin", "/abs.x",
     "a b.c", "psu1.vin\n", "..", "health.", "ünï.code"],
)
def test_bad_metric_names_are_rejected(tmp_path: Path, histories, metric: str) -> None:
    history = histories(tmp_path / "history")
    with pytest.raises(ValueError, match="bad metric name"):
        history.record(metric, 1.0)
    with pytest.raises(ValueError, match="bad metric name"):
        history.path_of(metric)
    history.flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history"]


def test_good_metric_names_map_inside_the_directory(tmp_path: Path) -> None:
    history = History(tmp_path)
    assert validate_metric("psu_1-a.V_in") == "psu_1-a.V_in"
    assert history.path_of("psu_1-a.V_in") == tmp_path.absolute() / "psu_1-a" / "V_in.rrd"
    assert history.path_of("health") == tmp_path.absolute() / "health.rrd"


# ------------------------------------------------------------------ graphs


def png_size(png: bytes) -> tuple[int, int]:
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


@pytest.fixture
def graphv_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every rrdtool.graphv call made, with its arguments and what rrdtool reported."""
    calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    real = rrdtool.graphv

    def spy(*arguments: str) -> dict[str, Any]:
        result = real(*arguments)
        calls.append((arguments, result))
        return result

    monkeypatch.setattr(rrdtool, "graphv", spy)
    return calls


def record_an_hour(history: History) -> None:
    start = aligned_past(3600)
    for index in range(360):
        at = start + STEP * index
        history.record("inlet.temp", 35 + 8 * math.sin(index / 40), "°C", at=at)
        history.record("cpu.temp", 50 + 10 * math.cos(index / 30), "°C", at=at)
        history.record("health", 100.0 if index % 100 else 80.0, "%", at=at)
    history.flush()


def test_graph_draws_a_png_with_legend_and_thresholds(tmp_path: Path, histories, graphv_calls) -> None:
    history = histories(tmp_path / "history")
    record_an_hour(history)
    output = tmp_path / "graph.png"

    png = history.graph(
        ["inlet.temp", "cpu.temp"],
        since="2h",
        output=output,
        width=640,
        height=200,
        thresholds={"inlet.temp": [("warning", 45), ("critical", 55.5)], "cpu.temp": [("limit", 90, "#0000FF")]},
    )

    assert png[:8] == PNG_SIGNATURE
    assert len(png) > 2048
    assert output.read_bytes() == png
    (arguments, reported), = graphv_calls
    assert arguments[0] == "-"
    assert png_size(png) == (reported["image_width"], reported["image_height"])
    assert (reported["graph_width"], reported["graph_height"]) == (640, 200)
    assert reported["image_width"] > 640 and reported["image_height"] > 200
    assert reported["value_max"] >= 90, "the scale includes the highest threshold"

    assert "--slope-mode" in arguments
    assert arguments[arguments.index("--start") + 1] == "end-7200"
    assert arguments[arguments.index("--vertical-label") + 1] == "°C"
    assert "inlet.temp, cpu.temp" in arguments[arguments.index("--title") + 1]
    hrules = [a for a in arguments if a.startswith("HRULE:")]
    assert len(hrules) == 3
    assert any(a.startswith("HRULE:55.5#D62728:") for a in hrules), "critical is red by default"
    assert any(a.startswith("HRULE:90.0#0000FF:") for a in hrules)
    lines = [a for a in arguments if a.startswith("LINE")]
    assert len({line.split(":")[1][-7:] for line in lines}) == 2, "distinct colours"
    legends = [value for key, value in reported.items() if key.startswith("legend[")]
    text = "\n".join(legends)
    for expected in ("Last", "Average", "Maximum", "inlet.temp", "cpu.temp",
                     "inlet.temp warning (45 °C)", "inlet.temp critical (55.5 °C)", "cpu.temp limit (90 °C)"):
        assert expected in text
    assert sum("°C" in legend and any(c.isdigit() for c in legend) for legend in legends) >= 6


def test_graph_with_mixed_units_puts_units_in_the_legend(tmp_path: Path, histories, graphv_calls) -> None:
    history = histories(tmp_path)
    record_an_hour(history)
    png = history.graph(["health", "inlet.temp"], since=3600, title="Health: and inlet 100%")
    assert png[:8] == PNG_SIGNATURE
    (arguments, reported), = graphv_calls
    assert "--vertical-label" not in arguments
    assert arguments[arguments.index("--title") + 1] == "Health: and inlet 100%"
    legends = [value for key, value in reported.items() if key.startswith("legend[")]
    assert any("%" in legend and "100.00" in legend for legend in legends)
    assert any("°C" in legend for legend in legends)


def test_graph_includes_values_not_yet_flushed(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    history.record("psu1.vin", 230.0, "V", at=aligned_past(60))
    assert history.graph(["psu1.vin"], since="30m")[:8] == PNG_SIGNATURE


def test_graph_of_an_unknown_metric_names_it_and_lists_what_exists(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    record_an_hour(history)
    with pytest.raises(ValueError) as raised:
        history.graph(["inlet.temp", "psu9.vin"])
    message = str(raised.value)
    assert "psu9.vin" in message
    for existing in ("cpu.temp", "health", "inlet.temp"):
        assert existing in message


def test_graph_rejects_bad_arguments(tmp_path: Path, histories) -> None:
    history = histories(tmp_path)
    record_an_hour(history)
    with pytest.raises(ValueError, match="not in the graph"):
        history.graph(["inlet.temp"], thresholds={"cpu.temp": [("critical", 90)]})
    with pytest.raises(ValueError, match="colour"):
        history.graph(["inlet.temp"], thresholds={"inlet.temp": [("critical", 90, "red")]})
    with pytest.raises(ValueError, match="duration"):
        history.graph(["inlet.temp"], since="yesterday")
    with pytest.raises(ValueError, match="at least one metric"):
        history.graph([])
    with pytest.raises(ValueError, match="bad metric name"):
        history.graph(["../x.y"])


@pytest.mark.parametrize(
    ("since", "seconds"),
    [("30m", 1800), ("6h", 21600), ("2d", 172800), ("1w", 604800), ("90s", 90), ("45", 45),
     (" 6H ", 21600), ("1.5h", 5400), (120, 120), (7200.0, 7200)],
)
def test_parse_since(since: str | float, seconds: int) -> None:
    assert parse_since(since) == seconds


@pytest.mark.parametrize("since", ["", "6x", "-5m", "h", "0", "0s", 0, -3, "1.2.3", "6 hours", True, None, math.inf])
def test_parse_since_rejects_bad_input(since: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_since(since)


def test_describe_seconds() -> None:
    assert [describe_seconds(s) for s in (90, 1800, 21600, 172800, 1209600)] == ["90s", "30m", "6h", "2d", "2w"]


def test_status_has_the_documented_keys(tmp_path: Path, histories) -> None:
    status = histories(tmp_path).status()
    assert {"files", "pending", "writes", "errors", "last_error"} <= set(status)
    assert history_module.MAX_PENDING_STEPS >= 1
