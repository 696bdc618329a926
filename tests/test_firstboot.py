"""First boot of an appliance: the box's name from its hardware, its own key, "unpaired" until paired."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware.appliance import factoryreset, machineid
from firmware.appliance.firstboot import first_boot, hardware_serial, load_box
from firmware.cli import main


def _sys(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_dmi_serial_names_the_box(tmp_path: Path) -> None:
    root = _sys(tmp_path, {"sys/class/dmi/id/product_serial": "TANDEM-0042\n"})
    assert hardware_serial(root) == ("TANDEM-0042", "dmi")


def test_a_placeholder_serial_falls_back_to_the_device_tree_then_the_mac(tmp_path: Path) -> None:
    root = _sys(tmp_path, {"sys/class/dmi/id/product_serial": "To Be Filled By O.E.M.\n",
                           "sys/class/net/lo/type": "772", "sys/class/net/lo/address": "00:00:00:00:00:00",
                           "sys/class/net/eth0/type": "1", "sys/class/net/eth0/address": "52:54:00:7a:00:01",
                           "sys/class/net/eth0/device/vendor": "0x1af4",
                           "sys/class/net/veth0/type": "1", "sys/class/net/veth0/address": "aa:bb:cc:dd:ee:ff"})
    assert hardware_serial(root) == ("5254007A0001", "mac")  # the virtual veth0 (no device) is not the box
    _sys(tmp_path, {"sys/firmware/devicetree/base/serial-number": "10000000abcdef01\0"})
    assert hardware_serial(root) == ("10000000abcdef01", "devicetree")


def test_no_serial_anywhere_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no serial number"):
        hardware_serial(tmp_path)


def test_first_boot_makes_the_key_once_and_two_boxes_share_nothing(tmp_path: Path) -> None:
    a_root = _sys(tmp_path / "a", {"sys/class/dmi/id/product_serial": "A1"})
    b_root = _sys(tmp_path / "b", {"sys/class/dmi/id/product_serial": "B2"})
    a = first_boot(tmp_path / "a-state", a_root, owner=None)
    b = first_boot(tmp_path / "b-state", b_root, owner=None)
    assert (a.serial, b.serial) == ("A1", "B2")
    assert a.identity != b.identity
    assert (tmp_path / "a-state/identity.key").stat().st_mode & 0o777 == 0o600
    key_before = (tmp_path / "a-state/identity.key").read_bytes()
    again = first_boot(tmp_path / "a-state", b_root, owner=None)  # a second run changes nothing
    assert again == a and (tmp_path / "a-state/identity.key").read_bytes() == key_before
    assert load_box(tmp_path / "a-state") == a


def test_status_of_an_unpaired_box_says_unpaired_without_a_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    first_boot(state, _sys(tmp_path / "root", {"sys/class/dmi/id/product_serial": "TANDEM-7"}), owner=None)
    monkeypatch.setattr("firmware.appliance.firstboot.STATE_DIR", state)
    config = tmp_path / "tandem.toml"   # not there: the box has not been paired
    assert main(["--config", str(config), "status", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "unpaired" and "TANDEM-7" in shown["message"]
    # Once paired (a config exists), status asks the daemon, which is not running here.
    config.write_text("node = 'a'\n")
    assert main(["--config", str(config), "status"]) != 0


def _block_tree(root: Path, disk_sectors: int, start: int, size: int) -> Path:
    """A fake /sys/class/block with disk vda and its 4th partition vda4, and a /dev link to it."""
    disk = root / "devices/vda"
    (disk / "vda4").mkdir(parents=True)
    (disk / "size").write_text(f"{disk_sectors}\n")
    for name, value in (("partition", 4), ("start", start), ("size", size)):
        (disk / "vda4" / name).write_text(f"{value}\n")
    block = root / "class/block"
    block.mkdir(parents=True)
    (block / "vda").symlink_to(disk)
    (block / "vda4").symlink_to(disk / "vda4")
    return block


def test_a_data_partition_that_reaches_the_end_of_the_disk_is_left_alone(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware.appliance import growdata

    ran: list[list[str]] = []
    monkeypatch.setattr(growdata, "_run", lambda argv, text_input=None, ok=(0,): ran.append(argv))
    link = tmp_path / "data"
    link.symlink_to("/dev/vda4")
    block = _block_tree(tmp_path / "sys", disk_sectors=8_000_000, start=4_000_000, size=3_998_000)
    assert "already reaches the end" in growdata.grow_data(link, block)
    assert ran == []
    # With room after it, the steps run in order: backup GPT to the end, extend, tell the kernel, check the
    # (unmounted) file system, resize.
    block = _block_tree(tmp_path / "sys2", disk_sectors=16_000_000, start=4_000_000, size=524_288)
    growdata.grow_data(link, block)
    assert [argv[0] for argv in ran] == ["sfdisk", "sfdisk", "partx", "e2fsck", "resize2fs"]
    assert ran[1][-3:] == ["-N", "4", "/dev/vda"] and ran[4] == ["resize2fs", "/dev/vda4"]


# ---------------------------------------------------------------- the machine id across boots

def _grubenv(tmp_path: Path) -> Path:
    """A GRUB environment block as the image's ESP holds it (made by the real grub-editenv)."""
    if shutil.which("grub-editenv") is None:
        pytest.skip("grub-editenv (Debian package grub-common, which ./dev installs) is missing")
    env = tmp_path / "EFI/BOOT/grubenv"
    env.parent.mkdir(parents=True)
    subprocess.run(["grub-editenv", str(env), "create"], check=True)
    subprocess.run(["grub-editenv", str(env), "set", "ORDER=A B", "A_OK=1"], check=True)
    return env


def _listed(env: Path) -> dict[str, str]:
    lines = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in lines.splitlines())


def test_first_boot_keeps_this_boots_machine_id_in_grubenv(tmp_path: Path) -> None:
    env = _grubenv(tmp_path)
    current = tmp_path / "machine-id"
    current.write_text("4f1f0c2b8e7d4a55a9a3c1d2e3f40506\n")
    assert machineid.keep(env, current) == "4f1f0c2b8e7d4a55a9a3c1d2e3f40506"
    assert _listed(env) == {"ORDER": "A B", "A_OK": "1", "MACHINE_ID": "4f1f0c2b8e7d4a55a9a3c1d2e3f40506"}
    current.write_text("")  # no id this boot (an empty, read-only /etc/machine-id): a new one
    made = machineid.keep(env, current)
    assert len(made) == 32 and made != "4f1f0c2b8e7d4a55a9a3c1d2e3f40506" and _listed(env)["MACHINE_ID"] == made


def test_a_factory_reset_forgets_the_machine_id(tmp_path: Path) -> None:
    env = _grubenv(tmp_path)
    machineid.keep(env, Path("/dev/null"))
    factoryreset.request(tmp_path / "tandem-factory-reset")
    assert (tmp_path / "tandem-factory-reset").exists()
    assert "MACHINE_ID" not in _listed(env) and _listed(env)["A_OK"] == "1"  # the slot choice is untouched


def test_no_esp_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(machineid.MachineIdError, match="does not exist"):
        machineid.keep(tmp_path / "EFI/BOOT/grubenv", Path("/dev/null"))
