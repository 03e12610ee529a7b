//! The pulse: one clock, on the wall clock's whole seconds, for the main runtime's
//! periodic work — the watchdog's pass, the heartbeat, the polls of the database for
//! changes other processes made, the coverage ledger, retention, snapshots.
//!
//! Tokio timers of a second or more wake the runtime two or three times each: the timer
//! wheel wakes at the start of the slot that holds the deadline (64 ms slots for
//! deadlines up to 4 s away, 4 s slots up to 4 min) to move the timer to a finer level,
//! then again at the deadline; and jobs started at different moments wake at different
//! moments. On this kind of VM a wake-up costs 20–70 µs of CPU (the longer the sleep, the
//! colder the CPU it wakes), and an idle server's periodic jobs woke the main runtime 4.5
//! times a second. The pulse is one timer, re-armed to each whole second — a tick of the
//! capture thread's batch grid too (see [`crate::capture`]), so the two wake together —
//! that wakes the jobs that are due, and only those; jobs with the same period fall due
//! on the same pulses ([`every`]).
//!
//! Pulses are counted, not dated: a wall clock stepped back or forward changes when the
//! next one comes (at most a second away), never how many a job waits for.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Pulses so far.
static COUNT: AtomicU64 = AtomicU64::new(0);

/// Who waits for which pulse. Guarded with [`COUNT`]'s increments, so a waiter is either
/// registered before a pulse (and woken by it) or sees its count.
static WAITING: Mutex<BTreeMap<u64, Vec<oneshot::Sender<()>>>> = Mutex::new(BTreeMap::new());

/// A pulse closer than this to the last one is skipped to the next second (a sleep may
/// end a hair before the boundary when the wall clock is being slewed).
const MIN_GAP: Duration = Duration::from_millis(200);

/// Set once [`drive`] runs: the fallback thread then stops.
static DRIVEN: AtomicBool = AtomicBool::new(false);

/// Whether the fallback thread runs.
static THREAD: AtomicBool = AtomicBool::new(false);

/// Starts the fallback pulse thread unless [`drive`] runs (the server spawns `drive`
/// first thing; unit tests and tools that never do get the thread).
fn start() {
    if DRIVEN.load(Ordering::Acquire) || THREAD.swap(true, Ordering::AcqRel) {
        return;
    }
    std::thread::Builder::new()
        .name("cradle-pulse".into())
        .spawn(|| loop {
            std::thread::sleep(to_next_pulse());
            if DRIVEN.load(Ordering::Acquire) {
                THREAD.store(false, Ordering::Release);
                // Unless `drive` failed meanwhile and found this thread still running.
                if DRIVEN.load(Ordering::Acquire) || THREAD.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
            fire();
        })
        .expect("cannot start the pulse thread");
}

/// Time to the next whole second of the wall clock, skipping one closer than
/// [`MIN_GAP`] (a sleep may end a hair before the boundary while the clock is slewed).
fn to_next_pulse() -> Duration {
    let wait = crate::capture::until_next_tick(SystemTime::now(), 1_000_000_000);
    if wait < MIN_GAP { wait + Duration::from_secs(1) } else { wait }
}

/// Counts a pulse and wakes those waiting for it.
fn fire() {
    let due = {
        let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
        let n = COUNT.fetch_add(1, Ordering::AcqRel) + 1;
        let later = waiting.split_off(&(n + 1));
        std::mem::replace(&mut *waiting, later)
    };
    for tx in due.into_values().flatten() {
        let _ = tx.send(());
    }
}

/// Drives the pulses from the runtime it runs on, for the life of the process: a
/// `timerfd` (CLOCK_MONOTONIC, re-armed to each whole wall-clock second) watched by
/// the runtime's I/O driver, so a pulse costs one wake-up of one worker — the one
/// polling the driver, which then runs the woken jobs itself. (Woken from another
/// thread, tokio wakes an idle worker, which wakes a second one to keep searching.)
/// Returns only if the timer cannot be made or read; the fallback thread then takes over.
///
/// A second `drive` while one runs returns at once.
pub async fn drive() {
    if DRIVEN.swap(true, Ordering::AcqRel) {
        return;
    }
    /// Hands timekeeping back to the thread however `drive` ends (an error, or its
    /// runtime shutting down).
    struct HandBack;
    impl Drop for HandBack {
        fn drop(&mut self) {
            DRIVEN.store(false, Ordering::Release);
            start();
        }
    }
    let _hand_back = HandBack;
    if let Err(e) = drive_timerfd().await {
        tracing::warn!("pulse: the timer failed ({e}); a thread keeps time instead");
    }
}

async fn drive_timerfd() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain syscalls on a descriptor this function creates and owns.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else; the `AsyncFd` owns the
    // `OwnedFd`, which keeps it open until both are dropped.
    let timer = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd), tokio::io::Interest::READABLE)
    }
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let arm = |wait: Duration| -> std::io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as libc::c_long },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        match unsafe { libc::timerfd_settime(timer.get_ref().as_raw_fd(), 0, &spec, std::ptr::null_mut()) } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    arm(to_next_pulse())?;
    loop {
        let mut ready = timer.readable().await?;
        let mut expirations = [0u8; 8];
        // SAFETY: reads 8 bytes into a buffer of 8.
        let n = unsafe { libc::read(ready.get_inner().as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                ready.clear_ready();
                continue;
            }
            return Err(e);
        }
        fire();
        arm(to_next_pulse())?;
    }
}

