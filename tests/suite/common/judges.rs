//! The ecosystem's SBOM validators, from the test venv (`scripts/install-test-venv.sh` installs
//! `tests/venv/sbom.txt`): `pyspdxtools` for SPDX, cyclonedx-python-lib's strict JSON validator
//! for CycloneDX. A missing venv fails the test with how to make it.

use std::path::{Path, PathBuf};

/// The test venv's `bin/` (STRATA_TEST_VENV, else REPO/.cache/venv); a missing one fails with
/// how to make it.
pub fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("STRATA_TEST_VENV")
        .map_or_else(|| super::repo().join(".cache/venv"), PathBuf::from);
    let path = venv.join("bin").join(tool);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-test-venv.sh (it installs tests/venv/sbom.txt: \
         spdx-tools and cyclonedx-python-lib)",
        path.display()
    );
    path
}

/// pyspdxtools validates `file` (SPDX 2.3 JSON).
pub fn assert_valid_spdx(file: &Path) {
    let output =
        std::process::Command::new(venv_bin("pyspdxtools")).arg("-i").arg(file).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "pyspdxtools -i {}: {text}", file.display());
    assert!(!text.contains("is invalid"), "pyspdxtools found problems: {text}");
}

/// cyclonedx-python-lib's JsonStrictValidator validates `file` (CycloneDX 1.6 JSON).
pub fn assert_valid_cyclonedx(file: &Path) {
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
        print(errors if errors else 'valid')\n\
        sys.exit(1 if errors else 0)\n";
    let output = std::process::Command::new(venv_bin("python3"))
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cyclonedx JsonStrictValidator on {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
