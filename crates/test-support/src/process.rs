//! The real gatehouse binary as a child process.
//!
//! [`Gatehouse::start`] writes the config to a fresh temporary directory, starts the binary, and
//! waits for the lines in which it reports the addresses it bound (listeners may use port 0). The
//! process gets SIGTERM when the handle drops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running gatehouse process.
pub struct Gatehouse {
    child: Child,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    listeners: HashMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// The DNS server's address (UDP and TCP) when the config has `[dns]`.
    pub dns: Option<SocketAddr>,
    /// Everything the process logged on stderr (collected in the background).
    stderr: std::sync::Arc<Mutex<String>>,
    /// The task collecting stderr; it ends when the process closes its stderr.
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl Gatehouse {
    /// Starts `binary run -c CONFIG` with `extra_args` and waits until its listeners are up.
    pub async fn start(binary: &Path, config: &str, extra_args: &[&str]) -> Self {
        let dir = temp_dir("gatehouse-test");
        let config_path = dir.join("gatehouse.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .args(extra_args)
            .env("GATEHOUSE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gatehouse");

        let stderr = std::sync::Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let stderr = std::sync::Arc::clone(&stderr);
            let pipe = child.stderr.take().expect("stderr");
            Some(tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut s) = stderr.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            }))
        };

        let expected = config.matches("[[listeners]]").count();
        let wants_admin = config.contains("[admin]");
        let wants_dns = config.contains("\n[dns]");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut listeners = HashMap::new();
        let mut admin = None;
        let mut dns = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while listeners.len() < expected
            || (wants_admin && admin.is_none())
            || (wants_dns && dns.is_none())
        {
            let line = tokio::time::timeout_at(deadline, lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(line))) => line,
                _ => {
                    let err = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                    panic!("gatehouse did not start; stderr:\n{err}");
                }
            };
            if let Some(rest) = line.strip_prefix("gatehouse: listener ") {
                if let Some((name, url)) = rest.split_once(" on http://") {
                    listeners.insert(name.to_owned(), url.parse().expect("listener addr"));
                }
            } else if let Some(url) = line.strip_prefix("gatehouse: admin on http://") {
                admin = Some(url.parse().expect("admin addr"));
            } else if let Some(addr) = line.strip_prefix("gatehouse: dns on udp+tcp ") {
                dns = Some(addr.parse().expect("dns addr"));
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        Self {
            child,
            dir,
            config_path,
            listeners,
            admin,
            dns,
            stderr,
            stderr_reader,
        }
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.listeners))
    }

    pub fn pid(&self) -> i32 {
        self.child.id().map_or(0, |id| id as i32)
    }

    /// Sends a signal by name ("HUP", "TERM") with kill(1).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Rewrites the config file (the process notices the change by itself).
    pub fn write_config(&self, config: &str) {
        // Write then rename, as editors do, so the watcher never reads half a file.
        let tmp = self.dir.join("gatehouse.toml.tmp");
        std::fs::write(&tmp, config).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// What the process has logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the process to exit and returns its exit code; [`Gatehouse::stderr`] then
    /// holds everything it logged.
    pub async fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let code = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => return None,
        };
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        code
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        if let Some(id) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(id.to_string())
                .status();
            // An instrumented build (scripts/build-pgo) writes its profile when it exits: give
            // it the time to drain rather than killing it on drop. Others are killed at once.
            if std::env::var_os("LLVM_PROFILE_FILE").is_some() {
                let end = std::time::Instant::now() + Duration::from_secs(3);
                while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
