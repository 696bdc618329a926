"""Trial of panoramisk behind AmiClient's interface, and read time of the asterisk sensor with each client.

The tests of the AMI client and sensor against the fake AMI server, with this
module's `PanoramiskClient` in place of `AmiClient` (as a pytest plugin)::

    PYTHONPATH=/dir/with/panoramisk:bench .venv/bin/python -m pytest -p ami_panoramisk \\
        tests/test_sensors_pbx.py -k "not sip and not carrier and not reachability"

The read time of the sensor (Ping, CoreStatus, PJSIP registrations, DAHDI and
PRI spans on one kept connection), median and p90 of N reads::

    PYTHONPATH=/dir/with/panoramisk .venv/bin/python bench/ami_panoramisk.py [N]

Without panoramisk importable only our client is timed and its figures are
null. The last line is JSON: ours_read_p50_ms, ours_read_p90_ms,
ours_ping_p50_ms, panoramisk_read_p50_ms, panoramisk_read_p90_ms,
panoramisk_ping_p50_ms.

panoramisk is asyncio-only, so the client owns an event loop on a thread of
its own and each call hops onto it. Its background behaviour (a Ping every
10 s, reconnecting 2 s after a drop, re-sending unanswered actions after a
reconnect) is switched off, because the sensor scheduler already decides
when to poll and reconnect. See docs/library-decisions.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    from panoramisk import Manager  # noqa: E402
except ImportError:  # not a project dependency: without it only our client is timed
    Manager = None

from firmware.core.sensors.ami import AmiActionError, AmiAuthError, AmiError, AmiTimeout  # noqa: E402

class PanoramiskClient:
    """`AmiClient`'s interface on panoramisk: a private event loop on its own thread, one hop per call."""

    def __init__(self, host: str, port: int = 5038, *, username: str, secret: str, timeout: float = 3.0) -> None:
        """Remember where and how to log in and start the loop thread; nothing is connected yet."""
        self.host, self.port, self.username, self._secret, self.timeout = host, port, username, secret, timeout
        self.version: str | None = None
        self._manager: Manager | None = None
        self._budget_deadline: float | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="panoramisk-loop", daemon=True)
        self._thread.start()

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """Whether a logged-in manager is kept."""
        return self._manager is not None

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Bound every step inside the block by one deadline, as `AmiClient.budget`."""
        previous, self._budget_deadline = self._budget_deadline, time.monotonic() + seconds
        try:
            yield
        finally:
            self._budget_deadline = previous

    def _remaining(self) -> float:
        deadline = time.monotonic() + self.timeout
        if self._budget_deadline is not None:
            deadline = min(deadline, self._budget_deadline)
        return max(deadline - time.monotonic(), 0.001)

    def _run(self, coro: "Coroutine[Any, Any, Any]", what: str) -> Any:
        """Run a coroutine on the client's loop; AmiTimeout when it outlives the step's deadline."""
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, self._remaining()), self._loop)
        try:
            return future.result()
        except (asyncio.TimeoutError, TimeoutError):
            self.close(logoff=False)
            raise AmiTimeout(f"Asterisk AMI at {self.where} did not answer {what} within {self.timeout:g} s") from None
        except OSError as exc:
            self.close(logoff=False)
            raise AmiError(f"cannot connect to Asterisk AMI at {self.where}: {exc.strerror or exc}") from None
        except AmiError:
            self.close(logoff=False)
            raise

    def connect(self) -> None:
        """Connect and log in (``Events: off``) within the step's deadline; no-op when connected."""
        if self._manager is not None:
            return

        async def login() -> Manager:
            manager = Manager(loop=self._loop, host=self.host, port=self.port, username=self.username,
                              secret=self._secret, events="off", ping_delay=3600, reconnect_timeout=3600)
            lost = self._loop.create_future()
            manager.on_disconnect = lambda m, exc: lost.done() or lost.set_result(exc)
            try:
                await manager.connect()  # the TCP connection; login is only sent from its done-callback
                while manager.authenticated_future is None and not lost.done():
                    await asyncio.sleep(0)
                if lost.done():
                    raise AmiError(f"Asterisk AMI at {self.where} closed the connection (waiting for Login)")
                login_done = manager.authenticated_future
                await asyncio.wait({login_done, lost}, return_when=asyncio.FIRST_COMPLETED)
                if not login_done.done():
                    raise AmiError(f"Asterisk AMI at {self.where} closed the connection (waiting for Login)")
                response = login_done.result()
            except BaseException:
                _stop(manager)
                raise
            if not response.success:
                _stop(manager)
                raise AmiAuthError(f"Asterisk AMI at {self.where} refused login as {self.username!r}: "
                                   f"{response.get('Message') or 'no reason given'}")
            return manager

        self._manager = self._run(login(), "its banner")
        self.version = self._manager.protocol.version

    def close(self, logoff: bool = True) -> None:
        """Log off (briefly, best effort) and drop the manager without letting it reconnect."""
        manager, self._manager = self._manager, None
        if manager is None:
            return
        if logoff:
            async def goodbye() -> None:
                try:
                    await asyncio.wait_for(manager.send_action({"Action": "Logoff"}), 0.2)
                except Exception:
                    pass
            try:
                asyncio.run_coroutine_threadsafe(goodbye(), self._loop).result(1)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(_stop, manager)

    def shutdown(self) -> None:
        """Close and stop the loop thread."""
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2)

    def __enter__(self) -> "PanoramiskClient":
        """Connect and log in."""
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Log off and close."""
        self.close()

    def _send(self, name: str, fields: dict[str, str | int], as_list: bool | None) -> Any:
        self.connect()
        manager = self._manager
        assert manager is not None

        async def send() -> Any:
            if manager.protocol is None or manager.protocol.closed:
                raise AmiError(f"Asterisk AMI at {self.where} closed the connection (waiting for {name})")
            return await manager.send_action({"Action": name, **{k: str(v) for k, v in fields.items()}},
                                             as_list=as_list)
        result = self._run(send(), name)
        return result

    def action(self, name: str, **fields: str | int) -> dict[str, str]:
        """Run one action; AmiActionError on ``Response: Error``."""
        response = self._send(name, fields, None)
        if isinstance(response, list):
            response = response[0]
        if response.response == "Error":
            raise AmiActionError(name, response.get("Message") or "error")
        return _plain(response)

    def list_action(self, name: str, **fields: str | int) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Run an EventList action: its response and its events (panoramisk collects them by ActionID)."""
        result = self._send(name, fields, None)
        messages = result if isinstance(result, list) else [result]
        response = messages[0]
        if response.response == "Error":
            raise AmiActionError(name, response.get("Message") or "error")
        return _plain(response), [_plain(m) for m in messages[1:]]


