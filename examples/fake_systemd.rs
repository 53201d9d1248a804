//! A stand-in `org.freedesktop.systemd1` for tests and benchmarks: it owns the name on
//! the bus of `DBUS_SYSTEM_BUS_ADDRESS` and fakes units whose processes are real (each
//! start spawns `sleep 600`), so a unit's MainPID can be killed and the change seen.
//!
//! Manager (`/org/freedesktop/systemd1`): Subscribe, LoadUnit, GetUnit, StartUnit,
//! StopUnit, RestartUnit, and the JobRemoved signal. Each unit object answers Get and
//! GetAll on `org.freedesktop.DBus.Properties` for its `Unit` (ActiveState, SubState) and
//! `Service` (MainPID, NRestarts, Result, ExecMainCode, ExecMainStatus) interfaces and
//! sends PropertiesChanged on every change. Every method call is appended, one line
//! `Member first-argument`, to the file named by the first argument, so a test can see
//! which verbs were called and that no Get/GetAll came between events; so is every spawn
//! of a unit's process, as `Spawned UNIT PID`. As systemd does, StartUnit on an active
//! unit is a job that is done at once and changes nothing; RestartUnit stops the unit's
//! process and starts a new one (a new MainPID).
//!
//! Usage: `fake_systemd CALL_LOG [COMMAND]` (with `DBUS_SYSTEM_BUS_ADDRESS` set); a unit's
//! process runs `sh -c COMMAND` when given (e.g. one that exits 0, as a finished job
//! does), else `sleep 600`. It prints `ready`
//! once it owns the name, and exits (killing its units' processes) when the bus goes away.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use zbus::message::{Header, Type};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};
use zbus::{Connection, MessageStream};

const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

#[derive(Default)]
struct Unit {
    active: &'static str,
    sub: &'static str,
    main_pid: u32,
    n_restarts: u32,
    result: &'static str,
    exec_code: i32,
    exec_status: i32,
    /// Which spawn the current process is (exits of older ones are ignored).
    run: u64,
    /// Jobs to finish once the process is gone; `true`: start again then (RestartUnit).
    stop_jobs: Vec<(u32, bool)>,
}

struct Fake {
    conn: Connection,
    units: HashMap<String, Unit>,
    jobs: u32,
    runs: u64,
    exits: mpsc::UnboundedSender<(String, u64, std::process::ExitStatus)>,
    log: std::fs::File,
    /// What a unit's process runs (`sh -c`), instead of `sleep 600`.
    unit_command: Option<String>,
}

