//! A real `redis-server` for tests: started on a given loopback port, killed (by pid)
//! on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn redis_server_bin() -> PathBuf {
    let found = Command::new("which")
        .arg("redis-server")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|p| !p.is_empty());
    match found {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from("/usr/bin/redis-server"),
    }
}

/// Whether a Redis on `port` answers PING.
pub fn pings(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A `redis-server` child, killed (by pid) on drop.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        let bin = redis_server_bin();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pings(port) {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server on port {port} exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within 10s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits in i32")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// SIGKILL, and wait until it is gone and its port is free.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(5);
        while pings(port) {
            assert!(Instant::now() < deadline, "redis on {port} still answers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGCONT first, in case a test froze it.
        // SAFETY: kill(2) on the pid of our own child; harmless if it already exited.
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one command (as RESP) to the Redis on `port` and answers the raw reply, read
/// until it goes quiet for 100 ms (bounded: 2 s).
pub fn command(port: u16, args: &[&str]) -> String {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("connect to redis on {port}: {e}"));
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .write_all(request.as_bytes())
        .expect("write to redis");
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(_) if !reply.is_empty() => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}
