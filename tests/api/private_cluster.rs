//! A PostgreSQL cluster of one test's own, made with the machine's `initdb` and driven with
//! `pg_ctl`, so that the test can crash and restart it under load without disturbing the other
//! tests (which share the machine's server). As root, the binaries run as `postgres`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, Executor, PgConnection};

pub struct PrivateCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").port()
}

impl PrivateCluster {
    /// Creates and starts a cluster (trust auth, on a free loopback port) with a `ledger`
    /// database.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("cl_pg_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let cluster = Self {
            dir,
            bindir: connect_ledger::embedded::installed_bindir()
                .expect("PostgreSQL's binaries (initdb, pg_ctl)"),
            port: free_port(),
        };
        if as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&cluster.dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.start_server();
        let mut admin = PgConnection::connect(&cluster.url_of("postgres"))
            .await
            .expect("connect to the private cluster");
        admin
            .execute("CREATE DATABASE ledger")
            .await
            .expect("create database");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The `ledger` database's URL.
    pub fn url(&self) -> String {
        self.url_of("ledger")
    }

    /// One of the cluster's binaries, run as `postgres` when the test runs as root.
    fn command(&self, binary: &str) -> Command {
        let path = self.bindir.join(binary);
        if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn run(&self, binary: &str, args: &[&str]) {
        let output = self
            .command(binary)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run a PostgreSQL binary");
        assert!(
            output.status.success(),
            "{binary} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections (crash recovery included).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let data = self.data().display().to_string();
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "120", "start",
            ],
        );
    }

    /// Stops the server the way a crash or an operator's `kill -QUIT` would: no checkpoint,
    /// connections cut, recovery from the WAL at the next start.
    pub fn crash_server(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let data = data.display().to_string();
            let _ = self
                .command("pg_ctl")
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_root() -> bool {
    std::fs::metadata(Path::new("/proc/self")).is_ok_and(|m| m.uid() == 0)
}
