"""Relay drivers against simulated hardware: the CH340 USB board on a pty, the PCF8574 on a simulated I2C bus."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from firmware.drivers.relays.base import RelayDriver, RelayError, check_channel
from firmware.drivers.relays.pcf8574 import Pcf8574Inputs, Pcf8574Relays
from firmware.drivers.relays.usb import UsbRelayBoard, frame
from sim.i2c import Pcf8574Model, SimI2cBuses, SimI2cDevice
from sim.rack import TwoNodeRack
from sim.usbrelay import UsbRelayEmulator

from helpers import wait_for

TIMEOUT = 5.0


# ---------------------------------------------------------------- USB relay board


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[UsbRelayEmulator]:
    with UsbRelayEmulator(tmp_path, channels=4) as emu:
        yield emu


@pytest.fixture
def board(emulator: UsbRelayEmulator) -> Iterator[UsbRelayBoard]:
    driver = UsbRelayBoard(port=str(emulator.path), channels=4)
    driver.open()
    wait_for(lambda: emulator.frames == 4, what="the all-off frames sent on open")
    yield driver
    driver.release()


def received_after(emulator: UsbRelayEmulator, start: int, count: int) -> bytes:
    """Wait for ``count`` bytes past offset ``start`` of everything the emulator received; return them."""
    wait_for(lambda: len(emulator.raw) >= start + count, what=f"{count} bytes at offset {start}")
    return bytes(emulator.raw[start:start + count])


def write_line(emulator: UsbRelayEmulator, data: bytes) -> None:
    """Write raw bytes into the board's serial line, as a misbehaving sender would."""
    fd = os.open(emulator.path, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@pytest.mark.parametrize("channel", [1, 2, 3, 4])
@pytest.mark.parametrize("energized", [True, False])
def test_usb_exact_frame_bytes_and_emulator_applies_them(emulator: UsbRelayEmulator, board: UsbRelayBoard,
                                                          channel: int, energized: bool) -> None:
    if not energized:  # switch it on first so "off" is a change
        board.set(channel, True)
        wait_for(lambda: emulator.states[channel], what=f"channel {channel} on")
    start = len(emulator.raw)
    board.set(channel, energized)
    state = 0x01 if energized else 0x00
    assert received_after(emulator, start, 4) == bytes([0xA0, channel, state, (0xA0 + channel + state) & 0xFF])
    wait_for(lambda: emulator.states[channel] == energized, what="the frame applied")
    assert emulator.log[-1][1:] == (channel, energized)
    assert board.get(channel) is energized
    assert emulator.bad_frames == 0 and emulator.garbage == 0


def test_usb_frame_examples() -> None:
    assert frame(1, True) == bytes.fromhex("A00101A2")
    assert frame(2, False) == bytes.fromhex("A00200A2")
    assert frame(4, True) == bytes.fromhex("A00401A5")
    assert frame(3, False) == bytes.fromhex("A00300A3")


def test_usb_open_switches_everything_off(emulator: UsbRelayEmulator) -> None:
    driver = UsbRelayBoard(port=str(emulator.path), channels=4)
    assert isinstance(driver, RelayDriver)
    assert driver.name == f"usb relay on {emulator.path}"
    assert driver.get(1) is None and not driver.connected
    driver.open()
    try:
        assert received_after(emulator, 0, 16) == b"".join(frame(ch, False) for ch in (1, 2, 3, 4))
        assert driver.connected
        assert [driver.get(ch) for ch in (1, 2, 3, 4)] == [False] * 4
    finally:
        driver.release()


def test_usb_log_records_each_frame_in_order(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    before = time.time()
    for channel, on in [(1, True), (3, True), (1, False)]:
        board.set(channel, on)
    wait_for(lambda: emulator.frames == 7, what="three more frames")
    log = emulator.log[-3:]
    assert [entry[1:] for entry in log] == [(1, True), (3, True), (1, False)]
    assert all(before <= entry[0] <= time.time() for entry in log)
    assert emulator.states == {1: False, 2: False, 3: True, 4: False}


def test_usb_bad_checksum_is_counted_not_applied(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    write_line(emulator, bytes.fromhex("A00101FF"))  # channel 1 on with a wrong checksum
    wait_for(lambda: emulator.bad_frames == 1, what="the bad frame counted")
    assert emulator.states[1] is False and emulator.frames == 4
    board.set(2, True)  # the line is still in sync afterwards
    wait_for(lambda: emulator.states[2], what="channel 2 on")
    assert emulator.states == {1: False, 2: True, 3: False, 4: False}
    assert emulator.bad_frames == 1


def test_usb_garbage_before_a_frame_is_skipped(emulator: UsbRelayEmulator) -> None:
    write_line(emulator, b"\x00\x55\x13\xff" + frame(3, True))
    wait_for(lambda: emulator.states[3], what="channel 3 on after garbage")
    assert emulator.garbage == 4 and emulator.bad_frames == 0
    # A stray 0xA0 is a false start: that attempt is rejected, the real frame after it still applies.
    write_line(emulator, b"\xa0\x42" + frame(2, True))
    wait_for(lambda: emulator.states[2], what="channel 2 on after a false start")
    assert emulator.bad_frames == 1
    # A frame split across writes is reassembled.
    write_line(emulator, frame(4, True)[:2])
    write_line(emulator, frame(4, True)[2:])
    wait_for(lambda: emulator.states[4], what="channel 4 on from a split frame")
    assert emulator.states == {1: False, 2: True, 3: True, 4: True}


def test_usb_unknown_channel_is_rejected(tmp_path: Path) -> None:
    with UsbRelayEmulator(tmp_path, channels=2) as emu:
        write_line(emu, frame(3, True) + frame(2, True))
        assert emu.wait_for(lambda: emu.states[2], TIMEOUT)
        assert emu.bad_frames == 1 and 3 not in emu.states


def test_usb_unplug_and_replug(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    board.set(1, True)
    board.set(3, True)
    wait_for(lambda: emulator.states[3], what="channels 1 and 3 on")
    emulator.unplug()
    assert not emulator.path.exists()
    assert emulator.states == {1: False, 2: False, 3: False, 4: False}  # USB power gone
    assert not board.connected
    with pytest.raises(RelayError, match="unplugged") as raised:
        board.set(2, True)
    assert str(emulator.path) in str(raised.value)
    assert not board.connected
    assert board.get(1) is True and board.get(2) is False  # the last states that reached the board

    emulator.replug()
    start = len(emulator.raw)
    board.set(4, True)
    # A reopened board starts all off (as a freshly powered one is); re-energizing the others is the
    # relay action's job, behind its interlock. Then the command itself.
    expected = frame(1, False) + frame(2, False) + frame(3, False) + frame(4, True)
    assert received_after(emulator, start, 16) == expected
    wait_for(lambda: emulator.states[4], what="channel 4 on")
    assert emulator.states == {1: False, 2: False, 3: False, 4: True}
    assert board.get(1) is False and board.connected


@pytest.mark.parametrize("error, message", [
    (serial.SerialException("write failed: [Errno 5] Input/output error"), "unplugged"),
    (OSError(errno.EIO, "Input/output error"), "unplugged"),
    (serial.SerialTimeoutException("Write timeout"), "timed out"),
])
def test_usb_write_failure_closes_and_next_set_reopens(emulator: UsbRelayEmulator, board: UsbRelayBoard,
                                                       monkeypatch: pytest.MonkeyPatch, error: Exception,
                                                       message: str) -> None:
    board.set(1, True)
    wait_for(lambda: emulator.states[1], what="channel 1 on")
    port = board._serial
    assert port is not None

    def fail(data: bytes) -> int:
        raise error

    monkeypatch.setattr(port, "write", fail)
    with pytest.raises(RelayError, match=message) as raised:
        board.set(2, True)
    assert str(emulator.path) in str(raised.value)
    assert not board.connected and not port.is_open
    start = len(emulator.raw)
    board.set(3, True)  # reopens the port, switches the others off (a fresh start), then the command
    expected = frame(1, False) + frame(2, False) + frame(4, False) + frame(3, True)
    assert received_after(emulator, start, 16) == expected
    assert board.connected


def test_usb_resend_does_not_pulse_the_channel_being_set(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    board.set(1, True)
    emulator.replug()  # power-cycled while the driver still holds the old port
    start = len(emulator.raw)
    board.set(1, False)
    assert received_after(emulator, start, 16) == b"".join(frame(ch, False) for ch in (2, 3, 4, 1))


def test_usb_open_reconnects_after_replug(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    board.set(2, True)
    emulator.unplug()
    with pytest.raises(RelayError, match="unplugged"):
        board.open()
    emulator.replug()
    before = emulator.frames
    board.open()
    wait_for(lambda: emulator.frames >= before + 4, what="the reopened board's frames")
    assert board.connected
    # Reopened all off: nothing is energized again behind the relay action's interlock.
    assert emulator.states == {1: False, 2: False, 3: False, 4: False} and board.get(2) is False


def test_usb_release_deenergizes_everything(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    for channel in (1, 2, 3, 4):
        board.set(channel, True)
    wait_for(lambda: all(emulator.states.values()), what="all channels on")
    board.release()
    wait_for(lambda: not any(emulator.states.values()), what="all channels off")
    assert not board.connected
    assert [board.get(ch) for ch in (1, 2, 3, 4)] == [False] * 4


def test_usb_release_never_raises(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    emulator.unplug()
    board.release()
    board.release()
    UsbRelayBoard(port="/dev/nonexistent-relay").release()


def test_usb_missing_port_names_it() -> None:
    driver = UsbRelayBoard(port="/dev/nonexistent-relay", channels=2)
    with pytest.raises(RelayError, match="/dev/nonexistent-relay.*unplugged"):
        driver.open()
    assert not driver.connected


@pytest.mark.parametrize("params, message", [
    ({"port": ""}, "port"),
    ({"port": 5}, "port"),
    ({"port": "/dev/ttyUSB0", "channels": 0}, "channels"),
    ({"port": "/dev/ttyUSB0", "channels": 9}, "channels"),
    ({"port": "/dev/ttyUSB0", "channels": True}, "channels"),
    ({"port": "/dev/ttyUSB0", "baud": -1}, "baud"),
])
def test_usb_bad_params(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UsbRelayBoard(**params)


def test_bad_channel_is_a_value_error(emulator: UsbRelayEmulator, board: UsbRelayBoard) -> None:
    for channel in (0, 5, True, "1"):
        with pytest.raises(ValueError):
            board.set(channel, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out of range 1..4"):
        check_channel(5, 4)


# ------------------------------------------------------------------- PCF8574


@pytest.fixture
def chip(i2c: SimI2cBuses) -> Pcf8574Model:
    model = Pcf8574Model()
    i2c.attach(1, 0x20, model)
    return model


@pytest.fixture
def relays(i2c: SimI2cBuses) -> Callable[..., Pcf8574Relays]:
    """Makes PCF8574 relays on the test's buses: ``relays(**params)`` (bus 1, address 0x20 unless given)."""
    def make(**params: object) -> Pcf8574Relays:
        return Pcf8574Relays(**{"bus": 1, "address": 0x20, "smbus": i2c.open, **params})  # type: ignore[arg-type]
    return make


def test_pcf_open_writes_all_off(chip: Pcf8574Model, relays: Callable[..., Pcf8574Relays]) -> None:
    driver = relays()
    assert isinstance(driver, RelayDriver)
    assert driver.name == "PCF8574 relays on I2C bus 1 address 0x20"
    assert chip.history == []  # the constructor touches nothing
    driver.open()
    assert [v for _, v in chip.history] == [0xFF]
    assert driver.connected and driver.get(1) is False
    high = relays(active_low=False)
    high.open()
    assert chip.latch == 0x00


@pytest.mark.parametrize("channel", range(1, 9))
def test_pcf_channel_bits_active_low(chip: Pcf8574Model, channel: int, relays: Callable[..., Pcf8574Relays]) -> None:
    driver = relays()
    driver.open()
    driver.set(channel, True)
    assert chip.latch == 0xFF & ~(1 << (channel - 1))
    driver.set(channel, False)
    assert chip.latch == 0xFF


def test_pcf_active_high_and_spare_bits(chip: Pcf8574Model, relays: Callable[..., Pcf8574Relays]) -> None:
    driver = relays(active_low=False, channels=4)
    driver.open()
    assert chip.latch == 0xF0  # relays off (0), spare bits released high for inputs
    driver.set(3, True)
    driver.set(1, True)
    assert chip.latch == 0xF5
    assert driver.get(3) is True and driver.get(2) is False


def test_pcf_shadow_register_ignores_input_levels(chip: Pcf8574Model, relays: Callable[..., Pcf8574Relays],
                                                 i2c: SimI2cBuses) -> None:
    driver = relays(channels=4)  # bits 0-3 relays, bits 4-7 feedback inputs on the same chip
    inputs = Pcf8574Inputs(bus=1, address=0x20, channels=8, smbus=i2c.open)
    driver.open()
    inputs.open()
    driver.set(1, True)
    chip.set_input(1, False)  # something outside pulls the (released) channel 2 pin low
    chip.set_input(4, False)  # feedback contact on input 5 closed
    assert chip.pins == 0b1110_1100
    assert inputs.read(5) is True and inputs.read(6) is False
    writes = len(chip.history)
    assert inputs.read(2) is True  # reading changes nothing on the outputs
    assert len(chip.history) == writes
    driver.set(3, True)
    assert chip.latch == 0b1111_1010  # channels 1 and 3 low, channel 2 and the input bits still released
    assert driver.get(2) is False


def test_pcf_release_switches_all_off(chip: Pcf8574Model, relays: Callable[..., Pcf8574Relays]) -> None:
    driver = relays()
    driver.open()
    for channel in (1, 4, 8):
        driver.set(channel, True)
    assert chip.latch == 0x76
    driver.release()
    assert chip.latch == 0xFF
    assert not driver.connected
    assert [driver.get(ch) for ch in (1, 4, 8)] == [False] * 3
    driver.release()  # idempotent, never raises


def test_pcf_missing_device_names_bus_and_address(chip: Pcf8574Model, i2c: SimI2cBuses) -> None:
    driver = Pcf8574Relays(bus=3, address=0x27, smbus=i2c.open)
    with pytest.raises(RelayError, match="I2C bus 3 address 0x27") as raised:
        driver.open()
    assert "No such device or address" in str(raised.value)
    assert not driver.connected
    driver.release()  # never raises


def test_pcf_chip_lost_and_back(chip: Pcf8574Model, relays: Callable[..., Pcf8574Relays], i2c: SimI2cBuses) -> None:
    driver = relays()
    driver.open()
    driver.set(2, True)
    i2c.detach(1, 0x20)
    assert not driver.connected
    with pytest.raises(RelayError, match="bus 1 address 0x20"):
        driver.set(5, True)
    assert driver.get(5) is False and driver.shadow == 0xFD
    fresh = i2c.attach(1, 0x20, Pcf8574Model())  # powered up again: latch 0xFF
    driver.set(5, True)  # the whole shadow goes out, channel 2 included
    assert isinstance(fresh, Pcf8574Model) and fresh.latch == 0xED
    assert driver.connected


def test_pcf_inputs_read_external_levels(chip: Pcf8574Model, i2c: SimI2cBuses) -> None:
    low = Pcf8574Inputs(bus="/dev/i2c-1", address=0x20, channels=8, active_low=True, smbus=i2c.open)
    high = Pcf8574Inputs(bus=1, address=0x20, channels=8, active_low=False, smbus=i2c.open)
    low.open()
    high.open()
    assert chip.history == []  # inputs are only read
    assert [low.read(ch) for ch in range(1, 9)] == [False] * 8
    chip.set_input(0, False)
    chip.set_input(6, False)
    assert [low.read(ch) for ch in range(1, 9)] == [True, False, False, False, False, False, True, False]
    assert [high.read(ch) for ch in range(1, 9)] == [False, True, True, True, True, True, False, True]
    chip.set_input(0, True)
    assert low.read(1) is False
    assert low.connected
    low.release()
    assert not low.connected
    i2c.detach(1, 0x20)
    with pytest.raises(RelayError, match="inputs on I2C bus 1 address 0x20"):
        high.read(1)


def test_pcf_real_smbus2_missing_bus() -> None:
    driver = Pcf8574Relays(bus=99, address=0x21)  # smbus2.SMBus; no /dev/i2c-99 here
    with pytest.raises(RelayError, match="cannot open I2C bus 99"):
        driver.open()
    driver.release()


@pytest.mark.parametrize("params, message", [
    ({"address": 0x50}, "0x50 is not a PCF8574"),
    ({"address": "0x20"}, "not a PCF8574"),
    ({"channels": 9}, "channels"),
    ({"bus": -1}, "bus"),
    ({"active_low": "yes"}, "active_low"),
    ({"smbus": "sim.i2c"}, "module:Class"),
    ({"smbus": "sim.nothere:X"}, "cannot import"),
    ({"smbus": "sim.i2c:Nope"}, "no class"),
])
def test_pcf_bad_params(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pcf8574Relays(**params)


# ------------------------------------------------------------------ simulated I2C buses


def test_simsmbus_routing_and_errors(chip: Pcf8574Model, i2c: SimI2cBuses) -> None:
    with i2c.open("/dev/i2c-1") as bus:
        bus.write_byte(0x20, 0x0F)
        assert i2c.device("1", 0x20) is chip and chip.latch == 0x0F
        with pytest.raises(OSError) as missing:
            bus.read_byte(0x21)
        assert missing.value.errno == errno.ENXIO
        with pytest.raises(ValueError):
            bus.write_byte(0x20, 256)
    with pytest.raises(OSError) as closed:
        bus.read_byte(0x20)
    assert closed.value.errno == errno.EBADF
    with pytest.raises(ValueError, match="already has a device"):
        i2c.attach(1, 0x20, Pcf8574Model())
    assert i2c.detach(2, 0x20) is None


def test_buses_belong_to_their_owner(chip: Pcf8574Model, i2c: SimI2cBuses) -> None:
    other = SimI2cBuses()  # another simulated machine's buses
    with pytest.raises(OSError) as nothing:
        other.open(1).read_byte(0x20)
    assert nothing.value.errno == errno.ENXIO
    assert other.attach(1, 0x20, Pcf8574Model()) is not chip  # the address is free on that machine's bus 1
    assert i2c.device(1, 0x20) is chip


def test_simsmbus_custom_register_device(i2c: SimI2cBuses) -> None:
    class Registers(SimI2cDevice):
        def __init__(self) -> None:
            super().__init__()
            self.regs = bytearray(256)

        def read_byte_data(self, register: int) -> int:
            return self.regs[register]

        def write_byte_data(self, register: int, value: int) -> None:
            self.regs[register] = value

    i2c.attach(0, 0x48, Registers())
    bus = i2c.open(0)
    bus.write_word_data(0x48, 0x10, 0xBEEF)
    assert bus.read_byte_data(0x48, 0x10) == 0xEF and bus.read_word_data(0x48, 0x10) == 0xBEEF
    bus.write_i2c_block_data(0x48, 0x20, [1, 2, 3])
    assert bus.read_i2c_block_data(0x48, 0x20, 3) == [1, 2, 3]
    with pytest.raises(OSError) as unmodelled:
        bus.read_byte(0x48)
    assert unmodelled.value.errno == errno.EIO


def test_daemon_alarms_when_the_usb_relay_board_is_unplugged(tmp_path: Path,
                                                             racks: Callable[..., TwoNodeRack]) -> None:
    """A daemon whose board profile names a USB relay board raises an alarm when it disappears."""
    board = tmp_path / "usb-board.toml"
    with UsbRelayEmulator(tmp_path / "usb", channels=2) as emulator:
        board.write_text('name = "usb-sim"\nextensions = ["sim.extension:install"]\n'
                         'network = "sim.network:RecordingNetwork"\n'
                         '[relays.trunk]\ndriver = "firmware.drivers.relays.usb:UsbRelayBoard"\n'
                         f'port = "{emulator.path}"\nchannels = 2\n')
        rack = racks(base=tmp_path / "rack", nodes=("alpha",), board=str(board),
                     relay_groups=[{"name": "trunks", "outputs": ["trunk:1", "trunk:2"], "settle_ms": 0}])
        try:
            rack.wait_state("alpha", "ACTIVE", timeout=20)
            assert emulator.wait_for(lambda: emulator.states == {1: True, 2: True}, 10)
            emulator.unplug()
            rack.wait_until("alpha", lambda brief: any("relay bank trunk" in a["text"] for a in brief["alarms"]), 10,
                            what="the unplugged-board alarm")
        finally:
            rack.stop()  # before the emulator goes (the fixture would stop it only after)
