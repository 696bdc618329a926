"""Tests for sim.cable.NullModemCable, driven through pyserial like a daemon would."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import pytest
import serial

from sim.cable import NullModemCable

from helpers import wait_for

TIMEOUT = 10.0


def read_exactly(port: serial.Serial, n: int, timeout: float = TIMEOUT) -> bytes:
    """Read ``n`` bytes from a non-blocking port, failing the test after ``timeout`` seconds."""
    data = bytearray()

    def got_all() -> bool:
        data.extend(port.read(n - len(data)))
        return len(data) >= n

    wait_for(got_all, timeout, f"{n} bytes (got {len(data)})")
    return bytes(data)


def open_port(path: os.PathLike) -> serial.Serial:
    return serial.Serial(str(path), 115200, timeout=0)


@pytest.fixture
def cable(tmp_path) -> Iterator[NullModemCable]:
    with NullModemCable(tmp_path) as c:
        yield c


@pytest.fixture
def ports(cable) -> Iterator[tuple[serial.Serial, serial.Serial]]:
    a, b = open_port(cable.path("a")), open_port(cable.path("b"))
    yield a, b
    for port in (a, b):
        try:
            port.close()
        except (OSError, serial.SerialException):
            pass


def test_paths_are_symlinks_to_ptys(cable, tmp_path):
    for end in ("a", "b"):
        path = cable.path(end)
        assert path == tmp_path / f"{end}.tty"
        assert path.is_symlink()
        assert os.readlink(path).startswith("/dev/pts/")


def test_bytes_pass_both_ways(cable, ports):
    a, b = ports
    a.write(b"hello from a")
    assert read_exactly(b, 12) == b"hello from a"
    b.write(b"hi from b")
    assert read_exactly(a, 9) == b"hi from b"
    stats = cable.stats
    assert stats["a->b"]["forwarded"] == 12
    assert stats["b->a"]["forwarded"] == 9
    assert stats["a->b"]["dropped"] == stats["b->a"]["dropped"] == 0


def test_all_byte_values_pass_unaltered(ports):
    a, b = ports
    payload = bytes(range(256)) * 8
    a.write(payload)
    assert read_exactly(b, len(payload)) == payload
    b.write(payload[::-1])
    assert read_exactly(a, len(payload)) == payload[::-1]


def test_no_echo_back_to_sender(cable, ports):
    a, b = ports
    a.write(b"ping")
    assert read_exactly(b, 4) == b"ping"
    assert a.read(100) == b""
    assert cable.stats["b->a"]["forwarded"] == 0


def test_cut_drops_and_restore_resumes(cable, ports):
    a, b = ports
    cable.cut()
    a.write(b"lost-a")
    b.write(b"lost-b")
    wait_for(lambda: cable.stats["a->b"]["dropped"] == 6 and cable.stats["b->a"]["dropped"] == 6,
             what="bytes dropped by the cut")
    assert a.read(100) == b"" and b.read(100) == b""

    cable.restore()
    a.write(b"back-a")
    assert read_exactly(b, 6) == b"back-a"
    b.write(b"back-b")
    assert read_exactly(a, 6) == b"back-b"


def test_one_direction_cut(cable, ports):
    a, b = ports
    cable.cut("a->b")
    a.write(b"dropped")
    b.write(b"arrives")
    assert read_exactly(a, 7) == b"arrives"
    wait_for(lambda: cable.stats["a->b"]["dropped"] == 7, what="a->b drop")
    assert b.read(100) == b""

    cable.restore("a->b")
    a.write(b"now ok")
    assert read_exactly(b, 6) == b"now ok"


def test_bad_direction_rejected(cable):
    with pytest.raises(ValueError):
        cable.cut("a->c")
    with pytest.raises(ValueError):
        cable.restore("b-a")


def test_noise_arrives_toward_one_end(cable, ports):
    a, b = ports
    cable.inject_noise(300, toward="b", seed=7)
    assert read_exactly(b, 300) == random.Random(7).randbytes(300)
    assert a.read(1000) == b""
    stats = cable.stats
    assert stats["a->b"]["noise"] == 300
    assert stats["b->a"]["noise"] == 0


def test_noise_toward_both_ends(cable, ports):
    a, b = ports
    cable.inject_noise(50)
    assert len(read_exactly(a, 50)) == 50
    assert len(read_exactly(b, 50)) == 50
    # Real traffic still flows afterwards.
    a.write(b"after")
    assert read_exactly(b, 5) == b"after"


def test_delay_delays_and_keeps_order(cable, ports):
    a, b = ports
    delay = 0.3
    cable.set_delay(delay)
    start = time.monotonic()
    a.write(b"one,")
    a.write(b"two,")
    a.write(b"three")
    data = read_exactly(b, 13)
    assert time.monotonic() - start >= delay
    assert data == b"one,two,three"

    cable.set_delay(0)
    a.write(b"fast")
    assert read_exactly(b, 4) == b"fast"


def test_daemon_can_close_and_reopen(cable, ports):
    a, b = ports
    b.close()
    b2 = open_port(cable.path("b"))
    try:
        a.write(b"again")
        assert read_exactly(b2, 5) == b"again"
        b2.write(b"reply")
        assert read_exactly(a, 5) == b"reply"
    finally:
        b2.close()


def _port_fails(port: serial.Serial) -> bool:
    try:
        port.write(b"x")
        port.read(1)
    except (serial.SerialException, OSError):
        return True
    return False


def test_unplug_breaks_opened_port_and_removes_symlink(cable, ports):
    a, b = ports
    path = cable.path("b")
    cable.unplug("b")
    wait_for(lambda: _port_fails(b), what="the unplugged port to fail")
    assert not path.exists() and not path.is_symlink()

    # The other end keeps working; its bytes go nowhere.
    a.write(b"anyone?")
    wait_for(lambda: cable.stats["a->b"]["dropped"] >= 7, what="bytes dropped toward the unplugged end")
    assert cable.path("a").is_symlink()


def test_replug_gives_a_working_path(cable, ports):
    a, b = ports
    path = cable.path("b")
    cable.unplug("b")
    wait_for(lambda: _port_fails(b), what="the unplugged port to fail")
    b.close()

    cable.replug("b")
    assert path.is_symlink() and os.readlink(path).startswith("/dev/pts/")
    b2 = open_port(path)
    try:
        a.write(b"welcome back")
        assert read_exactly(b2, 12) == b"welcome back"
        b2.write(b"thanks")
        assert read_exactly(a, 6) == b"thanks"
    finally:
        b2.close()


def test_replug_while_plugged_repoints_symlink(cable, ports):
    a, b = ports
    cable.replug("b")
    wait_for(lambda: _port_fails(b), what="the replaced port to fail")
    b2 = open_port(cable.path("b"))
    try:
        a.write(b"new")
        assert read_exactly(b2, 3) == b"new"
    finally:
        b2.close()


def test_stop_is_idempotent_and_removes_symlinks(tmp_path):
    cable = NullModemCable(tmp_path, ends=("left", "right"))
    cable.start()
    links = [cable.path("left"), cable.path("right")]
    assert all(p.is_symlink() for p in links)
    cable.stop()
    cable.stop()
    assert not any(p.is_symlink() for p in links)
    assert list(tmp_path.iterdir()) == []


def test_custom_end_names(tmp_path):
    with NullModemCable(tmp_path, ends=("n1", "n2")) as cable:
        with open_port(cable.path("n1")) as p1, open_port(cable.path("n2")) as p2:
            cable.cut("n2->n1")
            p1.write(b"x")
            assert read_exactly(p2, 1) == b"x"
            assert set(cable.stats) == {"n1->n2", "n2->n1"}
        with pytest.raises(ValueError):
            cable.path("a")


def test_control_requires_running(tmp_path):
    cable = NullModemCable(tmp_path)
    with pytest.raises(RuntimeError):
        cable.unplug("a")
    with pytest.raises(RuntimeError):
        cable.inject_noise(1)
    cable.stop()  # stopping a cable that never started is harmless


def test_bulk_transfer_survives_backpressure(cable, ports):
    a, b = ports
    payload = random.Random(3).randbytes(256 * 1024)
    a.write(payload)  # far more than a pty buffers; the cable queues it
    assert read_exactly(b, len(payload)) == payload
    assert cable.stats["a->b"] == {"forwarded": len(payload), "dropped": 0, "noise": 0}


def test_forwarder_survives_eio_from_a_master(cable, ports):
    a, b = ports
    b.close()
    end = cable._ends["b"]  # white-box: make the master of end b report EIO
    os.close(end.slave)
    end.slave = os.open(os.devnull, os.O_RDONLY)
    wait_for(lambda: end.failing, what="the forwarder to hit EIO")
    cable.inject_noise(1, toward="a")  # the forwarder still serves end a
    assert len(read_exactly(a, 1)) == 1
    assert cable._thread is not None and cable._thread.is_alive()

    cable.replug("b")
    b2 = open_port(cable.path("b"))
    try:
        a.write(b"recovered")
        assert read_exactly(b2, 9) == b"recovered"
    finally:
        b2.close()
