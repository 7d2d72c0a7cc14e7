use super::*;
use crate::drift::{Manifest, Package};

fn file(path: &str, content: &str) -> FileEntry {
    FileEntry {
        path: path.to_owned(),
        file_type: FileType::File,
        mode: Mode::from_octal("644").unwrap_or_else(|| unreachable!()),
        owner: "root:root".to_owned(),
        size: content.len() as u64,
        sha256: Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content.as_bytes()))),
        target: None,
    }
}

fn dir(path: &str) -> FileEntry {
    FileEntry { file_type: FileType::Dir, size: 4096, sha256: None, ..file(path, "") }
}

fn symlink(path: &str, target: &str) -> FileEntry {
    FileEntry {
        file_type: FileType::Symlink,
        mode: Mode::from_octal("777").unwrap_or_else(|| unreachable!()),
        size: target.len() as u64,
        sha256: None,
        target: Some(target.to_owned()),
        ..file(path, "")
    }
}

fn package(name: &str, version: &str) -> Package {
    Package {
        name: name.to_owned(),
        arch: "amd64".to_owned(),
        version: version.to_owned(),
        ..Package::default()
    }
}

fn inventory(packages: Vec<Package>, entries: Vec<FileEntry>) -> Inventory {
    let mut entries = entries;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Inventory {
        os: Some(OsRelease { id: "debian".to_owned(), version_id: Some("12".to_owned()) }),
        packages,
        files: Manifest { roots: vec!["/etc".to_owned(), "/opt".to_owned()], entries },
    }
}

fn base() -> Inventory {
    inventory(
        vec![
            package("bash", "5.2-2"),
            package("coreutils", "9.1-1"),
            package("curl", "7.88-1"),
            package("dpkg", "1.21"),
            package("nginx", "1.22-1"),
            package("tar", "1.34"),
        ],
        vec![
            dir("/etc"),
            file("/etc/nginx.conf", "a"),
            file("/etc/motd", "hello"),
            symlink("/etc/localtime", "/usr/share/zoneinfo/UTC"),
            file("/etc/machine-id", "1234"),
            dir("/opt"),
        ],
    )
}

fn run(before: &Inventory, after: &Inventory) -> Vec<Finding> {
    let ignore = IgnoreRules::new::<&str>(&[]).unwrap_or_else(|e| panic!("{e}"));
    compare(before, after, &Compare { ignore: &ignore, detect_different_system: true })
}

#[test]
fn the_same_inventory_has_no_findings() {
    assert_eq!(run(&base(), &base()), vec![]);
}

#[test]
fn each_kind_of_package_change_is_one_finding() {
    let mut after = base();
    after.packages.retain(|p| p.name != "nginx");
    after.packages[0].version = "5.2-3".into();
    after.packages.push(package("vim", "9"));
    let findings = run(&base(), &after);
    let kinds: Vec<(&str, String)> =
        findings.iter().map(|f| (f.kind(), package_name(f).0.to_owned())).collect();
    assert_eq!(
        kinds,
        [
            ("package_changed", "bash".to_owned()),
            ("package_removed", "nginx".to_owned()),
            ("package_added", "vim".to_owned()),
        ]
    );
    assert_eq!(
        findings[0],
        Finding::PackageChanged {
            name: "bash".into(),
            arch: "amd64".into(),
            from: "5.2-2".into(),
            to: "5.2-3".into()
        }
    );
}

#[test]
fn each_kind_of_file_change_is_found() {
    let mut after = base();
    let entries = &mut after.files.entries;
    entries.retain(|e| e.path != "/etc/motd");
    entries.push(file("/opt/new file\nwith a newline", "x"));
    for entry in entries.iter_mut() {
        match entry.path.as_str() {
            "/etc/nginx.conf" => *entry = file("/etc/nginx.conf", "b"),
            "/etc/localtime" => entry.target = Some("/usr/share/zoneinfo/CET".into()),
            "/opt" => {
                entry.mode = Mode::from_octal("1777").unwrap_or_else(|| unreachable!());
                entry.owner = "app:1001".into();
                entry.size = 8192;
            }
            _ => {}
        }
    }
    let findings = run(&base(), &after);
    let seen: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert_eq!(
        seen,
        [
            "changed: /etc/localtime (target /usr/share/zoneinfo/UTC -> /usr/share/zoneinfo/CET)",
            "file removed: /etc/motd",
            "changed: /etc/nginx.conf (content, 1 -> 1 bytes)",
            "changed: /opt (mode 0644 -> 1777, owner root:root -> app:1001)",
            "file added: /opt/new file\\nwith a newline",
        ]
    );
}

