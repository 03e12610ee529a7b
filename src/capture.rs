//! The capture thread: every camera's ingest and recorder run on one dedicated tokio
//! worker thread, apart from the HTTP API, live view and the other services.
//!
//! While nobody watches any camera live, that thread works in batches: before it would
//! wait for more data it sleeps to its next tick, so it wakes a few times a second for
//! all cameras instead of once or more per arriving frame, each socket read takes a
//! tick's worth of packets, and each recorder a tick's worth of frames. Waking up for
//! every frame, and asking sockets that had just been emptied for more, were most of the
//! CPU left after the disk writes; recording needs every frame, in order, not within
//! half a second (the kernel's socket buffer holds them meanwhile, and TCP slows the
//! camera should it ever fill).
//!
//! Ticks follow the cameras' keyframes. A GOP is written when the next keyframe has been
//! read, so the footage a crash can lose is the GOP being collected plus whatever waits
//! unread in the socket: the best moment to read a camera is just after its keyframe has
//! arrived. Each camera whose GOP is regular says when that will be ([`WakeHint`], from
//! `ingest`); the thread sleeps to the earliest such moment, but never less than
//! `[recording] batch_ms` (default 500 ms, see [`crate::config::DEFAULT_BATCH_MS`]) after
//! its last tick, nor more than [`set_longest_sleep`]'s limit (2.5 s by default). A
//! camera without a hint (its GOP not yet known or irregular, or it is reconnecting)
//! asks for every batch. So one camera with a 2 s GOP wakes the thread once per GOP, just
//! after its keyframe, and loses at most that GOP and ~150 ms to a crash; many cameras
//! wake it every batch, as before. While anything needs frames as they
//! arrive — a live viewer, a camera session in its first seconds, whose arrival
//! times anchor its wall clock, or a camera read over UDP, where nothing pushes back
//! and a full socket buffer drops packets — it holds an [`Unbatched`] and the thread
//! does not sleep.
//!
//! A tick must also poll the sockets. Tokio's worker does not poll its driver (sockets,
//! timers) when it was notified while it slept — a spool write finishing, a database
//! call returning from the main runtime — it runs the woken task and comes back to
//! park, which would sleep to the tick after without having read a byte. At a quarter
//! second that only delayed reads; at a second, segment ends (a chain of such hand-offs)
//! left a camera unread for seconds and its socket buffer grew to megabytes. So the
//! thread sleeps again only once the driver has fired a timer set just before the tick
//! it slept to (see [`witness_driver_polls`]): timers fire in the same driver poll that
//! takes the sockets' readiness, and a timer costs no system call. (It used to be a byte
//! sent to a socket of the thread's own: three system calls a tick, ~10% of the thread.)
//!
//! Database work from this thread goes through [`MainDb`], which runs it on the main
//! runtime: a database connection opened here would be driven by the batching thread,
//! and every query on it, an API request's included, would wait for the next tick.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::db::{self, Db, DbError, SegmentRow};
use crate::time::{now_us, WallUs};

/// The capture thread's shortest sleep between ticks while nobody watches live (and the
/// grid it falls back to when late), in nanoseconds; 0: no batching. Set once at start
/// from the configuration ([`set_batch`]).
static BATCH_NS: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_BATCH_MS * 1_000_000);

/// Sets the batch length (`[recording] batch_ms`); zero handles every frame as it comes.
pub fn set_batch(batch: Duration) {
    BATCH_NS.store(batch.as_nanos() as u64, Ordering::Relaxed);
}

/// The batch length in force (zero: none).
pub fn batch() -> Duration {
    Duration::from_nanos(BATCH_NS.load(Ordering::Relaxed))
}

/// The longest sleep between ticks by default: a 2 s GOP and its keyframe's margin,
/// with room for the GOP's jitter.
pub const LONGEST_SLEEP: Duration = Duration::from_millis(2_500);

