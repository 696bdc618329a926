"""PBX and network sensor families against the fake AMI server, the fake SIP responder and loopback."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import icmplib
import pytest
from pydantic import ValidationError

from firmware.core.sensors import network
from firmware.core.sensors.ami import (
    AmiActionError,
    AmiAuthError,
    AmiClient,
    AmiError,
    AsteriskSensor,
)
from firmware.core.sensors.base import Level, SensorContext, SensorError
from firmware.core.sensors.network import CarrierSensor, ReachabilitySensor
from firmware.core.sensors.sip import SipOptionsSensor, parse_sip_uri
from sim.fakeami import FakeAmiServer
from sim.fakesip import FakeSipResponder

SECRET = "s3cret"


@pytest.fixture
def ami() -> Iterator[FakeAmiServer]:
    server = FakeAmiServer(secret=SECRET)
    server.login_fail_delay = 0.05
    with server:
        yield server


def client_for(server: FakeAmiServer, secret: str = SECRET, timeout: float = 2.0) -> AmiClient:
    return AmiClient("127.0.0.1", server.port, username="tandem", secret=secret, timeout=timeout)


def asterisk(server: FakeAmiServer, **options: object) -> AsteriskSensor:
    opts = AsteriskSensor.Options(port=server.port, username="tandem", secret=SECRET, **options)
    return AsteriskSensor("pbx", opts, SensorContext())


# ---- AMI client


def test_login_ok_and_ping(ami: FakeAmiServer) -> None:
    with client_for(ami) as client:
        assert client.version == "9.0.0"
        reply = client.action("Ping")
        assert reply["Ping"] == "Pong" and float(reply["Timestamp"]) > 0
    login = ami.actions[0]
    assert login["Action"] == "Login" and login["Events"] == "off" and login["ActionID"]
    assert ami.actions[-1]["Action"] == "Logoff"


def test_login_failed(ami: FakeAmiServer) -> None:
    with pytest.raises(AmiAuthError, match="Authentication failed"):
        client_for(ami, secret="wrong").connect()
    ami.refuse_login = True
    with pytest.raises(AmiAuthError, match="refused login"):
        client_for(ami).connect()


def test_connection_refused_is_clear() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        client = AmiClient("127.0.0.1", port, username="tandem", secret="x", timeout=1)
        with pytest.raises(AmiError, match="cannot connect"):
            client.connect()


def test_dropped_after_banner(ami: FakeAmiServer) -> None:
    ami.drop_after_banner = True
    with pytest.raises(AmiError, match="closed the connection|connection lost|sending Login failed"):
        client_for(ami).connect()


def test_core_status_and_unknown_action(ami: FakeAmiServer) -> None:
    ami.calls, ami.processed_calls = 3, 120
    with client_for(ami) as client:
        status = client.action("CoreStatus")
        assert status["CoreCurrentCalls"] == "3" and status["CoreProcessedCalls"] == "120"
        with pytest.raises(AmiActionError, match="Invalid/unknown command"):
            client.action("NoSuchAction")
        assert client.action("Ping")["Ping"] == "Pong"  # still usable after an action error


def test_list_action_matches_action_id_amid_unsolicited_events(ami: FakeAmiServer) -> None:
    ami.send_unsolicited_events = True
    ami.registrations = {"itsp1": "Registered", "itsp2": "Rejected"}
    ami.calls = 2
    with client_for(ami) as client:
        response, events = client.list_action("PJSIPShowRegistrationsOutbound")
        assert response["EventList"] == "start"
        aid = response["ActionID"]
        assert all(e["ActionID"] == aid for e in events)
        names = [e["ObjectName"] for e in events if e["Event"] == "OutboundRegistrationDetail"]
        assert names == ["itsp1", "itsp2"]  # not the "stranger" item of another ActionID
        complete = events[-1]
        assert complete["Event"] == "OutboundRegistrationDetailComplete"
        assert complete["ListItems"] == "2" and complete["Registered"] == "1" and complete["NotRegistered"] == "1"
        _, channels = client.list_action("CoreShowChannels")
        assert [e["Event"] for e in channels] == ["CoreShowChannel", "CoreShowChannel", "CoreShowChannelsComplete"]
        assert client.action("Ping")["Ping"] == "Pong"


def test_persistent_connection_survives_events_between_polls(ami: FakeAmiServer) -> None:
    ami.send_unsolicited_events = True
    sensor = asterisk(ami, registrations="none")
    try:
        for _ in range(3):
            assert sensor.read().level == Level.OK
        assert ami.connections == 1
    finally:
        sensor.close()


# ---- the asterisk sensor


def test_sensor_ok(ami: FakeAmiServer) -> None:
    ami.calls, ami.processed_calls = 2, 40
    ami.registrations = {"itsp1": "Registered", "itsp2": "Registered"}
    ami.spans = {1: "OK", 2: "UNCONFIGURED"}
    ami.pri_spans = {1: "up"}
    sensor = asterisk(ami, dahdi=True, pri=True)
    try:
        started = time.monotonic()
        reading = sensor.read()
        took_ms = (time.monotonic() - started) * 1000
    finally:
        sensor.close()
    assert reading.level == Level.OK, reading.summary
    assert reading.values["current_calls"] == 2 and reading.values["processed_calls"] == 40
    assert reading.values["registered"] == 2 and reading.values["not_registered"] == 0
    assert reading.values["dahdi_alarmed"] == 0 and reading.values["pri_down"] == 0
    assert 0 < reading.values["ping_ms"] <= took_ms and reading.units["ping_ms"] == "ms"  # within the read
    assert reading.info["ami_version"] == "9.0.0"
    assert "2 calls" in reading.summary and "2/2 trunks registered" in reading.summary


def test_registration_rejected_is_critical(ami: FakeAmiServer) -> None:
    ami.registrations = {"itsp1": "Rejected", "itsp2": "Registered"}
    sensor = asterisk(ami)
    try:
        reading = sensor.read()
        assert reading.level == Level.CRITICAL
        assert "trunk itsp1 Rejected" in reading.summary
        assert reading.values["registered"] == 1 and reading.values["not_registered"] == 1
        assert "trunk_not_registered" in reading.conditions
        # with a minimum of one registered trunk, one down is only a warning
        tolerant = asterisk(ami, min_registered=1)
        assert tolerant.read().level == Level.WARNING
        tolerant.close()
    finally:
        sensor.close()


def test_chan_sip_registry(ami: FakeAmiServer) -> None:
    ami.registrations = {"itsp1": "Unregistered"}
    sensor = asterisk(ami, registrations="sip")
    try:
        reading = sensor.read()
    finally:
        sensor.close()
    assert reading.level == Level.CRITICAL and "tandem@itsp1 Unregistered" in reading.summary


def test_dahdi_span_red_is_critical(ami: FakeAmiServer) -> None:
    ami.spans = {1: "RED", 2: "OK"}
    sensor = asterisk(ami, registrations="none", dahdi=True)
    try:
        reading = sensor.read()
    finally:
        sensor.close()
    assert reading.level == Level.CRITICAL and "span 1: RED" in reading.summary
    assert reading.values["dahdi_alarmed"] == 1 and "dahdi_span_alarm" in reading.conditions


def test_pri_span_down_is_critical(ami: FakeAmiServer) -> None:
    ami.pri_spans = {1: "up", 2: "down", 3: "alarm"}
    sensor = asterisk(ami, registrations="none", pri=True)
    try:
        reading = sensor.read()
    finally:
        sensor.close()
    assert reading.level == Level.CRITICAL
    assert "PRI span 2: D-channel down" in reading.summary and "PRI span 3: alarm" in reading.summary
    assert reading.values["pri_down"] == 2


def test_configured_module_missing_is_critical(ami: FakeAmiServer) -> None:
    ami.modules = {"pjsip"}
    sensor = asterisk(ami, dahdi=True)
    try:
        reading = sensor.read()
    finally:
        sensor.close()
    assert reading.level == Level.CRITICAL and "dahdi_unavailable" in reading.conditions


def test_login_failure_is_sensor_error(ami: FakeAmiServer) -> None:
    opts = AsteriskSensor.Options(port=ami.port, username="tandem", secret="wrong")
    sensor = AsteriskSensor("pbx", opts, SensorContext())
    with pytest.raises(SensorError, match="Authentication failed"):
        sensor.read()


def test_secret_file(ami: FakeAmiServer, tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text(SECRET + "\n")
    opts = AsteriskSensor.Options(port=ami.port, username="tandem", secret_file=secret, registrations="none")
    sensor = AsteriskSensor("pbx", opts, SensorContext())
    try:
        assert sensor.read().level == Level.OK
    finally:
        sensor.close()
    with pytest.raises(ValidationError, match="exactly one of secret and secret_file"):
        AsteriskSensor.Options(username="tandem")
    with pytest.raises(ValidationError):
        AsteriskSensor.Options(username="tandem", secret="x", bogus=1)


@pytest.mark.parametrize("banner", [True, False])
def test_hung_server_times_out_then_sensor_recovers(ami: FakeAmiServer, banner: bool) -> None:
    ami.hang, ami.banner = True, banner
    sensor = asterisk(ami, timeout_s=1.0, registrations="none")
    try:
        # A read that waited on the hung server would never end (pytest's timeout); it times out
        # instead, and says so (how close to timeout_s: bench/timeouts.py).
        with pytest.raises(SensorError, match="did not answer .* within"):
            sensor.read()
        ami.hang, ami.banner = False, True
        assert sensor.read().level == Level.OK
        # once connected, a server that stops answering times out too, and the next read reconnects
        ami.hang = True
        with pytest.raises(SensorError, match="did not answer Ping within"):
            sensor.read()
        ami.hang = False
        assert sensor.read().level == Level.OK
    finally:
        sensor.close()


def test_sensor_reconnects_after_asterisk_restart(ami: FakeAmiServer) -> None:
    sensor = asterisk(ami, registrations="none")
    try:
        assert sensor.read().level == Level.OK
        ami.drop_connections()  # returns once the server has closed them
        assert sensor.read().level == Level.OK  # the dead kept connection is replaced within the same read
        assert ami.connections == 2
    finally:
        sensor.close()


def test_server_gone_is_sensor_error(ami: FakeAmiServer) -> None:
    sensor = asterisk(ami, registrations="none")
    try:
        assert sensor.read().level == Level.OK
        ami.close()
        with pytest.raises(SensorError, match="Asterisk AMI at 127.0.0.1"):
            sensor.read()
    finally:
        sensor.close()


# ---- SIP OPTIONS


@pytest.fixture
def sip() -> Iterator[FakeSipResponder]:
    with FakeSipResponder() as responder:
        yield responder


def sip_sensor(port: int, **options: object) -> SipOptionsSensor:
    opts = SipOptionsSensor.Options(uri=f"sip:pbx@127.0.0.1:{port}", **options)
    return SipOptionsSensor("sip", opts, SensorContext())


def test_sip_options_ok(sip: FakeSipResponder) -> None:
    started = time.monotonic()
    reading = sip_sensor(sip.port).read()
    took_ms = (time.monotonic() - started) * 1000
    assert reading.level == Level.OK, reading.summary
    assert reading.values["status"] == 200 and 0 < reading.values["rtt_ms"] <= took_ms  # within the read
    assert reading.info["server"].startswith("FakeSIP")


def test_sip_request_is_well_formed(sip: FakeSipResponder) -> None:
    sip_sensor(sip.port).read()
    request = sip.requests[0]
    assert (request.method, request.uri, request.version) == ("OPTIONS", f"sip:pbx@127.0.0.1:{sip.port}",
                                                              "SIP/2.0")
    for name in ("Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Accept", "Content-Length"):
        assert request.header(name), f"missing {name}"
    via = request.header("Via")
    assert via.startswith(f"SIP/2.0/UDP 127.0.0.1:{request.source[1]};") and ";branch=z9hG4bK" in via
    assert ";tag=" in request.header("From") and ";tag=" not in request.header("To")
    assert request.header("CSeq") == "1 OPTIONS" and request.header("Max-Forwards") == "70"
    assert request.header("Accept") == "application/sdp" and request.header("Content-Length") == "0"
    assert request.raw.endswith(b"\r\n\r\n")


def test_sip_matching_uses_the_branch(sip: FakeSipResponder) -> None:
    sip.decoy = True  # a 500 with another branch arrives first and must be ignored
    reading = sip_sensor(sip.port).read()
    assert reading.level == Level.OK and reading.values["status"] == 200


def test_sip_silent_is_critical_within_timeout(sip: FakeSipResponder) -> None:
    sip.silent = True
    reading = sip_sensor(sip.port, timeout_s=1.0).read()  # it returns (how close to timeout_s: bench/timeouts.py)
    assert reading.level == Level.CRITICAL and reading.summary.startswith("no answer from sip:pbx@127.0.0.1")
    assert "no_answer" in reading.conditions
    assert len(sip.requests) >= 2  # retransmitted at T1


def test_sip_retransmission_recovers_a_lost_request(sip: FakeSipResponder) -> None:
    sip.drop_first = 1
    reading = sip_sensor(sip.port, timeout_s=2.0).read()
    assert reading.level == Level.OK and reading.values["rtt_ms"] >= 400
    branches = {r.header("Via").split("branch=")[1].split(";")[0] for r in sip.requests}
    assert len(sip.requests) == 2 and len(branches) == 1  # a retransmission keeps the branch


@pytest.mark.parametrize(("status", "expect", "level"), [
    (404, None, Level.OK), (401, None, Level.OK), (503, None, Level.CRITICAL), (603, None, Level.WARNING),
    (404, [200], Level.WARNING), (503, [200, 503], Level.OK),
])
def test_sip_status_verdicts(sip: FakeSipResponder, status: int, expect: list[int] | None, level: Level) -> None:
    sip.status = status
    reading = sip_sensor(sip.port, expect=expect).read()
    assert reading.level == level and reading.values["status"] == status


def test_sip_provisional_only_is_critical(sip: FakeSipResponder) -> None:
    sip.provisional, sip.silent = True, False
    sip.status = 100
    reading = sip_sensor(sip.port, timeout_s=0.8).read()
    assert reading.level == Level.CRITICAL and "100 Trying but no final answer" in reading.summary


def test_sip_port_unreachable_is_critical() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reading = sip_sensor(port, timeout_s=1.0).read()
    assert reading.level == Level.CRITICAL and "port_unreachable" in reading.conditions


def test_sip_uri_validation() -> None:
    assert parse_sip_uri("sip:pbx@[::1]:5070").port == 5070
    assert parse_sip_uri("sip:127.0.0.1").port == 5060
    for bad in ("sip:pbx@pbx.example.com", "http://127.0.0.1", "sips:127.0.0.1"):
        with pytest.raises(ValidationError):
            SipOptionsSensor.Options(uri=bad)
    with pytest.raises(ValidationError):
        SipOptionsSensor.Options(uri="sip:127.0.0.1", transport="tcp")


# ---- carrier and reachability


def test_carrier_on_loopback() -> None:
    reading = CarrierSensor("lo", CarrierSensor.Options(interface="lo"), SensorContext()).read()
    assert reading.level == Level.OK, reading.summary
    assert reading.values["carrier"] == 1 and reading.values["mtu"] > 0


def test_carrier_missing_interface() -> None:
    reading = CarrierSensor("x", CarrierSensor.Options(interface="nosuch0"), SensorContext()).read()
    assert reading.level == Level.CRITICAL and reading.summary == "nosuch0: no such interface"


def test_carrier_speed_from_sysfs(tmp_path: Path) -> None:
    (tmp_path / "class/net/lo").mkdir(parents=True)
    (tmp_path / "class/net/lo/speed").write_text("1000\n")
    (tmp_path / "class/net/lo/duplex").write_text("full\n")
    reading = CarrierSensor("lo", CarrierSensor.Options(interface="lo"), SensorContext(sysfs=tmp_path)).read()
    assert reading.values["speed_mbps"] == 1000 and reading.info["duplex"] == "full"
    assert "1000 Mbit/s" in reading.summary


def _icmp_allowed() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return False
    return any(low <= gid <= high for gid in {os.getegid(), *os.getgroups()})


@pytest.mark.skipif(not _icmp_allowed(), reason="not root and net.ipv4.ping_group_range excludes this "
                                                "user's groups, so ICMP sockets are not permitted")
def test_reachability_loopback() -> None:
    opts = ReachabilitySensor.Options(target="127.0.0.1", count=3, interval_ms=20, timeout_s=2)
    reading = ReachabilitySensor("gw", opts, SensorContext()).read()
    assert reading.level == Level.OK, reading.summary
    assert reading.values["loss_pct"] == 0 and reading.values["rtt_avg_ms"] >= 0
    assert reading.values["rtt_max_ms"] >= reading.values["rtt_avg_ms"]


def test_reachability_options() -> None:
    with pytest.raises(ValidationError, match="not an IP address"):
        ReachabilitySensor.Options(target="gateway.example.com")
    with pytest.raises(ValidationError, match="leaves no time"):
        ReachabilitySensor.Options(target="127.0.0.1", count=10, interval_ms=1000, timeout_s=2)


def _ping_sockets_allowed() -> bool:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    except (OSError, ValueError):
        return False
    return any(low <= gid <= high for gid in {os.getegid(), *os.getgroups()})


def test_reachability_unprivileged_loopback() -> None:
    """Ping sockets work where ping_group_range allows them, else the error says what to change."""
    opts = ReachabilitySensor.Options(target="127.0.0.1", count=2, interval_ms=20, timeout_s=2, privileged=False)
    sensor = ReachabilitySensor("gw", opts, SensorContext())
    if _ping_sockets_allowed():
        assert sensor.read().level == Level.OK
    else:
        with pytest.raises(SensorError, match="ping_group_range"):
            sensor.read()


@pytest.mark.parametrize(("rtts", "level", "loss"), [
    ([1.0, 2.0, 3.0], Level.OK, 0.0), ([1.0], Level.WARNING, 66.7), ([], Level.CRITICAL, 100.0),
])
def test_reachability_verdicts(monkeypatch: pytest.MonkeyPatch, rtts: list[float], level: Level,
                               loss: float) -> None:
    monkeypatch.setattr(network.icmplib, "ping", lambda address, count, **_: icmplib.Host(address, count, rtts))
    opts = ReachabilitySensor.Options(target="127.0.0.1", count=3)
    reading = ReachabilitySensor("gw", opts, SensorContext()).read()
    assert reading.level == level and reading.values["loss_pct"] == loss
    assert ("rtt_avg_ms" in reading.values) == bool(rtts)
