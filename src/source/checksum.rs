//! Checksum files: finds the entry for one file name in GNU (`hash  name`, `hash *name`) or
//! BSD (`SHA256 (name) = hash`) lines, optionally inside a PGP clear-signed block.
//! Owns parsing only; must not fetch anything.
//!
//! A clear-signed file's armor is stripped and its dash-escaped lines unescaped, but the
//! signature is NOT verified: the checksum file is trusted as the transport delivered it
//! (use an https URL).

use crate::definition::{Digest, HashAlgo};

const SIGNED_BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const SIGNATURE_BEGIN: &str = "-----BEGIN PGP SIGNATURE-----";

/// The digest listed for `file_name`, or `None` when the file lists none (of sha256 or sha512).
/// When both a sha256 and a sha512 entry exist, sha256 is taken: strata computes it anyway.
#[must_use]
pub fn find_entry(text: &str, file_name: &str) -> Option<Digest> {
    let mut found: Option<Digest> = None;
    for line in body_lines(text) {
        let Some((name, digest)) = parse_line(&line) else { continue };
        if !names_match(&name, file_name) {
            continue;
        }
        let better = match &found {
            None => true,
            Some(previous) => {
                previous.algo() != HashAlgo::Sha256 && digest.algo() == HashAlgo::Sha256
            }
        };
        if better {
            found = Some(digest);
        }
    }
    found
}

/// The lines that carry content: all of them, or for a clear-signed file the signed body
/// with dash-escaping undone.
fn body_lines(text: &str) -> Vec<String> {
    let mut lines = text.lines().map(|line| line.trim_end_matches('\r'));
    let signed =
        text.lines().find(|line| !line.trim().is_empty()).map(str::trim_end) == Some(SIGNED_BEGIN);
    if !signed {
        return lines.map(str::to_owned).collect();
    }
    // The armor header: the BEGIN line, then "Hash: …" lines up to the first empty line.
    for line in lines.by_ref() {
        if line.trim().is_empty() {
            break;
        }
    }
    let mut body = Vec::new();
    for line in lines {
        if line.trim_end() == SIGNATURE_BEGIN {
            break;
        }
        body.push(line.strip_prefix("- ").unwrap_or(line).to_owned());
    }
    body
}

/// One line as (file name, digest): BSD `TAG (name) = hex` or GNU `hex  name` / `hex *name`.
fn parse_line(line: &str) -> Option<(String, Digest)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    parse_bsd(line).or_else(|| parse_gnu(line))
}

fn parse_bsd(line: &str) -> Option<(String, Digest)> {
    let (tag, rest) = line.split_once(" (")?;
    let (name, hex) = rest.rsplit_once(") = ")?;
    let algo = match tag.trim().to_ascii_uppercase().as_str() {
        "SHA256" => HashAlgo::Sha256,
        "SHA512" => HashAlgo::Sha512,
        _ => return None,
    };
    Some((name.to_owned(), Digest::new(algo, hex.trim())?))
}

fn parse_gnu(line: &str) -> Option<(String, Digest)> {
    // A leading backslash marks a name with escaped characters (coreutils); the hash follows.
    let line = line.strip_prefix('\\').unwrap_or(line);
    let split = line.find(char::is_whitespace)?;
    let (hex, rest) = line.split_at(split);
    let algo = match hex.len() {
        64 => HashAlgo::Sha256,
        128 => HashAlgo::Sha512,
        _ => return None,
    };
    let rest = rest.strip_prefix(' ')?;
    // "hash  name" (text mode) or "hash *name" (binary mode); a single space is tolerated.
    let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*')).unwrap_or(rest);
    if name.is_empty() {
        return None;
    }
    Some((name.to_owned(), Digest::new(algo, hex)?))
}

/// A listed name matches when it is the file name, or a path ending in it (`./x`, `dir/x`).
fn names_match(listed: &str, file_name: &str) -> bool {
    listed == file_name || listed.rsplit('/').next() == Some(file_name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const A256: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const B256: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn a512() -> String {
        A256.repeat(2)
    }

    #[test]
    fn gnu_two_spaces_and_star() {
        let text = format!("{B256}  other.qcow2\n{A256}  disk.qcow2\n");
        assert_eq!(find_entry(&text, "disk.qcow2").unwrap().hex(), A256);
        let text = format!("{B256} *other.qcow2\n{A256} *disk.qcow2\n");
        assert_eq!(find_entry(&text, "disk.qcow2").unwrap().hex(), A256);
    }

    #[test]
    fn sha512_inferred_from_length() {
        let text = format!("{}  disk.qcow2\n", a512());
        let digest = find_entry(&text, "disk.qcow2").unwrap();
        assert_eq!(digest.algo(), HashAlgo::Sha512);
        assert_eq!(digest.hex(), a512());
    }

    #[test]
    fn bsd_lines_with_tags() {
        let text = format!(
            "MD5 (disk.qcow2) = 0123\nSHA512 (disk.qcow2) = {}\nSHA256 (x) = {B256}\n",
            a512()
        );
        let digest = find_entry(&text, "disk.qcow2").unwrap();
        assert_eq!(digest.algo(), HashAlgo::Sha512);
        let text = format!("{text}SHA256 (disk.qcow2) = {A256}\n");
        assert_eq!(find_entry(&text, "disk.qcow2").unwrap().algo(), HashAlgo::Sha256);
    }

    #[test]
    fn clear_signed_block_is_unwrapped() {
        let text = format!(
            "{SIGNED_BEGIN}\nHash: SHA256\n\n# Fedora checksums\n- {A256}  disk.qcow2\n\
             SHA256 (other) = {B256}\n{SIGNATURE_BEGIN}\n\niQIzBAEBCAAdFiEE\n=abcd\n\
             -----END PGP SIGNATURE-----\n"
        );
        assert_eq!(find_entry(&text, "disk.qcow2").unwrap().hex(), A256);
        assert_eq!(find_entry(&text, "other").unwrap().hex(), B256);
    }

    #[test]
    fn lines_after_the_signature_are_ignored() {
        let text = format!("{SIGNED_BEGIN}\n\n{SIGNATURE_BEGIN}\n{A256}  disk.qcow2\n");
        assert!(find_entry(&text, "disk.qcow2").is_none());
    }

    #[test]
    fn missing_entry_and_near_misses() {
        let text = format!("{A256}  disk.qcow2.sig\n{A256}  xdisk.qcow2\nnot a line\n\n");
        assert!(find_entry(&text, "disk.qcow2").is_none());
    }

    #[test]
    fn paths_and_crlf_match_by_basename() {
        let text = format!("{A256}  ./images/disk.qcow2\r\n");
        assert_eq!(find_entry(&text, "disk.qcow2").unwrap().hex(), A256);
    }

    #[test]
    fn uppercase_hex_is_normalised() {
        let text = format!("{}  disk.qcow2\n", A256.to_ascii_uppercase());
        assert_eq!(find_entry(&text, "disk.qcow2").unwrap().hex(), A256);
    }
}