/// The longest sleep between ticks, in nanoseconds (see [`set_longest_sleep`]).
static LONGEST_NS: AtomicU64 = AtomicU64::new(LONGEST_SLEEP.as_nanos() as u64);

/// The deadline of the last tick the thread slept to, in µs since the Unix epoch (0:
/// none yet).
static LAST_TICK_US: AtomicI64 = AtomicI64::new(0);

/// When the witness's timer is due (µs since the Unix epoch): no tick before it, or the
/// thread would wake to a driver poll that does not fire it (see [`witness_driver_polls`]).
static WITNESS_DUE_US: AtomicI64 = AtomicI64::new(0);

/// Sets the longest sleep between ticks: what a camera's [`WakeHint`] may ask for at
/// most. The watchdog's no-frames alarm must not see a camera as silent because it has
/// not been read for a while, so the server sets it well below that threshold.
pub fn set_longest_sleep(longest: Duration) {
    LONGEST_NS.store(longest.as_nanos() as u64, Ordering::Relaxed);
}

/// The longest a frame may wait in its socket before it is read: the longest sleep, or
/// the batch if longer; zero without batching.
pub fn longest_wait() -> Duration {
    let batch = BATCH_NS.load(Ordering::Relaxed);
    if batch == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(batch.max(LONGEST_NS.load(Ordering::Relaxed)))
}

/// When each camera next needs its socket read, in µs since the Unix epoch; 0: at every
/// tick. One slot per [`WakeHint`].
static HINTS: Mutex<Vec<Arc<AtomicI64>>> = Mutex::new(Vec::new());

/// One camera's say in when the capture thread next wakes: from its creation, and after
/// [`WakeHint::every_tick`], at every batch tick; after [`WakeHint::next_at`], not before
/// that moment on its account (other cameras', and the batch's limits, still apply).
pub struct WakeHint(Arc<AtomicI64>);

impl WakeHint {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let slot = Arc::new(AtomicI64::new(0));
        HINTS.lock().unwrap_or_else(|e| e.into_inner()).push(slot.clone());
        WakeHint(slot)
    }

    /// This camera needs reading next at `at` (µs since the Unix epoch).
    pub fn next_at(&self, at: WallUs) {
        self.0.store(at.max(1), Ordering::Relaxed);
    }

    /// This camera needs reading at every batch tick.
    pub fn every_tick(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Drop for WakeHint {
    fn drop(&mut self) {
        HINTS.lock().unwrap_or_else(|e| e.into_inner()).retain(|h| !Arc::ptr_eq(h, &self.0));
    }
}

/// The earliest moment any camera needs reading (None: no camera said).
fn earliest_hint() -> Option<WallUs> {
    HINTS.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|h| h.load(Ordering::Relaxed)).min()
}

/// `Unbatched` guards alive.
static UNBATCHED: AtomicUsize = AtomicUsize::new(0);

/// Set by [`hurry`]: the next wait for the tick (or the one in progress) ends at once.
static HURRY: AtomicBool = AtomicBool::new(false);

/// Sleeps to a tick the capture thread has taken.
static SLEEPS: AtomicU64 = AtomicU64::new(0);

/// [`SLEEPS`] as it was when the capture runtime's driver last fired the witness's
/// timer after a sleep: below `SLEEPS`, the driver has not been polled since the last
/// sleep.
static POLLED: AtomicU64 = AtomicU64::new(0);

/// How long before a tick the witness's timer is due: the thread sleeps to the tick in
/// [`wait_for_tick`], not in the driver, so the timer is overdue by then and fires in the
/// first driver poll after it, without a wait of its own (tokio's timers have a
/// millisecond's grain, and round up).
const WITNESS_LEAD: Duration = Duration::from_millis(3);

/// Where the capture thread waits for its next tick; a new [`Unbatched`] wakes it.
static WAKE: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());

/// While one exists, the capture thread handles every event as it comes. Creating one
/// ends the wait for the next tick at once (a live viewer's first frames wait for no
/// batch).
pub struct Unbatched(());

