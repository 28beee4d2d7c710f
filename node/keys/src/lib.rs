//! Key files: a member's consensus + peg keys, a wallet's account key and a
//! backup key of the federation's emergency branch.
//! Written with mode 0600 and refused when readable by others.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0} already exists; refusing to overwrite a key (move it away first)")]
    Exists(String),
    #[error("cannot access key file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("key file {0} is readable by group or others (mode {1:o}); run `chmod 600 {0}`")]
    Permissions(String, u32),
    #[error("key file {0} is not a fedpeg key file: {1}")]
    Format(String, String),
}

/// A wallet's account key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletKeyFile {
    kind: String,
    secret_key: String,
}

/// A federation member's key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberKeyFile {
    kind: String,
    name: String,
    consensus_secret_key: String,
    peg_secret_key: String,
}

/// A member's secret keys.
pub struct MemberKeys {
    pub name: String,
    pub consensus: SigningKey,
    pub peg: bitcoin::secp256k1::SecretKey,
}

/// 32 random bytes from the OS.
pub fn random_32() -> [u8; 32] {
    rand::random()
}

/// A new random ed25519 key.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::from_bytes(&random_32())
}

/// A new random secp256k1 key.
pub fn generate_peg_key() -> bitcoin::secp256k1::SecretKey {
    loop {
        // Fails only for zero or >= group order: probability ~2^-128.
        if let Ok(k) = bitcoin::secp256k1::SecretKey::from_slice(&random_32()) {
            return k;
        }
    }
}

fn write_new_0600(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    let p = path.display().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists(p.clone())
            } else {
                KeyFileError::Io(p.clone(), e)
            }
        })?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| KeyFileError::Io(p, e))
}

fn read_private(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let p = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| KeyFileError::Io(p.clone(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions(p, mode));
    }
    std::fs::read(path).map_err(|e| KeyFileError::Io(p, e))
}

fn hex32(s: &str, file: &str, field: &str) -> Result<[u8; 32], KeyFileError> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            KeyFileError::Format(file.into(), format!("{field} must be 64 hex characters"))
        })
}

/// Creates a new wallet key file (mode 0600); fails if it exists.
pub fn create_wallet_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let key = generate_signing_key();
    let f = WalletKeyFile {
        kind: "fedpeg-wallet-key".into(),
        secret_key: hex::encode(key.to_bytes()),
    };
    // Serializing two strings cannot fail.
    let json = serde_json::to_vec_pretty(&f).unwrap_or_default();
    write_new_0600(path, &json)?;
    Ok(key)
}

/// Loads a wallet key file.
pub fn load_wallet_key(path: &Path) -> Result<SigningKey, KeyFileError> {
    let p = path.display().to_string();
    let bytes = read_private(path)?;
    let f: WalletKeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| KeyFileError::Format(p.clone(), e.to_string()))?;
    if f.kind != "fedpeg-wallet-key" {
        return Err(KeyFileError::Format(
            p,
            format!("kind is '{}', expected fedpeg-wallet-key", f.kind),
        ));
    }
    Ok(SigningKey::from_bytes(&hex32(
        &f.secret_key,
        &p,
        "secret_key",
    )?))
}

/// A backup key file (emergency branch of the federation descriptor).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupKeyFile {
    kind: String,
    secret_key: String,
}

/// Creates a backup key file (mode 0600) with a new random secp256k1 key;
/// fails if it exists. Only its public key goes into genesis.
pub fn create_backup_key(path: &Path) -> Result<bitcoin::secp256k1::SecretKey, KeyFileError> {
    let key = generate_peg_key();
    let f = BackupKeyFile {
        kind: "fedpeg-backup-key".into(),
        secret_key: hex::encode(key.secret_bytes()),
    };
    // Serializing two strings cannot fail.
    let json = serde_json::to_vec_pretty(&f).unwrap_or_default();
    write_new_0600(path, &json)?;
    Ok(key)
}

/// Loads a backup key file (refused if readable by others).
pub fn load_backup_key(path: &Path) -> Result<bitcoin::secp256k1::SecretKey, KeyFileError> {
    let p = path.display().to_string();
    let bytes = read_private(path)?;
    let f: BackupKeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| KeyFileError::Format(p.clone(), e.to_string()))?;
    if f.kind != "fedpeg-backup-key" {
        return Err(KeyFileError::Format(
            p,
            format!("kind is '{}', expected fedpeg-backup-key", f.kind),
        ));
    }
    bitcoin::secp256k1::SecretKey::from_slice(&hex32(&f.secret_key, &p, "secret_key")?)
        .map_err(|_| KeyFileError::Format(p, "secret_key is not a valid secp256k1 key".into()))
}

