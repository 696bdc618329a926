"""Serial framing: COBS frames delimited by zero bytes, resynchronising after noise."""

from __future__ import annotations

from cobs import cobs
from hypothesis import given, settings, strategies as st

from firmware.core.links import SERIAL_MAX_FRAME, FrameDecoder, encode_frame

SETTINGS = settings(max_examples=150, deadline=None)

packets_st = st.lists(st.binary(min_size=1, max_size=120), min_size=1, max_size=30)
# Noise is weighted towards zero bytes and COBS code bytes so it often looks like frames.
noise_byte = st.one_of(st.just(0), st.integers(1, 8), st.integers(0, 255))
noise_st = st.lists(noise_byte, min_size=0, max_size=50).map(bytes)


def is_subsequence(wanted: list[bytes], got: list[bytes]) -> bool:
    remaining = iter(got)
    return all(any(item == packet for item in remaining) for packet in wanted)


def decode_all(stream: bytes, cuts: list[int] | None = None) -> tuple[list[bytes], int]:
    decoder = FrameDecoder()
    packets: list[bytes] = []
    malformed = 0
    points = sorted(set(cuts or [])) + [len(stream)]
    start = 0
    for point in points:
        got, bad = decoder.feed(stream[start:point])
        packets += got
        malformed += bad
        start = point
    return packets, malformed


def noisy_stream(packets: list[bytes], noises: list[bytes]) -> bytes:
    stream = noises[0]
    for packet, noise in zip(packets, noises[1:]):
        stream += encode_frame(packet) + noise
    return stream


def test_encode_frame_shape() -> None:
    packet = b"\x00TH\x00\x01" + bytes(range(256))
    frame = encode_frame(packet)
    assert frame[0] == 0 and frame[-1] == 0
    assert 0 not in frame[1:-1]
    assert cobs.decode(frame[1:-1]) == packet


def test_clean_stream_round_trips_exactly() -> None:
    packets = [b"\x00", b"\x00\x00\x00", b"a", bytes(range(120)), b"\xff" * 120]
    stream = b"".join(encode_frame(p) for p in packets)
    assert decode_all(stream) == (packets, 0)


@SETTINGS
@given(data=st.data(), packets=packets_st)
def test_packets_survive_noise_between_frames(data: st.DataObject, packets: list[bytes]) -> None:
    noises = data.draw(st.lists(noise_st, min_size=len(packets) + 1, max_size=len(packets) + 1))
    stream = noisy_stream(packets, noises)
    got, _ = decode_all(stream)
    # Noise can decode as extra packets (the checksum above the framing drops those),
    # but every real packet comes out byte-exact and in order.
    assert is_subsequence(packets, got), (packets, got)
    # Without noise, nothing else comes out.
    clean, malformed = decode_all(noisy_stream(packets, [b""] * (len(packets) + 1)))
    assert clean == packets and malformed == 0


@SETTINGS
@given(data=st.data(), packets=packets_st)
def test_chunked_feeding_gives_the_same_result(data: st.DataObject, packets: list[bytes]) -> None:
    noises = data.draw(st.lists(noise_st, min_size=len(packets) + 1, max_size=len(packets) + 1))
    stream = noisy_stream(packets, noises)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    whole = decode_all(stream)
    chunked = decode_all(stream, cuts)
    assert chunked == whole
    assert is_subsequence(packets, chunked[0])
    # Byte by byte too.
    assert decode_all(stream, list(range(len(stream)))) == whole


def test_noise_with_a_zero_inside_a_gap_does_not_hide_the_next_packet() -> None:
    packets = [b"first", b"second\x00packet", b"third"]
    noises = [b"\x05ab\x00c", b"\x00\x00\x07", b"\xff\x00\x03", b"\x00"]
    got, malformed = decode_all(noisy_stream(packets, noises))
    assert is_subsequence(packets, got)
    assert malformed >= 1


def test_overlong_garbage_is_dropped_and_counted_then_the_decoder_recovers() -> None:
    decoder = FrameDecoder()
    garbage = b"\xff" * (SERIAL_MAX_FRAME + 100)
    packets, malformed = decoder.feed(garbage)
    assert packets == [] and malformed == 1
    packets, malformed = decoder.feed(encode_frame(b"after the noise") + encode_frame(b"\x00again\x00"))
    assert packets == [b"after the noise", b"\x00again\x00"]
    assert malformed == 0


def test_overlong_garbage_in_small_chunks_is_dropped_and_the_decoder_recovers() -> None:
    decoder = FrameDecoder()
    garbage = b"\xfe" * (3 * SERIAL_MAX_FRAME)
    malformed = 0
    for start in range(0, len(garbage), 7):
        got, bad = decoder.feed(garbage[start:start + 7])
        assert got == []
        malformed += bad
        assert len(decoder._buffer) <= SERIAL_MAX_FRAME  # memory stays bounded
    assert malformed >= 1
    got, bad = decoder.feed(encode_frame(b"hello"))
    assert b"hello" in got and got[-1] == b"hello"


def test_custom_max_frame_is_respected() -> None:
    decoder = FrameDecoder(max_frame=16)
    packets, malformed = decoder.feed(b"\x01" * 17)
    assert (packets, malformed) == ([], 1)
    packets, malformed = decoder.feed(encode_frame(b"0123456789"))
    assert packets == [b"0123456789"] and malformed == 0


def test_invalid_cobs_between_delimiters_is_malformed() -> None:
    decoder = FrameDecoder()
    # Code byte 0x05 promises four data bytes, only two follow before the delimiter.
    packets, malformed = decoder.feed(b"\x00\x05ab\x00" + encode_frame(b"ok"))
    assert packets == [b"ok"] and malformed == 1
