//! The `fedpeg` binary as a user runs it: against a fake node (see
//! `fake_node`), an unreachable one, or none at all.

mod fake_node;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("fedpeg-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `fedpeg` pointed at `node`, with no key or node from the environment.
fn fedpeg(node: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fedpeg"));
    c.env_remove("FEDPEG_KEY")
        .env_remove("FEDPEG_NODE")
        .args(["--node", node]);
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits for `child` to exit, killing it after 20 s.
fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("fedpeg did not exit after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `fedpeg args` on an endless feed, reads `lines` lines of its
/// output, closes the pipe, and returns the lines, exit status and stderr.
fn read_then_close(args: &[&str], lines: usize) -> (Vec<String>, std::process::ExitStatus, String) {
    let mut child = fedpeg(&fake_node::start())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let got: Vec<String> = out.lines().take(lines).map(Result::unwrap).collect();
    // Dropping the reader closes the pipe, as `head` does when it has enough.
    let status = exit_of(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (got, status, err)
}

#[test]
fn watch_ends_quietly_when_its_reader_closes_the_pipe() {
    let (lines, status, err) = read_then_close(&["watch", "--from", "0"], 3);
    assert!(lines[0].starts_with("block 0 "), "{lines:?}");
    assert!(lines[1].starts_with("  0.0 transfer "), "{lines:?}");
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(err, "");
}

#[test]
fn json_watch_ends_quietly_when_its_reader_closes_the_pipe() {
    let (lines, status, err) = read_then_close(&["--json", "watch"], 1);
    let block: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    // No --from: the block after the node's height (3).
    assert_eq!(block["height"], 4);
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(err, "");
}

#[test]
fn account_watch_ends_quietly_when_its_reader_closes_the_pipe() {
    let (lines, status, err) = read_then_close(&["watch", "--account", fake_node::ALICE], 10);
    assert_eq!(lines[0], "1.0 transfer fprt1alice → fprt1bob: 250 sats");
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(err, "");
}

/// Runs `fedpeg args` with a stdout whose reader is already gone.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    fedpeg("http://127.0.0.1:1")
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn output_into_a_closed_pipe_exits_0_without_a_message() {
    for args in [
        &["--help"][..],
        &["--json", "address", "--network", "regtest"],
    ] {
        let dir = TempDir::new("closed");
        let key = dir.path("w.key");
        run(fedpeg("").args([
            "--key",
            key.to_str().unwrap(),
            "keygen",
            "--network",
            "regtest",
        ]));
        let mut all = vec!["--key", key.to_str().unwrap()];
        all.extend(args);
        let o = into_closed_pipe(&all);
        assert!(o.status.success(), "{args:?}: {:?}", o.status);
        assert_eq!(text(&o.stderr), "", "{args:?}");
    }
}

#[test]
fn keygen_writes_a_private_key_file_and_refuses_to_overwrite_it() {
    let dir = TempDir::new("keygen");
    let key = dir.path("alice.key");
    let k = key.to_str().unwrap();
    // --network: no node needed.
    let o = run(fedpeg("http://127.0.0.1:1").args(["--key", k, "keygen", "--network", "regtest"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let address = text(&o.stdout).trim().to_string();
    assert!(address.starts_with("fprt1"), "{address}");
    assert!(
        text(&o.stderr).contains("(mode 0600)"),
        "{}",
        text(&o.stderr)
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(&key).unwrap();

    let o = run(fedpeg("http://127.0.0.1:1").args(["--key", k, "keygen", "--network", "regtest"]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("already exists; refusing to overwrite"),
        "{err}"
    );
    assert_eq!(text(&o.stdout), "");
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is untouched");

    // With --json the error is JSON on stdout.
    let o = run(fedpeg("http://127.0.0.1:1").args([
        "--json",
        "--key",
        k,
        "keygen",
        "--network",
        "regtest",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("already exists"),
        "{v}"
    );

    let o = run(fedpeg("http://127.0.0.1:1").args([
        "--json",
        "--key",
        k,
        "address",
        "--network",
        "regtest",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["address"], address.as_str());
}

#[test]
fn keygen_for_an_unknown_network_fails_and_writes_no_key() {
    let dir = TempDir::new("badnet");
    let key = dir.path("k");
    let o = run(fedpeg("http://127.0.0.1:1").args([
        "--key",
        key.to_str().unwrap(),
        "keygen",
        "--network",
        "moon",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("'moon' is unknown"),
        "{err}"
    );
    assert!(!Path::new(&key).exists());
}

/// A wallet key file in `dir`.
fn wallet(dir: &TempDir) -> String {
    let key = dir.path("w.key").to_str().unwrap().to_string();
    let o = run(fedpeg("").args(["--key", &key, "keygen", "--network", "regtest"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    key
}

#[test]
fn send_to_a_malformed_address_is_refused_with_the_flag_named() {
    let dir = TempDir::new("badto");
    let key = wallet(&dir);
    let node = fake_node::start();
    let o = run(fedpeg(&node).args([
        "--key",
        &key,
        "send",
        "--to",
        "notanaddress",
        "--amount",
        "1",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: --to: 'notanaddress' is not a fedpeg address"),
        "{err}"
    );
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn send_without_a_node_says_how_to_point_at_one() {
    let dir = TempDir::new("nonode");
    let key = wallet(&dir);
    let args = [
        "--key",
        &key,
        "send",
        "--to",
        "notanaddress",
        "--amount",
        "1",
    ];
    let o = run(fedpeg("http://127.0.0.1:1").args(args));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: cannot reach a fedpeg node at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(
        err.contains("--node or FEDPEG_NODE") && !err.contains("panicked"),
        "{err}"
    );
    let o = run(fedpeg("not a url").args(args));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--node 'not a url' is not a valid URL"));
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let o = run(fedpeg("").args(["send", "--to", "x", "--amount", "lots"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("invalid value 'lots' for '--amount <AMOUNT>'"));
    let o = run(fedpeg("").args(["send", "--amount", "1"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_node_refusal_names_the_command_and_the_kind() {
    let node = fake_node::start();
    let o = run(fedpeg(&node).args(["block", "99"]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "error: block: not found: no such block\n");
    let o = run(fedpeg(&node).args(["watch", "--account", "nope"]));
    assert_eq!(text(&o.stderr), "error: watch: invalid: not an address\n");
}

#[test]
fn health_exits_0_only_when_the_node_serves() {
    let node = fake_node::start();
    let o = run(fedpeg(&node).arg("health"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), format!("node at {node} is SERVING\n"));
    let o = run(fedpeg(&node).args(["--json", "health"]));
    assert_eq!(
        text(&o.stdout),
        "{\"service\":\"\",\"status\":\"SERVING\"}\n"
    );
    // A service that is down, and one the node does not know.
    let o = run(fedpeg(&node).args(["health", "--service", fake_node::DOWN_SERVICE]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "error: health: {} at {node} is NOT_SERVING\n",
            fake_node::DOWN_SERVICE
        )
    );
    let o = run(fedpeg(&node).args(["health", "--service", "nope"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("error: health: not found: "),
        "{}",
        text(&o.stderr)
    );
    // No node at all: the same message as every command, exit 1, no panic.
    let o = run(fedpeg("http://127.0.0.1:1").arg("health"));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: cannot reach a fedpeg node at http://127.0.0.1:1"),
        "{err}"
    );
    let o = run(fedpeg("").args(["health", "--timeout-secs", "soon"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn status_text_shows_node_federation_and_reserves() {
    let o = run(fedpeg(&fake_node::start()).arg("status"));
    assert!(o.status.success());
    let out = text(&o.stdout);
    let want = [
        "node     NODE_ROLE_MEMBER m0 (fedpegd 0.1.0)",
        "halt     after block 120 (--halt-height)",
        "quorum   3 of 4 to finalize, peg 2 of 4; 2 member(s) online",
        "  m0           0.1.0                this node",
        "  m1           0.2.0+3f9c2a1b7d0e   online",
        "  m2           0.1.0                last seen at 1234 ms",
        "  m3           unknown              not seen",
        "bitcoin  tip 150 (reachable), 0 deep-reorg alert(s)",
        "covered   yes",
        &format!(
            "oldest    {}:0: 4032 bitcoin blocks to its emergency timelock; rolled over in 1.0 days",
            "11".repeat(32)
        ),
    ];
    for line in want {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }
}

#[test]
fn pegin_wait_prints_the_address_then_one_json_line_per_change() {
    let o = run(fedpeg(&fake_node::start()).args([
        "--json",
        "pegin",
        "--account",
        fake_node::ALICE,
        "--wait",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["deposit_address"], "bcrt1qdeposit");
    let states: Vec<_> = lines[1..]
        .iter()
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "PEG_IN_STATE_BELOW_COST",
            "PEG_IN_STATE_CONFIRMING",
            "PEG_IN_STATE_CONFIRMING",
            "PEG_IN_STATE_MINTED"
        ]
    );
    assert_eq!(text(&o.stderr), "", "no text-mode hint with --json");
}

/// `fedpeg pegout --to bcrt1qpay --amount 5000 EXTRA...` from a fresh
/// wallet (in a temporary directory named `name`) against a fake node.
fn pegout_5000_sats(name: &str, extra: &[&str]) -> Output {
    let dir = TempDir::new(name);
    let key = wallet(&dir);
    run(fedpeg(&fake_node::start())
        .args([
            "--key",
            &key,
            "pegout",
            "--to",
            "bcrt1qpay",
            "--amount",
            "5000",
        ])
        .args(extra))
}

#[test]
fn pegout_text_shows_the_fee_the_burn_and_the_first_state() {
    let o = pegout_5000_sats("pegout", &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        format!(
            "peg-out of 5000 sats to bcrt1qpay (p2wpkh): fee 300 sats at 2 sat/vB; 5300 sats leave your balance\n\
             burn submitted: {}\n\
             peg-out 12 of 5000 sats to bcrt1qpay: QUEUED waiting for a batch\n",
            fake_node::TXID
        )
    );
}

#[test]
fn pegout_refuses_to_sign_a_fee_above_max_fee() {
    let o = pegout_5000_sats("pegout-max-fee", &["--max-fee", "299"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("fee of 300 sats")
            && err.contains("--max-fee 299")
            && err.contains("nothing was signed"),
        "{err}"
    );
    assert!(!text(&o.stdout).contains("burn submitted"));
}

/// A regtest genesis (with an emergency branch when `backup` holds a
/// backup key's public key) in `dir`; returns its path.
fn recovery_genesis(dir: &TempDir, name: &str, backup: Option<String>) -> PathBuf {
    let mut g = fedpeg_ledger::testing::sample_genesis("regtest", vec![]);
    g.emergency = backup.map(|k| fedpeg_ledger::genesis::EmergencyParams {
        backup_keys: vec![k],
        threshold: 1,
        csv_blocks: 10,
    });
    let p = dir.path(name);
    std::fs::write(&p, serde_json::to_string(&g).unwrap()).unwrap();
    p
}

/// Every bad input of `fedpeg recover` is refused with a message saying
/// what is wrong, before any sweep is built, and nothing panics.
#[test]
fn recover_refuses_bad_input_with_clear_errors() {
    let dir = TempDir::new("recover");
    let key = dir.path("backup.key");
    let secret = fedpeg_keys::create_backup_key(&key).unwrap();
    let secp = fedpeg_peg::bitcoin::secp256k1::Secp256k1::new();
    let public = secret.public_key(&secp).to_string();
    let regtest_addr = fedpeg_peg::bitcoin::Address::p2wpkh(
        &fedpeg_peg::bitcoin::CompressedPublicKey(secret.public_key(&secp)),
        fedpeg_peg::bitcoin::Network::Regtest,
    )
    .to_string();
    let genesis = recovery_genesis(&dir, "genesis.json", Some(public));
    let plain = recovery_genesis(&dir, "plain.json", None);
    let wallet = dir.path("wallet.key");
    fedpeg_keys::create_wallet_key(&wallet).unwrap();
    std::fs::write(dir.path("accounts.txt"), "fprt1notanaccount\n").unwrap();
    std::fs::write(dir.path("garbage.psbt"), "cHNidP8 not really").unwrap();
    let g = genesis.to_str().unwrap();
    let auth = ["--bitcoind-user", "u", "--bitcoind-password", "p"];
    // A closed port: nothing listens there.
    let url = ["--bitcoind-url", "http://127.0.0.1:9"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--genesis", "missing.json"],
            "cannot read genesis file missing.json",
        ),
        (
            vec!["--genesis", plain.to_str().unwrap()],
            "has no emergency branch",
        ),
        (vec!["--genesis", g], "give bitcoind's RPC credentials"),
        (
            vec!["--genesis", g, "--backup-key", "nope.key"],
            "--backup-key nope.key",
        ),
        (
            vec!["--genesis", g, "--backup-key", wallet.to_str().unwrap()],
            "expected fedpeg-backup-key",
        ),
        (
            vec!["--genesis", g, "--accounts", "accounts.txt"],
            "account #1 'fprt1notanaccount' is not a fedpeg address",
        ),
        (
            vec!["--genesis", g, "--to", "bc1qnotanaddress"],
            "is not a Bitcoin address",
        ),
        (
            vec![
                "--genesis",
                g,
                "--to",
                "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
            ],
            "is not an address of regtest",
        ),
        (
            vec!["--genesis", g, "--psbt-in", "garbage.psbt"],
            "--psbt-in needs --to ADDRESS",
        ),
        (
            vec![
                "--genesis",
                g,
                "--psbt-in",
                "garbage.psbt",
                "--to",
                &regtest_addr,
            ],
            "is not a base64 PSBT",
        ),
        (
            vec![
                "--genesis",
                g,
                "--psbt-in",
                "none.psbt",
                "--to",
                &regtest_addr,
            ],
            "cannot read --psbt-in none.psbt",
        ),
        (vec!["--genesis", g], "bitcoind is unavailable"),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let mut c = fedpeg("http://127.0.0.1:9");
        c.current_dir(&dir.0).arg("recover").args(args).args(url);
        // The credentials case leaves them out.
        if i != 2 {
            c.args(auth);
        }
        let out = run(&mut c);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Half the credentials: refused by the command line itself.
    let out =
        run(fedpeg("http://127.0.0.1:9").args(["recover", "--genesis", g, "--bitcoind-user", "u"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--bitcoind-password"),
        "{}",
        text(&out.stderr)
    );
}

/// An admin token file in `dir`, as fedpegd creates it; returns its path
/// and the token.
fn admin_token(dir: &TempDir) -> (String, String) {
    let path = dir.path("admin.token");
    let token = fedpeg_keys::load_or_create_admin_token(&path).unwrap();
    (path.to_str().unwrap().to_string(), token)
}

/// A new member's public info file, as `fedpegd keygen --public-out`
/// writes it; returns its path and the member it describes.
fn member_file(dir: &TempDir, name: &str) -> (String, fedpeg_ledger::genesis::MemberInfo) {
    let keys = fedpeg_keys::create_member_keys(&dir.path(&format!("{name}.key")), name).unwrap();
    let info = keys.public_info("/ip4/10.0.0.9/tcp/30001");
    let path = dir.path(&format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&info).unwrap() + "\n").unwrap();
    (path.to_str().unwrap().to_string(), info)
}

/// `fedpeg federation SUB --admin-token TOKEN ARGS...` against `node`.
fn federation_vote(node: &str, sub: &str, token: &str, args: &[&str]) -> Output {
    run(fedpeg(node)
        .args(["federation", sub, "--admin-token", token])
        .args(args))
}

#[test]
fn federation_show_lists_every_epoch_and_what_a_pending_change_does() {
    let node = fake_node::start();
    let o = run(fedpeg(&node).args(["federation", "show"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let m4 = fake_node::epoch_member(4);
    let want = [
        "height 3; epoch 1 in force".to_string(),
        "epoch 0 (past): genesis, in force from height 0 to 1; peg 2 of 4, quorum 3 of 4".into(),
        "epoch 1 (in force): adopted at height 1, in force from height 2; peg 2 of 4, quorum 3 of 4".into(),
        format!(
            "  m2           consensus {} peg 02{} /ip4/10.0.0.2/tcp/30002",
            "12".repeat(32),
            "22".repeat(32)
        ),
        format!(
            "pending change {}: 1/3 votes (m1); activates at height 40, in 37 blocks",
            fake_node::PENDING_CHANGE_ID
        ),
        format!(
            "  + m4           consensus {} peg {} {}",
            hex::encode(&m4.consensus_key),
            hex::encode(&m4.peg_key),
            m4.p2p_address
        ),
        "  - m3".into(),
        "  ~ peg threshold 2 of 4 -> 3 of 4".into(),
    ];
    for line in &want {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }

    let o = run(fedpeg(&node).args(["federation", "show", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["epochs"].as_array().unwrap().len(), 2);
    assert_eq!(v["epochs"][0]["state"], "past");
    assert_eq!(v["epochs"][1]["state"], "in_force");
    assert_eq!(
        v["epochs"][1]["members"][2]["p2p_address"],
        "/ip4/10.0.0.2/tcp/30002"
    );
    assert_eq!(
        v["epochs"][1]["members"][0]["consensus_key"],
        "10".repeat(32)
    );
    let p = &v["pending_changes"][0];
    assert_eq!(p["change_id"], fake_node::PENDING_CHANGE_ID);
    assert_eq!(
        (p["votes"].as_u64(), p["needed"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(p["voters"], serde_json::json!(["m1"]));
    assert_eq!(p["change"]["activation_height"], 40);
    assert_eq!(p["diff"]["added"][0]["name"], "m4");
    assert_eq!(p["diff"]["removed"], serde_json::json!(["m3"]));
    assert_eq!(p["diff"]["peg_threshold"]["to"], 3);
}

#[test]
fn federation_show_says_when_an_adopted_epoch_activates() {
    let node = fake_node::start_with(fake_node::Federation::AdoptedWaiting);
    let o = run(fedpeg(&node.url).args(["federation", "show"]));
    let out = text(&o.stdout);
    let line = "epoch 2 (adopted): adopted at height 3, activates at height 14, in 11 blocks; peg 3 of 4, quorum 3 of 4";
    assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    assert!(out.lines().any(|l| l == "    - m3"), "{out}");
    assert!(out.lines().any(|l| l == "no pending changes"), "{out}");
}

#[test]
fn federation_propose_sends_the_edited_set_with_the_admin_token() {
    let dir = TempDir::new("propose");
    let (token_file, token) = admin_token(&dir);
    let (m9_file, m9) = member_file(&dir, "m9");
    let node = fake_node::start_with(fake_node::Federation::ChangePending);
    let o = federation_vote(
        &node.url,
        "propose",
        &token_file,
        &["--add-member", &m9_file, "--remove-member", "m0"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let votes = node.votes();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].authorization, Some(format!("Bearer {token}")));
    let mut members = fake_node::epoch1_members();
    members.remove(0);
    members.push(fedpeg_proto::v1::EpochMember {
        name: "m9".into(),
        consensus_key: hex::decode(&m9.consensus_key).unwrap(),
        peg_key: hex::decode(&m9.peg_key).unwrap(),
        p2p_address: m9.p2p_address.clone(),
    });
    let want = fedpeg_proto::v1::FederationChange {
        members,
        peg_threshold: 2,
        // The node's height (3) + the default --activate-in 20.
        activation_height: 23,
        // The epoch in force it replaces.
        base_epoch: 1,
    };
    assert_eq!(votes[0].change, Some(want));
    let out = text(&o.stdout);
    for line in [
        "proposed epoch 2: activates at height 23, in 20 blocks; peg 2 of 4",
        "  - m0",
        &format!(
            "voted for change {} (transaction {})",
            fake_node::VOTED_CHANGE_ID,
            fake_node::TXID
        ),
        &format!(
            "  fedpeg federation approve --admin-token <data-dir>/admin.token {}",
            fake_node::VOTED_CHANGE_ID
        ),
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }
    assert!(
        out.contains(&format!("  + m9           consensus {}", m9.consensus_key)),
        "{out}"
    );
}

#[test]
fn federation_approve_votes_the_pending_change_exactly() {
    let dir = TempDir::new("approve");
    let (token_file, _) = admin_token(&dir);
    let node = fake_node::start_with(fake_node::Federation::ChangePending);
    let o = federation_vote(
        &node.url,
        "approve",
        &token_file,
        &[fake_node::PENDING_CHANGE_ID],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(node.votes()[0].change, Some(fake_node::pending_change()));
    let last = text(&o.stdout).lines().last().unwrap().to_string();
    assert_eq!(
        last,
        format!(
            "voted for change {} (transaction {}); 2/3 votes with this one",
            fake_node::PENDING_CHANGE_ID,
            fake_node::TXID
        )
    );
}

#[test]
fn federation_approve_of_an_unknown_id_lists_the_pending_ids_and_sends_nothing() {
    let dir = TempDir::new("approve-unknown");
    let (token_file, _) = admin_token(&dir);
    let node = fake_node::start_with(fake_node::Federation::ChangePending);
    let o = federation_vote(&node.url, "approve", &token_file, &["beef"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "error: no pending change beef; pending: {}\n",
            fake_node::PENDING_CHANGE_ID
        )
    );
    assert!(node.votes().is_empty());
}

/// Bad input to `fedpeg federation propose` is refused with a message that
/// says what is wrong, and no vote reaches the node.
#[test]
fn federation_propose_refuses_bad_input_and_sends_nothing() {
    let dir = TempDir::new("propose-bad");
    let (token_file, _) = admin_token(&dir);
    let (m9_file, _) = member_file(&dir, "m9");
    std::fs::write(dir.path("genesis-ish.json"), "{\"chain_name\": \"x\"}").unwrap();
    let not_member = dir.path("genesis-ish.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--set-peg-key", "m1=zz"],
            "--set-peg-key m1: 'zz' is not a compressed secp256k1 peg public key (66 hex characters)",
        ),
        (
            vec!["--remove-member", "m7"],
            "--remove-member m7: no member 'm7' in epoch 1 after the removals and additions (members: m0, m1, m2, m3)",
        ),
        (vec![], "nothing to propose"),
        (
            vec!["--add-member", not_member.to_str().unwrap()],
            "is not a member public info file",
        ),
        (
            vec!["--add-member", &m9_file, "--add-member", &m9_file],
            "a member named 'm9' is already in epoch 1",
        ),
        (
            vec!["--remove-member", "m0", "--activate-in", "5"],
            "--activate-in 5 is too soon: the node is at height 3",
        ),
        (vec!["--peg-threshold", "4"], "--peg-threshold 4 is unsafe for 4 members"),
    ];
    let node = fake_node::start_with(fake_node::Federation::ChangePending);
    for (args, want) in &cases {
        let o = federation_vote(&node.url, "propose", &token_file, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = text(&o.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "{args:?}: {err}"
        );
    }
    // A missing token file, and a change while an adopted one waits.
    let o = federation_vote(
        &node.url,
        "propose",
        dir.path("none.token").to_str().unwrap(),
        &["--remove-member", "m0"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("error: --admin-token (the node's <data-dir>/admin.token)"),
        "{err}"
    );
    assert!(node.votes().is_empty(), "{:?}", node.votes());
    let waiting = fake_node::start_with(fake_node::Federation::AdoptedWaiting);
    let o = federation_vote(
        &waiting.url,
        "propose",
        &token_file,
        &["--remove-member", "m0"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("epoch 2 was adopted at height 3 and activates at height 14 (in 11 blocks); no other change can be voted until then"),
        "{}",
        text(&o.stderr)
    );
    assert!(waiting.votes().is_empty());
}

#[test]
fn federation_propose_prints_the_nodes_refusal_and_exits_1() {
    let dir = TempDir::new("propose-refused");
    let (token_file, _) = admin_token(&dir);
    let node = fake_node::start_with(fake_node::Federation::ChangePending);
    let height = fake_node::REFUSED_ACTIVATION.to_string();
    let o = federation_vote(
        &node.url,
        "propose",
        &token_file,
        &["--remove-member", "m0", "--activation-height", &height],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "error: federation propose: refused: an adopted change waits for its activation at height 30\n"
    );
    assert_eq!(node.votes().len(), 1, "the vote was sent and refused");
    // --activation-height and --activate-in together: a usage error.
    let o = federation_vote(
        &node.url,
        "propose",
        &token_file,
        &[
            "--remove-member",
            "m0",
            "--activation-height",
            "50",
            "--activate-in",
            "30",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}
