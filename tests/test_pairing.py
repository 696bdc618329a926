"""Pairing two boxes (issue 15): the key agreement, the operator's code, and what a man in the middle gets."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.core.protocol import Keyring
from firmware.pairing.protocol import Message, Pairing, PairingError
from firmware.pairing.session import decode, encode, pair_over_serial, save_pairing
from sim.cable import NullModemCable


def settings(name: str, primary: bool = False) -> dict:
    return {"node": name, "primary": primary, "udp": f"192.0.2.{1 if name == 'alpha' else 2}:694"}


def exchange(a: Pairing, b: Pairing, drop: float = 0.0, seed: int = 1, confirm: bool = True) -> None:
    """Run both sides to the end, delivering every message (or losing each with `drop`), with resends."""
    rng = random.Random(seed)
    outbox: list[tuple[Pairing, Message]] = [(b, m) for m in a.pending()] + [(a, m) for m in b.pending()]
    for _ in range(500):
        if a.result is not None and b.result is not None:
            return
        replies: list[tuple[Pairing, Message]] = []
        for target, message in outbox:
            if rng.random() < drop:
                continue
            other = a if target is b else b
            replies += [(other, reply) for reply in target.receive(message)]
        outbox = replies
        for side, other in ((a, b), (b, a)):
            if confirm and side.code is not None and not side.confirmed:
                outbox += [(other, m) for m in side.confirm()]
            outbox += [(other, m) for m in side.pending()]  # the session's resend timer
    raise AssertionError("the pairing did not finish")


def until_codes(a: Pairing, b: Pairing) -> None:
    """Run the key agreement between `a` and `b` until both show a code (nobody confirms)."""
    for _ in range(20):
        outbox = [(b, m) for m in a.pending()] + [(a, m) for m in b.pending()]
        while outbox:
            target, message = outbox.pop(0)
            other = a if target is b else b
            outbox += [(other, reply) for reply in target.receive(message)]
        if a.code and b.code:
            return
    raise AssertionError("no code")


def test_both_boxes_show_the_same_code_and_get_the_same_key() -> None:
    a, b = Pairing(settings("alpha", primary=True)), Pairing(settings("bravo"))
    exchange(a, b)
    assert a.code == b.code and len(a.code.replace(" ", "")) == 6
    assert a.result.cluster_key == b.result.cluster_key and len(a.result.cluster_key) == 32
    assert a.result.fingerprint == b.result.fingerprint
    assert a.result.peer_settings == settings("bravo") and b.result.peer_settings == settings("alpha", True)
    assert {a.initiator, b.initiator} == {True, False}


def test_two_pairings_share_nothing() -> None:
    first = Pairing(settings("alpha")), Pairing(settings("bravo"))
    second = Pairing(settings("alpha")), Pairing(settings("bravo"))
    exchange(*first)
    exchange(*second)
    assert first[0].result.cluster_key != second[0].result.cluster_key


@pytest.mark.parametrize("seed", range(5))
def test_lost_frames_are_repaired_by_resending(seed: int) -> None:
    a, b = Pairing(settings("alpha")), Pairing(settings("bravo"))
    exchange(a, b, drop=0.4, seed=seed)
    assert a.result.cluster_key == b.result.cluster_key


def test_a_man_in_the_middle_makes_the_codes_differ() -> None:
    """Mallory pairs with each box on its own: each pair agrees on a key, but the two codes differ, so the
    operators comparing the panels refuse (one guess: a one-in-a-million chance they match)."""
    alpha, bravo = Pairing(settings("alpha")), Pairing(settings("bravo"))
    to_alpha, to_bravo = Pairing(settings("bravo")), Pairing(settings("alpha"))  # Mallory's two faces
    until_codes(alpha, to_alpha)
    until_codes(bravo, to_bravo)
    assert alpha.code and bravo.code and alpha.code != bravo.code


def test_a_changed_key_breaks_the_commitment() -> None:
    a, b = Pairing(settings("alpha"), random=lambda n: b"\xff" * n), Pairing(settings("bravo"), random=lambda n: b"\x01" * n)
    assert b.receive(a.hello()) == [b.hello()]
    replies = a.receive(b.hello())
    commit = next(m for m in replies if m["t"] == "commit")
    [dh1] = b.receive(commit)
    [dh2] = a.receive(dh1)
    forged = {**dh2, "pub": Pairing(settings("mallory")).public.hex()}
    with pytest.raises(PairingError, match="does not match its commitment"):
        b.receive(forged)


def test_a_second_device_on_the_cable_is_refused() -> None:
    a, b, c = Pairing(settings("alpha")), Pairing(settings("bravo")), Pairing(settings("charlie"))
    a.receive(b.hello())
    with pytest.raises(PairingError, match="a third device on the cable"):
        a.receive(c.hello())


@pytest.mark.parametrize("problem, match", [
    ("loop", "hears its own HELLO"), ("same-name", "both boxes are named"), ("both-primary", "both boxes are set as primary"),
    ("version", "speaks"), ("garbage", "malformed hello"), ("unknown", "unexpected message")])
def test_what_is_refused(problem: str, match: str) -> None:
    a = Pairing(settings("alpha", primary=True))
    with pytest.raises(PairingError, match=match):
        if problem == "loop":
            a.receive(a.hello())
        elif problem == "same-name":
            a.receive(Pairing(settings("alpha")).hello())
        elif problem == "both-primary":
            exchange(a, Pairing(settings("bravo", primary=True)))
        elif problem == "version":
            a.receive({**Pairing(settings("bravo")).hello(), "p": "tandem-pair/0"})
        elif problem == "garbage":
            a.receive({"t": "hello", "p": "tandem-pair/1", "id": "zz", "name": "bravo"})
        else:
            a.receive({"t": "gossip"})


def test_an_operator_who_sees_different_codes_ends_it_on_both_boxes() -> None:
    a, b = Pairing(settings("alpha")), Pairing(settings("bravo"))
    until_codes(a, b)
    with pytest.raises(PairingError, match="the other box ended the pairing: the operator saw different codes"):
        b.receive(a.reject())
    assert a.result is None and b.result is None


def test_frames_carry_only_pairing_messages() -> None:
    from cobs import cobs

    assert decode(cobs.decode(encode({"t": "hello"})[1:-1])) == {"t": "hello"}
    assert decode(b"\x01\x02heartbeat") is None and decode(b"TP{not json") is None and decode(b"TP[1]") is None


def on_both_ends(side: Callable[[str, str], None]) -> None:
    """Run ``side(name, cable_end)`` for alpha (end a) and bravo (end b) at once, and wait for both."""
    threads = [threading.Thread(target=side, args=(n, e)) for n, e in (("alpha", "a"), ("bravo", "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_pairing_over_a_serial_cable_writes_the_same_key_on_both_boxes(tmp_path: Path) -> None:
    cable = NullModemCable(tmp_path / "cable")
    cable.start()
    results: dict[str, object] = {}
    codes: dict[str, str] = {}

    def side(name: str, end: str) -> None:
        def ask(code: str) -> bool:
            codes[name] = code
            return True
        try:
            results[name] = pair_over_serial(str(cable.path(end)), Pairing(settings(name, name == "alpha")), ask, 30)
        except Exception as exc:  # noqa: BLE001 - reported below
            results[name] = exc

    try:
        cable.inject_noise(300, seed=3)  # noise on the line before and between frames costs nothing
        on_both_ends(side)
    finally:
        cable.stop()
    alpha, bravo = results["alpha"], results["bravo"]
    assert not isinstance(alpha, Exception) and not isinstance(bravo, Exception), results
    assert codes["alpha"] == codes["bravo"]
    for name, result in (("alpha", alpha), ("bravo", bravo)):
        save_pairing(result, tmp_path / name / "cluster.key", tmp_path / name / "paired.json", settings(name))
        assert (tmp_path / name / "cluster.key").stat().st_mode & 0o777 == 0o600
    keys = [Keyring.load(tmp_path / n / "cluster.key") for n in ("alpha", "bravo")]
    assert keys[0].key_ids == keys[1].key_ids == [1]
    assert (tmp_path / "alpha" / "cluster.key").read_bytes() == (tmp_path / "bravo" / "cluster.key").read_bytes()
    assert alpha.cluster_key.hex() not in (tmp_path / "alpha" / "paired.json").read_text()


def test_no_box_on_the_other_end_times_out_with_a_reason(tmp_path: Path) -> None:
    cable = NullModemCable(tmp_path / "cable")
    cable.start()
    try:
        with pytest.raises(PairingError, match="no answer from another box on the cable within 1 s"):
            pair_over_serial(str(cable.path("a")), Pairing(settings("alpha")), lambda code: True, timeout=1.0)
    finally:
        cable.stop()


class Watched(Pairing):
    """A pairing that notes the kinds of message it received (to answer after the peer's CONFIRM)."""

    def __init__(self, settings: dict) -> None:
        super().__init__(settings)
        self.received: set[str] = set()

    def receive(self, message: Message) -> list[Message]:
        self.received.add(str(message.get("t")))
        return super().receive(message)


def test_a_conflict_found_on_saying_yes_last_is_told_to_the_other_box(tmp_path: Path) -> None:
    """Bravo's operator answers after alpha's CONFIRM arrived: bravo refuses then, and alpha hears why."""
    cable = NullModemCable(tmp_path / "cable")
    cable.start()
    pairings = {name: Watched({**settings(name), "shared_ips": [f"198.51.100.{n}/24"]})
                for name, n in (("alpha", 100), ("bravo", 101))}
    asks = {"alpha": lambda code: True,
            "bravo": lambda code: True if "confirm" in pairings["bravo"].received else None}
    errors: dict[str, str] = {}

    def side(name: str, end: str) -> None:
        try:
            pair_over_serial(str(cable.path(end)), pairings[name], asks[name], timeout=30)
        except PairingError as exc:
            errors[name] = str(exc)

    try:
        on_both_ends(side)
    finally:
        cable.stop()
    assert errors["bravo"].startswith("the boxes give different shared IPs"), errors
    assert errors["alpha"].startswith("the other box ended the pairing: the boxes give different shared IPs"), errors


def run_pair_cli(tmp_path: Path, answers: dict[str, str],
                 extra: Callable[[str], list[str]] = lambda name: []) -> dict[str, subprocess.CompletedProcess]:
    """`tandem pair` on both ends of a cable, each operator answering the code question with `answers[name]`."""
    cable = NullModemCable(tmp_path / "cable")
    cable.start()
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, end in (("alpha", "a"), ("bravo", "b")):
            answer = tmp_path / f"{name}.answer"  # each reads its answer once it shows the code
            answer.write_text(answers[name] + "\n")
            argv = [sys.executable, "-m", "firmware.cli", "pair", str(cable.path(end)), "--node", name,
                    "--key-file", str(tmp_path / name / "cluster.key"), "--record", str(tmp_path / name / "paired.json"),
                    "--identity", str(tmp_path / name / "identity.key"), "--timeout", "30", *extra(name)] + (["--primary"] if name == "alpha" else [])
            with open(answer) as stdin:
                procs[name] = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True)
        done = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        return done
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cable.stop()


