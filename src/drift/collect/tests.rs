//! The real snippet, run by /bin/sh on this host over a temporary tree.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use super::*;
use crate::drift::{Compare, FileEntry, FileType, Finding, Inventory, compare, parse_inventory};

fn run_snippet(roots: &Roots, ignore: &IgnoreRules) -> Inventory {
    run_snippet_in("/bin/sh", "", roots, ignore)
}

/// Runs the snippet with `shell`, after `before` (the script it is embedded in).
fn run_snippet_in(shell: &str, before: &str, roots: &Roots, ignore: &IgnoreRules) -> Inventory {
    let script = format!("{before}{}echo after", collect_script(roots, ignore));
    let output = Command::new(shell).arg("-c").arg(&script).output();
    let output = output.unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
    assert!(output.stdout.ends_with(b"after\n"), "the script around it goes on");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    parse_inventory(&output.stdout, roots).unwrap_or_else(|e| panic!("{e}"))
}

fn write(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn entry<'i>(inventory: &'i Inventory, path: &str) -> &'i FileEntry {
    let found = inventory.files.entries.iter().find(|e| e.path == path);
    found.unwrap_or_else(|| panic!("no {path:?} in {:#?}", inventory.files.entries))
}

#[test]
fn the_snippet_lists_an_odd_tree_and_the_comparison_finds_each_change() {
    let temp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = temp.path().join("srv");
    let root_text = root.to_string_lossy().into_owned();
    fs::create_dir_all(root.join("sub dir")).unwrap_or_else(|e| panic!("{e}"));
    fs::create_dir_all(root.join("cache/deep")).unwrap_or_else(|e| panic!("{e}"));
    write(&root.join("plain"), "hello\n", 0o644);
    write(&root.join("with space"), "a b\n", 0o600);
    write(&root.join("new\nline"), "n\n", 0o644);
    write(&root.join("back\\slash\ttab"), "t\n", 0o644);
    write(&root.join("sub dir/setuid"), "#!/bin/sh\n", 0o4755);
    write(&root.join("sticky"), "", 0o1777);
    write(&root.join("cache/deep/junk"), "junk", 0o644);
    write(&root.join("edit.swp"), "swap", 0o644);
    symlink("plain", root.join("link")).unwrap_or_else(|e| panic!("{e}"));
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640))
        .unwrap_or_else(|e| panic!("{e}"));
    write(&root.join("owned"), "x", 0o644);
    if is_root() {
        std::os::unix::fs::chown(root.join("owned"), Some(4242), Some(4243))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let missing = temp.path().join("missing").to_string_lossy().into_owned();
    let roots =
        Roots::new(&[root_text.as_str(), missing.as_str()]).unwrap_or_else(|e| panic!("{e}"));
    let cache = format!("{root_text}/cache");
    let ignore = IgnoreRules::new(&[cache.as_str(), "*.swp"]).unwrap_or_else(|e| panic!("{e}"));
    let before = run_snippet(&roots, &ignore);

    let path = |name: &str| format!("{root_text}/{name}");
    let paths: Vec<&str> = before.files.entries.iter().map(|e| e.path.as_str()).collect();
    let mut expected = [
        "",
        "/plain",
        "/with space",
        "/new\nline",
        "/back\\slash\ttab",
        "/sub dir",
        "/sub dir/setuid",
        "/sticky",
        "/link",
        "/fifo",
        "/owned",
    ]
    .map(|name| format!("{root_text}{name}"));
    expected.sort();
    assert_eq!(paths, expected, "everything but what the ignore rules prune, sorted");

    let plain = entry(&before, &path("plain"));
    assert_eq!(
        (plain.file_type, plain.mode.to_string(), plain.size),
        (FileType::File, "0644".into(), 6)
    );
    assert_eq!(
        plain.sha256.as_deref(),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
        "sha256 of \"hello\\n\""
    );
    assert!(entry(&before, &path("new\nline")).sha256.is_some(), "escaped names get hashes");
    assert!(entry(&before, &path("back\\slash\ttab")).sha256.is_some());
    assert_eq!(entry(&before, &path("sub dir/setuid")).mode.to_string(), "4755");
    assert_eq!(entry(&before, &path("sticky")).mode.to_string(), "1777");
    assert_eq!(entry(&before, &path("sub dir")).file_type, FileType::Dir);
    let link = entry(&before, &path("link"));
    assert_eq!((link.file_type, link.target.as_deref()), (FileType::Symlink, Some("plain")));
    assert_eq!(entry(&before, &path("fifo")).file_type, FileType::Other);
    if is_root() {
        assert_eq!(entry(&before, &path("owned")).owner, "4242:4243", "unnamed ids are numbers");
        assert_eq!(plain.owner, "root:root");
    }
    assert_eq!(before.files.roots, [root_text.clone(), missing]);
    // The project's hosts are Debian or Ubuntu (scripts/install-host-deps.sh).
    crate::process::require_tool("dpkg-query", "a Debian or Ubuntu host");
    assert!(before.packages.iter().any(|p| p.name == "dpkg" && !p.arch.is_empty()));
    // Source packages for all; the licenses of machine-readable copyright files.
    assert!(before.packages.iter().all(|p| p.source.is_some()), "dpkg names every source");
    let libc = before.packages.iter().find(|p| p.name == "libc6");
    let libc_source = libc.and_then(|p| p.source.as_ref()).map(|s| s.name.as_str());
    assert_eq!(libc_source, Some("glibc"));
    if Path::new("/usr/share/doc/dpkg/copyright").exists() {
        let dpkg = before.packages.iter().find(|p| p.name == "dpkg");
        let licenses = dpkg.map(|p| p.licenses.clone()).unwrap_or_default();
        assert!(licenses.contains(&"GPL-2+".to_owned()), "{licenses:?}");
    }
    assert!(before.os.is_some(), "this host has /etc/os-release");

    write(&root.join("plain"), "changed\n", 0o644);
    write(&root.join("added file"), "new\n", 0o644);
    fs::remove_file(root.join("with space")).unwrap_or_else(|e| panic!("{e}"));
    write(&root.join("cache/deep/junk"), "other junk", 0o644);
    let after = run_snippet(&roots, &ignore);
    let how = Compare { ignore: &ignore, detect_different_system: true };
    let findings = compare(&before, &after, &how);
    let summary: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| match f {
            Finding::FileAdded { path, .. }
            | Finding::FileRemoved { path, .. }
            | Finding::FileChanged { path, .. } => (f.kind(), path.as_str()),
            other => (other.kind(), ""),
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("file_added", path("added file").as_str()),
            ("file_changed", path("plain").as_str()),
            ("file_removed", path("with space").as_str()),
        ]
    );
}

