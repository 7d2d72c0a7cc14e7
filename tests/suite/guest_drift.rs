//! `strata drift` against a real server: the demo's final stage, exported and booted as a fresh
//! instance with a seed strata did not write (a NoCloud `cidata` drive with a new key, as
//! Proxmox gives it), on a throwaway overlay. Fresh, it matches its layer (exit 0). Then, by
//! hand over SSH: one file changed, one added, one removed and one package purged: exit 3 and
//! exactly those four findings. Also: `strata diff` names the files each demo stage added, and
//! what the collection costs in the guest under TCG (timings to stderr).
//!
//! No boot of its own: `guest_export` boots that instance to prove the export, then hands it
//! here (`drift_proofs`), so one fresh boot proves both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

use common::demo::BuiltDemo;
use common::instance::Instance;
use common::{named, parse_events, stderr};

/// Packages the demo does not need and that own nothing under the drift roots, to purge.
const PURGE_CANDIDATES: &str = "zstd curl eject libfile-find-rule-perl python3-serial xxd file";

/// The files `strata diff` says each stage added (stage -> paths).
fn files_added_per_stage(demo: &BuiltDemo) -> Vec<(String, Vec<String>)> {
    let output = demo
        .strata()
        .args(["--log-format", "json", "diff"])
        .arg(demo.definition())
        .output()
        .unwrap();
    assert!(output.status.success(), "strata diff: {}", stderr(&output));
    let findings = parse_events(&output.stdout);
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for finding in findings.iter().filter(|finding| finding["kind"] == "file_added") {
        let stage = finding["to"].as_str().unwrap().to_owned();
        let path = finding["path"].as_str().unwrap().to_owned();
        match stages.iter_mut().find(|(name, _)| *name == stage) {
            Some((_, paths)) => paths.push(path),
            None => stages.push((stage, vec![path])),
        }
    }
    stages
}

/// `strata --log-format json drift` against the instance: (exit code, findings, stderr).
fn drift(demo: &BuiltDemo, instance: &Instance, known_hosts: &Path) -> (i32, Vec<Value>, String) {
    let started = Instant::now();
    let output: Output = demo
        .strata()
        .env_remove("SSH_AUTH_SOCK")
        .args(["--log-format", "json", "drift"])
        .arg(demo.definition())
        .arg("--host")
        .arg(format!("debian@127.0.0.1:{}", instance.port))
        .arg("--identity")
        .arg(&instance.key)
        .arg("--known-hosts")
        .arg(known_hosts)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!("strata drift took {:.1}s", started.elapsed().as_secs_f64());
    let events = parse_events(&output.stdout);
    let findings = named(&events, "drift_finding").into_iter().cloned().collect();
    (output.status.code().unwrap_or(-1), findings, stderr(&output))
}

/// One line per finding: kind and path (or package name).
fn summary(findings: &[Value]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|finding| {
            let what =
                finding.get("path").or_else(|| finding.get("name")).cloned().unwrap_or_default();
            format!("{} {}", finding["kind"].as_str().unwrap_or(""), what.as_str().unwrap_or(""))
        })
        .collect()
}

