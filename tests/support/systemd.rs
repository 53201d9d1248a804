//! A private D-Bus bus (`dbus-daemon` on a unix socket in a temp dir) with the stand-in
//! `org.freedesktop.systemd1` of `examples/fake_systemd.rs` on it, and the stand-in's
//! call log. Shared by tests/backends_systemd.rs and examples/bench_unit_events.rs.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A bus and the stand-in on it; both are killed on drop.
pub struct FakeSystemd {
    dir: PathBuf,
    fake_bin: PathBuf,
    bus: Option<Child>,
    fake: Option<Child>,
    unit_command: Option<String>,
}

impl FakeSystemd {
    /// Starts a bus with its socket in `dir` and the stand-in (`fake_bin`) on it.
    pub fn start(dir: &Path, fake_bin: &Path) -> FakeSystemd {
        Self::start_with_units_running(dir, fake_bin, None)
    }

    /// As [`FakeSystemd::start`], with every unit's process running `sh -c
    /// unit_command` (when given) instead of `sleep 600`.
    pub fn start_with_units_running(
        dir: &Path,
        fake_bin: &Path,
        unit_command: Option<&str>,
    ) -> FakeSystemd {
        let mut f = FakeSystemd {
            dir: dir.to_path_buf(),
            fake_bin: fake_bin.to_path_buf(),
            bus: None,
            fake: None,
            unit_command: unit_command.map(str::to_owned),
        };
        f.up();
        f
    }

    /// The bus address (`unix:path=...`), the same across [`FakeSystemd::down`] and
    /// [`FakeSystemd::up`].
    pub fn address(&self) -> String {
        format!("unix:path={}", self.dir.join("bus").display())
    }

    /// The stand-in's call log: one line `Member first-argument` per method call.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many calls of `member` the log holds.
    pub fn count(&self, member: &str) -> usize {
        self.calls()
            .iter()
            .filter(|l| l.split(' ').next() == Some(member))
            .count()
    }

    /// Starts the bus and the stand-in (after [`FakeSystemd::down`]).
    pub fn up(&mut self) {
        let socket = self.dir.join("bus");
        let _ = std::fs::remove_file(&socket);
        let config = self.dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>custom</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\n\
                 <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/>\
                 <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        )
        .expect("write bus config");
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dbus-daemon");
        let mut line = String::new();
        BufReader::new(bus.stdout.take().expect("bus stdout"))
            .read_line(&mut line)
            .expect("read the bus address");
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        self.bus = Some(bus);
        let mut fake = Command::new(&self.fake_bin)
            .arg(self.dir.join("calls.log"))
            .args(self.unit_command.as_deref())
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fake_systemd");
        let mut line = String::new();
        BufReader::new(fake.stdout.take().expect("fake stdout"))
            .read_line(&mut line)
            .expect("read the stand-in's ready line");
        assert_eq!(line.trim(), "ready", "fake_systemd did not start");
        self.fake = Some(fake);
    }

    /// Kills the bus; the stand-in exits (killing its units' processes) once it sees the
    /// bus gone.
    pub fn down(&mut self) {
        if let Some(mut bus) = self.bus.take() {
            let _ = bus.kill();
            let _ = bus.wait();
        }
        if let Some(mut fake) = self.fake.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while fake.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = fake.kill();
            let _ = fake.wait();
        }
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.down();
    }
}
