//! Cameras changed by another process (the CLI) reach a running server through a file
//! in the data directory: the CLI writes `DATA_DIR/changes/cameras` after it changed
//! any camera, and the server, which watches that directory with inotify, looks at the
//! database's cameras at once (the reconciler starts an added camera, the watchdog sees a
//! decommission). Where inotify cannot see the write (a CLI on another host sharing a
//! PostgreSQL database, a network file system) the server's poll once a minute still
//! finds it. The poll used to run every ten seconds, which on an idle server was a good
//! part of its CPU: each SQLite statement wakes several threads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db::Db;

/// The watched directory, under the data directory. Its own, so that the files written
/// beside the database (the life-sign file every few seconds) wake nobody.
pub const DIR: &str = "changes";
pub const FILE_NAME: &str = "cameras";

/// Tells a server that uses `data_dir` that this process changed cameras in the database.
pub fn announce(data_dir: &Path) -> io::Result<()> {
    let dir = data_dir.join(DIR);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(FILE_NAME), format!("{}\n", crate::time::now_us()))
}

/// Until `stop`: whenever [`announce`] writes in `data_dir`, tells those who watch the
/// database's cameras ([`Db::watch_cameras`]) to look again. Without inotify it logs why
/// and returns (the minute's poll remains).
pub async fn watch(data_dir: PathBuf, db: Db, stop: CancellationToken) {
    let dir = data_dir.join(DIR);
    let notify = match std::fs::create_dir_all(&dir).and_then(|()| Inotify::watch(&dir)) {
        Ok(n) => n,
        Err(e) => {
            warn!(
                "cannot watch {} for cameras changed by the CLI ({e}); they are picked up within a minute",
                dir.display()
            );
            return;
        }
    };
    loop {
        tokio::select! {
            seen = notify.next() => match seen {
                Ok(true) => {
                    info!("cameras changed by another process (the CLI); looking at them now");
                    db.cameras_changed();
                }
                Ok(false) => {}
                Err(e) => {
                    warn!("watching {} for cameras changed by the CLI failed ({e}); they are picked up within a minute", dir.display());
                    return;
                }
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// An inotify instance watching one directory for files written and closed, or moved in.
struct Inotify {
    fd: AsyncFd<OwnedFd>,
}

impl Inotify {
    fn watch(dir: &Path) -> io::Result<Inotify> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL in the path"))?;
        // SAFETY: plain system calls; the descriptor is owned by the OwnedFd from here on.
        let fd = unsafe {
            let raw = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(raw)
        };
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nothing else; the
        // `AsyncFd` owns the `OwnedFd`, which keeps it open until both are dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Inotify { fd })
    }

    /// Waits for events; true if one of them was about [`FILE_NAME`].
    async fn next(&self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        loop {
            let mut ready = self.fd.readable().await?;
            // SAFETY: reading into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    ready.clear_ready();
                    continue;
                }
                return Err(e);
            }
            return Ok(names(&buf[..n as usize]).any(|name| name == FILE_NAME.as_bytes()));
        }
    }
}

/// The names in a buffer of `struct inotify_event`s (each: wd, mask, cookie, len as 32-bit
/// numbers, then `len` bytes of name padded with NULs).
fn names(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        const HEADER: usize = 16;
        if buf.len() < HEADER {
            return None;
        }
        let len = u32::from_ne_bytes(buf[12..16].try_into().expect("four bytes")) as usize;
        let name = buf.get(HEADER..HEADER + len)?;
        buf = &buf[HEADER + len..];
        Some(&name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(name: &str, padded: usize) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&1i32.to_ne_bytes());
        e.extend_from_slice(&libc::IN_CLOSE_WRITE.to_ne_bytes());
        e.extend_from_slice(&0u32.to_ne_bytes());
        e.extend_from_slice(&(padded as u32).to_ne_bytes());
        e.extend_from_slice(name.as_bytes());
        e.resize(e.len() + padded - name.len(), 0);
        e
    }

    #[test]
    fn event_names_are_read_through_their_padding() {
        let mut buf = event("cradle.db-wal", 16);
        buf.extend(event(FILE_NAME, 16));
        buf.extend(event("x", 4));
        let names: Vec<&[u8]> = names(&buf).collect();
        assert_eq!(names, [b"cradle.db-wal".as_slice(), FILE_NAME.as_bytes(), b"x"]);
        // A torn buffer ends the list rather than reading past it.
        assert_eq!(names_of(&buf[..buf.len() - 2]), 2);
    }

    fn names_of(buf: &[u8]) -> usize {
        names(buf).count()
    }

    #[tokio::test]
    async fn an_announcement_reaches_the_watchers_of_the_cameras() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/c.db", dir.path().display())).await.unwrap();
        let mut cameras = db.watch_cameras();
        cameras.mark_unchanged();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(dir.path().to_owned(), db.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await; // the watch is set up
        // Other files written there are no announcement.
        std::fs::write(dir.path().join("alive"), b"x").unwrap();
        std::fs::write(dir.path().join(DIR).join("other"), b"x").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), cameras.changed()).await.is_err());
        announce(dir.path()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), cameras.changed()).await.expect("no word of the change").unwrap();
        stop.cancel();
        task.await.unwrap();
    }
}
