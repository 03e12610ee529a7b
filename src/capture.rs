//! The capture thread: every camera's ingest and recorder run on one dedicated tokio
//! worker thread, apart from the HTTP API, live view and the other services.
//!
//! While nobody watches any camera live, that thread works in batches: before it would
//! wait for more data it sleeps to the next tick of a grid (`[recording] batch_ms`,
//! default 500 ms, see [`crate::config::DEFAULT_BATCH_MS`]), so it wakes twice a
//! second for all cameras instead of once or more per arriving frame, each socket read
//! takes a tick's worth of packets, and each recorder a tick's worth of frames. Waking up
//! for every frame, and asking sockets that had just been emptied for more, were most of
//! the CPU left after the disk writes; recording needs every frame, in order, not within
//! half a second (the kernel's socket buffer holds them meanwhile, and TCP slows the
//! camera should it ever fill). While anything needs frames as they
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::db::{self, Db, DbError, SegmentRow};
use crate::time::WallUs;

/// Grid on which the capture thread wakes while nobody watches live, in nanoseconds;
/// 0: no batching. Set once at start from the configuration ([`set_batch`]).
static BATCH_NS: AtomicU64 = AtomicU64::new(crate::config::DEFAULT_BATCH_MS * 1_000_000);

/// Sets the batch length (`[recording] batch_ms`); zero handles every frame as it comes.
pub fn set_batch(batch: Duration) {
    BATCH_NS.store(batch.as_nanos() as u64, Ordering::Relaxed);
}

/// The batch length in force (zero: none).
pub fn batch() -> Duration {
    Duration::from_nanos(BATCH_NS.load(Ordering::Relaxed))
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
/// comment): a timer due [`WITNESS_LEAD`] before each tick fires only in a driver poll,
/// the same poll that takes the sockets' readiness. Without batching (or while an
/// [`Unbatched`] exists) it still ticks, harmlessly: the thread does not sleep then.
async fn witness_driver_polls() {
    loop {
        let tick = BATCH_NS.load(Ordering::Relaxed);
        let tick = if tick == 0 { 1_000_000_000 } else { tick };
        let to_tick = until_next_tick(std::time::SystemTime::now(), tick);
        // Just after a tick (the usual case: this runs in the poll that follows one), aim
        // at the next one, not at the few milliseconds left before this one.
        let to_tick = if to_tick <= WITNESS_LEAD { to_tick + Duration::from_nanos(tick) } else { to_tick };
        tokio::time::sleep(to_tick - WITNESS_LEAD).await;
        POLLED.store(SLEEPS.load(Ordering::Acquire), Ordering::Release);
    }
}

/// Before the capture thread parks: waits for the next tick of the batch grid, unless
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
    let deadline = std::time::Instant::now() + until_next_tick(std::time::SystemTime::now(), tick);
    let mut held = WAKE.0.lock().unwrap_or_else(|e| e.into_inner());
    while UNBATCHED.load(Ordering::Relaxed) == 0 && !HURRY.swap(false, Ordering::AcqRel) {
        let now = std::time::Instant::now();
        if now >= deadline {
            // A tick: the driver must poll the sockets before the next sleep. (A wait
            // cut short needs no poll: the sockets can wait for the tick.)
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
