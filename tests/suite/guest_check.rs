//! Checks and Ansible on real guests (issue 19), on a copy of the demo the guest tests share:
//! the demo's own checks pass on a fresh boot of its final stage (`strata test`, a JUnit file);
//! demo-ansible's `motd` stage, configured by an Ansible playbook on the demo's `base` layer
//! (same key, so cached), is built and checked in one command (`build --test`): the checks that
//! see the playbook's effects pass, an added one that fails gives exit 1, is named, and is the
//! one JUnit failure; editing a check rebuilds nothing; editing the playbook's template changes
//! the key from its stage up. Two fresh boots in all (one per `test`).
//!
//! Ignored by default, run by scripts/test.sh; needs the local base image (or `STRATA_BASE_IMAGE_DIR`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::Output;
use std::time::Instant;

use serde_json::Value;

use common::demo::{BuiltDemo, built_demo};
use common::{assert_success, named, parse_events, stages_of, stderr};

fn run_json(demo: &BuiltDemo, args: &[&str]) -> (Output, Vec<Value>) {
    let output = demo.strata().args(["--log-format", "json"]).args(args).output().unwrap();
    let events = parse_events(&output.stdout);
    (output, events)
}

/// The check results of a run: (name, passed) in order.
fn results(events: &[Value]) -> Vec<(String, bool)> {
    named(events, "check_finished")
        .iter()
        .map(|event| {
            (event["name"].as_str().unwrap().to_owned(), event["passed"].as_bool().unwrap())
        })
        .collect()
}

#[test]
#[ignore = "boots a guest under QEMU: scripts/test.sh runs it"]
fn checks_prove_fresh_instances_and_ansible_stages() {
    let demo = built_demo();

    // The demo's checks on a fresh boot of `final`: the app answers, its unit runs, sshd is
    // hardened. A JUnit file with one passing testcase each; the layer records the result.
    let demo_definition = demo.definition();
    let junit = demo.path("demo.xml");
    let started = Instant::now();
    let (output, events) = run_json(
        &demo,
        &["test", demo_definition.to_str().unwrap(), "--junit", junit.to_str().unwrap()],
    );
    eprintln!("strata test images/demo.toml: {:.1}s", started.elapsed().as_secs_f64());
    assert_success(&output, "strata test images/demo.toml");
    let passed = results(&events);
    assert_eq!(passed.len(), 3, "{passed:?}");
    assert!(passed.iter().all(|(_, ok)| *ok), "{passed:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), 3, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    let rows = demo.layers_table(&demo_definition);
    let last = rows.last().unwrap();
    assert_eq!(last["tested"], "passed", "{last}");

    // demo-ansible, with one check that must fail added: `base` is the demo's layer (cached,
    // and its saved guest resumed), `motd` is built by a playbook, then checked on a fresh boot
    // in the same command. The three checks that see the playbook's effects pass; the one that
    // fails gives exit 1, is named, and is the one failure among four JUnit testcases.
    let path = demo.path("images/demo-ansible.toml");
    let definition = path.to_str().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let failing =
        format!("{text}\n[[test]]\nname = \"nothing on 2222\"\nport = 2222\ntimeout = \"5s\"\n");
    std::fs::write(&path, &failing).unwrap();
    let junit = demo.path("ansible.xml");
    let started = Instant::now();
    let (output, events) =
        run_json(&demo, &["build", definition, "--test", "--junit", junit.to_str().unwrap()]);
    eprintln!("demo-ansible build --test: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stages_of(&events, "stage_cached"), ["base"]);
    assert_eq!(stages_of(&events, "layer_committed"), ["motd"]);
    assert!(stderr(&output).contains("nothing on 2222"), "{}", stderr(&output));
    let passed = results(&events);
    assert_eq!(passed.len(), 4, "{passed:?}");
    let failed: Vec<&str> =
        passed.iter().filter(|(_, ok)| !ok).map(|(name, _)| name.as_str()).collect();
    assert_eq!(failed, ["nothing on 2222"], "the playbook's effects are seen: {passed:?}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), 4, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");

    // Editing checks rebuilds nothing: the failing one removed, the build finds all cached.
    std::fs::write(&path, &text).unwrap();
    let (output, events) = run_json(&demo, &["build", definition]);
    assert_success(&output, "strata build after removing a check");
    assert_eq!(stages_of(&events, "stage_cached"), ["base", "motd"]);
    assert!(named(&events, "layer_committed").is_empty());

    // Editing the playbook's template changes its stage's key and not the one below: the stage
    // is rebuilt from there up (shown by `strata layers`, without booting again).
    let template = demo.path("images/demo-ansible/templates/motd.j2");
    let mut body = std::fs::read_to_string(&template).unwrap();
    body.push_str("edited\n");
    std::fs::write(&template, body).unwrap();
    let cached = demo.cached_stages(&path);
    assert_eq!(cached, [true, false], "base stays cached, motd must be built again");
}