/// Creates a member key file (mode 0600); fails if it exists.
pub fn create_member_keys(path: &Path, name: &str) -> Result<MemberKeys, KeyFileError> {
    let keys = MemberKeys {
        name: name.to_string(),
        consensus: generate_signing_key(),
        peg: generate_peg_key(),
    };
    let f = MemberKeyFile {
        kind: "fedpeg-member-key".into(),
        name: name.to_string(),
        consensus_secret_key: hex::encode(keys.consensus.to_bytes()),
        peg_secret_key: hex::encode(keys.peg.secret_bytes()),
    };
    let json = serde_json::to_vec_pretty(&f).unwrap_or_default();
    write_new_0600(path, &json)?;
    Ok(keys)
}

/// Loads a member key file.
pub fn load_member_keys(path: &Path) -> Result<MemberKeys, KeyFileError> {
    let p = path.display().to_string();
    let bytes = read_private(path)?;
    let f: MemberKeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| KeyFileError::Format(p.clone(), e.to_string()))?;
    if f.kind != "fedpeg-member-key" {
        return Err(KeyFileError::Format(
            p,
            format!("kind is '{}', expected fedpeg-member-key", f.kind),
        ));
    }
    let consensus =
        SigningKey::from_bytes(&hex32(&f.consensus_secret_key, &p, "consensus_secret_key")?);
    let peg =
        bitcoin::secp256k1::SecretKey::from_slice(&hex32(&f.peg_secret_key, &p, "peg_secret_key")?)
            .map_err(|e| KeyFileError::Format(p, format!("peg_secret_key: {e}")))?;
    Ok(MemberKeys {
        name: f.name,
        consensus,
        peg,
    })
}

impl MemberKeys {
    /// Public info to put in genesis.
    pub fn public_info(&self, p2p_address: &str) -> fedpeg_ledger::genesis::MemberInfo {
        let secp = bitcoin::secp256k1::Secp256k1::signing_only();
        fedpeg_ledger::genesis::MemberInfo {
            name: self.name.clone(),
            consensus_key: hex::encode(self.consensus.verifying_key().to_bytes()),
            peg_key: self.peg.public_key(&secp).to_string(),
            p2p_address: p2p_address.to_string(),
        }
    }
}

/// The operator's admin token: 64 hex characters in a file of mode 0600.
/// Created with a random value when `path` does not exist; refused when the
/// file is readable by others or is not a token. Whoever can read the file
/// may use the node's admin calls (e.g. `AcknowledgeAlerts`).
pub fn load_or_create_admin_token(path: &Path) -> Result<String, KeyFileError> {
    if !path.exists() {
        let token = hex::encode(random_32());
        match write_new_0600(path, format!("{token}\n").as_bytes()) {
            Ok(()) => return Ok(token),
            // Created by someone else in between: read theirs.
            Err(KeyFileError::Exists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    load_admin_token(path)
}

/// Reads an admin token file written by [`load_or_create_admin_token`].
pub fn load_admin_token(path: &Path) -> Result<String, KeyFileError> {
    let bytes = read_private(path)?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    hex32(&text, &path.display().to_string(), "admin token")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_created_0600_then_reused_and_a_shared_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("admin.token");
        let t = load_or_create_admin_token(&p).unwrap();
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_admin_token(&p).unwrap(), t);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_admin_token(&p),
            Err(KeyFileError::Permissions(..))
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "not a token").unwrap();
        assert!(matches!(
            load_admin_token(&p),
            Err(KeyFileError::Format(..))
        ));
    }

    #[test]
    fn backup_key_is_0600_reloads_and_other_kinds_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.key");
        let k = create_backup_key(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_backup_key(&p).unwrap(), k);
        assert!(matches!(
            create_backup_key(&p),
            Err(KeyFileError::Exists(_))
        ));
        let w = d.path().join("w.key");
        create_wallet_key(&w).unwrap();
        let e = load_backup_key(&w).unwrap_err().to_string();
        assert!(e.contains("expected fedpeg-backup-key"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_backup_key(&p),
            Err(KeyFileError::Permissions(..))
        ));
    }

    #[test]
    fn wallet_key_is_0600_and_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.key");
        let k = create_wallet_key(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_wallet_key(&p).unwrap().to_bytes(), k.to_bytes());
        assert!(matches!(
            create_wallet_key(&p),
            Err(KeyFileError::Exists(_))
        ));
        assert_eq!(load_wallet_key(&p).unwrap().to_bytes(), k.to_bytes());
    }

    #[test]
    fn world_readable_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.key");
        create_member_keys(&p, "alpha").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_member_keys(&p),
            Err(KeyFileError::Permissions(..))
        ));
    }

    #[test]
    fn garbage_key_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g.key");
        write_new_0600(
            &p,
            b"{\"kind\":\"fedpeg-wallet-key\",\"secret_key\":\"12\"}",
        )
        .unwrap();
        assert!(matches!(load_wallet_key(&p), Err(KeyFileError::Format(..))));
        assert!(matches!(
            load_member_keys(&p),
            Err(KeyFileError::Format(..))
        ));
    }
}
