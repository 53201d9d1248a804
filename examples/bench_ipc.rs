//! Outboard IPC figures, side by side with a raw tokio `UnixStream` using the same
//! framing (u32 big-endian length + MessagePack):
//!
//! 1. call round trip (warden -> child -> warden) through the real stack: an
//!    `OutboardFactory` child running `outboard_echo` (the `warden-child` library), calls
//!    made through the `OutboardHub`; p50/p99 over 10,000 calls.
//! 2. the same round trip on a raw tokio `UnixStream` (server task + blocking client
//!    thread, the same frames): the floor this stack is compared with.
//! 3. pipelined one-way messages/s on one connection: 200,000 `Ping` frames, through the
//!    `interprocess` local socket vs a raw tokio `UnixStream`.
//!
//! `cargo build --release --examples && cargo run --release --example bench_ipc`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::embed::RunningTree;
use warden::{ServiceSpec, Strategy, SupervisorSpec};
use warden_actors::{OutboardFactory, OutboardHub, OutboardSpec, ServiceFactory};
use warden_supervisors::ipc::{ChildMessage, SupervisorMessage, CONFIG_ENV};
use warden_supervisors::wire::{self, MAX_FRAME};
use warden_supervisors::{ActorName, ActorPath, ChildSpec};

const CALLS: usize = 10_000;
const MESSAGES: usize = 200_000;

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

fn echo_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/outboard_echo")
}

