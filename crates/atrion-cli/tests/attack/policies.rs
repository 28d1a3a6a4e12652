//! Large policy sets (issue 25, defect 9): a set past the cap is refused and changes
//! nothing; one at the cap is applied and answered with the version that is stored; and
//! an answer never contradicts what was committed, even when the request runs out of time.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::Serve;

const TOKEN: &str = "ops-secret-0123456789";

fn set(n: usize) -> Value {
    let policies: Vec<Value> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                json!({"route": format!("GET /r{i}")})
            } else {
                json!({"route": format!("GET /g{i}/*"), "physics": {"tuner": {"k": 4.0}}})
            }
        })
        .collect();
    json!({ "policies": policies })
}

fn start(extra: &[&str]) -> Serve {
    let mut args = vec!["--listen", "127.0.0.1:0", "--store", "memory", "--no-dashboard"];
    args.extend_from_slice(extra);
    Serve::start(&args, &[("ATRION_ADMIN_TOKENS", &format!("ops:{TOKEN}"))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_set_is_refused_and_one_at_the_cap_is_applied() {
    let s = start(&["--max-policies", "300"]);
    let (status, p) = s.admin(Method::PUT, "/v1/policies", TOKEN, Some(set(301))).await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["field"], "policies", "{p}");
    let (_, desired) = s.admin(Method::GET, "/v1/policies", TOKEN, None).await;
    assert_eq!(desired["version"], 0, "nothing changed");

    let (status, answer) = s.admin(Method::PUT, "/v1/policies", TOKEN, Some(set(300))).await;
    assert_eq!(status, 200, "{answer}");
    let (_, desired) = s.admin(Method::GET, "/v1/policies", TOKEN, None).await;
    assert_eq!(desired["version"], answer["version"]);
    assert_eq!(desired["api"]["policies"].as_array().unwrap().len(), 300);
    assert_eq!(desired["updated_by"], "ops", "an admin sees who");
    let public = s.get("/v1/policies").await;
    assert_eq!(public["updated_by"], "(hidden)", "token names are not public");
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_never_contradicts_the_store_when_time_runs_out() {
    // A time limit the largest set cannot make on this machine, and one it can.
    let s = start(&["--max-policies", "5000", "--request-timeout-ms", "300"]);
    for n in [5_000, 50] {
        let (_, before) = s.admin(Method::GET, "/v1/policies", TOKEN, None).await;
        let v0 = before["version"].as_u64().unwrap();
        let (status, answer) = s.admin(Method::PUT, "/v1/policies", TOKEN, Some(set(n))).await;
        if status == 200 {
            let (_, after) = s.admin(Method::GET, "/v1/policies", TOKEN, None).await;
            assert_eq!(after["version"], answer["version"], "{n}: answered 200, so stored");
            continue;
        }
        assert!(status == 408 || status == 503, "{n}: {status} {answer}");
        // Answered an error, so nothing was stored: a change based on the version read
        // before lands (it would conflict had the refused one landed).
        let one = json!({"policies": [{"route": "GET /one"}]});
        let path = format!("/v1/policies?expected_version={v0}");
        let (status, answer) = s.admin(Method::PUT, &path, TOKEN, Some(one)).await;
        assert_eq!(status, 200, "{n}: the refused set was not stored: {answer}");
    }
    s.stop();
}

/// Hostile edges of the admin and policy endpoints: each is a problem that changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_edges_are_problems_that_change_nothing() {
    let s = start(&[]);
    let problem = |status: u16, v: &Value, kind: &str| {
        assert!(v["type"].as_str().is_some_and(|t| t.ends_with(kind)), "{status} {v}");
    };
    // A ban whose deadline would not fit the schema's int64.
    for body in [json!({"client": "x", "for_ms": u64::MAX}), json!({"client": "x", "until_ms": u64::MAX})] {
        let (status, v) = s.admin(Method::POST, "/v1/bans", TOKEN, Some(body)).await;
        assert_eq!(status, 422, "{v}");
        problem(status, &v, "invalid-value");
    }
    // Query strings that do not parse, and a restore of nothing.
    for (method, path) in [(Method::GET, "/v1/audit?limit=-1"), (Method::DELETE, "/v1/policies")] {
        let (status, v) = s.admin(method, path, TOKEN, None).await;
        assert_eq!(status, 400, "{path}: {v}");
        problem(status, &v, "invalid-query");
    }
    let r = reqwest::Client::new().post(format!("{}/v1/admin/restore", s.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // A store in a folder that does not exist: refused, and the folder is not made.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/folder");
    let url = format!("file:{}", missing.join("state.redb").display());
    let (status, v) = s.admin(Method::POST, "/v1/admin/store", TOKEN, Some(json!({ "url": url }))).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["field"], "url");
    assert!(!dir.path().join("no").exists(), "nothing is created");
    // The diff is a list, as the schema says; and nothing above changed desired state.
    let diff = s.get("/v1/state/diff").await;
    assert!(diff.is_array(), "{diff}");
    let (_, desired) = s.admin(Method::GET, "/v1/policies", TOKEN, None).await;
    assert_eq!(desired["version"], 0, "{desired}");
    let doc = s.get("/openapi.json").await;
    let diff_schema =
        &doc["paths"]["/v1/state/diff"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(diff_schema["type"], "array", "{diff_schema}");
    for (path, method) in [("/v1/audit", "get"), ("/v1/policies", "delete"), ("/v1/state/history", "get")] {
        assert!(doc["paths"][path][method]["responses"]["400"].is_object(), "{method} {path} declares its 400");
    }
    s.stop();
}