def test_tandem_pair_on_both_boxes(tmp_path: Path) -> None:
    addresses = {"alpha": "192.0.2.1:694", "bravo": "192.0.2.2:694"}
    shared = {"alpha": ["--shared-ip", "198.51.100.100/24", "--shared-interface", "lan0"], "bravo": []}
    done = run_pair_cli(tmp_path, {"alpha": "y", "bravo": "yes"}, lambda name: [
        "--address", addresses[name], "--board", "sim", "--write-config", str(tmp_path / name / "tandem.toml"),
        *shared[name]])
    assert [p.returncode for p in done.values()] == [0, 0], done
    codes = {name: next(line for line in p.stdout.splitlines() if line.startswith("pairing code:")) for name, p in done.items()}
    assert codes["alpha"] == codes["bravo"]
    assert (tmp_path / "alpha" / "cluster.key").read_bytes() == (tmp_path / "bravo" / "cluster.key").read_bytes()
    assert "paired with 'bravo'" in done["alpha"].stdout
    # Each record holds the peer's identity (the bulk channel's key), which is the peer's own identity file.
    from firmware.pairing.identity import load_or_create_identity, public_hex

    for name, peer in (("alpha", "bravo"), ("bravo", "alpha")):
        record = json.loads((tmp_path / name / "paired.json").read_text())
        assert record["peer"] == peer
        assert record["peer_settings"]["identity"] == public_hex(load_or_create_identity(tmp_path / peer / "identity.key"))
        assert (tmp_path / name / "identity.key").stat().st_mode & 0o777 == 0o600
    # Each box's node config, from what the pairing knows, loads as `tandem run` would load it.
    from firmware.config import load_config

    for name, peer, role in (("alpha", "bravo", "primary"), ("bravo", "alpha", "secondary")):
        node = load_config(tmp_path / name / "tandem.toml").node
        assert (node.node, node.peer, node.role, node.key_file) == (name, peer, role, tmp_path / name / "cluster.key")
        serial, udp = node.links
        assert serial.kind == "serial" and udp.bind == addresses[name] and udp.peer == addresses[peer]
        # The bulk channel: beside the heartbeats, pinned to the identity the peer sent while pairing.
        assert node.bulk is not None
        assert (node.bulk.listen, node.bulk.peer) == (addresses[name].replace(":694", ":7140"),
                                                      addresses[peer].replace(":694", ":7140"))
        # The shared IP given on alpha only is in both configs.
        assert [(str(ip.ip), ip.interface) for ip in node.shared_ips] == [("198.51.100.100/24", "lan0")]
        assert node.bulk.peer_identity is None  # it stays in the record, which a re-pairing replaces
        assert node.bulk.record == tmp_path / name / "paired.json"
        assert node.bulk.identity == tmp_path / name / "identity.key"
    again = subprocess.run([sys.executable, "-m", "firmware.cli", "pair", "/dev/null", "--node", "alpha",
                            "--key-file", str(tmp_path / "alpha" / "cluster.key")], capture_output=True, text=True)
    assert again.returncode == 1 and "paired already" in again.stderr


