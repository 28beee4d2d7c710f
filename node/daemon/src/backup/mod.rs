//! Backups of a running node and restoring one ([`restore`]).
//!
//! A backup is a directory on the node's host:
//! - `db/`: a RocksDB checkpoint of the store — blocks with their commit
//!   certificates, indexes, ledger state, and this node's own records (the
//!   peg watcher's view of Bitcoin, open alerts);
//! - `fedpeg-backup.json`: the [`Manifest`], written last (a backup without
//!   it is incomplete).
//!
//! It holds no secret: not the member key (kept offline by the operator),
//! not the admin token, not the consensus WAL (what the member signed since
//! the backup is exactly what a restore cannot bring back: the vote floor,
//! [`fedpeg_consensus::rejoin`], covers it).
//!
//! Backups are made by the node itself ([`create`], behind the admin
//! `NodeService.Backup` call): RocksDB is locked by the running process, and
//! a checkpoint is consistent while blocks keep being committed.

pub mod restore;

use crate::chain::Chain;
use crate::store::{Store, StoreError, StoreSummary};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

/// Name of the manifest file in a backup directory.
pub const MANIFEST_FILE: &str = "fedpeg-backup.json";
/// Name of the database directory in a backup (and in a data directory).
pub const DB_DIR: &str = "db";
/// `kind` of a manifest.
const KIND: &str = "fedpeg-backup";
/// Layout version of a backup directory.
const FORMAT: u32 = 1;

/// What a backup holds, for the operator and for [`restore`] to check. JSON
/// for people; nothing here is hashed or signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `fedpeg-backup`.
    pub kind: String,
    /// Layout version of the backup directory (1).
    pub format: u32,
    /// Chain id (hash of genesis.json), hex.
    pub chain_id: String,
    pub chain_name: String,
    /// Bitcoin network of the peg.
    pub network: String,
    /// Height of the last block in the backup.
    pub height: u64,
    /// Hash of that block, hex.
    pub block_hash: String,
    pub state_root: String,
    /// Store layout version of `db/`.
    pub store_format: u32,
    pub created_unix_ms: u64,
    /// Version of the fedpegd that wrote it.
    pub fedpegd_version: String,
    /// Member name of the node backed up (empty: an observer).
    pub member: String,
}

impl Manifest {
    fn new(chain: &Chain, s: &StoreSummary, member: &str) -> Manifest {
        Manifest {
            kind: KIND.into(),
            format: FORMAT,
            chain_id: s.chain_id.to_hex(),
            chain_name: chain.spec.genesis.chain_name.clone(),
            network: chain.spec.genesis.network.clone(),
            height: s.height,
            block_hash: s.tip.to_hex(),
            state_root: s.state_root.to_hex(),
            store_format: s.format,
            created_unix_ms: crate::driver::now_ms(),
            fedpegd_version: env!("CARGO_PKG_VERSION").into(),
            member: member.into(),
        }
    }

    /// Reads and checks the manifest of the backup in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, restore::RestoreError> {
        use restore::RestoreError;
        let path = dir.join(MANIFEST_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RestoreError::NoManifest(dir.display().to_string()))
            }
            Err(e) => return Err(RestoreError::Io(path.display().to_string(), e)),
        };
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| RestoreError::BadManifest(path.display().to_string(), e.to_string()))?;
        if m.kind != KIND || m.format != FORMAT {
            return Err(RestoreError::BadManifest(
                path.display().to_string(),
                format!(
                    "kind '{}' format {}; this build reads kind '{KIND}' format {FORMAT}",
                    m.kind, m.format
                ),
            ));
        }
        Ok(m)
    }
}

