//! Reads what the collection snippet ([`super::collect_script`]) printed. Never panics: odd input
//! is an error naming the byte where reading stopped.

use std::collections::BTreeMap;

use super::model::{
    FileEntry, FileType, Inventory, Manifest, Mode, OsRelease, Package, SourcePackage,
};
use super::{DriftError, Roots};

/// The first field of the snippet's output; the next one is the format version.
pub const INVENTORY_MAGIC: &str = "strata-inventory";
const FORMAT_VERSION: &[u8] = b"2";

/// Parses the inventory in `output`, which may hold other text around it (the rest of a seal
/// command's output): reading starts at [`INVENTORY_MAGIC`] and stops at its `end` field.
/// `roots` are the ones the snippet was made for.
pub fn parse_inventory(output: &[u8], roots: &Roots) -> Result<Inventory, DriftError> {
    let start = find_magic(output).ok_or_else(|| DriftError::Malformed {
        offset: 0,
        what: format!("no `{INVENTORY_MAGIC}` in it (the collection did not run)"),
    })?;
    let mut fields = Fields { bytes: output, pos: start };
    let version = fields.next()?;
    if version != FORMAT_VERSION {
        return Err(fields.error(format!(
            "format version `{}`, not 2 (strata and the snippet disagree)",
            String::from_utf8_lossy(version)
        )));
    }
    fields.expect(b"os")?;
    let id = text(fields.next()?);
    let version_id = text(fields.next()?);
    let os = (!id.is_empty())
        .then(|| OsRelease { id, version_id: (!version_id.is_empty()).then_some(version_id) });
    fields.expect(b"packages")?;
    let mut packages = parse_packages(&mut fields)?;
    fields.expect(b"licenses")?;
    let licenses = parse_licenses(&mut fields)?;
    for package in &mut packages {
        if let Some(stated) = licenses.get(package.name.as_str()) {
            package.licenses.extend(stated.iter().cloned());
            package.licenses.sort();
            package.licenses.dedup();
        }
    }
    let mut entries = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    loop {
        match fields.next()? {
            b"F" => {
                let entry = parse_entry(&mut fields)?;
                entries.insert(entry.path.clone(), entry);
            }
            b"hashes" => parse_hashes(&mut fields, &mut hashes)?,
            b"end" => break,
            other => {
                let other = String::from_utf8_lossy(other).into_owned();
                return Err(fields.error(format!("unexpected field `{other}`")));
            }
        }
    }
    if entries.is_empty() && !hashes.is_empty() {
        // Files were hashed but none listed: a `find` without GNU's `-printf` (busybox).
        return Err(
            fields.error("the walk listed no files but hashed some (it needs GNU find)".into())
        );
    }
    let entries = entries
        .into_values()
        .map(|mut entry| {
            if entry.file_type == FileType::File {
                entry.sha256 = hashes.remove(&entry.path);
            }
            entry
        })
        .collect();
    Ok(Inventory { os, packages, files: Manifest { roots: roots.as_slice().to_vec(), entries } })
}

/// Where the fields after the magic start.
fn find_magic(output: &[u8]) -> Option<usize> {
    let magic = INVENTORY_MAGIC.as_bytes();
    let mut from = 0;
    while let Some(found) = find(&output[from..], magic) {
        let at = from + found;
        let end = at + magic.len();
        let starts_field = at == 0 || matches!(output.get(at - 1), Some(b'\0' | b'\n'));
        if starts_field && output.get(end) == Some(&b'\0') {
            return Some(end + 1);
        }
        from = at + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// NUL-terminated fields from `pos` on.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn next(&mut self) -> Result<&'a [u8], DriftError> {
        let bytes: &'a [u8] = self.bytes;
        let rest = bytes.get(self.pos..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error("it ends before `end` (the collection was cut short)".into()));
        };
        let field = &rest[..len];
        self.pos += len + 1;
        Ok(field)
    }

    fn expect(&mut self, name: &[u8]) -> Result<(), DriftError> {
        let at = self.pos;
        let field = self.next()?;
        if field == name {
            Ok(())
        } else {
            Err(DriftError::Malformed {
                offset: at,
                what: format!("`{}` where `{}` belongs", text(field), text(name)),
            })
        }
    }

    fn error(&self, what: String) -> DriftError {
        DriftError::Malformed { offset: self.pos, what }
    }
}

