"""Waiting for the decision core to reach a condition (an operator command waiting for its outcome)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Waiters:
    """Conditions awaited by coroutines, checked after every decision."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds at a :meth:`check`; False after ``timeout`` seconds."""
        if predicate():
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        finally:
            self._waiting = [(p, f) for p, f in self._waiting if f is not future]

    def check(self) -> None:
        """After a decision: wake every waiter whose condition now holds."""
        for predicate, future in list(self._waiting):
            if not future.done() and predicate():
                future.set_result(True)