#[test]
fn a_changed_type_is_that_change_alone() {
    let mut after = base();
    for entry in &mut after.files.entries {
        if entry.path == "/etc/motd" {
            *entry = symlink("/etc/motd", "/run/motd");
        }
    }
    let findings = run(&base(), &after);
    assert_eq!(
        findings,
        [Finding::FileChanged {
            path: "/etc/motd".into(),
            changes: vec![Change::Type { from: FileType::File, to: FileType::Symlink }],
        }]
    );
}

#[test]
fn ignored_paths_and_unshared_roots_are_left_out() {
    let mut after = base();
    let entries = &mut after.files.entries;
    for entry in entries.iter_mut() {
        if entry.path == "/etc/machine-id" {
            *entry = file("/etc/machine-id", "5678");
        }
    }
    entries.push(file("/etc/ssh/ssh_host_ed25519_key", "key"));
    entries.push(file("/srv/only/walked/after", "x"));
    after.files.roots.push("/srv".into());
    assert_eq!(run(&base(), &after), vec![]);

    let ignore = IgnoreRules::new(&["/etc/motd"]).unwrap_or_else(|e| panic!("{e}"));
    let mut changed = base();
    changed.files.entries.retain(|e| e.path != "/etc/motd");
    let how = Compare { ignore: &ignore, detect_different_system: true };
    assert_eq!(compare(&base(), &changed, &how), vec![], "a user's pattern applies to both sides");
}

#[test]
fn an_unreadable_file_is_a_content_change() {
    let mut after = base();
    for entry in &mut after.files.entries {
        if entry.path == "/etc/motd" {
            entry.sha256 = None;
        }
    }
    assert_eq!(run(&base(), &after).first().map(Finding::kind), Some("file_changed"));
}

#[test]
fn another_release_is_one_finding() {
    let mut after = base();
    after.os = Some(OsRelease { id: "ubuntu".into(), version_id: Some("24.04".into()) });
    after.files.entries.clear();
    let findings = run(&base(), &after);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].to_string(), "not the same system: debian 12 became ubuntu 24.04");

    let mut minor = base();
    let mut updated = base();
    minor.os = Some(OsRelease { id: "rocky".into(), version_id: Some("9.3".into()) });
    updated.os = Some(OsRelease { id: "rocky".into(), version_id: Some("9.4".into()) });
    assert_eq!(run(&minor, &updated), vec![], "a minor release is what updates do");
}

#[test]
fn most_packages_different_is_one_finding_but_many_added_is_not() {
    let mut after = base();
    after.packages.truncate(2);
    after.packages[0].version = "9".into();
    let findings = run(&base(), &after);
    assert_eq!(findings.iter().map(Finding::kind).collect::<Vec<_>>(), ["different_system"]);

    let mut grown = base();
    grown.packages.extend((0..100).map(|i| package(&format!("extra{i}"), "1")));
    assert_eq!(run(&base(), &grown).len(), 100, "a stage that installs a lot is still a diff");

    let ignore = IgnoreRules::new::<&str>(&[]).unwrap_or_else(|e| panic!("{e}"));
    let diff = Compare { ignore: &ignore, detect_different_system: false };
    assert_eq!(compare(&base(), &after, &diff).len(), 5, "diff lists every change");
}

#[test]
fn findings_serialize_with_stable_kind_names() -> Result<(), serde_json::Error> {
    let finding = Finding::FileChanged {
        path: "/etc/a".into(),
        changes: vec![
            Change::Mode {
                from: Mode::from_octal("644").unwrap_or_else(|| unreachable!()),
                to: Mode::from_octal("4755").unwrap_or_else(|| unreachable!()),
            },
            Change::Owner { from: "root:root".into(), to: "1001:1001".into() },
        ],
    };
    assert_eq!(
        serde_json::to_string(&finding)?,
        r#"{"kind":"file_changed","path":"/etc/a","changes":[{"aspect":"mode","from":"0644","to":"4755"},{"aspect":"owner","from":"root:root","to":"1001:1001"}]}"#
    );
    let added = Finding::FileAdded { path: "/opt/x".into(), file_type: FileType::Other };
    assert_eq!(
        serde_json::to_string(&added)?,
        r#"{"kind":"file_added","path":"/opt/x","type":"other"}"#
    );
    Ok(())
}

#[test]
fn source_packages_and_licenses_never_make_drift() {
    // A layer recorded by an older strata has neither; the live server states both.
    let mut described = base();
    for package in &mut described.packages {
        package.source =
            Some(crate::drift::SourcePackage { name: "src".into(), version: "9".into() });
        package.licenses = vec!["GPL-2+".into()];
    }
    assert_eq!(run(&base(), &described), vec![]);
    assert_eq!(run(&described, &base()), vec![]);
}