def _plain(message: Any) -> dict[str, str]:
    return {key: ("\n".join(value) if isinstance(value, list) else value) for key, value in message.items()}


def _stop(manager: Manager) -> None:
    manager.close()
    # connection_lost would schedule a reconnect in reconnect_timeout: make it a no-op
    manager.connect = lambda *a, **k: None


def pytest_configure(config: Any) -> None:
    """As a pytest plugin (``-p ami_panoramisk``): every AmiClient the tests and the sensor build is ours."""
    import firmware.core.sensors.ami as ami

    ami.AmiClient = PanoramiskClient  # type: ignore[misc]


def main() -> None:
    """Time sensor reads with each client against the fake AMI server."""
    import firmware.core.sensors.ami as ami
    from firmware.core.sensors.base import SensorContext
    from sim.fakeami import FakeAmiServer
    from stats import percentile

    reads = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    clients = [("ours", "ours (sync sockets)", ami.AmiClient)]
    if Manager is not None:
        clients.append(("panoramisk", "panoramisk (own loop)", PanoramiskClient))
    else:
        print("panoramisk not importable: timing ours only (put it on PYTHONPATH to compare)")
    figures: dict[str, float | None] = {f"panoramisk_{k}": None for k in ("read_p50_ms", "read_p90_ms", "ping_p50_ms")}
    with FakeAmiServer(secret="s") as server:
        server.registrations = {"itsp1": "Registered", "itsp2": "Registered"}
        server.spans, server.pri_spans, server.calls = {1: "OK", 2: "OK"}, {1: "up"}, 3
        for key, name, client_class in clients:
            ami.AmiClient = client_class  # type: ignore[misc]
            threads_before = threading.active_count()
            options = ami.AsteriskSensor.Options(port=server.port, username="tandem", secret="s", dahdi=True, pri=True)
            sensor = ami.AsteriskSensor("pbx", options, SensorContext())
            sensor.read()  # connect and log in
            samples, pings = [], []
            for _ in range(reads):
                start = time.perf_counter()
                reading = sensor.read()
                samples.append((time.perf_counter() - start) * 1000)
                pings.append(reading.values["ping_ms"])
            threads = threading.active_count() - threads_before
            sensor.close()
            print(f"{name:22s} read p50 {percentile(samples, 50):6.2f} ms  p90 {percentile(samples, 90):6.2f} ms  "
                  f"ping_ms p50 {percentile(pings, 50):6.3f}  extra threads {threads}  ({reads} reads)")
            figures.update({f"{key}_read_p50_ms": round(percentile(samples, 50), 3),
                            f"{key}_read_p90_ms": round(percentile(samples, 90), 3),
                            f"{key}_ping_p50_ms": round(percentile(pings, 50), 3)})
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
