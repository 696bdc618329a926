"""The decision core's settings, from the node configuration (times in seconds)."""

from __future__ import annotations

from firmware.config import Config
from firmware.core.cluster import Settings
from firmware.core.states import Role


def settings_from_config(config: Config) -> Settings:
    """The decision core's settings from the node configuration."""
    node = config.node
    t = node.timers
    return Settings(
        node=node.node, peer=node.peer, role=Role.parse(node.role),
        heartbeat_s=t.heartbeat_ms / 1000, deadtime_s=t.deadtime_ms / 1000, initdead_s=t.initdead_ms / 1000,
        handover_timeout_s=t.handover_timeout_ms / 1000, shutdown_timeout_s=t.shutdown_timeout_ms / 1000,
        critical_health=node.health.critical,
        witness_required=bool(node.witness.targets), witness_min_health=node.witness.min_health,
        failback=node.failback.policy, failback_hold_down_s=node.failback.hold_down_s,
        failback_min_uptime_s=node.failback.min_uptime_s, failback_window_minutes=node.failback.window_minutes,
        flap_max_failures=node.flap.max_failures, flap_window_s=node.flap.window_min * 60,
        on_action_failure=node.actions.on_failure, takeover_backoff_s=node.actions.veto_backoff_s,
        fence_isolated=node.fencing.isolated,
        fence_stall_s=(node.fencing.stall_ms or t.deadtime_ms - t.heartbeat_ms) / 1000,
        lan_arbitration=node.arbitration.enabled, lan_confirm_s=node.arbitration.confirm_ms / 1000,
        # A round is delivered when it ends; the next one ends a round later: older than this, the rounds stopped.
        lan_fresh_s=3 * node.arbitration.round_ms / 1000 + t.heartbeat_ms / 1000,
        lan_claim_delay_s=node.arbitration.claim_delay_ms / 1000, held_escalate_s=node.arbitration.held_escalate_s,
        fencing=bool(node.fencing.device.agent), fence_delay_s=node.fencing.device.delay_s,
    )
