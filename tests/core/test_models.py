from __future__ import annotations

import asyncio

import pytest

from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import SESSION_TRANSITIONS, MessageStatus, SessionState, can_transition


def test_every_state_has_transitions_and_final_states_do_not_reconnect_by_themselves() -> None:
    assert set(SESSION_TRANSITIONS) == set(SessionState)
    for state in SessionState:
        if state.is_final:
            assert SessionState.RECONNECTING not in SESSION_TRANSITIONS[state]
            assert SessionState.CONNECTED not in SESSION_TRANSITIONS[state]
    assert can_transition(SessionState.CONNECTED, SessionState.RECONNECTING)
    assert not can_transition(SessionState.LOGGED_OUT, SessionState.CONNECTED)
    assert can_transition(SessionState.LOGGED_OUT, SessionState.WAITING_FOR_SCAN)


def test_status_rank_orders_the_lifecycle() -> None:
    order = [MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ]
    assert [s.rank for s in order] == sorted(s.rank for s in order)
    assert MessageStatus.FAILED.rank > MessageStatus.READ.rank


class _A:
    pass


class _B(_A):
    pass


def test_bus_delivers_by_type_and_survives_a_failing_handler() -> None:
    bus = EventBus()
    seen: list[object] = []

    def boom(_: object) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe(_A, boom)
    unsubscribe = bus.subscribe(_A, seen.append)
    bus.publish(_B())
    assert len(seen) == 1 and isinstance(seen[0], _B)
    unsubscribe()
    bus.publish(_A())
    assert len(seen) == 1


@pytest.mark.asyncio
async def test_bus_runs_async_handlers_and_drains_them() -> None:
    bus = EventBus()
    done: list[str] = []

    async def handler(event: _A) -> None:
        await asyncio.sleep(0.01)
        done.append("ok")

    bus.subscribe(_A, handler)
    bus.publish(_A())
    assert done == []
    await bus.drain()
    assert done == ["ok"]
