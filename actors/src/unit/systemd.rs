//! systemd over D-Bus (`org.freedesktop.systemd1`, zbus: pure Rust, no libdbus).
//!
//! A watch connects to the bus (the system bus named by `DBUS_SYSTEM_BUS_ADDRESS`, or the
//! user's session bus with `user_mode`), subscribes to the manager's `JobRemoved` and the
//! unit's `PropertiesChanged`, calls `Subscribe` (systemd sends no signals otherwise),
//! and only then reads the unit's properties once. From there on every change arrives as
//! a signal: nothing is polled. systemd sends a unit's `Service` properties before its
//! `Unit` properties, so when `ActiveState` changes, `Result` and `ExecMainStatus` are
//! already those of the same transition. Logs come from `journalctl -u UNIT -n N -o cat`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt as _};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, Proxy};

use super::{ActiveState, UnitBackend, UnitError, UnitEvent, UnitStatus, UnitWatch};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How long `journalctl` may take to answer.
pub const JOURNAL_DEADLINE: Duration = Duration::from_secs(5);

/// A systemd unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Systemd {
    /// The unit's name (`nginx.service`).
    pub unit: String,
    /// The user's manager (session bus) instead of the system's.
    pub user_mode: bool,
}

impl Systemd {
    async fn connect(&self) -> Result<Connection, UnitError> {
        let conn = if self.user_mode {
            Connection::session().await
        } else {
            Connection::system().await
        };
        conn.map_err(|e| UnitError(format!("cannot reach the D-Bus bus: {e}")))
    }
}

fn bus_error(what: &str) -> impl Fn(zbus::Error) -> UnitError + '_ {
    move |e| UnitError(format!("{what}: {e}"))
}

async fn proxy(conn: &Connection, path: &str, iface: &str) -> Result<Proxy<'static>, UnitError> {
    zbus::proxy::Builder::new(conn)
        .destination(DEST)
        .and_then(|b| b.path(path.to_owned()))
        .and_then(|b| b.interface(iface.to_owned()))
        .map(|b| b.cache_properties(CacheProperties::No))
        .map_err(bus_error("proxy"))?
        .build()
        .await
        .map_err(bus_error("proxy"))
}

/// Signals queued for a watch before the oldest are dropped (a unit changes a few times
/// per transition; thousands unread means the run is gone).
const SIGNAL_QUEUE: usize = 1024;

/// The event a signal of the manager (`JobRemoved`) or of the unit at `unit_path`
/// (`PropertiesChanged`) carries; `None` for any other signal.
fn event_of(msg: &zbus::Message, unit_path: &str) -> Option<UnitEvent> {
    let header = msg.header();
    let member = header.member()?.as_str();
    let path = header.path()?.as_str();
    match member {
        "JobRemoved" if path == MANAGER_PATH => {
            let (_id, job, _unit, result): (u32, OwnedObjectPath, String, String) =
                msg.body().deserialize().ok()?;
            Some(UnitEvent::JobDone {
                job: job.as_str().to_owned(),
                result,
            })
        }
        "PropertiesChanged" if path == unit_path => {
            let (_iface, changed, _invalidated): (
                String,
                HashMap<String, OwnedValue>,
                Vec<String>,
            ) = msg.body().deserialize().ok()?;
            Some(UnitEvent::Changed(status_from(&changed)))
        }
        _ => None,
    }
}

