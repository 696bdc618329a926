"""Gratuitous ARP and unsolicited NA: our struct-built frames against scapy's (docs/library-decisions.md).

    PYTHONPATH=/dir/with/scapy .venv/bin/python bench/frames_scapy.py [N]

Checks both build the same bytes, then prints µs per frame (median and min
of 15 repeats of N builds, N=2000 by default). Without scapy importable, only
ours is timed. Import time and memory: bench/imports.py.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware.core.actions.l2frames import ARP_REQUEST, arp_frame, neighbor_advertisement_frame  # noqa: E402

MAC = bytes.fromhex("020000000001")
MAC_TEXT = "02:00:00:00:00:01"
V4 = ipaddress.IPv4Address("192.0.2.10")
V6 = ipaddress.IPv6Address("2001:db8::100")


def ours_garp() -> bytes:
    """Gratuitous ARP request for V4, as NetlinkNetwork.announce builds it."""
    return arp_frame(MAC, ARP_REQUEST, V4, V4)


def ours_na() -> bytes:
    """Unsolicited neighbour advertisement for V6, as NetlinkNetwork.announce builds it."""
    return neighbor_advertisement_frame(MAC, V6)


def scapy_builders() -> dict[str, Callable[[], bytes]]:
    """The same two frames built with scapy (padded to 60 bytes as ours are); empty without scapy."""
    try:
        from scapy.layers.inet6 import IPv6, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
        from scapy.layers.l2 import ARP, Ether
    except ImportError:
        return {}

    def pad(frame: bytes) -> bytes:
        return frame + b"\0" * max(0, 60 - len(frame))

    def garp() -> bytes:
        return pad(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC_TEXT)
                         / ARP(op=1, hwsrc=MAC_TEXT, psrc=str(V4), hwdst="00:00:00:00:00:00", pdst=str(V4))))

    def na() -> bytes:
        return pad(bytes(Ether(dst="33:33:00:00:00:01", src=MAC_TEXT) / IPv6(src=str(V6), dst="ff02::1", hlim=255)
                         / ICMPv6ND_NA(R=0, S=0, O=1, tgt=str(V6)) / ICMPv6NDOptDstLLAddr(lladdr=MAC_TEXT)))

    return {"scapy GARP": garp, "scapy NA": na}


def main() -> None:
    """Compare the bytes, then time each builder."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    builders: dict[str, Callable[[], bytes]] = {"ours GARP": ours_garp, "ours NA": ours_na, **scapy_builders()}
    same: bool | None = None
    if "scapy GARP" in builders:
        same = builders["scapy GARP"]() == ours_garp() and builders["scapy NA"]() == ours_na()
        print("same bytes: GARP", builders["scapy GARP"]() == ours_garp(), " NA", builders["scapy NA"]() == ours_na())
    else:
        print("scapy not importable: timing ours only")
    figures: dict[str, float | bool | None] = {"ours_garp_us": None, "ours_na_us": None, "scapy_garp_us": None,
                                               "scapy_na_us": None, "same_bytes": same}
    for name, build in builders.items():
        runs = [t / n * 1e6 for t in timeit.repeat(build, number=n, repeat=15)]
        print(f"{name:11s} median {statistics.median(runs):8.2f} µs  min {min(runs):8.2f} µs  (15 repeats x {n})")
        figures[name.lower().replace(" ", "_") + "_us"] = round(statistics.median(runs), 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
