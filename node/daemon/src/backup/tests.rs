use super::restore::{restore, RestoreError, RestoreOptions};
use super::*;
use crate::api::{Api, NodeIdentity};
use crate::driver::rejoin::{RejoinPhase, RejoinRecord, REJOIN_RECORD};
use crate::driver::ConsensusStatus;
use crate::peg_testing::PegNode;
use fedpeg_proto::v1 as pb;
use fedpeg_proto::v1::node_service_server::NodeService;
use std::sync::Arc;

/// A member's chain at height 3.
fn node() -> PegNode {
    let node = PegNode::new(4, 3);
    for _ in 0..3 {
        node.commit(vec![]);
    }
    node
}

fn backup(node: &PegNode) -> PathBuf {
    create(&node.chain, node.dir.path(), None, "member-0")
        .unwrap()
        .0
}

fn options(backup: &Path, data_dir: &Path, node: &PegNode) -> RestoreOptions {
    RestoreOptions {
        backup: backup.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        genesis: Some(node.chain.spec.clone()),
        force: false,
    }
}

#[test]
fn a_backup_holds_the_store_at_its_height_and_a_manifest_and_goes_on_with_the_chain() {
    let node = node();
    let (path, m) = create(&node.chain, node.dir.path(), None, "member-0").unwrap();
    assert!(path.is_absolute());
    assert_eq!(
        path.parent().unwrap(),
        node.dir.path().canonicalize().unwrap().join("backups")
    );
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("3-"), "{name}");
    assert_eq!(
        (m.height, m.block_hash.clone(), m.member.as_str()),
        (3, node.chain.with_state(|s| s.tip.to_hex()), "member-0")
    );
    assert_eq!(m.chain_id, node.chain.spec.chain_id.to_hex());
    assert_eq!(Manifest::read(&path).unwrap(), m);
    // Nothing else: no key, no token, no WAL.
    let mut entries: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    entries.sort();
    assert_eq!(entries, vec!["db", MANIFEST_FILE]);
    // The node goes on; the backup stays at its height.
    node.commit(vec![]);
    assert_eq!(Store::read_summary(&path.join(DB_DIR)).unwrap().height, 3);
    assert_eq!(node.chain.height(), 4);
}

#[test]
fn a_backup_path_must_be_absolute_new_outside_the_database_and_under_an_existing_parent() {
    let node = node();
    let elsewhere = tempfile::tempdir().unwrap();
    let dd = node.dir.path();
    let refused = |p: &Path| create(&node.chain, dd, Some(p), "m").unwrap_err();
    assert!(matches!(
        refused(Path::new("relative/dir")),
        BackupError::Relative(_)
    ));
    assert!(matches!(refused(elsewhere.path()), BackupError::Exists(_)));
    assert!(matches!(
        refused(&elsewhere.path().join("no/such/parent")),
        BackupError::NoParent(_)
    ));
    assert!(matches!(
        refused(&dd.join(DB_DIR).join("inside")),
        BackupError::InsideDatabase(_)
    ));
    // A dangling symlink is a path that exists.
    let link = elsewhere.path().join("link");
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    assert!(matches!(refused(&link), BackupError::Exists(_)));
    // Nothing was created by the refusals.
    assert!(!dd.join(DB_DIR).join("inside").exists());
    let out = elsewhere.path().join("b1");
    let (path, m) = create(&node.chain, dd, Some(&out), "m").unwrap();
    assert_eq!(path, out.canonicalize().unwrap());
    assert_eq!(m.height, 3);
    // Never twice into one path.
    assert!(matches!(refused(&out), BackupError::Exists(_)));
}

#[test]
fn a_restored_data_dir_holds_the_backup_and_the_restore_marker() {
    let node = node();
    let b = backup(&node);
    let target = tempfile::tempdir().unwrap();
    let dd = target.path().join("data");
    let r = restore(&options(&b, &dd, &node)).unwrap();
    assert!(r.genesis_checked && r.moved_aside.is_none());
    assert_eq!(r.manifest.height, 3);
    let chain =
        crate::chain::Chain::open(node.chain.spec.clone(), &dd, 10).expect("the restored store");
    assert_eq!(chain.height(), 3);
    let record = RejoinRecord::decode(&chain.local_record(REJOIN_RECORD).unwrap().unwrap());
    assert_eq!(
        record.map(|r| (r.phase, r.backup_height)),
        Ok((RejoinPhase::Following, 3))
    );
    // The backup itself is untouched: restorable again.
    assert!(Manifest::read(&b).is_ok() && !dd.join("db.restoring").exists());
}

#[test]
fn restore_refuses_a_running_node_and_an_occupied_data_dir_and_force_moves_it_aside() {
    let node = node();
    let b = backup(&node);
    // The node's own data dir: its store is open (locked).
    let live = restore(&RestoreOptions {
        force: true,
        ..options(&b, node.dir.path(), &node)
    });
    assert!(matches!(live, Err(RestoreError::InUse(_))), "{live:?}");
    // A stopped node's data dir with a database and a WAL.
    let target = tempfile::tempdir().unwrap();
    let dd = target.path().to_path_buf();
    drop(crate::chain::Chain::open(node.chain.spec.clone(), &dd, 10).unwrap());
    std::fs::write(dd.join("consensus.wal"), b"old votes").unwrap();
    let occupied = restore(&options(&b, &dd, &node)).unwrap_err();
    assert!(matches!(occupied, RestoreError::HoldsDatabase(_)));
    assert!(occupied.to_string().contains("--force"));
    let r = restore(&RestoreOptions {
        force: true,
        ..options(&b, &dd, &node)
    })
    .unwrap();
    let aside = r.moved_aside.expect("the old database moved aside");
    assert_eq!(
        std::fs::read(aside.join("consensus.wal")).unwrap(),
        b"old votes"
    );
    assert_eq!(Store::read_summary(&aside.join(DB_DIR)).unwrap().height, 0);
    assert!(!dd.join("consensus.wal").exists());
    assert_eq!(Store::read_summary(&dd.join(DB_DIR)).unwrap().height, 3);
}

