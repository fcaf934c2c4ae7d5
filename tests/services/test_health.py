"""The health model over real SQLite: transitions, reasons/actions, waiting counts, and the
notification debounce (grace period for transient drops, needs-you at once, never twice) with an
injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.config import load_settings
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import Job, Location, LocationState, NewJob, SessionState, WhatsAppSession
from ghl_desktop.core.storage_health import StorageProblem, StorageRecovered
from ghl_desktop.services.health import (
    INBOUND_KIND,
    OUTBOUND_KIND,
    HealthAction,
    HealthChanged,
    HealthLevel,
    HealthMonitor,
    HealthSnapshot,
    NoticeRequested,
    format_local,
)
from ghl_desktop.services.jobs import JobRunner, RunnerOptions

LOC = "loc-1"
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Pausable:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def events(bus: EventBus) -> list[object]:
    seen: list[object] = []
    bus.subscribe(HealthChanged, seen.append)
    bus.subscribe(NoticeRequested, seen.append)
    return seen


def notices(events: list[object]) -> list[NoticeRequested]:
    return [e for e in events if isinstance(e, NoticeRequested)]


def make_monitor(db: Database, bus: EventBus, clock: Clock, grace: float = 60.0, **kw: object) -> HealthMonitor:
    return HealthMonitor(locations=db.locations, sessions=db.sessions, jobs=db.jobs, bus=bus,
                         grace_seconds=grace, clock=clock, **kw)  # type: ignore[arg-type]


def add_number(db: Database, session_id: str = "s1", phone: str = "+15550100001", location: str = LOC,
               state: SessionState = SessionState.CONNECTED) -> WhatsAppSession:
    if db.locations.get(location) is None:
        db.locations.upsert(Location(id=location, name=f"Agency {location}"))
    return db.sessions.create(WhatsAppSession(id=session_id, location_id=location, state=state,
                                              store_path=f"/tmp/{session_id}", phone=phone))


def queue_inbound(db: Database, session_id: str, n: int) -> None:
    for i in range(n):
        db.jobs.enqueue(NewJob(kind=INBOUND_KIND, payload={"session_id": session_id, "message": {"id": f"m{i}"}},
                               dedupe_key=f"wa:{session_id}:m{i}"))


def queue_outbound(db: Database, location: str, n: int) -> None:
    for i in range(n):
        db.jobs.enqueue(NewJob(kind=OUTBOUND_KIND, payload={"event": {"locationId": location, "messageId": f"g{i}"}},
                               dedupe_key=f"ghl:{location}:g{i}"))


def test_connected_number_is_ok_and_summary_counts(db: Database, bus: EventBus, clock: Clock) -> None:
    add_number(db)
    add_number(db, "s2", "+15550100002")
    snap = make_monitor(db, bus, clock).refresh()
    assert snap.worst is HealthLevel.OK
    assert snap.summary() == "2 numbers"
    assert snap.number("s1") is not None and snap.number("s1").health.ok  # type: ignore[union-attr]
    assert snap.location(LOC) is not None and snap.location(LOC).health.ok  # type: ignore[union-attr]


def test_transient_drop_within_grace_never_notifies(db: Database, bus: EventBus, clock: Clock,
                                                     events: list[object]) -> None:
    add_number(db)
    monitor = make_monitor(db, bus, clock)
    monitor.refresh()
    db.sessions.set_state("s1", SessionState.RECONNECTING, detail="keep-alive lost")
    clock.advance(2)
    snap = monitor.refresh()
    health = snap.number("s1").health  # type: ignore[union-attr]
    assert health.level is HealthLevel.DEGRADED and health.action is HealthAction.WAIT
    assert "Reconnecting" in health.reason and health.since == clock.now
    clock.advance(2)  # healed after 4 s: a blip
    db.sessions.set_state("s1", SessionState.CONNECTED)
    assert monitor.refresh().worst is HealthLevel.OK
    clock.advance(600)
    monitor.refresh()
    assert notices(events) == []


def test_transient_drop_longer_than_grace_notifies_once(db: Database, bus: EventBus, clock: Clock,
                                                        events: list[object]) -> None:
    add_number(db)
    monitor = make_monitor(db, bus, clock, grace=60)
    monitor.refresh()
    db.sessions.set_state("s1", SessionState.RECONNECTING)
    monitor.refresh()
    clock.advance(59)
    monitor.refresh()
    assert notices(events) == []
    # flapping between the transient states is the same drop: the grace does not restart
    db.sessions.set_state("s1", SessionState.PHONE_OFFLINE)
    clock.advance(2)
    monitor.refresh()
    [notice] = notices(events)
    assert notice.session_id == "s1" and notice.location_id == LOC
    assert notice.level is HealthLevel.DEGRADED and "+15550100001" in notice.title
    for _ in range(3):  # still down: never twice
        clock.advance(120)
        monitor.refresh()
    assert len(notices(events)) == 1
    # it clears, drops again: a new grace period, then a new notice
    db.sessions.set_state("s1", SessionState.CONNECTED)
    monitor.refresh()
    db.sessions.set_state("s1", SessionState.RECONNECTING)
    clock.advance(1)
    monitor.refresh()
    assert len(notices(events)) == 1
    clock.advance(61)
    monitor.refresh()
    assert len(notices(events)) == 2


def test_states_that_need_a_person_notify_at_once_and_once(db: Database, bus: EventBus, clock: Clock,
                                                           events: list[object]) -> None:
    add_number(db)
    monitor = make_monitor(db, bus, clock, grace=3600)
    monitor.refresh()
    queue_inbound(db, "s1", 3)
    db.sessions.set_state("s1", SessionState.LOGGED_OUT)
    snap = monitor.refresh()
    health = snap.number("s1").health  # type: ignore[union-attr]
    assert health.level is HealthLevel.NEEDS_YOU and health.action is HealthAction.LINK_AGAIN
    assert "3 waiting" in health.reason
    [notice] = notices(events)
    assert notice.level is HealthLevel.NEEDS_YOU and "logged out" in notice.title
    assert snap.summary() == "1 number · 1 down"
    monitor.refresh()
    assert len(notices(events)) == 1


@pytest.mark.parametrize(("state", "action", "words"), [
    (SessionState.REPLACED, HealthAction.RETRY_NUMBER, "took over this number"),
    (SessionState.CLIENT_OUTDATED, HealthAction.UPDATE_APP, "update ghl-desktop"),
    (SessionState.FAILED, HealthAction.RETRY_NUMBER, "press Retry"),
])
def test_final_states_reason_and_action(db: Database, bus: EventBus, clock: Clock, events: list[object],
                                        state: SessionState, action: HealthAction, words: str) -> None:
    add_number(db)
    db.sessions.set_state("s1", state)
    health = make_monitor(db, bus, clock).refresh().number("s1").health  # type: ignore[union-attr]
    assert (health.level, health.action) == (HealthLevel.NEEDS_YOU, action)
    assert words in health.reason
    assert len(notices(events)) == 1


def test_ban_says_until_when_in_local_time_and_what_to_do(db: Database, bus: EventBus, clock: Clock,
                                                          events: list[object]) -> None:
    add_number(db)
    until = T0 + timedelta(hours=2, minutes=5)  # 14:05 UTC
    db.sessions.set_state("s1", SessionState.TEMPORARILY_BANNED, state_until=until)
    berlin_winter = timezone(timedelta(hours=1))
    monitor = make_monitor(db, bus, clock, tz=berlin_winter)
    health = monitor.refresh().number("s1").health  # type: ignore[union-attr]
    assert "until Thu 03 Dec 15:05 (your time)" in health.reason  # local, not "14:05 UTC"
    assert "UTC" not in health.reason and "press Retry after that time" in health.reason
    assert health.action is HealthAction.WAIT
    [notice] = notices(events)
    assert "15:05" in notice.text
    clock.advance(3 * 3600)  # the ban is over
    health = monitor.refresh().number("s1").health  # type: ignore[union-attr]
    assert health.action is HealthAction.RETRY_NUMBER and "ended" in health.reason


def test_format_local_names_the_day_when_not_today() -> None:
    tz = timezone(timedelta(hours=-5))
    assert format_local(T0 + timedelta(days=1), T0, tz) == "07:00 tomorrow"
    assert format_local(T0 + timedelta(days=3), T0, tz) == "Sun 6 Dec 07:00"


@pytest.mark.parametrize(("state", "words"), [
    (LocationState.NEEDS_RECONNECT, "needs reconnect"),
    (LocationState.UNINSTALLED, "uninstalled"),
])
def test_a_connected_number_whose_location_is_stalled_is_not_ok(
        db: Database, bus: EventBus, clock: Clock, events: list[object], state: LocationState, words: str) -> None:
    add_number(db)
    monitor = make_monitor(db, bus, clock)
    monitor.refresh()
    queue_inbound(db, "s1", 4)
    db.locations.set_state(LOC, state)
    snap = monitor.refresh()
    number = snap.number("s1")
    assert number is not None
    assert number.health.level is HealthLevel.NEEDS_YOU
    assert number.health.action is HealthAction.RECONNECT_LOCATION
    assert number.health.reason.startswith("bridging stalled:") and words in number.health.reason
    assert number.health.reason.endswith(" — 4 waiting") and number.waiting == 4
    location = snap.location(LOC)
    assert location is not None and location.health.action is HealthAction.RECONNECT_LOCATION
    assert location.waiting == 4
    # one notice, about the location (not one per number), at once
    [notice] = notices(events)
    assert notice.location_id == LOC and notice.session_id is None
    assert notice.level is HealthLevel.NEEDS_YOU
    db.locations.set_state(LOC, LocationState.CONNECTED)
    assert monitor.refresh().number("s1").health.ok  # type: ignore[union-attr]


def test_waiting_counts_per_number_and_location(db: Database, bus: EventBus, clock: Clock) -> None:
    add_number(db, "s1")
    add_number(db, "s2", "+15550100002")
    add_number(db, "s3", "+15550100003", location="loc-2")
    queue_inbound(db, "s1", 2)
    queue_inbound(db, "s3", 1)
    queue_outbound(db, LOC, 5)  # two numbers at loc-1: the replies count for the location only
    queue_outbound(db, "loc-2", 3)  # one number: its replies wait for it
    db.sessions.set_state("s3", SessionState.RECONNECTING)
    snap = make_monitor(db, bus, clock).refresh()
    assert [snap.number(s).waiting for s in ("s1", "s2", "s3")] == [2, 0, 4]  # type: ignore[union-attr]
    assert snap.location(LOC).waiting == 7  # type: ignore[union-attr]
    assert snap.location("loc-2").waiting == 4  # type: ignore[union-attr]
    assert "4 waiting" in snap.number("s3").health.reason  # type: ignore[union-attr]


def test_replies_waiting_for_a_number_degrade_the_location(db: Database, bus: EventBus, clock: Clock) -> None:
    db.locations.upsert(Location(id=LOC, name="Agency"))
    queue_outbound(db, LOC, 2)
    health = make_monitor(db, bus, clock).refresh().location(LOC).health  # type: ignore[union-attr]
    assert health.level is HealthLevel.DEGRADED
    assert health.reason == "2 replies waiting for a connected WhatsApp number"


@pytest.mark.asyncio
async def test_dead_letters_count_as_failed_messages(db: Database, bus: EventBus, clock: Clock,
                                                     events: list[object]) -> None:
    add_number(db)
    queue_inbound(db, "s1", 2)

    async def fail(job: Job) -> None:
        from ghl_desktop.core.errors import GhlDesktopError
        raise GhlDesktopError("HighLevel refused the contact")

    runner = JobRunner(db.aio.jobs, {INBOUND_KIND: fail}, RunnerOptions(max_attempts=1))
    await runner.run_until_idle()
    snap = make_monitor(db, bus, clock).refresh()
    assert snap.failed_messages == 2
    assert snap.summary() == "1 number · 2 messages failed"
    assert snap.worst is HealthLevel.DEGRADED
    [notice] = notices(events)
    assert notice.key == "failed" and "2 messages failed" in notice.title


def test_relay_unauthorized_needs_you_and_reconnecting_waits_out_the_grace(
        db: Database, bus: EventBus, clock: Clock, events: list[object]) -> None:
    monitor = make_monitor(db, bus, clock, grace=30)
    monitor.set_relay_state("connecting")
    monitor.set_relay_state("connected")
    assert monitor.snapshot.relay is not None and monitor.snapshot.relay.ok
    monitor.set_relay_state("reconnecting", "connection reset")
    assert monitor.snapshot.relay.level is HealthLevel.DEGRADED
    clock.advance(31)
    monitor.refresh()
    [lost] = notices(events)
    assert lost.key == "relay:down"
    monitor.set_relay_state("unauthorized")
    assert monitor.snapshot.relay.level is HealthLevel.NEEDS_YOU
    assert monitor.snapshot.relay.action is HealthAction.RELAY_TOKEN
    assert [n.key for n in notices(events)] == ["relay:down", "relay:unauthorized"]
    assert monitor.snapshot.summary() == "0 numbers · relay down"


def test_pause_and_resume_reach_the_runner_and_show_in_health(db: Database, bus: EventBus, clock: Clock) -> None:
    add_number(db)
    runner = Pausable()
    monitor = make_monitor(db, bus, clock, pausable=runner)
    monitor.refresh()
    monitor.pause()
    assert runner.calls == ["pause"] and monitor.snapshot.paused
    assert monitor.snapshot.summary() == "1 number · paused"
    assert monitor.snapshot.worst is HealthLevel.DEGRADED
    monitor.pause()
    monitor.resume()
    assert runner.calls == ["pause", "resume"] and not monitor.snapshot.paused


@pytest.mark.asyncio
async def test_a_paused_runner_leases_nothing_until_resumed(db: Database) -> None:
    done: list[int] = []

    async def ok(job: Job) -> None:
        done.append(job.id)

    queue_inbound(db, "s1", 0)
    db.jobs.enqueue(NewJob(kind="k", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": ok}, RunnerOptions(poll_interval=0.01))
    runner.pause()
    assert runner.paused
    await runner._tick()
    assert done == [] and db.jobs.count("pending") == 1
    runner.resume()
    await runner.run_until_idle()
    assert len(done) == 1


def test_health_changed_is_published_only_on_change(db: Database, bus: EventBus, clock: Clock,
                                                    events: list[object]) -> None:
    add_number(db)
    monitor = make_monitor(db, bus, clock)
    monitor.refresh()
    clock.advance(5)
    monitor.refresh()
    changes = [e for e in events if isinstance(e, HealthChanged)]
    assert len(changes) == 1 and isinstance(changes[0].snapshot, HealthSnapshot)
    db.sessions.set_state("s1", SessionState.LOGGED_OUT)
    clock.advance(5)
    monitor.refresh()
    clock.advance(5)
    monitor.refresh()
    changes = [e for e in events if isinstance(e, HealthChanged)]
    assert len(changes) == 2 and changes[-1].snapshot.worst is HealthLevel.NEEDS_YOU


def test_grace_comes_from_the_setting_and_its_environment_variable(tmp_path: object) -> None:
    env = {"GHL_DESKTOP_HOME": str(tmp_path)}
    assert load_settings(env).notify_grace_seconds == 60.0
    assert load_settings({**env, "GHL_DESKTOP_NOTIFY_GRACE_SECONDS": "5"}).notify_grace_seconds == 5.0


@pytest.mark.asyncio
async def test_started_monitor_follows_bus_events_and_fires_after_the_grace(db: Database, bus: EventBus) -> None:
    """Wired: a bus event triggers a refresh, and a timer re-checks when the grace period ends."""
    import asyncio

    from ghl_desktop.services.events import SessionChanged

    add_number(db)
    seen: list[NoticeRequested] = []
    bus.subscribe(NoticeRequested, seen.append)
    monitor = HealthMonitor(locations=db.locations, sessions=db.sessions, jobs=db.jobs, bus=bus,
                            grace_seconds=0.2, poll_seconds=0)
    monitor.start()
    try:
        session = db.sessions.set_state("s1", SessionState.RECONNECTING)
        bus.publish(SessionChanged(session))
        for _ in range(100):
            await asyncio.sleep(0.02)
            if monitor.snapshot.worst is HealthLevel.DEGRADED:
                break
        assert monitor.snapshot.worst is HealthLevel.DEGRADED
        assert seen == []
        for _ in range(200):
            await asyncio.sleep(0.02)
            if seen:
                break
        assert [n.key for n in seen] == ["session:s1:down"]
    finally:
        monitor.stop()


def test_a_link_that_never_finished_is_not_a_desktop_notice(db: Database, bus: EventBus, clock: Clock,
                                                            events: list[object]) -> None:
    db.locations.upsert(Location(id=LOC, name="Agency"))
    db.sessions.create(WhatsAppSession(id="new", location_id=LOC, state=SessionState.FAILED,
                                       store_path="/tmp/new", detail="QR code expired"))
    health = make_monitor(db, bus, clock).refresh().number("new").health  # type: ignore[union-attr]
    assert health.level is HealthLevel.DEGRADED and health.action is HealthAction.LINK_AGAIN
    assert health.reason == "Linking did not finish: QR code expired"
    assert notices(events) == []


def test_reads_from_threads_never_make_a_condition_notify_twice(db: Database, bus: EventBus, clock: Clock,
                                                                events: list[object]) -> None:
    import threading

    add_number(db)
    add_number(db, "s2", "+15550100002")
    db.sessions.set_state("s1", SessionState.LOGGED_OUT)
    db.sessions.set_state("s2", SessionState.REPLACED)
    monitor = make_monitor(db, bus, clock)
    threads = [threading.Thread(target=lambda: [monitor.refresh() for _ in range(20)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(n.key for n in notices(events)) == ["session:s1:logged_out", "session:s2:replaced"]


@pytest.mark.asyncio
async def test_a_burst_of_events_is_one_computation(db: Database, bus: EventBus) -> None:
    import asyncio

    from ghl_desktop.services.bridge import MessageLogged

    add_number(db)
    monitor = HealthMonitor(locations=db.locations, sessions=db.sessions, jobs=db.jobs, bus=bus, poll_seconds=0)
    monitor.start()
    try:
        await asyncio.sleep(0.6)
        before = monitor.refreshes
        for _ in range(300):  # 300 messages logged at once
            bus.publish(MessageLogged(None))  # type: ignore[arg-type]
        for _ in range(100):
            await asyncio.sleep(0.05)
            if monitor.refreshes > before:
                break
        assert monitor.refreshes - before == 1
        for _ in range(300):  # right after: waits for the coalescing window, then once
            bus.publish(MessageLogged(None))  # type: ignore[arg-type]
        for _ in range(100):
            await asyncio.sleep(0.05)
            if monitor.refreshes - before >= 2:
                break
        await asyncio.sleep(0.6)  # nothing more comes of the 600 events
        assert monitor.refreshes - before == 2
    finally:
        monitor.stop()


def test_the_counted_job_kinds_are_the_bridges() -> None:
    from ghl_desktop.services.bridge import INBOUND, OUTBOUND

    assert (INBOUND_KIND, OUTBOUND_KIND) == (INBOUND, OUTBOUND)


def test_a_full_disk_needs_you_at_once_and_clears_when_writes_work_again(
        db: Database, bus: EventBus, clock: Clock, events: list[object]) -> None:
    """The storage layer announces a full disk on the bus; the health says so (tray, banner), notifies once."""
    add_number(db)
    monitor = make_monitor(db, bus, clock)
    monitor.start()
    try:
        bus.publish(StorageProblem("disk full: [Errno 28] No space left on device", disk_full=True))
        monitor.refresh()
        snap = monitor.snapshot
        assert snap.storage is not None and snap.storage.level is HealthLevel.NEEDS_YOU
        assert "free some space" in snap.storage.reason and "nothing is lost" in snap.storage.reason
        assert snap.worst is HealthLevel.NEEDS_YOU and snap.summary() == "1 number · disk full"
        bus.publish(StorageProblem("disk full: [Errno 28] No space left on device", disk_full=True))
        monitor.refresh()
        assert [n.key for n in notices(events)] == ["storage"]  # once, not per failed write
        bus.publish(StorageRecovered())
        monitor.refresh()
        assert monitor.snapshot.storage is None and monitor.snapshot.worst is HealthLevel.OK
    finally:
        monitor.stop()


@pytest.mark.asyncio
async def test_pause_relay_and_storage_inputs_never_read_the_database_on_the_loop(db: Database, bus: EventBus) -> None:
    """In the app (reads offloaded to the storage thread), the tray's Pause, a relay state and a storage
    problem show at once from the latest reads, and the fresh reads they trigger run off the loop."""
    import asyncio
    import threading

    add_number(db)
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    sessions = db.sessions

    class Watched:
        def list(self, location_id: str | None = None) -> list[WhatsAppSession]:
            if threading.get_ident() == loop_thread:
                on_loop.append("sessions.list")
            return sessions.list(location_id)

    runner = Pausable()
    monitor = HealthMonitor(locations=db.locations, sessions=Watched(), jobs=db.jobs, bus=bus, poll_seconds=0,
                            pausable=runner, offload=db.aio.run)
    monitor.start()
    try:
        async def refreshed(count: int) -> None:
            for _ in range(250):
                if monitor.refreshes >= count and (monitor._in_flight is None or monitor._in_flight.done()):
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"{monitor.refreshes} refreshes, wanted {count}")

        await refreshed(1)
        before = monitor.refreshes
        monitor.pause()
        assert runner.calls == ["pause"]
        assert monitor.last.paused and monitor.last.summary() == "1 number · paused"  # at once
        await refreshed(before + 2)  # and again with fresh reads, off the loop
        monitor.set_relay_state("unauthorized")
        monitor.set_storage_problem("disk full")
        assert monitor.last.storage is not None and "disk full" in monitor.last.storage.reason
        monitor.resume()
        assert not monitor.last.paused
        await refreshed(before + 6)
        assert on_loop == []
    finally:
        monitor.stop()
