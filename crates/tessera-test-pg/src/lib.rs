//! A throwaway PostgreSQL cluster for tests and benchmarks (the store's PostgreSQL tests, the
//! two-replica tests, `tessera-bench --brokered-storage postgres`). A crate of its own so that
//! the gateway binary never links it.
//!
//! [`Cluster::start`] finds PostgreSQL's server binaries (`TESSERA_TEST_PG_BIN`, else `initdb` on
//! `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`), runs `initdb` into a fresh
//! temporary directory (trust authentication, superuser `tessera`, no fsync) and starts the
//! server with `pg_ctl` on `127.0.0.1` at a free port, its unix socket in that directory. It is
//! stopped (`pg_ctl stop -m immediate`, then a `SIGKILL` to the postmaster's PID if that
//! fails) and the directory removed when the last handle drops — on a panic too.
//!
//! PostgreSQL refuses to run as root. When the tests run as root the cluster runs as the
//! unprivileged user `nobody` (or `TESSERA_TEST_PG_USER`): the directory is handed to that user
//! and every PostgreSQL command is started with its uid and gid (and no supplementary groups).
//!
//! [`Cluster::shared`] gives every test in a process the same cluster (started on first use,
//! stopped when the last test using it ends); [`Cluster::database`] makes a fresh database per
//! test, so tests never see each other's rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A running throwaway cluster. Stops and deletes itself on drop.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    data: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    pid: Option<u32>,
    next_db: AtomicU32,
}

const SUPERUSER: &str = "tessera";

impl Cluster {
    /// The process-wide cluster: started by the first caller, stopped when the last `Arc`
    /// drops.
    pub fn shared() -> Arc<Cluster> {
        static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
        let mut slot = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cluster) = slot.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(Cluster::start());
        *slot = Arc::downgrade(&cluster);
        cluster
    }

    /// `initdb` + `pg_ctl start` in a new temporary directory. Panics (with PostgreSQL's
    /// output) when that fails: this is test code.
    pub fn start() -> Cluster {
        let bin = find_bin();
        let dir = tempfile::Builder::new()
            .prefix("tessera-pg-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL");
        let run_as = if std::fs::metadata(dir.path()).unwrap().uid() == 0 {
            let ids = unprivileged_user();
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1)).unwrap();
            Some(ids)
        } else {
            None
        };
        let data = dir.path().join("data");
        let mut cluster = Cluster {
            bin,
            dir: Some(dir),
            data,
            port: 0,
            run_as,
            pid: None,
            next_db: AtomicU32::new(0),
        };
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-locale".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // A free port can be taken by someone else between our probe and the server's bind:
        // try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
                 -c synchronous_commit=off -c max_connections=200",
                cluster.port,
                cluster.socket_dir().display()
            );
            let log = cluster.socket_dir().join("postgres.log");
            match cluster.try_run(
                "pg_ctl",
                &[
                    "start".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-D".as_ref(),
                    cluster.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                ],
            ) {
                Ok(()) => {
                    cluster.pid = read_pid(&cluster.data);
                    return cluster;
                }
                Err(e) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = format!("{e}\n{log}");
                }
            }
        }
        panic!("PostgreSQL did not start: {last_error}");
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` as the superuser, over TCP.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn database(&self) -> String {
        use sqlx::Connection as _;
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let mut admin = sqlx::postgres::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::Executor::execute(
            &mut admin,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .expect("create a test database");
        let _ = admin.close().await;
        self.url(&name)
    }

    fn socket_dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.socket_dir())
            .env("HOME", self.socket_dir())
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            // std drops supplementary groups when it changes the uid as root.
            cmd.gid(gid).uid(uid);
        }
        cmd
    }

    fn try_run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.join(program).display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        if let Err(e) = self.try_run(program, args) {
            panic!("{e}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.pid.is_some() || self.data.join("postmaster.pid").exists() {
            let stopped = self.try_run(
                "pg_ctl",
                &[
                    "stop".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "20".as_ref(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-D".as_ref(),
                    self.data.as_os_str(),
                ],
            );
            if stopped.is_err()
                && let Some(pid) = self.pid.or_else(|| read_pid(&self.data))
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn read_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESSERA_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    // Debian's /usr/bin has only wrappers (pg_ctlcluster …); the server binaries live in
    // /usr/lib/postgresql/<major>/bin. Prefer the newest version there, then PATH.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .expect(
            "PostgreSQL's initdb and pg_ctl were not found (install Debian's `postgresql` \
             package, or set TESSERA_TEST_PG_BIN to their directory)",
        )
}

/// (uid, gid) of `TESSERA_TEST_PG_USER` (default `nobody`) from /etc/passwd.
fn unprivileged_user() -> (u32, u32) {
    let name = std::env::var("TESSERA_TEST_PG_USER").unwrap_or_else(|_| "nobody".to_owned());
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() > 3 && fields[0] == name)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .next()
        .unwrap_or_else(|| panic!("running as root: user {name} (to run PostgreSQL) not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_test_still_stops_the_cluster_and_removes_its_directory() {
        let (tx, rx) = std::sync::mpsc::channel();
        let outcome = std::thread::spawn(move || {
            let cluster = Cluster::start();
            let dir = cluster.socket_dir().to_owned();
            let pid = cluster.pid.expect("the postmaster's pid");
            assert!(Path::new(&format!("/proc/{pid}")).exists());
            tx.send((dir, pid, cluster.port())).unwrap();
            panic!("a failing test");
        })
        .join();
        assert!(outcome.is_err());
        let (dir, pid, port) = rx.recv().unwrap();
        assert!(!dir.exists(), "{} left behind", dir.display());
        // The postmaster is gone (a zombie would still have /proc/<pid>/stat, but it is
        // pg_ctl's child, not ours) and nothing listens on its port.
        assert!(!Path::new(&format!("/proc/{pid}/cwd")).exists());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn runs_unprivileged() {
        let cluster = Cluster::start();
        let owner = std::fs::metadata(&cluster.data).unwrap().uid();
        assert_ne!(
            owner, 0,
            "PostgreSQL's data directory must not belong to root"
        );
        if let Some(pid) = cluster.pid {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert!(
                !uid_line.split_whitespace().skip(1).any(|u| u == "0"),
                "{uid_line}"
            );
        }
    }
}
