//! warden's own log (its `tracing` lines) goes to stderr from a thread of its own,
//! `warden-own-log`, behind a bounded queue: a line is formatted where it happens (often
//! the supervision thread) and handed over without waiting. A stderr that nobody reads (a
//! paused terminal, a stalled journal or container log driver) used to block the thread
//! that logged in `write(2)`: with a crash loop logging two lines per restart, the pipe
//! filled in a second and supervision and the admin API stopped.
//!
//! When the queue is full the line is dropped and counted; the next line written says how
//! many were lost. [`flush`] waits (bounded) until everything queued is written: before a
//! reexec and before warden exits.
//!
//! The thread must not compete with a restart for the CPU (the supervision thread logs
//! at the very moment a child exits and its replacement starts): it runs at nice +10, and
//! while lines keep coming it looks for them every [`BATCH_PAUSE`] instead of being woken
//! by each (a wake-up is a system call on the logging thread and a task competing for the
//! CPU right then); after [`IDLE_AFTER`] without a line it waits to be woken again.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How many lines may wait for the thread (a few hundred KiB at most).
pub const QUEUE_LINES: usize = 1024;

/// The thread's pause between looks while lines keep coming: how late a line may reach
/// stderr.
pub const BATCH_PAUSE: Duration = Duration::from_millis(10);

/// How long without a line before the thread waits to be woken instead of looking.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    /// Answer once every line queued before is written.
    Flush(mpsc::Sender<()>),
}

/// The lines dropped since the last one written (a full queue).
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The queue, once [`OwnLog::start`] ran.
static QUEUE: OnceLock<SyncSender<Msg>> = OnceLock::new();

/// The writer that `tracing_subscriber`'s fmt layer formats into: one queued message per
/// event.
#[derive(Debug, Clone, Copy)]
pub struct OwnLog;

impl OwnLog {
    /// Starts the thread that writes to stderr; where it cannot start, lines go straight
    /// to stderr (blocking) as before.
    pub fn start() -> Self {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        let started = std::thread::Builder::new()
            .name("warden-own-log".into())
            .spawn(move || {
                // Below the supervision thread and the children it starts (best effort).
                let _ = warden_actors::sched::set_this_thread(10, None, false);
                write_lines(&lines, &mut std::io::stderr(), BATCH_PAUSE, IDLE_AFTER);
            });
        if started.is_ok() {
            let _ = QUEUE.set(queue);
        }
        Self
    }
}

/// One event's text, queued when dropped.
#[derive(Debug)]
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.0);
        match QUEUE.get() {
            Some(queue) => match queue.try_send(Msg::Line(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(Msg::Line(line))) => {
                    let _ = std::io::stderr().write_all(&line);
                }
                Err(TrySendError::Disconnected(Msg::Flush(_))) => {}
            },
            None => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for OwnLog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// The thread: writes every line in order, saying first how many were dropped before it.
/// Woken by a first line, it then looks every `pause` until `idle` passes without one.
fn write_lines(lines: &Receiver<Msg>, out: &mut impl Write, pause: Duration, idle: Duration) {
    while let Ok(first) = lines.recv() {
        write_msg(first, out);
        let mut last_line = Instant::now();
        loop {
            let mut any = false;
            while let Ok(msg) = lines.try_recv() {
                any = true;
                write_msg(msg, out);
            }
            let _ = out.flush();
            if any {
                last_line = Instant::now();
            } else if last_line.elapsed() >= idle {
                break;
            }
            std::thread::sleep(pause);
        }
    }
}

fn write_msg(msg: Msg, out: &mut impl Write) {
    match msg {
        Msg::Line(line) => {
            let dropped = DROPPED.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let _ = writeln!(
                    out,
                    "warden: {dropped} log line(s) dropped: stderr was not read fast enough"
                );
            }
            let _ = out.write_all(&line);
        }
        Msg::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    }
}

/// Waits, at most `within`, until every line queued so far is written; false when that
/// did not happen in time (stderr not read). Blocking.
pub fn flush(within: Duration) -> bool {
    let Some(queue) = QUEUE.get() else {
        return true;
    };
    let deadline = Instant::now() + within;
    let (done, written) = mpsc::channel();
    let mut msg = Msg::Flush(done);
    loop {
        match queue.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(TrySendError::Disconnected(_)) => return true,
        }
    }
    written
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread writes lines in order and reports drops before the next line.
    #[test]
    fn lines_are_written_in_order_and_drops_are_reported_before_the_next_one() {
        let (queue, lines) = mpsc::sync_channel(4);
        queue.try_send(Msg::Line(b"one\n".to_vec())).expect("room");
        DROPPED.store(3, Ordering::Relaxed);
        queue.try_send(Msg::Line(b"two\n".to_vec())).expect("room");
        let (done, written) = mpsc::channel();
        queue.try_send(Msg::Flush(done)).expect("room");
        drop(queue);
        let mut out = Vec::new();
        write_lines(&lines, &mut out, Duration::ZERO, Duration::ZERO);
        assert!(written.try_recv().is_ok(), "the flush is answered");
        let text = String::from_utf8(out).expect("text");
        assert_eq!(
            text,
            "warden: 3 log line(s) dropped: stderr was not read fast enough\none\ntwo\n"
        );
    }
}
