//! Reload on file change: watches the files a configuration reads and reports, after a
//! quiet period, that they changed. The server then runs the same reload as SIGHUP
//! (`crate::reload`), so both doors validate, count and log identically.
//!
//! Watched (non-recursively, with the OS notifier: inotify on Linux): the directory of
//! `routes.yaml`, the `providers/` directory beside it and the directories of the key
//! and certificate files. A change counts when it touches a file the configuration
//! reads (routes.yaml, any `providers/*.yaml`, a key or certificate (a route's `ca_file` too), a key's retired
//! siblings), or a `..`-prefixed entry (Kubernetes ConfigMap and Secret volumes swap a
//! `..data` symlink). Everything else in those directories (an audit log, an editor's
//! swap file) is ignored. Editors save by writing a temporary file and renaming it,
//! which is several events: the debounce turns a burst into one reload.
//!
//! A watched directory can itself be replaced (a `certs` symlink swapped to a new
//! directory, or `mv certs.new certs`): the OS watch follows the old directory, so an
//! event on the watched directory's own path counts as a change, and after each
//! reload a directory that is no longer the one watched (device and inode) is watched
//! again.

use crate::config::{AuditOutput, Config};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The longest a burst of changes can postpone a reload.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Extensions of key material whose directories are watched.
const KEY_EXTENSIONS: [&str; 5] = ["pem", "key", "crt", "cer", "json"];

/// What a configuration reads, as absolute paths.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Interest {
    files: BTreeSet<PathBuf>,
    providers_dir: PathBuf,
    key_dirs: BTreeSet<PathBuf>,
    /// Never a reason to reload (the audit log may live beside routes.yaml).
    ignore: Option<PathBuf>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).components().collect()
}

impl Interest {
    fn of(config: &Config) -> Interest {
        let mut files = BTreeSet::new();
        let mut keys: Vec<&Path> = Vec::new();
        files.insert(absolute(&config.path));
        for p in &config.providers {
            files.insert(absolute(&p.file));
            if let Some(d) = crate::providers::dev::section_of(p) {
                keys.push(&d.signing_key);
            }
        }
        if let Some(t) = &config.listen_https {
            keys.extend([t.cert.as_path(), t.key.as_path()]);
        }
        if let Some(b) = &config.broker {
            keys.push(&b.signing_key);
        }
        if let Some(k) = &config.session.key_file {
            keys.push(k);
        }
        keys.extend(config.routes.iter().filter_map(|r| r.upstream.ca_file.as_deref()));
        let mut key_dirs = BTreeSet::new();
        for k in keys {
            let k = absolute(k);
            if let Some(d) = k.parent() {
                key_dirs.insert(d.to_path_buf());
            }
            files.insert(k);
        }
        let ignore = match &config.audit.output {
            AuditOutput::File(f) => Some(absolute(f)),
            _ => None,
        };
        Interest { files, providers_dir: absolute(&config.base_dir.join("providers")), key_dirs, ignore }
    }

    /// The directories to watch.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        let mut d: BTreeSet<PathBuf> = self.files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        d.insert(self.providers_dir.clone());
        d.extend(self.key_dirs.iter().cloned());
        d
    }

    /// Whether a change to `path` can change the configuration.
    fn relevant(&self, path: &Path) -> bool {
        let path = absolute(path);
        if self.ignore.as_ref() == Some(&path) {
            return false;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let parent = path.parent().unwrap_or(Path::new(""));
        self.files.contains(&path)
            || name.starts_with("..")
            || self.dirs().contains(&path)
            || (parent == self.providers_dir && matches!(ext, "yaml" | "yml"))
            || (self.key_dirs.contains(parent) && KEY_EXTENSIONS.contains(&ext))
    }
}

/// Which directory `dir` is now (symlinks followed), to notice a replaced one.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// A running watch: the OS watcher and the channel its events arrive on.
pub struct Watch {
    watcher: RecommendedWatcher,
    interest: Arc<RwLock<Interest>>,
    /// Each watched directory and the (device, inode) it was when the watch was set.
    watched: BTreeMap<PathBuf, Option<(u64, u64)>>,
    rx: mpsc::Receiver<PathBuf>,
    debounce: Duration,
}