#[test]
fn a_foreign_incomplete_or_damaged_backup_is_refused_and_changes_nothing() {
    let node = node();
    let b = backup(&node);
    let target = tempfile::tempdir().unwrap();
    let dd = target.path().join("data");
    // Another federation's genesis.
    let other = PegNode::new(3, 2);
    let foreign = restore(&RestoreOptions {
        genesis: Some(other.chain.spec.clone()),
        ..options(&b, &dd, &node)
    })
    .unwrap_err();
    assert!(
        matches!(foreign, RestoreError::ForeignChain { .. }),
        "{foreign}"
    );
    // Not a backup at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&options(empty.path(), &dd, &node)),
        Err(RestoreError::NoManifest(_))
    ));
    // A manifest that does not describe its database.
    let copy = |name: &str| {
        let to = target.path().join(name);
        std::fs::create_dir(&to).unwrap();
        std::fs::create_dir(to.join(DB_DIR)).unwrap();
        for e in std::fs::read_dir(b.join(DB_DIR)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(DB_DIR).join(e.file_name())).unwrap();
        }
        std::fs::copy(b.join(MANIFEST_FILE), to.join(MANIFEST_FILE)).unwrap();
        to
    };
    let lying = copy("lying");
    let mut m = Manifest::read(&lying).unwrap();
    m.height = 9;
    std::fs::write(
        lying.join(MANIFEST_FILE),
        serde_json::to_string(&m).unwrap(),
    )
    .unwrap();
    let e = restore(&options(&lying, &dd, &node)).unwrap_err();
    assert!(
        matches!(e, RestoreError::Damaged(_)) && e.to_string().contains("height 9"),
        "{e}"
    );
    // A manifest of another kind, or not JSON.
    let odd = copy("odd");
    std::fs::write(odd.join(MANIFEST_FILE), "{\"kind\": \"x\"}").unwrap();
    assert!(matches!(
        restore(&options(&odd, &dd, &node)),
        Err(RestoreError::BadManifest(..))
    ));
    // A database with a file missing (RocksDB's CURRENT).
    let broken = copy("broken");
    std::fs::remove_file(broken.join(DB_DIR).join("CURRENT")).unwrap();
    let e = restore(&options(&broken, &dd, &node)).unwrap_err();
    assert!(matches!(e, RestoreError::Damaged(_)), "{e}");
    // No database at all.
    let gone = copy("gone");
    std::fs::remove_dir_all(gone.join(DB_DIR)).unwrap();
    assert!(matches!(
        restore(&options(&gone, &dd, &node)),
        Err(RestoreError::Damaged(_))
    ));
    // None of it touched the data directory.
    assert!(!dd.exists());
}

fn api(node: &PegNode) -> Api {
    let identity = NodeIdentity {
        role: pb::NodeRole::Member,
        member_name: "member-0".into(),
        halt_height: None,
    };
    Api::new(
        node.chain.clone(),
        identity,
        None,
        Arc::new(ConsensusStatus::default()),
    )
    .with_admin_token(&"ab".repeat(32))
    .with_data_dir(node.dir.path())
}

fn request(path: &str, token: Option<&str>) -> tonic::Request<pb::BackupRequest> {
    let mut r = tonic::Request::new(pb::BackupRequest { path: path.into() });
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_call_needs_the_admin_token_and_runs_one_at_a_time() {
    let node = node();
    let api = api(&node);
    let token = "ab".repeat(32);
    let backups = node.dir.path().join("backups");
    let code = |r: Result<tonic::Response<pb::BackupResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err().code()
    };
    // A stranger cannot fill the node's disk.
    assert_eq!(
        code(api.backup(request("", None)).await),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        code(api.backup(request("", Some(&"cd".repeat(32)))).await),
        tonic::Code::PermissionDenied
    );
    assert!(!backups.exists());
    // Bad paths are the caller's to fix.
    assert_eq!(
        code(api.backup(request("rel/path", Some(&token))).await),
        tonic::Code::InvalidArgument
    );
    let taken = node.dir.path().display().to_string();
    let e = api.backup(request(&taken, Some(&token))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("already exists"), "{}", e.message());
    // While one backup runs, a second is refused at once.
    let held = api.backup_slots().clone().try_acquire_owned().unwrap();
    assert_eq!(
        code(api.backup(request("", Some(&token))).await),
        tonic::Code::ResourceExhausted
    );
    drop(held);
    let r = api
        .backup(request("", Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.height, 3);
    assert!(Path::new(&r.path).starts_with(backups.canonicalize().unwrap()));
    assert_eq!(Manifest::read(Path::new(&r.path)).unwrap().height, 3);
}
