//! Linux native AIO (`io_setup`, `io_submit`, `io_getevents`), just enough for one
//! durable direct write in flight per spool file.
//!
//! Why: a spool write handed to a thread costs that thread two to five sleeps and
//! wake-ups per GOP (the hand-off, the device, fdatasync's journal commit), and on this
//! kind of VM each wake-up costs as much CPU as hashing a hundred kilobytes. A direct
//! (`O_DIRECT`) write submitted with `RWF_DSYNC` runs without anyone waiting: the
//! kernel does the write, the `fdatasync`-equivalent and its journal commit on its own
//! completion path, and the recorder reads the result at its next batch. io_uring would do
//! the same, but container runtimes' default seccomp profiles refuse it; Linux AIO is
//! allowed.
//!
//! Only direct writes to blocks inside the file's size are asynchronous (ext4 and XFS
//! make a write that extends a file wait for it), so the spool preallocates ahead of
//! its writes (see [`super::spool`]).

use std::io;
use std::os::unix::io::RawFd;
use std::time::Duration;

const IOCB_CMD_PWRITE: u16 = 1;
/// Per-write `O_DSYNC`: complete only when the data and the metadata needed to read it
/// back (the file's size, its extents) are durable.
const RWF_DSYNC: u32 = 0x2;

/// `struct iocb` (linux/aio_abi.h), little-endian field order.
#[repr(C)]
#[derive(Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: u32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// One AIO context, for one write at a time. Dropping it waits for a write in flight.
pub struct Context {
    id: libc::c_ulong,
}

impl Context {
    pub fn new() -> io::Result<Context> {
        let mut id: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context's id into `id`.
        if unsafe { libc::syscall(libc::SYS_io_setup, 1 as libc::c_long, &mut id as *mut libc::c_ulong) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Context { id })
    }

    /// Submits a durable write of `buf` at `offset` of `fd`.
    ///
    /// # Safety
    /// `buf` must stay allocated and unchanged, and `fd` open, until [`Context::reap`]
    /// has returned this write's result or the context is dropped.
    pub unsafe fn submit_write(&self, fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut cb = Iocb {
            aio_lio_opcode: IOCB_CMD_PWRITE,
            aio_rw_flags: RWF_DSYNC,
            aio_fildes: fd as u32,
            aio_buf: buf.as_ptr() as u64,
            aio_nbytes: buf.len() as u64,
            aio_offset: offset as i64,
            ..Default::default()
        };
        let mut list = [&mut cb as *mut Iocb];
        // SAFETY: one valid iocb; the kernel copies it during the call. The buffer's
        // lifetime is the caller's promise.
        let n = unsafe { libc::syscall(libc::SYS_io_submit, self.id, 1 as libc::c_long, list.as_mut_ptr()) };
        match n {
            1 => Ok(()),
            0 => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The result of the write in flight: `None` if it has not completed within
    /// `wait` (zero: just look), else the bytes written or the write's error.
    pub fn reap(&self, wait: Duration) -> io::Result<Option<io::Result<usize>>> {
        let mut ev = IoEvent::default();
        let mut ts = libc::timespec { tv_sec: wait.as_secs() as libc::time_t, tv_nsec: wait.subsec_nanos() as libc::c_long };
        let min = if wait.is_zero() { 0 } else { 1 };
        loop {
            // SAFETY: room for one event; `ts` is a valid timeout.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.id,
                    min as libc::c_long,
                    1 as libc::c_long,
                    &mut ev as *mut IoEvent,
                    &mut ts as *mut libc::timespec,
                )
            };
            match n {
                1 if ev.res < 0 => return Ok(Some(Err(io::Error::from_raw_os_error((-ev.res) as i32)))),
                1 => return Ok(Some(Ok(ev.res as usize))),
                0 => return Ok(None),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: our context; io_destroy waits for the writes in flight to complete.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.id) };
    }
}
