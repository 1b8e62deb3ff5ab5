//! The embedded default database: a private PostgreSQL cluster run from the machine's own
//! PostgreSQL binaries, with its data under `LEDGER_DATA_DIR`, managed by `postgresql_embedded`
//! in its installed-binaries mode (it never downloads anything).
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root. When the service runs as root, the
//! cluster belongs to the unprivileged `postgres` user: the crate is given a `bin/` of wrapper
//! scripts that run the real binaries through `runuser -u postgres`.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use postgresql_embedded::{PostgreSQL, Settings, VersionReq};
use rand::distributions::{Alphanumeric, DistString};

const DATABASE: &str = "ledger";
const SERVICE_USER: &str = "postgres";

/// A running private cluster; stopped by [`EmbeddedPostgres::stop`] or, failing that, on drop.
pub struct EmbeddedPostgres {
    server: Option<PostgreSQL>,
    url: String,
}

impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedPostgres").finish_non_exhaustive()
    }
}

impl EmbeddedPostgres {
    /// Starts (creating on first use) the cluster in `data_dir` and its `ledger` database.
    pub async fn start(data_dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(data_dir)
            .with_context(|| format!("creating LEDGER_DATA_DIR {}", data_dir.display()))?;
        // Absolute: the binaries may run as another user from another directory.
        let data_dir = fs::canonicalize(data_dir)?;
        let pgdata = data_dir.join("pgdata");
        let password_file = data_dir.join("pgpass");
        let binaries = installed_bindir()?;
        let as_root = fs::metadata("/proc/self")?.uid() == 0;
        if as_root {
            require_traversable(&data_dir)?;
        }
        let password = ensure_password(&password_file)?;
        let installation_dir = if as_root {
            let (uid, gid) = service_user()?;
            fs::create_dir_all(&pgdata)?;
            for path in [&pgdata, &password_file] {
                chown(path, Some(uid), Some(gid))?;
            }
            fs::set_permissions(&pgdata, fs::Permissions::from_mode(0o700))?;
            write_wrappers(&data_dir, &binaries)?
        } else {
            binaries
                .parent()
                .context("the PostgreSQL bin directory has a parent")?
                .to_path_buf()
        };
        clear_stale_pid_file(&pgdata);

        let settings = Settings {
            releases_url: String::new(),
            version: VersionReq::STAR,
            installation_dir,
            // Run <installation_dir>/bin/* as they are; never install or download.
            trust_installation_dir: true,
            data_dir: pgdata.clone(),
            password_file,
            password,
            username: SERVICE_USER.into(),
            temporary: false,
            host: "127.0.0.1".into(),
            port: 0,
            // initdb on two cores can take longer than the crate's 5 s default.
            timeout: Some(Duration::from_secs(120)),
            configuration: [
                ("listen_addresses", "127.0.0.1".to_owned()),
                // The crate starts the server with -F (fsync off); a ledger wants its writes
                // on disk, and a later -c wins.
                ("fsync", "on".to_owned()),
                ("unix_socket_directories", pgdata.display().to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            socket_dir: None,
        };
        let mut server = PostgreSQL::new(settings);
        server.setup().await.context("initdb")?;
        if pgdata.join("postmaster.pid").exists() {
            // A server orphaned by an earlier run that was killed: stop it, then start afresh.
            let _ = server.stop().await;
        }
        server
            .start()
            .await
            .context("starting the embedded PostgreSQL")?;
        if !server.database_exists(DATABASE).await? {
            server.create_database(DATABASE).await?;
        }
        let url = server.settings().url(DATABASE);
        tracing::info!(data_dir = %data_dir.display(), "embedded PostgreSQL started");
        Ok(Self {
            server: Some(server),
            url,
        })
    }

    /// The connection URL (contains the cluster's generated password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the cluster and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        Ok(())
    }
}

/// `$LEDGER_PG_BINDIR`, or the newest `/usr/lib/postgresql/<N>/bin` that has `initdb`.
pub fn installed_bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LEDGER_PG_BINDIR") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (no /usr/lib/postgresql): install the postgresql package or set DATABASE_URL")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/*/bin/initdb found: set LEDGER_PG_BINDIR or DATABASE_URL")
}

/// The `postgres` user must reach the data directory through every ancestor.
fn require_traversable(dir: &Path) -> anyhow::Result<()> {
    for ancestor in dir.ancestors() {
        if fs::metadata(ancestor)?.permissions().mode() & 0o001 == 0 {
            bail!(
                "{} is not traversable by the {SERVICE_USER} user that runs the embedded database; \
                 choose another LEDGER_DATA_DIR (e.g. under /var/lib or /tmp) or set DATABASE_URL",
                ancestor.display()
            );
        }
    }
    Ok(())
}

/// The cluster's superuser password, generated at first start and kept beside the data.
fn ensure_password(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        fs::write(path, Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// `(uid, gid)` of the service user, from /etc/passwd.
fn service_user() -> anyhow::Result<(u32, u32)> {
    for line in fs::read_to_string("/etc/passwd")?.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 3 && fields[0] == SERVICE_USER {
            return Ok((fields[2].parse()?, fields[3].parse()?));
        }
    }
    bail!("running as root, but there is no `{SERVICE_USER}` user to run the embedded database")
}

/// A root-owned `bin/` whose programs run the real ones as the service user.
fn write_wrappers(data_dir: &Path, binaries: &Path) -> anyhow::Result<PathBuf> {
    let root = data_dir.join("bin-as-postgres");
    fs::create_dir_all(root.join("bin"))?;
    for program in ["initdb", "pg_ctl", "postgres"] {
        let path = root.join("bin").join(program);
        let script = format!(
            "#!/bin/sh\nexec runuser -u {SERVICE_USER} -- env LC_ALL=C {}/{program} \"$@\"\n",
            binaries.display()
        );
        fs::write(&path, script)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(root)
}

/// A `postmaster.pid` left by a killed server whose PID now belongs to another process would
/// make PostgreSQL refuse to start: remove it unless that process is a server of this cluster.
fn clear_stale_pid_file(pgdata: &Path) {
    let pid_file = pgdata.join("postmaster.pid");
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return;
    };
    let pid = text.lines().next().unwrap_or_default().trim();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == pgdata.as_os_str().as_encoded_bytes());
    if !ours {
        let _ = fs::remove_file(pid_file);
    }
}