#[test]
fn no_roots_and_no_patterns_still_make_a_valid_inventory() {
    let roots = Roots::new::<&str>(&[]).unwrap_or_else(|e| panic!("{e}"));
    let ignore = IgnoreRules::only([]).unwrap_or_else(|e| panic!("{e}"));
    assert!(run_snippet(&roots, &ignore).files.entries.is_empty());
}

#[test]
fn the_snippet_runs_under_set_eu_in_sh_and_bash() {
    let roots = Roots::new(&["/nonexistent/strata", "/etc/ssh"]).unwrap_or_else(|e| panic!("{e}"));
    let ignore = IgnoreRules::new::<&str>(&[]).unwrap_or_else(|e| panic!("{e}"));
    for shell in ["/bin/sh", "/bin/bash"] {
        assert!(Path::new(shell).exists(), "{shell} is missing");
        let inventory = run_snippet_in(shell, "set -eu\nset -- a b\n", &roots, &ignore);
        let keys = inventory.files.entries.iter().filter(|e| e.path.contains("ssh_host_"));
        assert_eq!(keys.count(), 0, "{shell}: host keys are pruned");
    }
}

#[test]
fn roots_and_patterns_are_quoted_for_the_shell() {
    let roots = Roots::new(&["/it's here"]).unwrap_or_else(|e| panic!("{e}"));
    let ignore = IgnoreRules::only(["/a'b*", "/{x,y}"]).unwrap_or_else(|e| panic!("{e}"));
    let script = collect_script(&roots, &ignore);
    assert!(script.contains(r"for root in '/it'\''s here'; do"), "{script}");
    assert!(script.contains(r"\( -path '/a'\''b*' \) -prune -o -printf"), "{script}");
}

/// How long the snippet takes over this host's /etc: `cargo test --lib drift -- --ignored
/// --nocapture measure_snippet_on_host_etc` (left out of scripts/test.sh's run, as every
/// `measure_` test is).
#[test]
#[ignore = "a measurement, not a check"]
fn measure_snippet_on_host_etc() {
    let roots = Roots::new(&["/etc"]).unwrap_or_else(|e| panic!("{e}"));
    let ignore = IgnoreRules::new::<&str>(&[]).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let inventory = run_snippet(&roots, &ignore);
        let files = inventory.files.entries.iter().filter(|e| e.file_type == FileType::File);
        eprintln!(
            "{:?}: {} entries ({} files, {} bytes hashed), {} packages",
            started.elapsed(),
            inventory.files.entries.len(),
            files.clone().count(),
            files.map(|e| e.size).sum::<u64>(),
            inventory.packages.len(),
        );
    }
}