def test_different_shared_ips_on_the_two_boxes_are_refused(tmp_path: Path) -> None:
    done = run_pair_cli(tmp_path, {"alpha": "y", "bravo": "y"}, lambda name: [
        "--shared-ip", "198.51.100.100/24" if name == "alpha" else "198.51.100.101/24", "--shared-interface", "lan0"])
    assert [p.returncode for p in done.values()] == [1, 1]
    for name in ("alpha", "bravo"):
        assert "different shared IPs" in done[name].stderr
        assert not (tmp_path / name / "cluster.key").exists()


@pytest.mark.parametrize("address, why", [("198.51.100.100", "needs a prefix length"),
                                          ("127.0.0.5/8", "cannot be a shared address")])
def test_a_shared_ip_the_config_would_refuse_is_refused_before_pairing(tmp_path: Path, address: str,
                                                                       why: str) -> None:
    done = subprocess.run([sys.executable, "-m", "firmware.cli", "pair", "/dev/null", "--node", "alpha",
                           "--key-file", str(tmp_path / "cluster.key"), "--identity", str(tmp_path / "identity.key"),
                           "--shared-ip", address, "--shared-interface", "lan0"], capture_output=True, text=True)
    assert done.returncode == 1 and f"--shared-ip {address}: " in done.stderr and why in done.stderr, done.stderr
    assert not (tmp_path / "cluster.key").exists()


def test_an_operator_saying_no_writes_nothing_on_either_box(tmp_path: Path) -> None:
    done = run_pair_cli(tmp_path, {"alpha": "y", "bravo": "n"})
    assert done["bravo"].returncode == 1 and "the codes differ" in done["bravo"].stderr
    assert done["alpha"].returncode == 1 and "the other box ended the pairing" in done["alpha"].stderr
    assert not (tmp_path / "alpha" / "cluster.key").exists() and not (tmp_path / "bravo" / "cluster.key").exists()


def test_an_identity_file_that_is_not_a_key_is_a_clear_error(tmp_path: Path) -> None:
    from firmware.pairing.identity import load_or_create_identity

    bad = tmp_path / "identity.key"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="is not a PEM private key"):
        load_or_create_identity(bad)
    made = load_or_create_identity(tmp_path / "new" / "identity.key")
    assert load_or_create_identity(tmp_path / "new" / "identity.key").public_key() == made.public_key()
