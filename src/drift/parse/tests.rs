use proptest::prelude::*;

use super::*;

fn roots() -> Roots {
    Roots::new(&["/etc", "/opt"]).unwrap_or_else(|e| panic!("{e}"))
}

fn type_letter(file_type: FileType) -> &'static str {
    match file_type {
        FileType::File => "f",
        FileType::Dir => "d",
        FileType::Symlink => "l",
        FileType::Other => "p",
    }
}

/// What the snippet prints for `inventory`, as GNU find and sha256sum write it.
fn encode(inventory: &Inventory) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |text: &str| {
        out.extend_from_slice(text.as_bytes());
        out.push(0);
    };
    field(INVENTORY_MAGIC);
    field("2");
    field("os");
    let os = inventory.os.as_ref();
    field(os.map_or("", |os| os.id.as_str()));
    field(os.and_then(|os| os.version_id.as_deref()).unwrap_or(""));
    field("packages");
    let packages: String = inventory
        .packages
        .iter()
        .map(|p| {
            let (source, source_version) =
                p.source.as_ref().map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
            format!("ii \t{}\t{}\t{}\t{source}\t{source_version}\t\n", p.name, p.version, p.arch)
        })
        .collect();
    field(&packages);
    field("licenses");
    let licenses: String = inventory
        .packages
        .iter()
        .flat_map(|p| {
            p.licenses.iter().map(|l| format!("/usr/share/doc/{}/copyright\t{l}\n", p.name))
        })
        .collect();
    field(&licenses);
    let mut hashes = String::new();
    for entry in &inventory.files.entries {
        field("F");
        field(type_letter(entry.file_type));
        field(&format!("{:o}", entry.mode.bits()));
        field(&entry.owner);
        field(&entry.size.to_string());
        field(entry.target.as_deref().unwrap_or(""));
        field(&entry.path);
        if let Some(sha256) = &entry.sha256 {
            if entry.path.contains(['\\', '\n', '\r']) {
                let name =
                    entry.path.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r");
                hashes.push_str(&format!("\\{sha256}  {name}\n"));
            } else {
                hashes.push_str(&format!("{sha256}  {}\n", entry.path));
            }
        }
    }
    field("hashes");
    field(&hashes);
    field("end");
    out
}

fn entry(path: &str, file_type: FileType) -> FileEntry {
    FileEntry {
        path: path.to_owned(),
        file_type,
        mode: Mode::from_octal("644").unwrap_or_else(|| unreachable!()),
        owner: "root:root".to_owned(),
        size: 1,
        sha256: (file_type == FileType::File).then(|| "0".repeat(64)),
        target: (file_type == FileType::Symlink).then(|| "x".to_owned()),
    }
}

#[test]
fn reads_an_inventory_amid_other_output() -> Result<(), DriftError> {
    let inventory = Inventory {
        os: Some(OsRelease { id: "debian".into(), version_id: Some("12".into()) }),
        packages: vec![Package {
            name: "bash".into(),
            arch: "amd64".into(),
            version: "5.2".into(),
            source: Some(SourcePackage { name: "bash".into(), version: "5.2".into() }),
            licenses: vec!["BSD-4-clause-UC".into(), "GPL-3+".into()],
        }],
        files: Manifest {
            roots: vec!["/etc".into(), "/opt".into()],
            entries: vec![
                entry("/etc", FileType::Dir),
                entry("/etc/a\\b\nc\rd", FileType::File),
                entry("/etc/fifo", FileType::Other),
                entry("/etc/link", FileType::Symlink),
            ],
        },
    };
    let mut output = b"pkg bash 5.2\nsysprepped\n".to_vec();
    output.extend(encode(&inventory));
    output.extend_from_slice(b"frozen\n");
    assert_eq!(parse_inventory(&output, &roots())?, inventory);
    Ok(())
}

#[test]
fn packages_not_installed_are_left_out() -> Result<(), DriftError> {
    let mut output = encode(&Inventory::default());
    let block = b"ii \tbash\t5.2\tamd64\nrc \told\t1.0\tamd64\nun \tnever\t\t\niU \thalf\t2\tall\n";
    let at = find(&output, b"packages\0").unwrap_or_else(|| unreachable!()) + 9;
    output.splice(at..at, block.iter().copied());
    let names: Vec<String> =
        parse_inventory(&output, &roots())?.packages.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["bash", "half"]);
    Ok(())
}

