//! Restoring a backup into a data directory (`fedpegd restore`), offline.
//!
//! The backup is checked before anything in the data directory changes:
//! its manifest, that its database opens and is the one the manifest
//! describes, and (given a genesis) that it is this chain's and its state
//! loads. It is copied next to the data directory's database, marked as
//! restored (the node then rejoins consensus only above its vote floor:
//! [`crate::driver::rejoin`]), and only then swapped in. An existing
//! database and consensus WAL are moved aside (`--force`), never deleted.

use super::{sync_dir, Manifest, DB_DIR};
use crate::driver::rejoin::{RejoinRecord, REJOIN_RECORD};
use crate::store::{Store, StoreError};
use fedpeg_ledger::genesis::ChainSpec;
use fedpeg_ledger::hash::Hash32;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

/// What to restore where.
pub struct RestoreOptions {
    /// The backup directory (holds `fedpeg-backup.json` and `db/`).
    pub backup: PathBuf,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// The chain's genesis, to check the backup against.
    pub genesis: Option<ChainSpec>,
    /// Move an existing database and WAL aside instead of refusing.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the replaced database and WAL went (with `force`).
    pub moved_aside: Option<PathBuf>,
    /// Whether the backup was checked against a genesis.
    pub genesis_checked: bool,
}

/// Why a restore was refused or failed; the data directory is unchanged
/// unless the message says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} is not a complete fedpeg backup: it has no fedpeg-backup.json (an interrupted backup, or the wrong directory)")]
    NoManifest(String),
    #[error("backup manifest {0} is unreadable: {1}")]
    BadManifest(String, String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("the backup is of chain {backup} ('{name}'), but the genesis is chain {genesis}: it belongs to another chain")]
    ForeignChain {
        backup: String,
        name: String,
        genesis: String,
    },
    #[error("a node is running on data directory {0} (its database is locked): stop it first")]
    InUse(String),
    #[error("data directory {0} already holds a database or a consensus WAL; with its node stopped, pass --force to move them aside (into {0}/replaced-<time>/) and restore")]
    HoldsDatabase(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("restored database: {0}")]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |e| RestoreError::Io(path.display().to_string(), e)
}

/// Restores `o.backup` into `o.data_dir`. The node must be stopped.
pub fn restore(o: &RestoreOptions) -> Result<Restored, RestoreError> {
    let manifest = Manifest::read(&o.backup)?;
    let src = o.backup.join(DB_DIR);
    check_backup(&src, &manifest)?;
    if let Some(spec) = &o.genesis {
        if spec.chain_id.to_hex() != manifest.chain_id {
            return Err(RestoreError::ForeignChain {
                backup: manifest.chain_id.clone(),
                name: manifest.chain_name.clone(),
                genesis: spec.chain_id.to_hex(),
            });
        }
    }
    let dd = &o.data_dir;
    let db = dd.join(DB_DIR);
    let wal = dd.join("consensus.wal");
    let occupied = db.exists() || wal.exists();
    if occupied && !o.force {
        return Err(RestoreError::HoldsDatabase(dd.display().to_string()));
    }
    // Probing the lock opens the database: only one about to be replaced.
    if db.exists() && Store::in_use(&db) {
        return Err(RestoreError::InUse(dd.display().to_string()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dd)
        .map_err(io(dd))?;
    // Copied and marked beside the live name first: until the rename below,
    // the data directory is as it was.
    let staging = dd.join("db.restoring");
    if staging.exists() {
        // Left by an interrupted restore: ours to replace.
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    copy_db(&src, &staging)?;
    if let Err(e) = check_copy_and_mark(&staging, &manifest, o.genesis.as_ref()) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let moved_aside = if occupied {
        let aside = dd.join(format!("replaced-{}", crate::driver::now_ms()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&aside)
            .map_err(io(&aside))?;
        for p in [&db, &wal] {
            if p.exists() {
                let to = aside.join(p.file_name().unwrap_or_default());
                std::fs::rename(p, &to).map_err(io(p))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&staging, &db).map_err(io(&db))?;
    sync_dir(dd).map_err(io(dd))?;
    Ok(Restored {
        manifest,
        moved_aside,
        genesis_checked: o.genesis.is_some(),
    })
}

/// The backup's database opens (read-only, untouched) and is the one its
/// manifest describes.
fn check_backup(src: &Path, m: &Manifest) -> Result<(), RestoreError> {
    if !src.is_dir() {
        return Err(RestoreError::Damaged(format!(
            "{} is missing",
            src.display()
        )));
    }
    let s = Store::read_summary(src).map_err(|e| {
        RestoreError::Damaged(format!("its database {} does not open: {e}", src.display()))
    })?;
    let found = (s.chain_id.to_hex(), s.height, s.tip.to_hex(), s.format);
    let said = (
        m.chain_id.clone(),
        m.height,
        m.block_hash.clone(),
        m.store_format,
    );
    if found != said {
        return Err(RestoreError::Damaged(format!(
            "its database holds chain {} at height {} (block {}, store format {}), its manifest says chain {} at height {} (block {}, store format {})",
            found.0, found.1, found.2, found.3, said.0, said.1, said.2, said.3
        )));
    }
    Ok(())
}

/// Copies the backup's database files into `to` (created), each fsynced.
fn copy_db(from: &Path, to: &Path) -> Result<(), RestoreError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let path = entry.path();
        // A checkpoint is flat: regular files only. Anything else is not
        // what `fedpegd backup` wrote.
        if !entry.file_type().map_err(io(&path))?.is_file() {
            return Err(RestoreError::Damaged(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let dest = to.join(entry.file_name());
        std::fs::copy(&path, &dest).map_err(io(&path))?;
        std::fs::File::open(&dest)
            .and_then(|f| f.sync_all())
            .map_err(io(&dest))?;
    }
    sync_dir(to).map_err(io(to))
}

/// Opens the copy, checks it (against genesis when given: its state must
/// load and its tip block must be there) and writes the restore marker.
fn check_copy_and_mark(
    copy: &Path,
    m: &Manifest,
    genesis: Option<&ChainSpec>,
) -> Result<(), RestoreError> {
    let store = match genesis {
        Some(spec) => {
            let store = Store::open(copy, spec.chain_id, &spec.genesis_state())?;
            let state = store.load_state()?;
            if state.height.0 > 0 {
                let tip = store.block(state.height.0)?.map(|b| b.block.hash());
                if tip != Some(state.tip) {
                    return Err(RestoreError::Damaged(format!(
                        "its block at height {} is missing or is not its tip",
                        state.height.0
                    )));
                }
            }
            store
        }
        None => Store::open_existing(copy)?,
    };
    let s = store.summary()?;
    if s.chain_id != Hash32::from_hex(&m.chain_id).unwrap_or(Hash32::ZERO) || s.height != m.height {
        return Err(RestoreError::Damaged(
            "the copy differs from the backup".into(),
        ));
    }
    let record = RejoinRecord::restored(m.height, crate::driver::now_ms());
    store.put_local_records(&[(REJOIN_RECORD, record.encode())])?;
    Ok(())
}