/// Reads the fields warden uses from a map of D-Bus properties.
pub fn status_from(props: &HashMap<String, OwnedValue>) -> UnitStatus {
    let text = |k: &str| match props.get(k).map(|v| &**v) {
        Some(Value::Str(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let u32_of = |k: &str| match props.get(k).map(|v| &**v) {
        Some(Value::U32(n)) => Some(*n),
        _ => None,
    };
    let i32_of = |k: &str| match props.get(k).map(|v| &**v) {
        Some(Value::I32(n)) => Some(*n),
        _ => None,
    };
    UnitStatus {
        active: text("ActiveState").and_then(|s| ActiveState::parse(&s)),
        sub_state: text("SubState"),
        main_pid: u32_of("MainPID"),
        n_restarts: u32_of("NRestarts"),
        result: text("Result"),
        exec_main_code: i32_of("ExecMainCode"),
        exec_main_status: i32_of("ExecMainStatus"),
    }
}

impl UnitBackend for Systemd {
    fn describe(&self) -> String {
        format!("systemd unit {}", self.unit)
    }

    fn watch(&self) -> BoxFuture<'static, Result<Box<dyn UnitWatch>, UnitError>> {
        let this = self.clone();
        Box::pin(async move {
            let conn = this.connect().await?;
            let manager = proxy(&conn, MANAGER_PATH, MANAGER).await?;
            // Signals first: a change between the read below and the subscription would
            // otherwise be missed. One stream for the manager's and the unit's signals,
            // so they come in the order systemd sent them (a JobRemoved never overtakes
            // the PropertiesChanged sent before it).
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .path_namespace(MANAGER_PATH)
                .map_err(bus_error("match rule"))?
                .build();
            let signals = zbus::MessageStream::for_match_rule(rule, &conn, Some(SIGNAL_QUEUE))
                .await
                .map_err(bus_error("subscribe to the manager's signals"))?;
            manager
                .call::<_, _, ()>("Subscribe", &())
                .await
                .map_err(bus_error("Subscribe"))?;
            let path: OwnedObjectPath = manager
                .call("LoadUnit", &(this.unit.as_str(),))
                .await
                .map_err(bus_error("LoadUnit"))?;
            let props = proxy(&conn, path.as_str(), PROPERTIES).await?;
            let mut status = UnitStatus::default();
            for iface in [UNIT, SERVICE] {
                let all: HashMap<String, OwnedValue> = props
                    .call("GetAll", &(iface,))
                    .await
                    .map_err(bus_error("GetAll"))?;
                status.merge(status_from(&all));
            }
            let unit_path = path.as_str().to_owned();
            let events = signals
                .take_while(|msg| std::future::ready(msg.is_ok()))
                .filter_map(move |msg| {
                    std::future::ready(msg.ok().and_then(|msg| event_of(&msg, &unit_path)))
                })
                .boxed();
            Ok(Box::new(SystemdWatch {
                _conn: conn,
                manager,
                unit: this.unit,
                status,
                events,
            }) as Box<dyn UnitWatch>)
        })
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        map.insert("backend".into(), "systemd".into());
        map.insert("unit".into(), self.unit.clone().into());
        map.insert("user_mode".into(), self.user_mode.into());
        map
    }

    fn logs(&self, tail: usize) -> Result<String, UnitError> {
        let mut cmd = Command::new("journalctl");
        if self.user_mode {
            cmd.arg("--user");
        }
        cmd.args([
            "-u",
            &self.unit,
            "-n",
            &tail.to_string(),
            "-o",
            "cat",
            "--no-pager",
        ]);
        run_with_deadline(cmd, JOURNAL_DEADLINE)
    }
}

/// The most of `journalctl`'s output kept (a tail of 100,000 long lines fits).
const JOURNAL_OUTPUT: u64 = 64 * 1024 * 1024;

/// Runs `cmd` to its end (see [`crate::spawned::run_to_end`]): its stdout as text, or an
/// error naming the program.
fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Result<String, UnitError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = crate::spawned::run_to_end(&mut cmd, deadline, JOURNAL_OUTPUT)
        .map_err(|e| UnitError(format!("cannot run {program}: {e}")))?;
    let Some(status) = out.status else {
        return Err(UnitError(format!(
            "{program} did not answer within {deadline:?}"
        )));
    };
    if !status.success() {
        return Err(UnitError(format!(
            "{program} failed ({status}): {}",
            out.stderr.trim()
        )));
    }
    Ok(out.stdout)
}

struct SystemdWatch {
    _conn: Connection,
    manager: Proxy<'static>,
    unit: String,
    status: UnitStatus,
    events: BoxStream<'static, UnitEvent>,
}

impl SystemdWatch {
    fn verb(&mut self, verb: &'static str) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        Box::pin(async move {
            let job: OwnedObjectPath = self
                .manager
                .call(verb, &(self.unit.as_str(), "replace"))
                .await
                .map_err(bus_error(verb))?;
            Ok(Some(job.as_str().to_owned()))
        })
    }
}

impl UnitWatch for SystemdWatch {
    fn status(&self) -> UnitStatus {
        self.status.clone()
    }

    fn start(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        self.verb("StartUnit")
    }

    fn stop(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        self.verb("StopUnit")
    }

    fn restart(&mut self) -> BoxFuture<'_, Result<Option<String>, UnitError>> {
        self.verb("RestartUnit")
    }

    fn next(&mut self) -> BoxFuture<'_, Option<UnitEvent>> {
        Box::pin(self.events.next())
    }
}