/// The number of the latest pulse (0 before the first).
pub fn count() -> u64 {
    start();
    COUNT.load(Ordering::Acquire)
}

/// Returns once pulse number `n` has come (at once if it has).
pub async fn until(n: u64) {
    start();
    let rx = {
        let mut waiting = WAITING.lock().unwrap_or_else(|e| e.into_inner());
        if COUNT.load(Ordering::Acquire) >= n {
            return;
        }
        let (tx, rx) = oneshot::channel();
        waiting.entry(n).or_default().push(tx);
        rx
    };
    // The sender stays in `WAITING` until a pulse sends on it.
    let _ = rx.await;
}

/// Returns at the next pulse.
pub async fn next() {
    until(count() + 1).await
}

/// Returns at the next pulse that is a multiple of `period` (whole seconds, at least
/// one), so that waits for the same period end together.
pub async fn after(period: Duration) {
    let k = period.as_secs().max(1);
    until((count() / k + 1) * k).await
}

/// Runs `job` now and then every `period` (whole seconds, at least one) until `stop`,
/// on pulses that are multiples of the period: jobs with the same period run on the
/// same pulses. A run that takes longer than the period makes the next one wait for the
/// next multiple after it ends (runs never pile up).
pub async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    while !stop.is_cancelled() {
        job().await;
        tokio::select! {
            _ = after(period) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn subsec_ms() -> u32 {
        SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis()
    }

    #[tokio::test]
    async fn pulses_come_once_a_second_on_the_whole_second() {
        next().await;
        let first = count();
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            next().await;
            // A loaded machine may wake the thread late, but not by most of a second.
            assert!(subsec_ms() < 300, "pulse at {} ms past the second", subsec_ms());
        }
        let took = t0.elapsed();
        assert_eq!(count(), first + 3);
        assert!(took > Duration::from_millis(2_700) && took < Duration::from_millis(3_600), "3 pulses in {took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_driven_pulse_takes_over_from_the_thread_without_doubling() {
        next().await; // the thread runs, as it would before the server starts
        let driver = tokio::spawn(drive());
        next().await;
        let (first, t0) = (count(), std::time::Instant::now());
        for _ in 0..3 {
            next().await;
            assert!(subsec_ms() < 300, "pulse at {} ms past the second", subsec_ms());
        }
        let took = t0.elapsed();
        assert_eq!(count(), first + 3, "pulses counted twice a second");
        assert!(took > Duration::from_millis(2_700) && took < Duration::from_millis(3_600), "3 pulses in {took:?}");
        assert!(DRIVEN.load(Ordering::Acquire) && !driver.is_finished());
        // Stopped (as when its runtime shuts down), the thread keeps time again.
        driver.abort();
        let _ = driver.await;
        let n = count();
        tokio::time::timeout(Duration::from_millis(2_500), until(n + 1)).await.expect("no pulse after the driver stopped");
    }

    #[tokio::test]
    async fn a_pulse_already_past_does_not_wait() {
        next().await;
        let t0 = std::time::Instant::now();
        until(count()).await;
        until(1).await;
        assert!(t0.elapsed() < Duration::from_millis(50));
    }

    #[tokio::test]
    async fn jobs_with_one_period_run_on_the_same_pulses_and_stop_when_told() {
        let stop = CancellationToken::new();
        let shared: Arc<Mutex<Vec<(char, u64)>>> = Arc::default();
        for name in ['a', 'b'] {
            let (runs, stop) = (shared.clone(), stop.clone());
            tokio::spawn(every(Duration::from_secs(2), stop, move || {
                let runs = runs.clone();
                async move { runs.lock().unwrap().push((name, count())) }
            }));
            // Started a pulse apart.
            next().await;
        }
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        stop.cancel();
        let runs = shared.lock().unwrap().clone();
        let later = |c: char| runs.iter().filter(|r| r.0 == c).skip(1).map(|r| r.1).collect::<Vec<_>>();
        let (a, b) = (later('a'), later('b'));
        assert!(a.len() >= 2 && a.iter().all(|p| p % 2 == 0), "a ran on pulses {a:?}");
        assert!(b.len() >= 2 && b.iter().all(|p| p % 2 == 0), "b ran on pulses {b:?}");
        assert!(b.iter().all(|p| a.contains(p)), "a on {a:?}, b on {b:?}");
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert_eq!(shared.lock().unwrap().len(), runs.len(), "a job ran after stop");
    }
}
