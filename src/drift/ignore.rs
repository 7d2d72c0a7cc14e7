//! Which paths a manifest covers: the roots walked, and the ignore rules that leave out what
//! every boot or cloud-init instance rewrites.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::DriftError;

/// `[drift] roots` by default: where configuration and locally installed software live, and
/// little that the system rewrites by itself.
pub const DEFAULT_ROOTS: &[&str] = &["/etc", "/opt", "/srv", "/usr/local", "/var/www"];

/// `[drift] ignore` always holds these: what a boot, cloud-init's per-instance modules or
/// strata's own sysprep rewrite, so that a server booted fresh from an image shows no drift.
/// `*` also matches `/` (as `find -path` does); a pattern that matches a directory leaves out
/// everything under it. Extend it here when a fresh boot shows something new.
pub const DEFAULT_IGNORE: &[&str] = &[
    // systemd and sysprep: a new id and a new random seed every instance.
    "/etc/machine-id",
    "/etc/machine-info",
    "/etc/.updated",
    "/etc/adjtime",
    // cloud-init's ssh module writes new host keys; sysprep removes the build's.
    "/etc/ssh/ssh_host_*",
    "/etc/ssh/sshd_config.d/50-cloud-init.conf",
    // cloud-init's hostname, hosts and network modules, per instance.
    "/etc/hostname",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/network/interfaces.d/50-cloud-init",
    "/etc/netplan/50-cloud-init.yaml",
    "/etc/systemd/network/10-cloud-init-*",
    "/etc/sysconfig/network",
    "/etc/sysconfig/network-scripts/ifcfg-*",
    "/etc/NetworkManager/system-connections/cloud-init-*",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/cloud/cloud.cfg.d/*instance*",
    // cloud-init's users module: sudoers for the seed's users, the account databases it adds
    // the instance's default user to (a fresh boot of the demo changed exactly these six, so
    // accounts added by hand are not seen either: watch them with a check), and the account
    // tools' backups and lock.
    "/etc/sudoers.d/90-cloud-init-users",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/subuid-",
    "/etc/subgid-",
    "/etc/.pwd.lock",
    // Rebuilt by ldconfig whenever a boot or a package trigger runs it.
    "/etc/ld.so.cache",
];

/// The absolute paths a manifest walks, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots(Vec<String>);

impl Default for Roots {
    fn default() -> Roots {
        Roots(DEFAULT_ROOTS.iter().map(|&root| root.to_owned()).collect())
    }
}

impl Roots {
    /// Checks `roots` (`[drift] roots`): absolute, without `.` or `..` parts; a trailing `/` is
    /// dropped and duplicates are removed.
    pub fn new<S: AsRef<str>>(roots: &[S]) -> Result<Roots, DriftError> {
        let mut checked: Vec<String> = Vec::with_capacity(roots.len());
        for root in roots {
            let root = normalize_root(root.as_ref())?;
            if !checked.contains(&root) {
                checked.push(root);
            }
        }
        Ok(Roots(checked))
    }

    #[must_use]
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

fn normalize_root(root: &str) -> Result<String, DriftError> {
    let invalid = |why| DriftError::InvalidRoot { root: root.to_owned(), why };
    if !root.starts_with('/') {
        return Err(invalid("is not an absolute path: write it from / (like \"/etc\")"));
    }
    if root.contains('\0') {
        return Err(invalid("holds a NUL byte"));
    }
    let trimmed = root.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_owned());
    }
    if trimmed.split('/').skip(1).any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(invalid("has an empty, `.` or `..` part: write the plain path"));
    }
    Ok(trimmed.to_owned())
}

/// Whether `path` is `root` or lies under it.
#[must_use]
pub fn is_under(path: &str, root: &str) -> bool {
    if root == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The default ignore patterns and the user's, compiled.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    patterns: Vec<String>,
    set: GlobSet,
}

impl IgnoreRules {
    /// [`DEFAULT_IGNORE`] and the user's `extra` patterns (`[drift] ignore`).
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<IgnoreRules, DriftError> {
        let defaults = DEFAULT_IGNORE.iter().copied();
        IgnoreRules::only(defaults.chain(extra.iter().map(AsRef::as_ref)))
    }

    /// Exactly `patterns`, without the defaults.
    pub fn only<'p>(
        patterns: impl IntoIterator<Item = &'p str>,
    ) -> Result<IgnoreRules, DriftError> {
        let mut builder = GlobSetBuilder::new();
        let mut kept = Vec::new();
        for pattern in patterns {
            let pattern = normalize_pattern(pattern)?;
            if kept.contains(&pattern) {
                continue;
            }
            let glob = GlobBuilder::new(&pattern)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|source| DriftError::InvalidPattern {
                    pattern: pattern.clone(),
                    source,
                })?;
            builder.add(glob);
            kept.push(pattern);
        }
        let set = builder
            .build()
            .map_err(|source| DriftError::InvalidPattern { pattern: kept.join(" "), source })?;
        Ok(IgnoreRules { patterns: kept, set })
    }

    #[must_use]
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `path`, or a directory above it, matches a pattern (so a pattern for a directory
    /// leaves out its whole tree, as the collection's `-prune` does).
    #[must_use]
    pub fn is_ignored(&self, path: &str) -> bool {
        let mut current = path;
        loop {
            if self.set.is_match(current) {
                return true;
            }
            match current.rfind('/') {
                Some(0) | None => return false,
                Some(cut) => current = &current[..cut],
            }
        }
    }

    /// The patterns `find -path` understands the same way (not `{a,b}`), for the collection to
    /// prune what is ignored before it hashes. The comparison applies every pattern anyway.
    pub(super) fn prunable(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(String::as_str).filter(|p| !p.contains(['{', '}']))
    }
}

fn normalize_pattern(pattern: &str) -> Result<String, DriftError> {
    let unusable = |why| DriftError::UnusablePattern { pattern: pattern.to_owned(), why };
    if pattern.contains('\0') {
        return Err(unusable("holds a NUL byte"));
    }
    if !pattern.starts_with(['/', '*']) {
        return Err(unusable("matches no absolute path: start it with / or *"));
    }
    let trimmed = pattern.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(patterns: &[&str]) -> IgnoreRules {
        match IgnoreRules::only(patterns.iter().copied()) {
            Ok(rules) => rules,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_defaults_leave_out_what_every_instance_rewrites() -> Result<(), DriftError> {
        let rules = IgnoreRules::new::<&str>(&[])?;
        for path in [
            "/etc/machine-id",
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssh/ssh_host_rsa_key.pub",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/ld.so.cache",
            "/etc/cloud/cloud.cfg.d/90-instance-data.cfg",
            "/etc/shadow-",
            "/etc/passwd",
            "/etc/gshadow",
            "/etc/subuid",
        ] {
            assert!(rules.is_ignored(path), "{path} should be ignored");
        }
        for path in [
            "/etc/ssh/sshd_config",
            "/etc/hosts.allow",
            "/etc/passwd.d",
            "/etc/sudoers",
            "/etc/cloud/cloud.cfg",
            "/etc/machine-id.d",
            "/opt/app/hosts",
        ] {
            assert!(!rules.is_ignored(path), "{path} should be watched");
        }
        Ok(())
    }

    #[test]
    fn users_add_patterns_and_a_directory_pattern_covers_its_tree() -> Result<(), DriftError> {
        let rules = IgnoreRules::new(&["/var/www/cache", "*.swp", "/opt/app/log/*.log"])?;
        assert!(rules.is_ignored("/etc/machine-id"), "the defaults stay");
        assert!(rules.is_ignored("/var/www/cache"));
        assert!(rules.is_ignored("/var/www/cache/a/b c"));
        assert!(!rules.is_ignored("/var/www/cached"));
        assert!(rules.is_ignored("/etc/.vimrc.swp"));
        assert!(rules.is_ignored("/opt/app/log/x.log"));
        assert!(rules.is_ignored("/opt/app/log/old/x.log"), "`*` matches `/` as find -path does");
        assert!(!rules.is_ignored("/opt/app/log/x.txt"));
        Ok(())
    }

    #[test]
    fn odd_paths_match_literally() {
        let rules = rules(&["/etc/a b/*", "/etc/new\nline", r"/etc/star\*"]);
        assert!(rules.is_ignored("/etc/a b/c"));
        assert!(!rules.is_ignored("/etc/a bc"));
        assert!(rules.is_ignored("/etc/new\nline"));
        assert!(rules.is_ignored("/etc/star*"));
        assert!(!rules.is_ignored("/etc/starx"));
        assert!(!rules.is_ignored(""), "an empty path matches nothing");
    }

    #[test]
    fn braces_are_matched_here_but_not_handed_to_find() {
        let rules = rules(&["/etc/{a,b}.conf", "/etc/c/"]);
        assert!(rules.is_ignored("/etc/a.conf") && rules.is_ignored("/etc/b.conf"));
        assert_eq!(rules.prunable().collect::<Vec<_>>(), vec!["/etc/c"]);
    }

    #[test]
    fn bad_patterns_and_roots_are_refused() {
        for pattern in ["etc/hosts", "", "/etc/[", "/etc/\0"] {
            assert!(IgnoreRules::only([pattern]).is_err(), "{pattern:?}");
        }
        for root in ["etc", "/etc/../var", "/etc//x", "/./etc", ""] {
            assert!(Roots::new(&[root]).is_err(), "{root:?}");
        }
    }

    #[test]
    fn roots_are_normalized() -> Result<(), DriftError> {
        let roots = Roots::new(&["/etc/", "/etc", "/", "/opt//"])?;
        assert_eq!(roots.as_slice(), ["/etc", "/", "/opt"]);
        assert_eq!(Roots::default().as_slice(), DEFAULT_ROOTS);
        assert!(is_under("/etc/x", "/etc") && is_under("/etc", "/etc"));
        assert!(!is_under("/etcetera", "/etc") && is_under("/x", "/"));
        Ok(())
    }
}
