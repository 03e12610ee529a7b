//! The server's last sign of life, kept in a small file in the data directory
//! (`DATA_DIR/alive`: the run's id and a time), written every few seconds.
//!
//! After a crash, kill -9 or power loss, the next start needs to know when the dead run
//! was last alive: that is where the `server_crashed` event, and the downtime on the
//! coverage pages, begin. The database's `server_runs.alive_us` said so alone until
//! it was clear what a write to it every five seconds cost: one SQLite statement wakes
//! several threads (its worker, a runtime worker, often a second), about half of an idle
//! server's CPU. A file write from the same pulse wakes nobody. The database still gets
//! the time, once a minute, for anyone reading `server_runs`; at start the later of the
//! two counts.

use std::io;
use std::path::{Path, PathBuf};

use crate::time::WallUs;

pub const FILE_NAME: &str = "alive";

/// The life-sign file of one data directory.
///
/// Beats of one run have the same length and overwrite each other in place: cutting the
/// file on each beat cost the file system a block freed and allocated again.
#[derive(Clone, Debug)]
pub struct LifeSign {
    path: PathBuf,
}

impl LifeSign {
    pub fn new(data_dir: &Path) -> Self {
        LifeSign { path: data_dir.join(FILE_NAME) }
    }

    /// Notes that run `run_id` is alive at `at_us`. Written in place (a few dozen bytes,
    /// one page) and not fsynced: what kill -9 leaves in the page cache survives; what a
    /// power cut loses, the database's minute-old time stands in for. Opened each time,
    /// so that a file removed meanwhile is made again.
    pub fn beat(&self, run_id: &str, at_us: WallUs) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let line = format!("{run_id} {at_us}\n");
        let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&self.path)?;
        file.write_all_at(line.as_bytes(), 0)?;
        if file.metadata()?.len() != line.len() as u64 {
            file.set_len(line.len() as u64)?;
        }
        Ok(())
    }

    /// The run and time last written, if the file holds one (a missing, empty or torn
    /// file answers `None`: the database's time is used).
    pub fn last(&self) -> Option<(String, WallUs)> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let line = text.strip_suffix('\n')?;
        let (run, at) = line.split_once(' ')?;
        let at: WallUs = at.parse().ok()?;
        (!run.is_empty() && at > 0).then(|| (run.to_owned(), at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_beat_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let sign = LifeSign::new(dir.path());
        assert_eq!(sign.last(), None, "no file yet");
        // A longer line from an earlier run is replaced whole.
        std::fs::write(dir.path().join(FILE_NAME), "1600000000000000-424242 1600000000000000\n").unwrap();
        sign.beat("1700000000000000-42", 1_700_000_005_000_000).unwrap();
        sign.beat("1700000000000000-42", 1_700_000_010_000_000).unwrap();
        assert_eq!(sign.last(), Some(("1700000000000000-42".into(), 1_700_000_010_000_000)));
        // Removed meanwhile (an operator cleaning up): written again.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        sign.beat("1700000000000000-42", 1_700_000_015_000_000).unwrap();
        assert_eq!(sign.last(), Some(("1700000000000000-42".into(), 1_700_000_015_000_000)));
    }

    #[test]
    fn a_torn_or_foreign_file_is_no_sign() {
        let dir = tempfile::tempdir().unwrap();
        let sign = LifeSign::new(dir.path());
        for text in ["", "run-1", "run-1 17000", "run-1 x\n", " 17000\n", "run-1 -5\n"] {
            std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
            assert_eq!(sign.last(), None, "{text:?}");
        }
    }
}