/// Why a backup was not made. Nothing is left behind: a directory the
/// backup created is removed again.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup path '{0}' is relative: the node resolves it on its own host, so give an absolute path (or none for <data-dir>/backups/)")]
    Relative(String),
    #[error("backup path {0} already exists: a backup never overwrites anything; pick a new path")]
    Exists(String),
    #[error("the parent directory of backup path {0} does not exist on the node's host; create it first")]
    NoParent(String),
    #[error("backup path {0} is inside the node's database directory; pick a path outside <data-dir>/db")]
    InsideDatabase(String),
    #[error("backup {0}: {1}")]
    Io(String, std::io::Error),
    #[error("backup: {0}")]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io(path.display().to_string(), e)
}

/// Creates directory `dir` (mode 0700), refusing one that exists.
fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(dir.display().to_string()),
            _ => BackupError::Io(dir.display().to_string(), e),
        })
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Checks a requested backup path and creates it.
fn create_requested(path: &Path, data_dir: &Path) -> Result<(), BackupError> {
    let shown = path.display().to_string();
    if !path.is_absolute() {
        return Err(BackupError::Relative(shown));
    }
    // A dangling symlink exists too.
    if path.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(shown));
    }
    let parent = path
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .filter(|p| p.is_dir())
        .ok_or_else(|| BackupError::NoParent(shown.clone()))?;
    let db = data_dir.join(DB_DIR).canonicalize().map_err(io(data_dir))?;
    if parent.starts_with(&db) {
        return Err(BackupError::InsideDatabase(shown));
    }
    create_private_dir(path)
}

/// Makes a backup of `chain` (a blocking call: run it off the async tasks)
/// into `requested`, an absolute path that must not exist, or by default
/// into `<data_dir>/backups/<height>-<unix-time>`. `member` names the node
/// in the manifest. Returns where it is and its manifest.
pub fn create(
    chain: &Chain,
    data_dir: &Path,
    requested: Option<&Path>,
    member: &str,
) -> Result<(PathBuf, Manifest), BackupError> {
    let work = match requested {
        Some(p) => {
            create_requested(p, data_dir)?;
            p.to_path_buf()
        }
        None => {
            let backups = data_dir.join("backups");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&backups)
                .map_err(io(&backups))?;
            // Named after its height once it is whole; until then visibly
            // incomplete.
            let work = backups.join(format!(".incomplete-{}", crate::driver::now_ms()));
            create_private_dir(&work)?;
            work
        }
    };
    match fill(chain, &work, requested.is_none(), member) {
        Ok(done) => Ok(done),
        Err(e) => {
            // Only what this call created: the directory did not exist.
            let _ = std::fs::remove_dir_all(&work);
            Err(e)
        }
    }
}

/// Writes the checkpoint and the manifest into `work`; with `rename`, then
/// moves it next to itself under `<height>-<unix-time>`.
fn fill(
    chain: &Chain,
    work: &Path,
    rename: bool,
    member: &str,
) -> Result<(PathBuf, Manifest), BackupError> {
    let db = work.join(DB_DIR);
    chain.checkpoint(&db)?;
    // The height the copy really holds (blocks went on meanwhile).
    let summary = Store::read_summary(&db)?;
    let manifest = Manifest::new(chain, &summary, member);
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| BackupError::Io(work.display().to_string(), e.into()))?;
    let path = work.join(MANIFEST_FILE);
    let mut f = std::fs::File::create(&path).map_err(io(&path))?;
    f.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&path))?;
    sync_dir(work).map_err(io(work))?;
    let done = if rename {
        let parent = work.parent().unwrap_or(Path::new("."));
        let name = format!("{}-{}", summary.height, manifest.created_unix_ms / 1000);
        let done = parent.join(name);
        if done.symlink_metadata().is_ok() {
            return Err(BackupError::Exists(done.display().to_string()));
        }
        std::fs::rename(work, &done).map_err(io(&done))?;
        sync_dir(parent).map_err(io(parent))?;
        done
    } else {
        work.to_path_buf()
    };
    let done = done.canonicalize().unwrap_or(done);
    Ok((done, manifest))
}

#[cfg(test)]
mod tests;