#[test]
fn sources_and_stated_licenses_are_read() -> Result<(), DriftError> {
    let mut output = encode(&Inventory::default());
    let block = "ii \tlibssl3\t3.0.15-1~deb12u1\tamd64\topenssl\t3.0.15-1~deb12u1\t\n\
                 ii \tbare\t1\tall\n\
                 ii \topenssl-libs\t1:3.0.7-24.el9\tx86_64\topenssl-3.0.7-24.el9.src.rpm\t\tApache-2.0\n\
                 ii \tgpg-pubkey\t1-2\t(none)\t(none)\t\t(none)\n";
    let at = find(&output, b"packages\0").unwrap_or_else(|| unreachable!()) + 9;
    output.splice(at..at, block.bytes());
    let licenses = "/usr/share/doc/libssl3/copyright\tApache-2.0\n\
                    /usr/share/doc/libssl3/copyright\tApache-2.0\n\
                    /usr/share/doc/libssl3/copyright\t GPL-2+ \n\
                    not a line\n/usr/share/doc/a/b/copyright\tX\n";
    let at = find(&output, b"licenses\0").unwrap_or_else(|| unreachable!()) + 9;
    output.splice(at..at, licenses.bytes());
    let packages = parse_inventory(&output, &roots())?.packages;
    let ssl = &packages[2];
    assert_eq!(ssl.name, "libssl3");
    let source = ssl.source.as_ref().map(|s| (s.name.as_str(), s.version.as_str()));
    assert_eq!(source, Some(("openssl", "3.0.15-1~deb12u1")));
    assert_eq!(ssl.licenses, ["Apache-2.0", "GPL-2+"]);
    let bare = &packages[0];
    assert_eq!((bare.source.as_ref(), bare.licenses.len()), (None, 0));
    let rpm = &packages[3];
    let source = rpm.source.as_ref().map(|s| (s.name.as_str(), s.version.as_str()));
    assert_eq!(source, Some(("openssl", "3.0.7-24.el9")));
    assert_eq!(rpm.licenses, ["Apache-2.0"]);
    let key = &packages[1];
    assert_eq!(
        (key.name.as_str(), key.source.as_ref(), key.licenses.len()),
        ("gpg-pubkey", None, 0)
    );
    let mut extra = encode(&Inventory::default());
    let at = find(&extra, b"packages\0").unwrap_or_else(|| unreachable!()) + 9;
    extra.splice(at..at, b"ii \ta\t1\tall\t\t\t\t\n".iter().copied());
    assert!(parse_inventory(&extra, &roots()).is_err(), "8 fields");
    Ok(())
}

#[test]
fn a_file_without_a_hash_line_has_no_hash() -> Result<(), DriftError> {
    let inventory = Inventory {
        files: Manifest { roots: vec![], entries: vec![entry("/etc/gone", FileType::File)] },
        ..Inventory::default()
    };
    let mut output = encode(&inventory);
    let hashes = find(&output, b"hashes\0").unwrap_or_else(|| unreachable!()) + 7;
    let end = find(&output, b"\0end\0").unwrap_or_else(|| unreachable!());
    output.drain(hashes..end);
    let parsed = parse_inventory(&output, &Roots::new::<&str>(&[])?)?;
    assert_eq!(parsed.files.entries[0].sha256, None);
    Ok(())
}

