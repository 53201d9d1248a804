//! Child output: a pipe per run, drained into the actor's log file, rotated by size
//! (`api.log`, `api.log.1`, ... keeping the newest `keep` rotated files).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::unix::pipe;

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

    fn open(&self) -> io::Result<(File, u64)> {
        if let Some(dir) = self.spec.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.spec.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
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
    /// writer has closed it.
    pub async fn drain(self: Arc<Self>, fd: OwnedFd) {
        let rx = match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(log = %self.spec.path.display(), error = %e, "cannot read child output");
                return;
            }
        };
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
        }
        loop {
            if rx.readable().await.is_err() {
                return;
            }
            let done = BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                loop {
                    match rx.try_read(&mut buf) {
                        Ok(0) => return true,
                        Ok(n) => {
                            if let Err(e) = self.append(&buf[..n]) {
                                tracing::error!(log = %self.spec.path.display(), error = %e, "cannot write log");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return true,
                    }
                }
            });
            if done {
                return;
            }
        }
    }
}

/// The last `n` lines of the log at `path`, reaching into the newest rotated file when the
/// current one holds fewer. Bytes are returned as written.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut out = tail_of_file(path, n)?;
    let have = count_lines(&out);
    if have < n {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        match tail_of_file(Path::new(&rotated), n - have) {
            Ok(mut older) => {
                older.extend_from_slice(&out);
                out = older;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn count_lines(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    if bytes.last().is_some_and(|&b| b != b'\n') {
        newlines + 1
    } else {
        newlines
    }
}

fn tail_of_file(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // No log yet for the current file is an empty log, not an error.
            return if path.extension().and_then(|e| e.to_str()) == Some("log") {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata()?.len();
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    const CHUNK: u64 = 64 * 1024;
    loop {
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0; (start - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
        // n lines need n newlines before them (plus the last line's own end).
        let body = if buf.last() == Some(&b'\n') {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let newlines: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i)
            .collect();
        if newlines.len() >= n {
            let cut = newlines[newlines.len() - n] + 1;
            return Ok(buf[cut..].to_vec());
        }
        if start == 0 {
            return Ok(buf);
        }
    }
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
}
