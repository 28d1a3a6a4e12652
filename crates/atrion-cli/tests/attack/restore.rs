//! Garbage through restore (issue 25, defect 8): `{"key":"atrion/policy/desired",
//! "value":"YWJjZGVm"}` was written, after which every `/v1/policies` answered 503, even
//! after a restart; a foreign key `evil/key` was accepted too. Now every line is decoded and
//! checked by the owner of its key's format before anything is written, and a refused
//! restore writes nothing.

use std::collections::BTreeMap;

use atrion_state::BackupLine;
use atrion_state::shares::{Share, Shares};
use atrion_sync::Contribution;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Serve, eventually, free_port};

const TOKEN: &str = "ops-secret-for-the-restore-attack";

/// The store's entries as a backup lists them, key to value, the audit trail left out (the
/// backup itself is an audited action), and heartbeats, policy reports and route records
/// too (each node rewrites its own as time passes).
/// The pulses the node's sync has begun (`atrion_sync_pulses_total`, read at the scrape).
async fn pulses(s: &Serve) -> Option<u64> {
    let text = reqwest::get(format!("{}/metrics", s.url)).await.ok()?.text().await.ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("atrion_sync_pulses_total "))?;
    value.trim().parse::<f64>().ok().map(|v| v as u64)
}

async fn entries(s: &Serve) -> BTreeMap<String, String> {
    let r = reqwest::Client::new().get(format!("{}/v1/admin/backup", s.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let lines = BackupLine::decode_all(&text).expect("a backup reads back");
    lines
        .into_iter()
        .filter(|l| {
            !["atrion/audit/", "atrion/node/", "atrion/policy/node/", "atrion/local/"]
                .iter()
                .any(|p| l.key.starts_with(p))
        })
        .map(|l| (l.key, format!("{:?}", l.value)))
        .collect()
}

async fn restore(s: &Serve, body: String) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/restore", s.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(
        status == 200 || r.headers()["content-type"] == "application/problem+json",
        "{status}: a refusal is a problem"
    );
    (status, r.json().await.unwrap())
}

fn line(key: &str, value: &[u8]) -> String {
    BackupLine { key: key.into(), value: value.to_vec().into(), ttl: None }.encode()
}

async fn policies_answer(s: &Serve) -> u16 {
    reqwest::get(format!("{}/v1/policies", s.url)).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_foreign_keys_and_one_bad_line_among_good_ones_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.redb").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--store", &store, "--listen", &listen];
    let tokens = [("ATRION_ADMIN_TOKENS", &*format!("ops:{TOKEN}"))];
    let s = Serve::start(&args, &tokens);
    // Something in every family: a policy, a route's shares, heartbeats, reports, audit, a
    // held route's record.
    let (status, _) = s.admin(Method::POST, "/v1/admin/open", TOKEN, Some(json!({"route": "GET /held"}))).await;
    assert_eq!(status, 200);
    let (status, _) =
        s.admin(Method::POST, "/v1/policies", TOKEN, Some(json!({"route": "POST /held", "state": "closed"}))).await;
    assert_eq!(status, 200);
    eventually("the route scars past the deadband (0.5 ohm)", || async {
        let failed = json!({"route": "GET /pay", "latency_ms": 900, "ok": false, "saturation": 0.9});
        (s.post("/v1/report", failed).await["scar"].as_f64()? > 2.0).then_some(())
    })
    .await;
    // Pulses run one at a time: once the third after the last report has begun, the one that
    // took that report, and the second look it may have deferred it to, are over.
    let reported = pulses(&s).await.expect("the sync's counters are in /metrics");
    eventually("three pulses after the last report", || async { (pulses(&s).await? >= reported + 3).then_some(()) })
        .await;
    eventually("the route's shares reach the store", || async {
        entries(&s).await.keys().any(|k| k.starts_with("atrion/route/")).then_some(())
    })
    .await;
    let before = entries(&s).await;

    let share = Share {
        member: "ghost".into(),
        rank: 1.0,
        value: Contribution { scar: 1.0, momentum: 0.0, at_ms: 1 }.encode(),
    };
    let good = [
        line("atrion/route/GET /restored", &Shares { members: 1, top: vec![share] }.encode()),
        line("atrion/node/ghost", &1u64.to_le_bytes()),
    ]
    .join("\n");
    let attacks = [
        ("garbage desired policies", line("atrion/policy/desired", b"abcdef"), 422, "invalid-backup-value", 1),
        ("a foreign key", line("evil/key", b"v"), 422, "foreign-key", 1),
        ("an unknown family in the namespace", line("atrion/other/x", b"v"), 422, "foreign-key", 1),
        (
            "a bad value after good lines",
            format!("{good}\n\n{}", line("atrion/node/n9", b"short")),
            422,
            "invalid-backup-value",
            4,
        ),
        ("a foreign key after good lines", format!("{good}\n{}", line("evil/key", b"v")), 422, "foreign-key", 3),
        ("a malformed line after good lines", format!("{good}\nnot json"), 400, "malformed-backup", 3),
    ];
    for (what, body, code, kind, at) in attacks {
        let (status, problem) = restore(&s, body).await;
        assert_eq!(status, code, "{what}: {problem}");
        assert_eq!(problem["type"], format!("tag:atrion,2026:problem/{kind}"), "{what}");
        assert_eq!(problem["field"], format!("line {at}"), "{what}: {problem}");
        assert_eq!(policies_answer(&s).await, 200, "{what}");
        assert_eq!(entries(&s).await, before, "{what}: nothing was written");
    }

    // What the sidecar wrote itself restores: every family of its namespace is known.
    let r = reqwest::Client::new().get(format!("{}/v1/admin/backup", s.url)).bearer_auth(TOKEN).send().await.unwrap();
    let all = r.text().await.unwrap();
    assert!(all.contains("\"atrion/local/"), "the held route's record is in the backup");
    let (status, answer) = restore(&s, all).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(restore(&s, good).await.0, 200);

    s.stop();
    let s = Serve::start(&args, &tokens);
    assert_eq!(policies_answer(&s).await, 200, "after a restart too");
    let after = entries(&s).await;
    assert!(!after.contains_key("evil/key") && !after.contains_key("atrion/other/x"));
    assert_eq!(after.get("atrion/policy/desired"), before.get("atrion/policy/desired"));
    s.stop();
}
