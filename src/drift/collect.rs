//! The collection: one POSIX sh snippet that prints a system's inventory, to run as root at the
//! end of a stage (inside the seal command) or on a live server over SSH.
//!
//! Only what a Debian, Ubuntu or Rocky cloud image has: GNU find (`-printf`, `-xdev`), coreutils'
//! `sha256sum`, `dpkg-query` or `rpm`. Every process costs 50-100 ms under emulation, so it
//! starts few: one `find` for the metadata, one for the hashes with `-exec … {} +` (batches),
//! one package query.
//!
//! The licenses Debian states cost one `awk` over every machine-readable
//! `/usr/share/doc/*/copyright` (not one process per package).
//!
//! What it prints, every field ending in a NUL byte (paths may hold any other byte):
//! `strata-inventory` `2`; `os` ID VERSION_ID; `packages` then one block of
//! `STATUS\tNAME\tVERSION\tARCH\tSOURCE\tSOURCE-VERSION\tLICENSE` lines (STATUS is dpkg's
//! `db:Status-Abbrev`, `ii` for rpm; for rpm SOURCE is the `SOURCERPM` file name, SOURCE-VERSION
//! empty and LICENSE its `LICENSE` tag; for dpkg LICENSE is empty); `licenses` then one block of
//! `COPYRIGHT-FILE\tLICENSE` lines (one per `License:` field of a machine-readable Debian
//! copyright file); per walked node `F` TYPE MODE USER:GROUP SIZE LINK-TARGET PATH; `hashes`
//! then one block of `sha256sum` lines; `end`. [`super::parse_inventory`] reads it.

use super::{IgnoreRules, Roots};

/// The snippet's text; `@ROOTS@` and `@PRUNE@` are filled in. It runs in a subshell of its own
/// so that os-release's variables and `set --` stay out of the script around it, and it never
/// stops that script: a missing tool leaves its part empty. Missing roots are skipped.
const SNIPPET: &str = r#"( set +e
printf '%s\0' strata-inventory 2
if [ -r /etc/os-release ]; then . /etc/os-release; fi
printf '%s\0' os "${ID:-}" "${VERSION_ID:-}" packages
if command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\t\n'
elif command -v rpm >/dev/null 2>&1; then
  rpm -qa --qf 'ii\t%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{ARCH}\t%{SOURCERPM}\t\t%{LICENSE}\n'
fi
printf '\0'
printf '%s\0' licenses
set -- /usr/share/doc/*/copyright
if [ -e "$1" ] && command -v awk >/dev/null 2>&1; then
  awk 'FNR == 1 { dep5 = ($0 ~ /^Format:/ && $0 ~ /copyright-format/) }
    dep5 && /^License:[ \t]*[^ \t]/ { sub(/^License:[ \t]*/, ""); sub(/[ \t\r]+$/, ""); print FILENAME "\t" $0 }' "$@" 2>/dev/null
fi
printf '\0'
set --
for root in @ROOTS@; do if [ -e "$root" ]; then set -- "$@" "$root"; fi; done
if [ $# -gt 0 ]; then
  find -H "$@" -xdev @PRUNE@-printf 'F\0%y\0%m\0%u:%g\0%s\0%l\0%p\0'
  printf '%s\0' hashes
  find -H "$@" -xdev @PRUNE@-type f -exec sha256sum {} +
  printf '\0'
fi
printf '%s\0' end )
"#;

/// The collection snippet for `roots`, leaving out what `ignore` matches. Its output goes to
/// [`super::parse_inventory`].
#[must_use]
pub fn collect_script(roots: &Roots, ignore: &IgnoreRules) -> String {
    let roots: Vec<String> =
        roots.as_slice().iter().map(|root| crate::process::shell_quote(root)).collect();
    let paths: Vec<String> =
        ignore.prunable().map(|p| format!("-path {}", crate::process::shell_quote(p))).collect();
    let prune = if paths.is_empty() {
        String::new()
    } else {
        format!("\\( {} \\) -prune -o ", paths.join(" -o "))
    };
    SNIPPET.replace("@ROOTS@", &roots.join(" ")).replace("@PRUNE@", &prune)
}

#[cfg(test)]
mod tests;
