//! OVMF (UEFI firmware) lookup where Debian, Ubuntu, Fedora and Arch install it, as matched
//! CODE/VARS pairs, and the per-boot copy of VARS. Must not start anything.
//!
//! Secure-boot builds (`*.secboot.fd`, `*.ms.fd`) are not used: they need SMM and a secure
//! pflash, which the machine does not set up.

use std::path::{Path, PathBuf};

use super::QemuError;
use super::spec::MachineFirmware;

/// CODE and VARS template pairs, in order of preference (4 MiB builds first).
const CANDIDATES: &[(&str, &str)] = &[
    // Debian 11+, Ubuntu 20.04+ (package `ovmf`)
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    // Fedora, RHEL (package `edk2-ovmf`)
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf-4m/OVMF_CODE.fd", "/usr/share/edk2/ovmf-4m/OVMF_VARS.fd"),
    // Arch (package `edk2-ovmf`), current and older layouts
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.fd", "/usr/share/edk2/x64/OVMF_VARS.fd"),
    ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"),
    // Gentoo, openSUSE
    ("/usr/share/edk2-ovmf/OVMF_CODE.fd", "/usr/share/edk2-ovmf/OVMF_VARS.fd"),
    ("/usr/share/qemu/ovmf-x86_64-code.bin", "/usr/share/qemu/ovmf-x86_64-vars.bin"),
];

/// A matched pair: the firmware code (read-only) and the template of its variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

impl Ovmf {
    /// The first pair installed on this machine.
    pub fn find() -> Result<Ovmf, QemuError> {
        Self::find_under(Path::new("/"))
    }

    /// The first pair under `root` (a file-system root; tests use a temporary folder).
    pub fn find_under(root: &Path) -> Result<Ovmf, QemuError> {
        let under = |path: &str| root.join(path.trim_start_matches('/'));
        CANDIDATES
            .iter()
            .map(|(code, vars)| Ovmf { code: under(code), vars_template: under(vars) })
            .find(|pair| pair.code.is_file() && pair.vars_template.is_file())
            .ok_or_else(|| QemuError::FirmwareMissing {
                searched: CANDIDATES.iter().map(|(code, _)| under(code)).collect(),
            })
    }

    /// Copies the VARS template to `dir/OVMF_VARS.fd` (the guest writes its variables there)
    /// and returns the firmware for one boot.
    pub fn for_boot(&self, dir: &Path) -> Result<MachineFirmware, QemuError> {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(&self.vars_template, &vars).map_err(|source| QemuError::FirmwareCopy {
            from: self.vars_template.clone(),
            to: vars.clone(),
            source,
        })?;
        Ok(MachineFirmware::Uefi { code: self.code.clone(), vars })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn touch(root: &Path, path: &str, content: &[u8]) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn prefers_the_first_complete_pair() {
        let root = tempfile::tempdir().unwrap();
        // A CODE without its VARS does not count.
        touch(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.fd", b"code4m");
        touch(root.path(), "/usr/share/edk2/x64/OVMF_CODE.4m.fd", b"code");
        touch(root.path(), "/usr/share/edk2/x64/OVMF_VARS.4m.fd", b"vars");
        let ovmf = Ovmf::find_under(root.path()).unwrap();
        assert!(ovmf.code.ends_with("usr/share/edk2/x64/OVMF_CODE.4m.fd"));

        let run = tempfile::tempdir().unwrap();
        let MachineFirmware::Uefi { code, vars } = ovmf.for_boot(run.path()).unwrap() else {
            panic!("not uefi")
        };
        assert_eq!(code, ovmf.code);
        assert_eq!(std::fs::read(vars).unwrap(), b"vars");
    }

    #[test]
    fn missing_firmware_names_the_packages() {
        let root = tempfile::tempdir().unwrap();
        touch(root.path(), "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", b"secure");
        let error = Ovmf::find_under(root.path()).unwrap_err().to_string();
        assert!(error.contains("`ovmf`") && error.contains("`edk2-ovmf`"), "{error}");
    }

    #[test]
    fn finds_debians_ovmf_here_when_installed() {
        if Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").is_file() {
            let ovmf = Ovmf::find().unwrap();
            assert_eq!(ovmf.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"));
            assert_eq!(ovmf.vars_template, Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd"));
        }
    }
}
