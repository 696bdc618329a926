"""The parts of the node configuration the decision core decides with.

Every time is in seconds (the `_s` suffix); the failback window is in minutes
of the local day. The shell builds a `Settings` from the config once at start
(`firmware.core.daemon.settings_from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.states import Role


@dataclass(frozen=True)
class Settings:
    """The parts of the configuration the core decides with (times in seconds)."""

    node: str
    peer: str
    role: Role = Role.EQUAL
    heartbeat_s: float = 0.1
    deadtime_s: float = 0.3
    initdead_s: float = 3.0
    handover_timeout_s: float = 5.0
    shutdown_timeout_s: float = 10.0
    critical_health: int = 30               # below this a node hands over (and is not elected)
    witness_required: bool = False
    witness_min_health: int = 0
    failback: str = "never"  # never | auto | window
    failback_hold_down_s: float = 60.0
    failback_min_uptime_s: float = 300.0
    failback_window_minutes: tuple[int, int] = (120, 240)  # minutes of the day, end < start wraps
    flap_max_failures: int = 3
    flap_window_s: float = 1800.0
    on_action_failure: str = "handover"  # handover | tolerate
    fence_isolated: bool = True           # ACTIVE, every link silent, witness failing: release
    fence_stall_s: float = 0.2            # ACTIVE whose own loop stalled this long: release (deadtime - heartbeat)
    takeover_backoff_s: float = 10.0      # after a vetoed or failed takeover, wait before trying again
    lan_arbitration: bool = False         # prove the shared address free on the LAN before claiming it
    lan_confirm_s: float = 0.15           # the address must be seen free this long (two rounds) before a claim
    lan_fresh_s: float = 0.3              # a probe round older than this proves nothing any more
    lan_claim_delay_s: float = 0.5        # when neither node held the calls, the non-preferred one waits this
    held_escalate_s: float = 5.0          # address held this long while the peer is silent: critical alarm
    fencing: bool = False                 # a fence device can switch the peer off (see `fencing`)
    fence_delay_s: float | None = None    # wait this long before fencing (None: 0 if preferred, else the default)