impl Unbatched {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        UNBATCHED.fetch_add(1, Ordering::Relaxed);
        end_wait();
        Unbatched(())
    }
}

impl Drop for Unbatched {
    fn drop(&mut self) {
        UNBATCHED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The deadline of the last tick the capture thread slept to (µs since the Unix epoch;
/// 0: none yet).
pub fn last_tick_us() -> WallUs {
    LAST_TICK_US.load(Ordering::Acquire)
}

/// Ticks the capture thread has slept to so far (it stays put while batching is off):
/// lets a task do something once per batch rather than once per frame.
pub fn ticks() -> u64 {
    SLEEPS.load(Ordering::Relaxed)
}

/// Ends the capture thread's wait for its tick now, for a hand-off whose result a task
/// there should not wait a batch for. A segment's end is a chain of them (the last
/// fragment, closing the file, its index row, the next file): at a tick per link, the
/// recorder fell behind the camera whenever a batch was not much shorter than a
/// segment. A GOP's write needs no hurry: one tick per GOP keeps up.
pub fn hurry() {
    HURRY.store(true, Ordering::Release);
    end_wait();
}

/// Wakes the capture thread's wait for the tick to look at its conditions again. Under
/// the lock, so the thread is either before its check (and sees what was just set) or
/// waiting (and is woken).
fn end_wait() {
    let _held = WAKE.0.lock().unwrap_or_else(|e| e.into_inner());
    WAKE.1.notify_all();
}

/// Runs `task` on the capture thread.
pub fn spawn<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(task)
}

/// Threads for the recorders' spool work that waits (`spawn_blocking` on the capture
/// runtime): opening and finishing segment files, and a GOP's write where it cannot be
/// asynchronous (see [`crate::record::spool`]). Hashing and copying a GOP takes under a
/// millisecond and its direct write a few; at
/// 50 cameras that is a few dozen writes a second, which two cores cannot run more of at
/// once anyway. Without a cap tokio starts a thread per camera whose GOP ends in the same
/// tick (50 threads at 50 cameras), each keeping its own staging buffer.
const SPOOL_THREADS: usize = 4;

/// The capture runtime: one worker thread that sleeps to the next batch tick before it
/// parks, unless an [`Unbatched`] exists, and [`SPOOL_THREADS`] for spool writes. Lives
/// as long as the process.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(SPOOL_THREADS)
            .thread_name("cradle-capture")
            .enable_all()
            .on_thread_park(wait_for_tick)
            .build()
            .expect("cannot start the capture runtime");
        runtime.spawn(witness_driver_polls());
        runtime
    })
}

/// Proof that the capture runtime's driver was polled after a sleep (see the module
/// comment): a timer due [`WITNESS_LEAD`] before the earliest next tick fires only in a
/// driver poll, the same poll that takes the sockets' readiness. Without batching (or
/// while an [`Unbatched`] exists) it still ticks, harmlessly: the thread does not sleep
/// then.
async fn witness_driver_polls() {
    loop {
        let tick = BATCH_NS.load(Ordering::Relaxed);
        let tick = if tick == 0 { 1_000_000_000 } else { tick };
        // Normally this runs in the poll that follows a tick, and the next tick is a
        // batch after it at the earliest; else (late, not sleeping, or the wall clock
        // set back) the grid's next.
        let now = now_us();
        let lead = WITNESS_LEAD.as_micros() as i64;
        let mut next = LAST_TICK_US.load(Ordering::Acquire) + (tick / 1_000) as i64;
        if next <= now + lead || next > now + (tick / 1_000) as i64 {
            next = now + grid_tick_after(now, tick);
        }
        WITNESS_DUE_US.store(next - lead, Ordering::Release);
        tokio::time::sleep(Duration::from_micros((next - lead - now) as u64)).await;
        POLLED.store(SLEEPS.load(Ordering::Acquire), Ordering::Release);
    }
}