/// Drift proofs on `instance`, a fresh boot of the demo's final stage (as exported), over its
/// `debian` account; `work` is a folder for known_hosts. Run once, by guest_export.
pub fn drift_proofs(demo: &BuiltDemo, instance: &Instance, work: &Path) {
    let added = files_added_per_stage(demo);
    for (stage, paths) in &added {
        let shown: Vec<&String> = paths.iter().take(8).collect();
        eprintln!("strata diff: {stage} added {} files, e.g. {shown:?}", paths.len());
    }
    let final_added =
        &added.iter().find(|(stage, _)| stage == "final").expect("final added files").1;
    assert!(final_added.iter().any(|path| path == "/opt/app/app.py"), "{final_added:?}");
    assert!(final_added.iter().any(|path| path == "/etc/default/strata-demo"), "{final_added:?}");
    let app_base =
        &added.iter().find(|(stage, _)| stage == "app-base").expect("app-base added files").1;
    assert!(!app_base.is_empty());

    // Trusted once, as an operator would: ssh-keyscan, then strata checks every later login.
    let scan = Command::new("ssh-keyscan")
        .args(["-p", &instance.port.to_string(), "127.0.0.1"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let known_hosts = work.join("known_hosts");
    std::fs::write(&known_hosts, &scan.stdout).unwrap();
    assert!(!scan.stdout.is_empty(), "ssh-keyscan found no key");

    let (fresh_code, fresh, fresh_message) = drift(demo, instance, &known_hosts);
    // Asserted at the end, so that one boot also tells what the hand changes show.
    eprintln!(
        "fresh instance: exit {fresh_code}, findings {:#?}\n{fresh_message}",
        summary(&fresh)
    );

    // What the collection costs in this guest under TCG (the seal runs the same snippet).
    let timing = instance.ssh(
        "debian",
        "sudo sh -c 'for i in 1 2 3; do s=$(date +%s%N); find /etc /opt /srv /usr/local /var/www -xdev -printf x >/dev/null 2>&1; \
         find /etc /opt /srv /usr/local /var/www -xdev -type f -exec sha256sum {} + >/dev/null 2>&1; dpkg-query -W >/dev/null; \
         e=$(date +%s%N); echo $(( (e - s) / 1000000 )); done'",
    );
    eprintln!(
        "collection in the guest (find + sha256sum + dpkg-query), ms per run: {}",
        timing.replace('\n', " ")
    );

    // By hand, as root: one file changed, one added, one removed, one package purged.
    let package = instance.ssh(
        "debian",
        &format!(
            "for p in {PURGE_CANDIDATES}; do dpkg -s $p >/dev/null 2>&1 || continue; \
             dpkg -L $p | grep -qE '^/(etc|opt|srv|usr/local|var/www)(/|$)' && continue; \
             [ \"$(apt-get -s purge $p | grep -c '^Purg')\" = 1 ] || continue; echo $p; break; done"
        ),
    );
    assert!(!package.is_empty(), "none of {PURGE_CANDIDATES} can be purged alone");
    eprintln!("purging {package}");
    instance.ssh(
        "debian",
        &format!(
            "sudo sh -ec 'echo \"# edited by hand\" >> /etc/issue; \
             printf \"#!/bin/sh\\necho hotfix\\n\" > /usr/local/bin/hotfix; chmod 755 /usr/local/bin/hotfix; \
             rm /etc/motd; DEBIAN_FRONTEND=noninteractive apt-get purge -y -q {package} >/dev/null'"
        ),
    );
    let (code, findings, message) = drift(demo, instance, &known_hosts);
    let expected: BTreeSet<String> = [
        "file_changed /etc/issue".to_owned(),
        "file_added /usr/local/bin/hotfix".to_owned(),
        "file_removed /etc/motd".to_owned(),
        format!("package_removed {package}"),
    ]
    .into_iter()
    .collect();
    let after: BTreeSet<String> =
        summary(&findings).difference(&summary(&fresh)).cloned().collect();
    assert_eq!(after, expected, "{message}");
    assert_eq!(code, 3, "{message}");
    let changed = findings.iter().find(|finding| finding["path"] == "/etc/issue").unwrap();
    assert_eq!(changed["changes"][0]["aspect"], "content", "{changed}");
    assert!(
        findings
            .iter()
            .all(|finding| finding["host"] == format!("debian@127.0.0.1:{}", instance.port))
    );
    assert_eq!(summary(&findings).len(), 4, "exactly the four hand changes: {findings:#?}");
    assert_eq!(
        fresh_code,
        0,
        "a fresh instance shows drift:\n{:#?}\n{fresh_message}",
        summary(&fresh)
    );
}