/// `STATUS\tNAME\tVERSION\tARCH\tSOURCE\tSOURCE-VERSION\tLICENSE` lines (the last three may
/// be missing); packages dpkg knows but has not installed (removed with their configuration
/// left, or never installed) are left out.
fn parse_packages(fields: &mut Fields<'_>) -> Result<Vec<Package>, DriftError> {
    let at = fields.pos;
    let block = fields.next()?;
    let mut packages = Vec::new();
    for (number, line) in block.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
        let (&[status, name, version, arch], rest) = parts.split_at(parts.len().min(4)) else {
            return Err(DriftError::Malformed {
                offset: at,
                what: format!("package line {} is not STATUS NAME VERSION ARCH", number + 1),
            });
        };
        if rest.len() > 3 {
            return Err(DriftError::Malformed {
                offset: at,
                what: format!("package line {} has more than 7 fields", number + 1),
            });
        }
        if matches!(status.get(1), Some(b'n' | b'c')) || name.is_empty() {
            continue;
        }
        let field = |index: usize| rest.get(index).map(|bytes| text(bytes)).unwrap_or_default();
        let (source, source_version, license) = (field(0), field(1), field(2));
        let source = if source_version.is_empty() {
            source_rpm(&source)
        } else {
            Some(SourcePackage { name: source, version: source_version })
        };
        let licenses =
            if license.is_empty() || license == "(none)" { vec![] } else { vec![license] };
        packages.push(Package {
            name: text(name),
            arch: text(arch),
            version: text(version),
            source,
            licenses,
        });
    }
    packages.sort();
    packages.dedup();
    Ok(packages)
}

/// The name and `VERSION-RELEASE` in an rpm's `SOURCERPM` (`openssl-3.0.7-24.el9.src.rpm`);
/// `None` for `(none)`, empty, or a name of another shape.
fn source_rpm(file: &str) -> Option<SourcePackage> {
    let stem = file.strip_suffix(".src.rpm").or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    if name.is_empty() || version.is_empty() || release.is_empty() {
        return None;
    }
    Some(SourcePackage { name: name.to_owned(), version: format!("{version}-{release}") })
}

/// `/usr/share/doc/PACKAGE/copyright\tLICENSE` lines, to each package's licenses. Lines of
/// another shape are skipped: a license is a description, never worth failing a seal.
fn parse_licenses(fields: &mut Fields<'_>) -> Result<BTreeMap<String, Vec<String>>, DriftError> {
    let block = fields.next()?;
    let mut licenses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in block.split(|&b| b == b'\n') {
        let line = text(line);
        let Some((path, license)) = line.split_once('\t') else { continue };
        let package =
            path.strip_prefix("/usr/share/doc/").and_then(|p| p.strip_suffix("/copyright"));
        let license = license.trim();
        match package {
            Some(package) if !package.contains('/') && !license.is_empty() => {
                licenses.entry(package.to_owned()).or_default().push(license.to_owned());
            }
            _ => {}
        }
    }
    Ok(licenses)
}

/// `F` TYPE MODE USER:GROUP SIZE TARGET PATH, the `F` already read.
fn parse_entry(fields: &mut Fields<'_>) -> Result<FileEntry, DriftError> {
    let at = fields.pos;
    let bad = |what: &str| DriftError::Malformed { offset: at, what: format!("a file's {what}") };
    let file_type = match fields.next()? {
        b"f" => FileType::File,
        b"d" => FileType::Dir,
        b"l" => FileType::Symlink,
        [_] => FileType::Other,
        _ => return Err(bad("type")),
    };
    let mode = std::str::from_utf8(fields.next()?)
        .ok()
        .and_then(Mode::from_octal)
        .ok_or_else(|| bad("mode"))?;
    let owner = text(fields.next()?);
    let size = std::str::from_utf8(fields.next()?)
        .ok()
        .and_then(|size| size.parse::<u64>().ok())
        .ok_or_else(|| bad("size"))?;
    let target = fields.next()?;
    let path = text(fields.next()?);
    if !path.starts_with('/') {
        return Err(bad("path (not absolute)"));
    }
    let target = (file_type == FileType::Symlink).then(|| text(target));
    Ok(FileEntry { path, file_type, mode, owner, size, sha256: None, target })
}

/// A block of `sha256sum` lines: `HASH  NAME` (or `HASH *NAME`), and for names with a
/// backslash, newline or carriage return `\HASH  NAME` with those escaped.
fn parse_hashes(
    fields: &mut Fields<'_>,
    hashes: &mut BTreeMap<String, String>,
) -> Result<(), DriftError> {
    let at = fields.pos;
    let block = fields.next()?;
    for (number, line) in block.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (path, hash) = parse_hash_line(line).ok_or_else(|| DriftError::Malformed {
            offset: at,
            what: format!("hash line {} is not `SHA256  PATH`", number + 1),
        })?;
        hashes.insert(path, hash);
    }
    Ok(())
}

fn parse_hash_line(line: &[u8]) -> Option<(String, String)> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let hash = line.get(..64)?;
    if !hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let name = match line.get(64..66)? {
        b"  " | b" *" => line.get(66..)?,
        _ => return None,
    };
    let name = if escaped { unescape(name)? } else { name.to_vec() };
    Some((text(&name), text(hash)))
}

/// Undoes sha256sum's escaping of `\\`, `\n` and `\r`.
fn unescape(name: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len());
    let mut bytes = name.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        out.push(match bytes.next()? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests;
