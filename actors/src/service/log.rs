//! Child output: a pipe per run, drained into the actor's log file, rotated by size
//! (`api.log`, `api.log.1`, ... keeping the newest `keep` rotated files), and the tail of
//! a log.
//!
//! Threads: no child output touches the supervision thread. Every drain is a task on one
//! log reader thread (its own tokio runtime) that only reads pipes; every file write,
//! rotation and directory creation happens on one log writer thread, fed by a bounded
//! queue (so a flooding child fills its own pipe, not warden's memory, and a slow disk
//! stalls only logging). [`tail_lines`] is blocking I/O for a blocking thread.
//! [`flush`] is for warden's shutdown: it waits (bounded) until the drains have read their
//! pipes to the end and the writer has put everything on disk, so that the last output of
//! stopped children does not die with the process.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::net::unix::pipe;

use crate::state_file;

/// Where and how big an actor's log files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    /// The current log file; rotated ones get `.1`, `.2`, ... appended.
    pub path: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: usize,
}

/// One actor's log file, shared by all its runs (and a run's leftover grandchildren).
#[derive(Debug)]
pub struct LogFile {
    spec: LogSpec,
    state: Mutex<Option<(File, u64)>>,
}

impl LogFile {
    /// A log file at `spec.path` (created on the first write).
    pub fn new(spec: LogSpec) -> Self {
        Self {
            spec,
            state: Mutex::new(None),
        }
    }

    /// The current file's path.
    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    /// Appends `bytes`, rotating so that no file grows past `max_bytes` (a chunk is split
    /// after its last newline that fits, so lines stay whole where they can).
    pub fn append(&self, mut bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let max = self.spec.max_bytes.max(1);
        while !bytes.is_empty() {
            if state.is_none() {
                *state = Some(self.open()?);
            }
            let Some((file, size)) = state.as_mut() else {
                return Ok(());
            };
            let room = usize::try_from(max.saturating_sub(*size)).unwrap_or(usize::MAX);
            if bytes.len() <= room {
                file.write_all(bytes)?;
                *size += bytes.len() as u64;
                return Ok(());
            }
            let cut = match bytes[..room].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if *size == 0 => room.max(1),
                None => 0,
            };
            file.write_all(&bytes[..cut])?;
            bytes = &bytes[cut..];
            *state = None;
            self.rotate()?;
        }
        Ok(())
    }

    /// Opens the current file for appending (0600, its folder 0700; a planted symbolic
    /// link is refused, never followed: see [`crate::state_file`]).
    fn open(&self) -> io::Result<(File, u64)> {
        if let Some(dir) = self.spec.path.parent() {
            state_file::ensure_private_dir(dir)?;
        }
        let file = state_file::open(&self.spec.path, state_file::Access::Append)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        rotated_path(&self.spec.path, n)
    }

    fn rotate(&self) -> io::Result<()> {
        let keep = self.spec.keep.max(1);
        let _ = fs::remove_file(self.rotated(keep));
        for n in (1..keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        fs::rename(&self.spec.path, self.rotated(1))
    }

    /// Copies everything readable from `fd` (a pipe's read end) into the file until every
    /// writer has closed it, off the caller's thread: the pipe is read by a task on the
    /// log reader thread (see [`reader`]) and written by the log writer thread (see
    /// [`writer`]), so the supervision thread never touches a child's output.
    /// `grow`: the pipe is first made to hold up to 1 MiB (best effort), so that its child
    /// can write that much while no warden reads (a process record lets a later warden
    /// adopt it); done here, off the supervision thread (the kernel allocates the ring).
    pub fn drain(self: Arc<Self>, fd: OwnedFd, grow: bool) {
        let live = LiveDrain::new();
        let copy = async move {
            if grow {
                grow_pipe(&fd);
            }
            self.copy(fd).await;
            drop(live);
        };
        match reader() {
            Some(reader) => {
                reader.spawn(copy);
            }
            None => {
                actix_rt::spawn(copy);
            }
        }
    }

    /// The drain itself: reads the pipe and queues each chunk to the writer thread. When
    /// the writer's bounded queue is full this task waits without reading, so the child's
    /// pipe fills and only that child slows down. At most [`CHUNKS_PER_POLL`] chunks are
    /// read before the task yields to the other drains of its thread.
    async fn copy(self: Arc<Self>, fd: OwnedFd) {
        let rx = match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(log = %self.spec.path.display(), error = %e, "cannot read child output");
                return;
            }
        };
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
        }
        enum Read {
            Chunk(Vec<u8>),
            Empty,
            Again,
            End,
        }
        loop {
            if rx.readable().await.is_err() {
                return;
            }
            let _in_hand = match InHand::take().await {
                Some(in_hand) => in_hand,
                None => continue,
            };
            for _ in 0..CHUNKS_PER_POLL {
                // The read buffer is shared by every drain of this thread; only the bytes
                // read are copied out (a line costs its length in the queue, not 64 KiB).
                let read = BUF.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    match rx.try_read(&mut buf) {
                        Ok(0) => Read::End,
                        Ok(n) => Read::Chunk(buf[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Empty,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => Read::Again,
                        Err(_) => Read::End,
                    }
                });
                match read {
                    Read::Chunk(bytes) => self.queue(bytes).await,
                    Read::Again => {}
                    Read::Empty => break,
                    Read::End => return,
                }
            }
            tokio::task::yield_now().await;
        }
    }

    /// Hands `bytes` to the writer thread, waiting while its queue is full; writes them
    /// here only if the writer thread could not be started.
    async fn queue(self: &Arc<Self>, bytes: Vec<u8>) {
        let chunk = Chunk {
            log: self.clone(),
            bytes,
        };
        let unsent = match writer() {
            Some(tx) => match tx.send(Job::Write(chunk)).await {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(job)) => job,
            },
            None => Job::Write(chunk),
        };
        unsent.run();
    }
}