/// µs from `now` to the next tick of the batch grid on the wall clock, at least
/// [`WITNESS_LEAD`] away.
fn grid_tick_after(now: WallUs, tick_ns: u64) -> i64 {
    let at = std::time::UNIX_EPOCH + Duration::from_micros(now.max(0) as u64);
    let to_tick = until_next_tick(at, tick_ns);
    let to_tick = if to_tick <= WITNESS_LEAD { to_tick + Duration::from_nanos(tick_ns) } else { to_tick };
    to_tick.as_micros() as i64
}

/// When the next tick is, at `now`: a batch after the last at the earliest (and not
/// before the witness's timer, `witness_due`), the grid's next tick if that is past,
/// then as late as the earliest camera's hint allows, up to the longest sleep after the
/// last tick — and never more than the longest sleep from now (the wall clock may have
/// been set back since the last tick).
fn next_tick(now: WallUs, last: WallUs, witness_due: WallUs, hint: Option<WallUs>, batch_ns: u64, longest_ns: u64) -> WallUs {
    let lead = WITNESS_LEAD.as_micros() as i64;
    let longest = (longest_ns / 1_000) as i64;
    let mut floor = (last + (batch_ns / 1_000) as i64).max(witness_due + lead);
    if floor <= now {
        floor = now + grid_tick_after(now, batch_ns);
    }
    let ceiling = (last + longest).max(floor);
    hint.unwrap_or(0).clamp(floor, ceiling).min(now + longest)
}

