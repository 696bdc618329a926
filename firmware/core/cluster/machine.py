"""The state machine: the start state, one decision, and what the shell must do after it.

A decision runs in three stages:

1. observe: the PeerView of this instant updates the peer facts (`observe`),
   and the latest LAN probe round the LAN facts (`lan`);
2. decide: the handler of the node's state returns a `Decision`
   (`handlers.HANDLERS`); or, when the inputs carry an operator command, the
   command's handler decides instead (`commands.COMMANDS`), and its `Reply`
   comes back in the outputs;
3. finish: the `Outputs` are derived from the old and the new state: the
   state event, whether to send a heartbeat at once (the state or the flags
   changed), when to be called again (the nearest deadline or peer timeout),
   whether a witness check is due, how often to probe the LAN, whether to
   fence the peer, whether to persist, and, on entering
   TAKEOVER or RELEASING, which actions to run.
"""

from __future__ import annotations

from dataclasses import replace

from firmware.core.cluster.commands import COMMANDS
from firmware.core.cluster.fencing import fence_deadline, wants_fence
from firmware.core.cluster.flags import heartbeat_flags
from firmware.core.cluster.guard import hold, may_claim
from firmware.core.cluster.handlers import HANDLERS
from firmware.core.cluster.lan import lan_deadline, observe_lan, probe_cadence
from firmware.core.cluster.observe import observe, silent_since
from firmware.core.cluster.records import ActionKind, Command, Decision, Event, Inputs, Outputs, Reply, RunActions
from firmware.core.cluster.settings import Settings
from firmware.core.cluster.state import ClusterState, Persisted
from firmware.core.cluster.transitions import record_failure
from firmware.core.states import NodeState


def initial_state(settings: Settings, persisted: Persisted, now: float, wall: float) -> tuple[ClusterState, Outputs]:
    """The state at daemon start. A crash while holding resources counts as a failure."""
    events = [Event("start", {"epoch": persisted.epoch, "last_state": persisted.last_state.name})]
    if not persisted.clean_exit and persisted.last_state.holds_resources:
        persisted, flap_events = record_failure(settings, persisted, wall, "restarted after a crash while ACTIVE")
        events += flap_events
    persisted = replace(persisted, clean_exit=False)
    state = ClusterState(state=NodeState.STARTING, since=now, started_at=now, persisted=persisted,
                         reason=f"waiting up to {settings.initdead_s:g} s for the peer")
    return state, Outputs(events=tuple(events), send_now=True, wake_at=now + settings.initdead_s, persist=True)


def step(settings: Settings, st: ClusterState, inp: Inputs) -> tuple[ClusterState, Outputs]:
    """One decision at `inp.now`. Returns the next state and what the shell must do.

    With `inp.command` set the decision applies that operator command and
    nothing else; `Outputs.reply` answers it.
    """
    before = st
    observed = observe(settings, st, inp)
    observed = replace(observed, state=observe_lan(settings, observed.state, inp))
    if inp.command is not None:
        return _command(settings, observed, inp, inp.command)
    st = observed.state
    if st.backoff is not None and inp.now >= st.backoff.until:
        st = replace(st, backoff=None)
    decided = HANDLERS[st.state](settings, st, inp)
    return _finish(settings, before, decided.state, inp, list(observed.events + decided.events))


def _command(settings: Settings, observed: Decision, inp: Inputs, command: Command) -> tuple[ClusterState, Outputs]:
    """Apply an operator command. Unsafe requests are refused with the reason unless forced."""
    # Outputs compare with the observed state: a command sends at once only for what it changed.
    before = st = observed.state
    handler = COMMANDS.get(command.name)
    if handler is None:
        reply = Reply(False, f"unknown command {command.name!r}")
    else:
        st, reply = handler(settings, st, inp, command.force)
    data = {"command": command.name, "force": command.force, "message": reply.message}
    if command.source is not None:
        data["source"] = command.source
    events = list(observed.events) + [Event("command" if reply.ok else "refused", data)]
    st, out = _finish(settings, before, st, inp, events)
    return st, replace(out, reply=reply)


def _finish(settings: Settings, before: ClusterState, st: ClusterState, inp: Inputs,
            events: list[Event]) -> tuple[ClusterState, Outputs]:
    """The outputs of a decision from `before` to `st`."""
    if st.state != before.state:
        events.append(Event("state", {"from": before.state.name, "to": st.state.name,
                                      "reason": st.reason, "epoch": st.persisted.epoch}))
    flags_changed = heartbeat_flags(st) != heartbeat_flags(before)
    last_rx = inp.peer.last_rx
    wake = [st.started_at + settings.initdead_s] if st.state == NodeState.STARTING else []
    if last_rx is not None and st.peer.alive:
        wake.append(last_rx + settings.deadtime_s + 1e-4)
    if st.peer.foreign_version is not None and inp.peer.foreign_at is not None:
        wake.append(inp.peer.foreign_at + settings.deadtime_s + 1e-4)
    for record in (st.request, st.grant, st.shutdown):
        if record is not None:
            wake.append(record.deadline)
    if st.backoff is not None:
        wake.append(st.backoff.until)
    for deadline in (lan_deadline(settings, st), fence_deadline(settings, st, inp)):
        if deadline is not None:
            wake.append(deadline)
    since = silent_since(settings, st, inp)
    silent_for = inp.now - since
    # An ACTIVE node checks sooner than a standby, so it can fence itself before the peer's
    # deadtime runs out; both are woken exactly when their check is due, not at the next tick.
    check_after = 1.2 * settings.heartbeat_s if st.state == NodeState.ACTIVE else 1.5 * settings.heartbeat_s
    checking = settings.witness_required and (
        st.state in (NodeState.STARTING, NodeState.STANDBY)
        or (settings.fence_isolated and st.state == NodeState.ACTIVE))
    if checking and silent_for < check_after and last_rx is not None:
        wake.append(since + check_after + 1e-4)
    want_witness = checking and silent_for >= check_after
    run = None
    if st.state in (NodeState.TAKEOVER, NodeState.RELEASING) and st.transition != before.transition:
        run = RunActions(ActionKind.PROMOTE if st.state == NodeState.TAKEOVER else ActionKind.DEMOTE, st.transition)
    return st, Outputs(
        events=tuple(events),
        send_now=st.state != before.state or flags_changed,
        wake_at=min(wake) if wake else None,
        want_witness=want_witness,
        persist=st.persisted != before.persisted,
        run=run,
        probe_every_s=probe_cadence(settings, st, inp, claimable=may_claim(settings, st, inp)),
        fence_peer=wants_fence(settings, st) and hold(st) is None,  # an operator's hold stops a fence at once
    )