/// Drains whose pipe is still open (counted by [`LiveDrain`]), and the signal that one
/// ended.
static LIVE_DRAINS: AtomicUsize = AtomicUsize::new(0);
static DRAIN_ENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One drain that has not reached the end of its pipe yet: counted while it lives.
struct LiveDrain;

impl LiveDrain {
    fn new() -> Self {
        LIVE_DRAINS.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for LiveDrain {
    fn drop(&mut self) {
        LIVE_DRAINS.fetch_sub(1, Ordering::SeqCst);
        DRAIN_ENDED.notify_waiters();
    }
}

/// Set while warden hands its children over to a re-executed warden: drains read nothing
/// more, so every byte is either written to its log or still in its child's pipe (which
/// the next warden reattaches), never lost in between.
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static RESUMED: tokio::sync::Notify = tokio::sync::Notify::const_new();
/// Drains between a read and the end of queueing what they read.
static IN_HAND: AtomicUsize = AtomicUsize::new(0);

/// A drain's permission to read a batch: counted in [`IN_HAND`] until the batch is queued.
struct InHand;

impl InHand {
    /// Counts this drain in, or (while paused) waits for [`resume`] and answers `None`.
    async fn take() -> Option<Self> {
        IN_HAND.fetch_add(1, Ordering::SeqCst);
        if !PAUSED.load(Ordering::SeqCst) {
            return Some(Self);
        }
        IN_HAND.fetch_sub(1, Ordering::SeqCst);
        let resumed = RESUMED.notified();
        tokio::pin!(resumed);
        resumed.as_mut().enable();
        if PAUSED.load(Ordering::SeqCst) {
            resumed.await;
        }
        None
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        IN_HAND.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops every drain from reading and waits (at most `timeout`) until what they already
/// read is on disk: for an exec of warden that keeps its children, whose pipes the next
/// warden reattaches (unread bytes wait there). `true` if everything read was written in
/// time. [`resume`] undoes it (the exec failed).
pub async fn pause(timeout: Duration) -> bool {
    let start = tokio::time::Instant::now();
    PAUSED.store(true, Ordering::SeqCst);
    while IN_HAND.load(Ordering::SeqCst) > 0 {
        if start.elapsed() >= timeout {
            tracing::warn!("logs: a drain is still queueing output; it may be lost");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    flush_writer(start + timeout).await
}

/// Lets the drains read again after [`pause`].
pub fn resume() {
    PAUSED.store(false, Ordering::SeqCst);
    RESUMED.notify_waiters();
}

/// Waits, at most `timeout` in all, until every drain has read its pipe to the end (at
/// most 3/4 of `timeout`: a pipe a surviving grandchild keeps open never ends) and then
/// until the writer has written everything queued before this call. For warden's
/// shutdown, once its children are gone: the log threads die with the process, and what
/// they still held (up to the writer's queue, 4 MiB, and a pipe's 64 KiB per child) would
/// be lost. `true` if everything was written in time.
pub async fn flush(timeout: Duration) -> bool {
    let start = tokio::time::Instant::now();
    let drains_ended = tokio::time::timeout_at(start + timeout * 3 / 4, async {
        loop {
            let ended = DRAIN_ENDED.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if LIVE_DRAINS.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    })
    .await
    .is_ok();
    if !drains_ended {
        tracing::warn!(
            open = LIVE_DRAINS.load(Ordering::SeqCst),
            "logs: some child pipes are still open (a process outside warden's stop holds them); their later output is not logged"
        );
    }
    let written = flush_writer(start + timeout).await;
    drains_ended && written
}

/// Waits until `deadline` at most for the writer to write everything queued before this
/// call; `true` if it did.
async fn flush_writer(deadline: tokio::time::Instant) -> bool {
    // The writer runs its queue in order: once it reaches this marker, everything queued
    // before it is written.
    let Some(tx) = writer() else {
        // Drains write themselves when there is no writer thread: nothing is queued.
        return true;
    };
    let (done, written) = tokio::sync::oneshot::channel();
    let written = tokio::time::timeout_at(deadline, async {
        tx.send(Job::Flush(done)).await.is_ok() && written.await.is_ok()
    })
    .await
    .unwrap_or(false);
    if !written {
        tracing::warn!("logs: the last queued child output was not written in time and is lost");
    }
    written
}

/// Bytes read from one child's pipe in one go (the most one chunk of the queue holds).
const READ_CHUNK: usize = 64 * 1024;
/// Chunks the writer queue holds: with [`READ_CHUNK`] at most 4 MiB of output waits for
/// the disk; past that, drains stop reading and the children's pipes fill.
const QUEUE_CHUNKS: usize = 64;
/// Chunks a drain reads before it yields the supervision thread to other tasks.
const CHUNKS_PER_POLL: usize = 4;

/// Output of one child on its way to that child's log file.
struct Chunk {
    log: Arc<LogFile>,
    bytes: Vec<u8>,
}

/// What the writer thread is asked to do, in queue order.
enum Job {
    /// Append a chunk to its log.
    Write(Chunk),
    /// Say when everything queued before this is written (see [`flush`]).
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl Job {
    fn run(self) {
        match self {
            Job::Write(Chunk { log, bytes }) => {
                if let Err(e) = log.append(&bytes) {
                    tracing::error!(log = %log.spec.path.display(), error = %e, "cannot write log");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Makes the pipe of `fd` hold up to 1 MiB (best effort).
fn grow_pipe(fd: &OwnedFd) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: fcntl on a valid fd with an integer argument.
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Log threads give way to supervision when CPU is short: nice +10 for the calling thread
/// only (Linux nice values are per thread), so a flood's copying competes with the
/// supervision thread at about a tenth of its weight; and the shortest time slice
/// (SEMANTICS 88): a log thread that has run 100 us may be preempted by any task that
/// wakes, instead of running on to the next tick (it was measured running 2-4 ms
/// unpreempted while a killed service waited to exit). Its share of the CPU is its
/// weight's, as before: the slice changes when it runs, not how much. Best effort: an
/// error changes nothing.
fn lower_this_threads_priority() {
    if crate::sched::set_this_thread(10, Some(crate::sched::SHORT_SLICE), false).is_err() {
        // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    }
}

/// The log reader: one thread of the process running a current-thread tokio runtime that
/// hosts every drain (they only read pipes and queue chunks). Started on first use; `None`
/// if it cannot be started (then drains run on the caller's actix arbiter, as a last
/// resort).
fn reader() -> Option<&'static tokio::runtime::Handle> {
    static READER: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    READER
        .get_or_init(|| {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the log reader runtime: child output is read on the supervision thread");
                    return None;
                }
            };
            let handle = runtime.handle().clone();
            let started = std::thread::Builder::new()
                .name("warden-log-reader".into())
                .spawn(move || {
                    lower_this_threads_priority();
                    runtime.block_on(std::future::pending::<()>())
                });
            match started {
                Ok(_) => Some(handle),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the log reader thread: child output is read on the supervision thread");
                    None
                }
            }
        })
        .as_ref()
}

/// The log writer: one thread of the process that does every log file write, rotation and
/// directory creation, in the order the drains queued them (so the lines of a pipe stay in
/// order), fed by a queue of [`QUEUE_CHUNKS`] chunks. Started on first use; `None` if
/// the thread cannot be started (then drains write themselves, as a last resort).
fn writer() -> Option<&'static tokio::sync::mpsc::Sender<Job>> {
    static WRITER: OnceLock<Option<tokio::sync::mpsc::Sender<Job>>> = OnceLock::new();
    WRITER
        .get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(QUEUE_CHUNKS);
            let started = std::thread::Builder::new()
                .name("warden-log-writer".into())
                .spawn(move || {
                    lower_this_threads_priority();
                    while let Some(job) = rx.blocking_recv() {
                        job.run();
                        // More queued: let whoever waits for this CPU in first (a chunk
                        // is tens of microseconds; a full queue was measured running 4 ms
                        // unpreempted while a restarted child waited). SEMANTICS 88.
                        if !rx.is_empty() {
                            std::thread::yield_now();
                        }
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the log writer thread: logs are written on the supervision thread");
                    None
                }
            }
        })
        .as_ref()
}

/// The most bytes [`tail_lines`] reads (and answers): 960 KiB, so that an answer fits a
/// control socket frame (1 MiB) with room for its envelope.
pub const MAX_TAIL_BYTES: usize = 960 * 1024;

/// The last `n` lines of the log at `path`, reading backwards from the end of the current
/// file into the rotated ones (`.1`, `.2`, ...) as far as needed, at most
/// [`MAX_TAIL_BYTES`]. When the last `n` lines are longer than that, the answer is the
/// newest whole lines that fit (or the end of one longer line). Bytes are returned as
/// written. Blocking file I/O: call it off the supervision thread.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    tail_lines_within(path, n, MAX_TAIL_BYTES)
}

fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// [`tail_lines`] reading at most `cap` bytes. One pass from the end: every byte is read
/// and scanned once.
fn tail_lines_within(path: &Path, n: usize, cap: usize) -> io::Result<Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    if n == 0 || cap == 0 {
        return Ok(Vec::new());
    }
    // Chunks read, newest first, and the line ends found in them (the log's very last
    // byte excepted: it ends the last line, it does not start one).
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut read = 0usize;
    let mut line_ends = 0usize;
    let mut at_end = true;
    for index in 0.. {
        let file_path = if index == 0 {
            path.to_owned()
        } else {
            rotated_path(path, index)
        };
        let mut file = match state_file::open(&file_path, state_file::Access::Read) {
            Ok(f) => f,
            // No current file yet (never written, or just rotated): look at the older ones.
            Err(e) if e.kind() == io::ErrorKind::NotFound && index == 0 => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let mut end = file.metadata()?.len();
        while end > 0 {
            let room = cap - read;
            if room == 0 {
                return Ok(whole_lines(chunks));
            }
            let len = usize::try_from(end)
                .unwrap_or(usize::MAX)
                .min(CHUNK)
                .min(room);
            let from = end - len as u64;
            let mut chunk = vec![0; len];
            file.seek(SeekFrom::Start(from))?;
            file.read_exact(&mut chunk)?;
            end = from;
            read += len;
            let mut scan = chunk.len();
            if at_end {
                at_end = false;
                if chunk.last() == Some(&b'\n') {
                    scan -= 1;
                }
            }
            while let Some(i) = chunk[..scan].iter().rposition(|&b| b == b'\n') {
                line_ends += 1;
                if line_ends == n {
                    chunk.drain(..=i);
                    chunks.push(chunk);
                    return Ok(concat_oldest_first(chunks));
                }
                scan = i;
            }
            chunks.push(chunk);
        }
    }
    Ok(concat_oldest_first(chunks))
}

/// `chunks` (newest first) joined in file order.
fn concat_oldest_first(chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for chunk in chunks.iter().rev() {
        out.extend_from_slice(chunk);
    }
    out
}

/// `chunks` (newest first, cut by the byte cap) joined, without the partial line they
/// start with, unless that line is all there is.
fn whole_lines(chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = concat_oldest_first(chunks);
    let body = out.len().saturating_sub(1);
    if let Some(i) = out[..body].iter().position(|&b| b == b'\n') {
        out.drain(..=i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files_and_tail_spans_them() {
        let dir = std::env::temp_dir().join(format!("warden-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let log = LogFile::new(LogSpec {
            path: dir.join("a.log"),
            max_bytes: 20,
            keep: 2,
        });
        for i in 0..10 {
            log.append(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(dir.join("a.log.1").exists());
        assert!(dir.join("a.log.2").exists());
        assert!(!dir.join("a.log.3").exists());
        let tail = tail_lines(&dir.join("a.log"), 3).unwrap();
        assert_eq!(String::from_utf8(tail).unwrap(), "line 7\nline 8\nline 9\n");
        let _ = fs::remove_dir_all(&dir);
    }

    fn write(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
    }

    #[test]
    fn tail_reads_backwards_through_rotated_files_as_one_stream() {
        let dir = tempdir("stream");
        let log = dir.join("b.log");
        write(&rotated_path(&log, 2), "a\nb\n");
        write(&rotated_path(&log, 1), "c\nd\n");
        write(&log, "e\nf");
        let tail = |n| String::from_utf8(tail_lines(&log, n).unwrap()).unwrap();
        assert_eq!(tail(0), "");
        assert_eq!(tail(1), "f");
        assert_eq!(tail(2), "e\nf");
        assert_eq!(tail(3), "d\ne\nf");
        assert_eq!(tail(5), "b\nc\nd\ne\nf");
        assert_eq!(tail(100), "a\nb\nc\nd\ne\nf");
        fs::remove_file(&log).unwrap();
        assert_eq!(
            tail(1),
            "d\n",
            "no current file yet: the rotated ones answer"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn tail_of_long_lines_is_capped_to_whole_lines() {
        let dir = tempdir("cap");
        let log = dir.join("c.log");
        let line = |i: usize| format!("{i:05} {}\n", "x".repeat(994));
        let text: String = (0..300).map(line).collect();
        write(&log, &text);
        let all = tail_lines_within(&log, 1000, 100_000).unwrap();
        let expected: String = (201..300).map(line).collect();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            expected,
            "100,000 bytes hold the newest 99 whole lines of 1,000 bytes"
        );
        let one = tail_lines_within(&log, 1000, 500).unwrap();
        assert_eq!(one.len(), 500, "one line longer than the cap: its end");
        assert_eq!(
            tail_lines(&log, 2).unwrap(),
            (298..300).map(line).collect::<String>().into_bytes()
        );
        assert!(tail_lines(&dir.join("none.log"), 5).unwrap().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