impl Watch {
    /// Starts watching what `config` reads.
    ///
    /// # Errors
    /// When the OS notifier cannot be created (e.g. the inotify instance limit).
    pub fn start(config: &Config) -> notify::Result<Watch> {
        let interest = Arc::new(RwLock::new(Interest::of(config)));
        let (tx, rx) = mpsc::channel(256);
        let filter = interest.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if matches!(ev.kind, EventKind::Access(_) | EventKind::Other) {
                return;
            }
            let Ok(interest) = filter.read() else { return };
            for p in ev.paths.iter().filter(|p| interest.relevant(p)) {
                // A full channel already holds a pending change: dropping is fine.
                let _ = tx.try_send(p.clone());
            }
        })?;
        let mut w = Watch { watcher, interest, watched: BTreeMap::new(), rx, debounce: config.reload.debounce };
        w.sync_dirs();
        Ok(w)
    }

    /// Follows a newly loaded configuration (new key paths, new debounce).
    pub fn update(&mut self, config: &Config) {
        let new = Interest::of(config);
        if let Ok(mut i) = self.interest.write() {
            *i = new;
        }
        self.debounce = config.reload.debounce;
        self.sync_dirs();
    }

    /// Re-checks the watched directories against the running configuration's interest,
    /// after a reload that failed: a key directory swapped in (symlink, rename) is
    /// followed even when that reload was refused, so the fix that follows is seen.
    pub fn resync(&mut self) {
        self.sync_dirs();
    }

    fn sync_dirs(&mut self) {
        let want = self.interest.read().map(|i| i.dirs()).unwrap_or_default();
        let gone: Vec<PathBuf> = self.watched.keys().filter(|d| !want.contains(*d)).cloned().collect();
        for dir in gone {
            let _ = self.watcher.unwatch(&dir);
            self.watched.remove(&dir);
        }
        for dir in want {
            let now = identity(&dir);
            match self.watched.get(&dir) {
                Some(was) if *was == now => continue,
                // Replaced since it was watched: the old watch follows the old directory.
                Some(_) => {
                    let _ = self.watcher.unwatch(&dir);
                    self.watched.remove(&dir);
                }
                None => {}
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir, now);
                }
                // A missing directory (no providers/ yet) is not an error; it is retried
                // after the next reload.
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "not watching directory"),
            }
        }
    }

    /// The directories being watched (for the start-up log line).
    pub fn dirs(&self) -> Vec<String> {
        self.watched.keys().map(|d| d.display().to_string()).collect()
    }

    /// Waits for a relevant change, then for `debounce` without further changes (at
    /// most [`MAX_DELAY`] in all), and returns the changed paths.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        let Some(first) = self.rx.recv().await else { return std::future::pending().await };
        let mut paths = BTreeSet::from([first]);
        let until = Instant::now() + MAX_DELAY;
        loop {
            let wait = self.debounce.min(until.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, self.rx.recv()).await {
                Ok(Some(p)) => {
                    paths.insert(p);
                }
                Ok(None) | Err(_) => break,
            }
        }
        paths.into_iter().collect()
    }

    /// A digest of everything the watch covers (names and contents). A change event
    /// whose digest equals the last load's is noise (a `touch`, a save without edits,
    /// a reload already done by SIGHUP) and needs no reload.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let Ok(interest) = self.interest.read() else { return 0 };
        let mut paths: BTreeSet<PathBuf> = interest.files.clone();
        for dir in self.watched.keys() {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if interest.relevant(&p) {
                    paths.insert(p);
                }
            }
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in &paths {
            p.hash(&mut h);
            match std::fs::read(p) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().to_string().hash(&mut h),
            }
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance() {
        let i = Interest {
            files: [PathBuf::from("/etc/idf/routes.yaml"), PathBuf::from("/etc/idf/certs/broker-signing.pem")].into(),
            providers_dir: PathBuf::from("/etc/idf/providers"),
            key_dirs: [PathBuf::from("/etc/idf/certs")].into(),
            ignore: Some(PathBuf::from("/etc/idf/audit.log")),
        };
        for yes in [
            "/etc/idf/routes.yaml",
            "/etc/idf/./routes.yaml",
            "/etc/idf/providers/new.yaml",
            "/etc/idf/certs/broker-signing.pem.retired-123.pem",
            "/etc/idf/..data",
            "/etc/idf/certs",
            "/etc/idf/providers",
        ] {
            assert!(i.relevant(Path::new(yes)), "{yes}");
        }
        for no in
            ["/etc/idf/audit.log", "/etc/idf/.routes.yaml.swp", "/etc/idf/providers/notes.txt", "/etc/idf/other.yaml"]
        {
            assert!(!i.relevant(Path::new(no)), "{no}");
        }
        assert!(i.dirs().contains(Path::new("/etc/idf/providers")));
    }
}