#[test]
fn odd_output_is_an_error_not_a_panic() {
    let whole = encode(&Inventory::default());
    for cut in 0..whole.len() {
        assert!(parse_inventory(&whole[..cut], &roots()).is_err(), "cut at {cut}");
    }
    let head = ["strata-inventory", "2", "os", "", "", "packages", "", "licenses"];
    let hash = format!("{}  /x\n", "a".repeat(64));
    let file = |mode: &'static str, size: &'static str, path: &'static str| {
        vec!["", "F", "f", mode, "r", size, "", path, "end"]
    };
    for tail in [
        vec!["", "nonsense\n", "end"],
        file("999", "1", "/x"),
        file("644", "-1", "/x"),
        file("644", "1", "relative"),
        vec!["", "hashes", "abc  /x\n", "end"],
        vec!["", "surprise", "end"],
        vec!["", "hashes", hash.as_str(), "end"],
    ] {
        let bad = nul_joined(head.iter().chain(&tail));
        assert!(parse_inventory(&bad, &roots()).is_err(), "{}", String::from_utf8_lossy(&bad));
    }
    for bad in [nul_joined(&["strata-inventory", "1"]), nul_joined(&["xstrata-inventory", "2"])] {
        assert!(parse_inventory(&bad, &roots()).is_err(), "{}", String::from_utf8_lossy(&bad));
    }
}

/// Each field followed by a NUL byte.
fn nul_joined<'a>(fields: impl IntoIterator<Item = &'a &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    out
}

fn no_nul(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\x00]{{0,{max}}}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn no_tab(min: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\x00\\t\\n]{{{min},12}}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn file_type() -> impl Strategy<Value = FileType> {
    prop_oneof![
        Just(FileType::File),
        Just(FileType::Dir),
        Just(FileType::Symlink),
        Just(FileType::Other)
    ]
}

fn file_entry() -> impl Strategy<Value = FileEntry> {
    let hash = proptest::option::of("[0-9a-f]{64}");
    (no_nul(24), file_type(), 0..=0o7777u32, no_nul(12), any::<u64>(), hash, "[^\\x00]{1,16}")
        .prop_map(|(path, file_type, mode, owner, size, sha256, target)| FileEntry {
            path: format!("/{path}"),
            file_type,
            mode: Mode::new(mode).unwrap_or_else(|| unreachable!()),
            owner,
            size,
            sha256: sha256.filter(|_| file_type == FileType::File),
            target: (file_type == FileType::Symlink).then_some(target),
        })
}

fn inventory() -> impl Strategy<Value = Inventory> {
    let os = proptest::option::of((no_tab(1), proptest::option::of(no_tab(1))));
    let source = proptest::option::of((no_tab(1), no_tab(1)))
        .prop_map(|source| source.map(|(name, version)| SourcePackage { name, version }));
    let package =
        (no_tab(1), no_tab(0), no_tab(0), source).prop_map(|(name, arch, version, source)| {
            Package { name, arch, version, source, licenses: vec![] }
        });
    let packages = proptest::collection::btree_set(package, 0..6);
    let entries = proptest::collection::vec(file_entry(), 0..12);
    (os, packages, entries).prop_map(|(os, packages, entries)| {
        let entries: BTreeMap<String, FileEntry> =
            entries.into_iter().map(|e| (e.path.clone(), e)).collect();
        Inventory {
            os: os.map(|(id, version_id)| OsRelease { id, version_id }),
            packages: packages.into_iter().collect(),
            files: Manifest {
                roots: vec!["/etc".into(), "/opt".into()],
                entries: entries.into_values().collect(),
            },
        }
    })
}

proptest! {
    #[test]
    fn any_bytes_parse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_inventory(&bytes, &roots());
    }

    #[test]
    fn any_fields_after_the_magic_parse_without_panicking(
        fields in proptest::collection::vec(
            prop_oneof![
                Just("F".to_owned()), Just("f".to_owned()), Just("l".to_owned()),
                Just("644".to_owned()), Just("/x".to_owned()), Just("hashes".to_owned()),
                Just("end".to_owned()), Just("os".to_owned()), Just("packages".to_owned()),
                no_nul(70),
            ],
            0..24,
        )
    ) {
        let mut bytes = b"strata-inventory\x002\0os\0a\0b\0packages\0".to_vec();
        for field in fields {
            bytes.extend_from_slice(field.as_bytes());
            bytes.push(0);
        }
        let _ = parse_inventory(&bytes, &roots());
    }

    #[test]
    fn what_is_encoded_is_parsed_back(inventory in inventory()) {
        let parsed = parse_inventory(&encode(&inventory), &roots());
        prop_assert_eq!(parsed.ok(), Some(inventory));
    }
}
