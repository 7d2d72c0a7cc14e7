//! Checks and Ansible on real guests (issue 19): demo-ansible's `motd` stage is configured by
//! an Ansible playbook, and `strata test` sees its effect on a fresh boot (exit 0, a JUnit file
//! with those testcases); a failing check gives exit 1 and a JUnit file with that failure;
//! editing a check rebuilds nothing; editing the playbook's template rebuilds from its stage up.
//!
//! Boots are shared: one cold build, two `strata test` boots, one resumed rebuild. Runs only
//! with `STRATA_GUEST_TESTS=1` and the local base image (or `STRATA_BASE_IMAGE_DIR`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use common::{HttpServer, assert_success, base_image_dir, copy_demo, named, parse_events, stderr};

struct Project {
    dir: tempfile::TempDir,
    store: PathBuf,
    _server: HttpServer,
}

impl Project {
    /// The repository's images and scripts, demo-ansible's source served over HTTP.
    fn demo_ansible() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let server = HttpServer::start(&base_image_dir());
        let url = server.url();
        let _ = copy_demo(dir.path(), &url);
        let path = dir.path().join("images/demo-ansible.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "\"../.cache/base-image/debian-12-strata-amd64.qcow2\"",
                &format!("\"{url}/debian-12-strata-amd64.qcow2\""),
            )
            .replace("\"../.cache/base-image/SHA256SUMS\"", &format!("\"{url}/SHA256SUMS\""));
        std::fs::write(&path, text).unwrap();
        let store = dir.path().join("store");
        Project { dir, store, _server: server }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn run_json(&self, args: &[&str]) -> (Output, Vec<Value>) {
        let output = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--store")
            .arg(&self.store)
            .env_remove("STRATA_STORE")
            .arg("--log-format")
            .arg("json")
            .args(args)
            .output()
            .unwrap();
        let events = parse_events(&output.stdout);
        (output, events)
    }
}

fn stages(events: &[Value], name: &str) -> Vec<String> {
    named(events, name).iter().map(|event| event["stage"].as_str().unwrap().to_owned()).collect()
}

#[test]
#[ignore = "needs STRATA_GUEST_TESTS=1 and QEMU"]
fn ansible_stage_is_checked_on_a_fresh_boot() {
    let project = Project::demo_ansible();
    let definition = project.path("images/demo-ansible.toml");
    let definition = definition.to_str().unwrap();

    // Cold build: base (the demo's), then the Ansible stage.
    let (output, events) = project.run_json(&["build", definition]);
    assert_success(&output, "strata build");
    assert_eq!(stages(&events, "layer_committed"), ["base", "motd"]);

    // Passing checks on a fresh boot: exit 0, a JUnit file with one testcase per check.
    let junit = project.path("pass.xml");
    let (output, events) =
        project.run_json(&["test", definition, "--junit", junit.to_str().unwrap()]);
    assert_success(&output, "strata test");
    let finished = named(&events, "check_finished");
    assert_eq!(finished.len(), 3, "{}", stderr(&output));
    assert!(finished.iter().all(|event| event["passed"] == true));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), 3, "{xml}");
    assert!(xml.contains("the playbook&apos;s motd is there") || xml.contains("motd is there"));
    assert!(!xml.contains("<failure"), "{xml}");

    // Editing a check rebuilds nothing.
    let text = std::fs::read_to_string(project.path("images/demo-ansible.toml")).unwrap();
    let failing = text.replace("port = 22", "port = 2222\ntimeout = \"5s\"");
    std::fs::write(project.path("images/demo-ansible.toml"), &failing).unwrap();
    let (output, events) = project.run_json(&["build", definition]);
    assert_success(&output, "strata build after editing a check");
    assert_eq!(stages(&events, "stage_cached"), ["base", "motd"]);
    assert!(named(&events, "layer_committed").is_empty());

    // A failing check: exit 1, the failure named, a JUnit file with that failure.
    let junit = project.path("fail.xml");
    let (output, _) = project.run_json(&["test", definition, "--junit", junit.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("sshd listens"), "{}", stderr(&output));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");

    // Editing the playbook's template rebuilds from its stage up (base stays cached).
    let template = project.path("images/demo-ansible/templates/motd.j2");
    let mut body = std::fs::read_to_string(&template).unwrap();
    body.push_str("edited\n");
    std::fs::write(&template, body).unwrap();
    let (output, events) = project.run_json(&["build", definition]);
    assert_success(&output, "strata build after editing the template");
    assert_eq!(stages(&events, "stage_cached"), ["base"]);
    assert_eq!(stages(&events, "layer_committed"), ["motd"]);
}
