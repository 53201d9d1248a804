//! The outboard IPC protocol as docs/api.md writes it is enough to write a child in
//! another language: `examples/outboard_child.py` (Python, standard library only, its own
//! MessagePack codec) is started by a real warden, says hello and ready, keeps answering
//! heartbeats, answers calls through `POST /api/v1/actors/{path}/call`, and exits 0 when
//! warden asks it to stop over the socket (before any signal).

mod support;

use std::time::Duration;

use support::{http, toml_str, Warden};

#[test]
fn a_python_child_written_from_the_doc_serves_calls_and_stops_on_request() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/outboard_child.py");
    let body = format!(
        "[[outboard]]\nname = \"py\"\ncommand = [\"python3\", {}]\nready = {{ ipc = true }}\n\
         heartbeat = \"200ms\"\nmissed = 3\nstop = {{ timeout = \"10s\" }}\n",
        toml_str(script)
    );
    let w = Warden::start(&body);
    let running = w.wait_state("py", "running", Duration::from_secs(20));
    let pid = running["pid"].as_u64().expect("pid");
    // Heartbeats every 200 ms, 3 missed restart it: still the same run after 1.5 s.
    std::thread::sleep(Duration::from_millis(1500));
    let actor = w.actor("py");
    assert_eq!(actor["state"], "running", "{actor}");
    assert_eq!(actor["pid"].as_u64(), Some(pid), "restarted: {actor}");
    assert_eq!(actor["restarts"], 0, "{actor}");

    let call = http(
        w.port,
        "POST",
        "/api/v1/actors/py/call",
        Some(&w.token()),
        Some(br#"{"x": [1, -2, 3.5, "s", null, true, {"k": "v"}]}"#),
    )
    .expect("call");
    assert_eq!(call.status, 200, "{}", call.text());
    assert_eq!(
        call.json(),
        serde_json::json!({"echo": {"x": [1, -2, 3.5, "s", null, true, {"k": "v"}]}, "lang": "python"})
    );

    // Stopped over the socket: a clean exit 0, not a signal, well within the stop timeout.
    let stop = w.req("POST", "/api/v1/actors/py/stop");
    assert_eq!(stop.status, 200, "{}", stop.text());
    let stopped = w.wait_state("py", "stopped", Duration::from_secs(5));
    assert_eq!(stopped["last_exit"]["code"], 0, "{stopped}");
    assert!(stopped["last_exit"]["signal"].is_null(), "{stopped}");
}