/// Before the capture thread parks: waits for its next tick ([`next_tick`]), unless
/// batching is off, an [`Unbatched`] exists (or appears meanwhile), or the driver has
/// not been polled since the last wait (the park then polls it).
fn wait_for_tick() {
    let tick = BATCH_NS.load(Ordering::Relaxed);
    if tick == 0 || UNBATCHED.load(Ordering::Relaxed) > 0 {
        return;
    }
    if POLLED.load(Ordering::Acquire) < SLEEPS.load(Ordering::Relaxed) {
        return;
    }
    let now = now_us();
    let at = next_tick(
        now,
        LAST_TICK_US.load(Ordering::Acquire),
        WITNESS_DUE_US.load(Ordering::Acquire),
        earliest_hint(),
        tick,
        LONGEST_NS.load(Ordering::Relaxed).max(tick),
    );
    let deadline = std::time::Instant::now() + Duration::from_micros((at - now).max(0) as u64);
    let mut held = WAKE.0.lock().unwrap_or_else(|e| e.into_inner());
    while UNBATCHED.load(Ordering::Relaxed) == 0 && !HURRY.swap(false, Ordering::AcqRel) {
        let now = std::time::Instant::now();
        if now >= deadline {
            // A tick: the driver must poll the sockets before the next sleep. (A wait
            // cut short needs no poll: the sockets can wait for the tick.)
            LAST_TICK_US.store(at, Ordering::Release);
            SLEEPS.fetch_add(1, Ordering::AcqRel);
            break;
        }
        held = WAKE.1.wait_timeout(held, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
    }
}

/// Time from `now` to the next multiple of `tick_ns` since the Unix epoch, so that
/// batches line up whatever woke the thread.
pub(crate) fn until_next_tick(now: std::time::SystemTime, tick_ns: u64) -> Duration {
    let since_epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let tick = tick_ns as u128;
    Duration::from_nanos((tick - since_epoch.as_nanos() % tick) as u64)
}

/// The database, for tasks on the capture thread: each call runs on the main runtime
/// (see the module comment).
#[derive(Clone)]
pub struct MainDb {
    db: Db,
    main: Handle,
}

impl MainDb {
    /// Must be called from within the main runtime.
    pub fn new(db: Db) -> Self {
        MainDb { db, main: Handle::current() }
    }

    pub async fn insert_event(&self, camera: Option<&str>, at_us: WallUs, kind: &str, detail: &str) -> db::Result<()> {
        let (camera, kind, detail) = (camera.map(str::to_owned), kind.to_owned(), detail.to_owned());
        self.on_main(move |db| async move { db.insert_event(camera.as_deref(), at_us, &kind, &detail).await }).await
    }

    pub async fn upsert_segment(&self, row: &SegmentRow) -> db::Result<()> {
        let row = row.clone();
        self.on_main(move |db| async move { db.upsert_segment(&row).await }).await
    }

    async fn on_main<F, Fut>(&self, f: F) -> db::Result<()>
    where
        F: FnOnce(Db) -> Fut,
        Fut: Future<Output = db::Result<()>> + Send + 'static,
    {
        let call = f(self.db.clone());
        let done = self.main.spawn(async move {
            let result = call.await;
            hurry();
            result
        });
        done.await.unwrap_or_else(|e| Err(DbError::Interrupted(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that set the wait's statics.
    static STATICS: Mutex<()> = Mutex::new(());

    #[test]
    fn ticks_line_up_on_the_grid() {
        let at = |ms: u64| std::time::UNIX_EPOCH + Duration::from_millis(ms);
        let tick = 250_000_000;
        assert_eq!(until_next_tick(at(1_000), tick), Duration::from_millis(250));
        assert_eq!(until_next_tick(at(1_001), tick), Duration::from_millis(249));
        assert_eq!(until_next_tick(at(1_249), tick), Duration::from_millis(1));
        assert_eq!(until_next_tick(at(1_250), tick), Duration::from_millis(250));
    }

    #[test]
    fn ticks_follow_the_earliest_hint_within_the_batch_and_the_longest_sleep() {
        const S: i64 = 1_000_000;
        let (batch, longest) = (500_000_000, 2_500_000_000);
        // 10.2 s past the epoch, the last tick at 10.1 s, the witness due before 10.6 s.
        let (now, last, witness) = (10 * S + 200_000, 10 * S + 100_000, 10 * S + 597_000);
        let next = |hint| next_tick(now, last, witness, hint, batch, longest);
        assert_eq!(next(None), 10 * S + 600_000, "no camera said: a batch after the last");
        assert_eq!(next(Some(0)), 10 * S + 600_000, "a camera wants every tick");
        assert_eq!(next(Some(11 * S + 900_000)), 11 * S + 900_000, "just after a keyframe");
        assert_eq!(next(Some(10 * S + 300_000)), 10 * S + 600_000, "never less than a batch apart");
        assert_eq!(next(Some(20 * S)), 12 * S + 600_000, "never more than the longest sleep");
        // The witness's timer due later than a batch after the last tick: not before it.
        assert_eq!(next_tick(now, last, 10 * S + 797_000, None, batch, longest), 10 * S + 800_000);
        // Late (the last tick more than a batch ago, or none yet): the grid's next tick.
        assert_eq!(next_tick(now, 9 * S, 0, Some(0), batch, longest), 10 * S + 500_000);
        assert_eq!(next_tick(now, 9 * S, 0, Some(20 * S), batch, longest), 11 * S + 500_000);
        assert_eq!(next_tick(now, 0, 0, None, batch, longest), 10 * S + 500_000);
        // The wall clock set back an hour since the last tick: no hour-long sleep.
        assert_eq!(next_tick(now, now + 3_600 * S, now + 3_600 * S, Some(0), batch, longest), now + 2 * S + S / 2);
    }

    #[test]
    fn a_wake_hint_counts_until_dropped() {
        let early = WakeHint::new();
        early.next_at(5);
        let late = WakeHint::new();
        late.next_at(7);
        // (Other tests' cameras may hold hints too.)
        assert!(earliest_hint().is_some_and(|h| h <= 5));
        let slot = early.0.clone();
        assert_eq!(Arc::strong_count(&slot), 3, "the hint, the registry and this test");
        drop(early);
        assert_eq!(Arc::strong_count(&slot), 1, "still registered after the hint was dropped");
        late.every_tick();
        assert_eq!(earliest_hint(), Some(0), "a camera that wants every tick");
    }

    #[test]
    fn an_unbatched_guard_ends_the_wait_for_the_tick() {
        let _one_at_a_time = STATICS.lock().unwrap_or_else(|e| e.into_inner());
        set_batch(Duration::from_secs(1));
        // Start just after a whole second, so the tick is ~990 ms away.
        std::thread::sleep(until_next_tick(std::time::SystemTime::now(), 1_000_000_000) + Duration::from_millis(10));
        // As after a driver poll, so the wait does not return at once for want of one,
        // and with no hurry left over from another test's hand-off.
        POLLED.store(SLEEPS.load(Ordering::Acquire), Ordering::Release);
        HURRY.store(false, Ordering::Release);
        let waiter = std::thread::spawn(|| {
            let t0 = std::time::Instant::now();
            wait_for_tick();
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        let guard = Unbatched::new();
        let waited = waiter.join().unwrap();
        drop(guard);
        set_batch(Duration::from_millis(crate::config::DEFAULT_BATCH_MS));
        assert!(waited >= Duration::from_millis(40), "returned after {waited:?}, before the guard was made");
        assert!(waited < Duration::from_millis(500), "waited {waited:?} for a tick ~990 ms away");
    }

    #[test]
    fn a_hurried_hand_off_is_taken_up_before_the_tick() {
        let _one_at_a_time = STATICS.lock().unwrap_or_else(|e| e.into_inner());
        set_batch(Duration::from_secs(1));
        let (tx, rx) = std::sync::mpsc::channel();
        spawn(async move {
            // Ends 100 ms after a whole second, while the capture thread sleeps to the next.
            let hurried = tokio::task::spawn_blocking(|| {
                let to_tick = until_next_tick(std::time::SystemTime::now(), 1_000_000_000);
                std::thread::sleep(to_tick + Duration::from_millis(100));
                hurry();
                std::time::Instant::now()
            })
            .await
            .unwrap();
            tx.send(hurried.elapsed()).unwrap();
        });
        let resumed = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        set_batch(Duration::from_millis(crate::config::DEFAULT_BATCH_MS));
        assert!(resumed < Duration::from_millis(400), "the task went on {resumed:?} after the hand-off (next tick ~900 ms)");
    }

    #[test]
    fn a_second_wait_before_the_driver_was_polled_returns_at_once() {
        let _one_at_a_time = STATICS.lock().unwrap_or_else(|e| e.into_inner());
        // The state after a wait whose park found a notification instead of polling.
        let slept = SLEEPS.load(Ordering::Acquire);
        POLLED.store(slept.saturating_sub(1), Ordering::Release);
        SLEEPS.store(slept.max(1), Ordering::Release);
        let t0 = std::time::Instant::now();
        wait_for_tick();
        assert!(t0.elapsed() < Duration::from_millis(50), "waited {:?} with the driver not polled", t0.elapsed());
        assert_eq!(SLEEPS.load(Ordering::Acquire), slept.max(1), "a wait that did not happen was counted");
    }

    #[tokio::test]
    #[allow(clippy::await_holding_lock)] // a test: the lock only keeps the other tests of these statics out
    async fn database_calls_run_on_the_main_runtime() {
        let _one_at_a_time = STATICS.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/c.db", dir.path().display());
        let db = Db::connect(&url).await.unwrap();
        let main_db = MainDb::new(db.clone());
        let written = spawn(async move {
            assert_eq!(std::thread::current().name(), Some("cradle-capture"));
            main_db.insert_event(Some("cam1"), 1_000, "recording", "run 1").await
        });
        written.await.unwrap().unwrap();
        let events = db.events_between("cam1", 0, 2_000).await.unwrap();
        assert_eq!(events.len(), 1);
    }
}