fn unit_path(name: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

impl Fake {
    fn unit(&mut self, name: &str) -> &mut Unit {
        self.units.entry(name.to_owned()).or_insert_with(|| Unit {
            active: "inactive",
            sub: "dead",
            result: "success",
            ..Unit::default()
        })
    }

    fn props(&self, name: &str, iface: &str) -> HashMap<&'static str, Value<'static>> {
        let mut map = HashMap::new();
        let Some(u) = self.units.get(name) else {
            return map;
        };
        if iface == UNIT {
            map.insert("ActiveState", Value::from(u.active));
            map.insert("SubState", Value::from(u.sub));
        } else if iface == SERVICE {
            map.insert("MainPID", Value::from(u.main_pid));
            map.insert("NRestarts", Value::from(u.n_restarts));
            map.insert("Result", Value::from(u.result));
            map.insert("ExecMainCode", Value::from(u.exec_code));
            map.insert("ExecMainStatus", Value::from(u.exec_status));
        }
        map
    }

    async fn changed(&self, name: &str) -> zbus::Result<()> {
        let path = unit_path(name);
        // As systemd does: the type's interface first, then the generic unit's, so a
        // client that sees ActiveState change already has the matching Result.
        for iface in [SERVICE, UNIT] {
            let body = (iface, self.props(name, iface), Vec::<String>::new());
            self.conn
                .emit_signal(
                    None::<&str>,
                    path.as_str(),
                    PROPERTIES,
                    "PropertiesChanged",
                    &body,
                )
                .await?;
        }
        Ok(())
    }

    async fn job_removed(&self, id: u32, name: &str, result: &str) -> zbus::Result<()> {
        let job = format!("/org/freedesktop/systemd1/job/{id}");
        let job = ObjectPath::try_from(job.as_str())?;
        self.conn
            .emit_signal(
                None::<&str>,
                MANAGER_PATH,
                MANAGER,
                "JobRemoved",
                &(id, job, name, result),
            )
            .await
    }

    fn new_job(&mut self) -> (u32, OwnedObjectPath) {
        self.jobs += 1;
        let path = format!("/org/freedesktop/systemd1/job/{}", self.jobs);
        (
            self.jobs,
            OwnedObjectPath::try_from(path).expect("job path"),
        )
    }

    /// Spawns the unit's process; the unit is active.
    fn spawn(&mut self, name: &str) {
        self.runs += 1;
        let run = self.runs;
        let mut command = match &self.unit_command {
            Some(script) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", script]);
                sh
            }
            None => {
                let mut sleep = Command::new("sleep");
                sleep.arg("600");
                sleep
            }
        };
        let child = command.stdin(Stdio::null()).spawn();
        let exits = self.exits.clone();
        let unit = self.unit(name);
        match child {
            Ok(mut child) => {
                let pid = child.id();
                unit.active = "active";
                unit.sub = "running";
                unit.main_pid = child.id();
                unit.run = run;
                let name = name.to_owned();
                self.log(&format!("Spawned {name} {pid}"));
                std::thread::spawn(move || {
                    if let Ok(status) = child.wait() {
                        let _ = exits.send((name, run, status));
                    }
                });
            }
            Err(_) => {
                unit.active = "failed";
                unit.sub = "failed";
                unit.result = "resources";
            }
        }
    }

    /// Starts the unit unless it is active already (then nothing changes).
    async fn start(&mut self, name: &str) -> zbus::Result<()> {
        if self.unit(name).active == "active" {
            return Ok(());
        }
        self.spawn(name);
        self.changed(name).await
    }

    /// The unit's process ended.
    async fn exited(
        &mut self,
        name: &str,
        run: u64,
        status: std::process::ExitStatus,
    ) -> zbus::Result<()> {
        let unit = self.unit(name);
        if unit.run != run {
            return Ok(());
        }
        let jobs = std::mem::take(&mut unit.stop_jobs);
        unit.main_pid = 0;
        if jobs.is_empty() {
            // Died while wanted up.
            unit.active = "failed";
            unit.sub = "failed";
            match (status.code(), status.signal()) {
                (Some(code), _) => {
                    unit.result = if code == 0 { "success" } else { "exit-code" };
                    unit.exec_code = 1;
                    unit.exec_status = code;
                    if code == 0 {
                        unit.active = "inactive";
                        unit.sub = "dead";
                    }
                }
                (None, Some(sig)) => {
                    unit.result = "signal";
                    unit.exec_code = 2;
                    unit.exec_status = sig;
                }
                _ => {}
            }
        } else {
            unit.active = "inactive";
            unit.sub = "dead";
            unit.result = "success";
        }
        let restart = jobs.iter().any(|(_, again)| *again);
        if restart {
            self.spawn(name);
        }
        self.changed(name).await?;
        for (id, _) in jobs {
            self.job_removed(id, name, "done").await?;
        }
        Ok(())
    }

    fn log(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
    }

    async fn call(&mut self, header: &Header<'_>, msg: &zbus::Message) -> zbus::Result<()> {
        let member = header
            .member()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let path = header
            .path()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let first: String = msg
            .body()
            .deserialize::<(String,)>()
            .map(|(s,)| s)
            .or_else(|_| msg.body().deserialize::<(String, String)>().map(|(s, _)| s))
            .unwrap_or_default();
        self.log(&format!("{member} {first}"));
        match member.as_str() {
            "Subscribe" => self.conn.reply(header, &()).await,
            "LoadUnit" | "GetUnit" => {
                self.unit(&first);
                let path = OwnedObjectPath::try_from(unit_path(&first)).expect("unit path");
                self.conn.reply(header, &(path,)).await
            }
            "StartUnit" => {
                let (id, job) = self.new_job();
                self.conn.reply(header, &(job,)).await?;
                self.start(&first).await?;
                self.job_removed(id, &first, "done").await
            }
            "StopUnit" | "RestartUnit" => {
                let again = member == "RestartUnit";
                let (id, job) = self.new_job();
                self.conn.reply(header, &(job,)).await?;
                let unit = self.unit(&first);
                if unit.main_pid == 0 {
                    if again {
                        self.start(&first).await?;
                    }
                    return self.job_removed(id, &first, "done").await;
                }
                unit.stop_jobs.push((id, again));
                unit.active = "deactivating";
                unit.sub = "stop-sigterm";
                // SAFETY-free: a plain kill(2) of the fake's own child.
                let _ = Command::new("kill").arg(unit.main_pid.to_string()).status();
                self.changed(&first).await
            }
            "Get" => {
                let (iface, prop): (String, String) = msg.body().deserialize()?;
                let name = self.name_of(&path);
                let value = self.props(&name, &iface).remove(prop.as_str());
                match value {
                    Some(v) => self.conn.reply(header, &(v,)).await,
                    None => {
                        self.conn
                            .reply_error(
                                header,
                                "org.freedesktop.DBus.Error.UnknownProperty",
                                &(prop,),
                            )
                            .await
                    }
                }
            }
            "GetAll" => {
                let name = self.name_of(&path);
                let (iface,): (String,) = msg.body().deserialize()?;
                self.conn.reply(header, &(self.props(&name, &iface),)).await
            }
            other => {
                self.conn
                    .reply_error(
                        header,
                        "org.freedesktop.DBus.Error.UnknownMethod",
                        &(format!("the stand-in has no {other}"),),
                    )
                    .await
            }
        }
    }

    fn name_of(&self, path: &str) -> String {
        self.units
            .keys()
            .find(|n| unit_path(n) == path)
            .cloned()
            .unwrap_or_default()
    }

    fn kill_all(&self) {
        for unit in self.units.values() {
            if unit.main_pid != 0 {
                let _ = Command::new("kill")
                    .arg("-9")
                    .arg(unit.main_pid.to_string())
                    .status();
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let log_path = std::env::args()
        .nth(1)
        .ok_or("usage: fake_systemd CALL_LOG [COMMAND]")?;
    let unit_command = std::env::args().nth(2);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let conn = Connection::system().await?;
    let mut incoming = MessageStream::from(&conn);
    conn.request_name("org.freedesktop.systemd1").await?;
    let (exits, mut exited) = mpsc::unbounded_channel();
    let mut fake = Fake {
        conn,
        units: HashMap::new(),
        jobs: 0,
        runs: 0,
        exits,
        log,
        unit_command,
    };
    println!("ready");
    loop {
        tokio::select! {
            msg = incoming.next() => {
                let Some(Ok(msg)) = msg else { break };
                let header = msg.header();
                if header.message_type() != Type::MethodCall {
                    continue;
                }
                if let Err(e) = fake.call(&header, &msg).await {
                    eprintln!("fake_systemd: {e}");
                }
            }
            Some((name, run, status)) = exited.recv() => {
                if let Err(e) = fake.exited(&name, run, status).await {
                    eprintln!("fake_systemd: {e}");
                }
            }
        }
    }
    fake.kill_all();
    Ok(())
}