async fn warden_round_trip(dir: &Path) -> (f64, f64) {
    let hub = Arc::new(OutboardHub::new());
    let config_file = dir.join("echo.json");
    let mut process =
        ServiceSpec::new([echo_binary().to_string_lossy().into_owned()]).expect("command");
    process.env.push((
        CONFIG_ENV.to_owned(),
        config_file.to_string_lossy().into_owned(),
    ));
    let spec = OutboardSpec {
        heartbeat: Duration::from_secs(5),
        missed: 3,
        version: 1,
        ready_timeout: Some(Duration::from_secs(10)),
        config_file,
        socket: dir.join("echo.sock"),
        owner: None,
        stop_timeout: Duration::from_secs(2),
    };
    let factory = OutboardFactory::new(ServiceFactory::new(process), spec, hub.clone());
    let tree = RunningTree::start(&SupervisorSpec {
        strategy: Strategy::OneForOne,
        intensity: None,
        children: vec![ChildSpec::new(
            ActorName::new("echo").expect("name"),
            factory,
        )],
    });
    assert!(
        tree.ready(Duration::from_secs(10)).await,
        "outboard_echo did not get ready"
    );
    let path = ActorPath::parse("/echo").expect("path");
    let body = serde_json::json!({"n": 1, "text": "hello"});
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 1_000 {
        let t0 = Instant::now();
        let reply = hub
            .call(&path, body.clone(), Duration::from_secs(5))
            .await
            .expect("reply");
        if i >= 1_000 {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        // Checked in release builds too (outside the timed part): a wrong echo is a bug,
        // not a figure.
        assert_eq!(reply, serde_json::json!({ "echo": body }), "call {i}");
    }
    tree.shutdown().await;
    percentiles(samples)
}

/// The same exchange over a raw tokio UnixStream: a server task sends `Call` frames and
/// reads `Reply` frames; the client thread answers like `warden-child` does.
async fn raw_round_trip(dir: &Path) -> (f64, f64) {
    let socket = dir.join("raw.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let client_path = socket.clone();
    let client = std::thread::spawn(move || {
        let mut stream = std::os::unix::net::UnixStream::connect(client_path).expect("connect");
        while let Ok(Some(frame)) = wire::read_frame_blocking(&mut stream, MAX_FRAME) {
            let Ok(SupervisorMessage::Call { id, body }) = wire::decode(&frame) else {
                break;
            };
            let reply = ChildMessage::Reply {
                id,
                result: Ok(serde_json::json!({ "echo": body })),
            };
            let payload = wire::encode(&reply).expect("encode");
            if wire::write_frame_blocking(&mut stream, &payload, MAX_FRAME).is_err() {
                break;
            }
        }
    });
    let (mut stream, _) = listener.accept().await.expect("accept");
    let body = serde_json::json!({"n": 1, "text": "hello"});
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS + 1_000 {
        let t0 = Instant::now();
        let call = wire::encode(&SupervisorMessage::Call {
            id: i as u64,
            body: body.clone(),
        })
        .expect("encode");
        wire::write_frame(&mut stream, &call, MAX_FRAME)
            .await
            .expect("write");
        let frame = wire::read_frame(&mut stream, MAX_FRAME)
            .await
            .expect("read")
            .expect("frame");
        let _: ChildMessage = wire::decode(&frame).expect("decode");
        if i >= 1_000 {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(stream);
    let _ = client.join();
    percentiles(samples)
}

/// Sends `MESSAGES` pings back to back from a blocking writer thread on `writer`; the
/// async side reads and decodes them from `reader`. Returns messages per second.
async fn pipelined<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    writer: std::os::unix::net::UnixStream,
) -> f64 {
    let thread = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
        for seq in 0..MESSAGES as u64 {
            let payload = wire::encode(&SupervisorMessage::Ping { seq }).expect("encode");
            out.write_all(&(payload.len() as u32).to_be_bytes())
                .expect("write");
            out.write_all(&payload).expect("write");
        }
        out.flush().expect("flush");
    });
    let t0 = Instant::now();
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    for expected in 0..MESSAGES as u64 {
        let frame = wire::read_frame(&mut reader, MAX_FRAME)
            .await
            .expect("read")
            .expect("frame");
        let message: SupervisorMessage = wire::decode(&frame).expect("decode");
        // A plain assert (cheap next to the decode): release builds check every frame.
        assert_eq!(message, SupervisorMessage::Ping { seq: expected });
    }
    let took = t0.elapsed().as_secs_f64();
    let _ = thread.join();
    MESSAGES as f64 / took
}

fn connect_later(path: PathBuf) -> std::thread::JoinHandle<std::os::unix::net::UnixStream> {
    std::thread::spawn(move || std::os::unix::net::UnixStream::connect(path).expect("connect"))
}

async fn pipelined_interprocess(dir: &Path) -> f64 {
    use interprocess::local_socket::traits::tokio::Listener as _;
    use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
    let path = dir.join("ip.sock");
    let listener = ListenerOptions::new()
        .name(
            path.as_path()
                .to_fs_name::<GenericFilePath>()
                .expect("name"),
        )
        .create_tokio()
        .expect("listen");
    let client = connect_later(path);
    let stream = listener.accept().await.expect("accept");
    let writer = client.join().expect("connect thread");
    pipelined(&stream, writer).await
}

async fn pipelined_raw(dir: &Path) -> f64 {
    let path = dir.join("rawpipe.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let client = connect_later(path);
    let (stream, _) = listener.accept().await.expect("accept");
    let writer = client.join().expect("connect thread");
    pipelined(stream, writer).await
}

fn main() {
    if !echo_binary().exists() {
        eprintln!(
            "no {}: run `cargo build --release --examples` first",
            echo_binary().display()
        );
        std::process::exit(2);
    }
    let dir = std::env::temp_dir().join(format!("warden-bench-ipc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    actix::System::new().block_on(async {
        let (w50, w99) = warden_round_trip(&dir).await;
        let (r50, r99) = raw_round_trip(&dir).await;
        println!("call round trip, warden stack (hub -> link -> warden-child -> link -> hub): p50 {w50:.1} us, p99 {w99:.1} us ({CALLS} calls)");
        println!("call round trip, raw tokio UnixStream, same frames:                     p50 {r50:.1} us, p99 {r99:.1} us");
        println!("  ratio warden/raw p50: {:.2}x", w50 / r50);
        let ip = pipelined_interprocess(&dir).await;
        let raw = pipelined_raw(&dir).await;
        println!("pipelined one-way, interprocess local socket: {ip:.0} msgs/s ({MESSAGES} pings)");
        println!("pipelined one-way, raw tokio UnixStream:      {raw:.0} msgs/s");
        println!("  ratio raw/interprocess: {:.2}x", raw / ip);
    });
    let _ = std::fs::remove_dir_all(&dir);
}
