//! ARCHITECTURE.md's crate table against the workspace (`cargo metadata`), so that the map
//! cannot drift from the code: every member has a row and every row is a member, named by
//! its folder; the workspace crates a row says it depends on are exactly the member's
//! (normal and build, optional included); and every other crate a row names is one of the
//! member's dependencies (of any kind: a bench row may name its dev-dependencies).
//!
//! Run it alone with `cargo test -p atrion-cli --test architecture`.
//!
//! The table's "depends on" cell is a list separated by `,` or `+` (`hmac + sha2`). A
//! parenthesised group right after a name is that dependency's features
//! (`clap (derive, env)`, `atrion (feature metrics)`); a group standing as an item of its
//! own is a list of optional dependencies (`(tower, http, axum by feature)`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What the table says of one crate.
#[derive(Debug)]
struct Row {
    path: String,
    deps: Vec<String>,
}

/// What the workspace says of one member.
#[derive(Debug)]
struct Member {
    dir: PathBuf,
    /// Normal and build dependencies on other members (optional ones included).
    workspace: BTreeSet<String>,
    /// Every dependency, of every kind.
    all: BTreeSet<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

fn members(root: &Path) -> BTreeMap<String, Member> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages.iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"].as_array().expect("dependencies");
            let name = |d: &Value| d["name"].as_str().unwrap().to_owned();
            let runtime = |d: &&Value| d["kind"].is_null() || d["kind"] == "build";
            let member = Member {
                dir: Path::new(p["manifest_path"].as_str().unwrap()).parent().unwrap().to_owned(),
                workspace: deps.iter().filter(runtime).map(name).filter(|n| names.contains(n)).collect(),
                all: deps.iter().map(name).collect(),
            };
            (p["name"].as_str().unwrap().to_owned(), member)
        })
        .collect()
}

/// The rows of the table under the `## Crates` heading.
fn table(text: &str) -> Vec<Row> {
    let section = text.split("\n## ").find(|s| s.starts_with("Crates")).expect("a `## Crates` section");
    let mut lines = section.lines().filter(|l| l.trim_start().starts_with('|'));
    let header = cells(lines.next().expect("the table's header"));
    let col = |title: &str| header.iter().position(|h| h.eq_ignore_ascii_case(title));
    let (crate_col, deps_col) =
        (col("crate").expect("a `crate` column"), col("depends on").expect("a `depends on` column"));
    lines
        .map(cells)
        .filter(|c| !c.iter().all(|x| x.chars().all(|ch| matches!(ch, '-' | ':' | ' '))))
        .map(|c| Row { path: c[crate_col].trim_matches('`').to_owned(), deps: dependencies(&c[deps_col]) })
        .collect()
}

/// The cells of a table line (no `|` inside a cell in this table).
fn cells(line: &str) -> Vec<String> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(|c| c.trim().to_owned()).collect()
}

/// The crate names of a "depends on" cell (see the module doc).
fn dependencies(cell: &str) -> Vec<String> {
    let mut flat = String::new();
    let mut chars = cell.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '(' {
            flat.push(c);
            continue;
        }
        let group: String = chars.by_ref().take_while(|&c| c != ')').collect();
        let features = flat.trim_end().ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !features {
            flat.push_str(group.trim_end_matches("by feature").trim_end_matches("by features"));
        }
    }
    flat.split([',', '+']).map(|d| d.trim().trim_matches('`').to_owned()).filter(|d| !d.is_empty()).collect()
}

fn norm(name: &str) -> String {
    name.replace('_', "-")
}

#[test]
fn the_crate_table_is_the_workspace() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let rows = table(&text);
    let members = members(&root);
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for row in &rows {
        // A row names its member by folder: the folder's name is the crate's, except where a
        // folder says what the crate is for (`bindings/node` holds `atrion-node`).
        let dir = root.join(&row.path).canonicalize().unwrap_or_default();
        let Some((name, m)) = members.iter().find(|(_, m)| m.dir == dir) else {
            problems.push(format!("`{}` is in the table but is no member of the workspace", row.path));
            continue;
        };
        let name = name.clone();
        if !listed.insert(name.clone()) {
            problems.push(format!("`{name}` has two rows"));
        }
        for d in &row.deps {
            if !d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                problems.push(format!("`{name}`: cannot read `{d}` as a crate name"));
            }
        }
        let said: BTreeSet<String> = row.deps.iter().filter(|d| members.contains_key(*d)).cloned().collect();
        for missing in m.workspace.difference(&said) {
            problems.push(format!("`{name}` depends on `{missing}`, which its row does not say"));
        }
        for extra in said.difference(&m.workspace) {
            problems.push(format!("`{name}`'s row says it depends on `{extra}`, which it does not"));
        }
        let all: BTreeSet<String> = m.all.iter().map(|d| norm(d)).collect();
        for d in row.deps.iter().filter(|d| !members.contains_key(*d)) {
            if !all.contains(&norm(d)) {
                problems.push(format!("`{name}`'s row names `{d}`, which is none of its dependencies"));
            }
        }
    }
    for name in members.keys().filter(|n| !listed.contains(*n)) {
        problems.push(format!("`{name}` is a member of the workspace without a row in the table"));
    }
    assert!(problems.is_empty(), "ARCHITECTURE.md's crate table has drifted:\n- {}", problems.join("\n- "));
}

#[test]
fn a_dependency_cell_reads_names_features_and_optional_groups() {
    assert_eq!(
        dependencies("atrion (feature metrics), axum, utoipa + utoipa-axum"),
        ["atrion", "axum", "utoipa", "utoipa-axum"]
    );
    assert_eq!(
        dependencies("atrion-core, (tower, http, atrion-file by feature), clap (derive, env)"),
        ["atrion-core", "tower", "http", "atrion-file", "clap"]
    );
    assert!(dependencies("").is_empty());
}
