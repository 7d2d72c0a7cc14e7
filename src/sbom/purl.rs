//! Package URLs (purl, <https://github.com/package-url/purl-spec>) for installed packages:
//! `pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=debian-12`, and for rpm systems
//! `pkg:rpm/rocky/NAME@VERSION-RELEASE?arch=ARCH&distro=rocky-9.4&epoch=N` (the epoch is a
//! qualifier for rpm, part of the version for deb). Encoded by the `packageurl` crate.

use crate::drift::Package;

/// Which package manager a system's packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deb,
    Rpm,
}

impl Kind {
    /// From `/etc/os-release`'s `ID`: the distributions that ship rpm; any other is deb (the
    /// package list of an unknown system came from dpkg-query if it came at all).
    #[must_use]
    pub fn of_os(os_id: Option<&str>) -> Kind {
        const RPM: &[&str] = &[
            "fedora",
            "rhel",
            "centos",
            "rocky",
            "almalinux",
            "ol",
            "amzn",
            "opensuse-leap",
            "opensuse-tumbleweed",
            "sles",
            "mariner",
            "azurelinux",
        ];
        match os_id {
            Some(id) if RPM.contains(&id) => Kind::Rpm,
            _ => Kind::Deb,
        }
    }

    #[must_use]
    pub fn purl_type(self) -> &'static str {
        match self {
            Kind::Deb => "deb",
            Kind::Rpm => "rpm",
        }
    }
}

/// The purl of `package` on the system `os_id` `os_version`; `None` when the name cannot be
/// one (empty).
#[must_use]
pub fn purl(
    package: &Package,
    kind: Kind,
    os_id: Option<&str>,
    os_version: Option<&str>,
) -> Option<String> {
    let mut purl = packageurl::PackageUrl::new(kind.purl_type(), package.name.as_str()).ok()?;
    if let Some(id) = os_id.filter(|id| !id.is_empty()) {
        purl.with_namespace(id).ok()?;
    }
    let (epoch, version) = match kind {
        Kind::Rpm => match package.version.split_once(':') {
            Some((epoch, version))
                if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (Some(epoch), version)
            }
            _ => (None, package.version.as_str()),
        },
        Kind::Deb => (None, package.version.as_str()),
    };
    if !version.is_empty() {
        purl.with_version(version).ok()?;
    }
    if !package.arch.is_empty() && package.arch != "(none)" {
        purl.add_qualifier("arch", package.arch.as_str()).ok()?;
    }
    if let Some(distro) = distro(os_id, os_version) {
        purl.add_qualifier("distro", distro).ok()?;
    }
    if let Some(epoch) = epoch {
        purl.add_qualifier("epoch", epoch).ok()?;
    }
    Some(purl.to_string())
}

/// `debian-12`, `rocky-9.4`: the `distro` qualifier, as syft and Trivy write it.
#[must_use]
pub fn distro(os_id: Option<&str>, os_version: Option<&str>) -> Option<String> {
    let id = os_id.filter(|id| !id.is_empty())?;
    Some(match os_version.filter(|v| !v.is_empty()) {
        Some(version) => format!("{id}-{version}"),
        None => id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str, arch: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            ..Package::default()
        }
    }

    #[test]
    fn deb_and_rpm_purls() {
        let ssh = package("openssh-server", "1:9.2p1-2+deb12u3", "amd64");
        assert_eq!(
            purl(&ssh, Kind::Deb, Some("debian"), Some("12")).as_deref(),
            Some("pkg:deb/debian/openssh-server@1:9.2p1-2%2Bdeb12u3?arch=amd64&distro=debian-12")
        );
        let ssl = package("openssl-libs", "1:3.0.7-24.el9", "x86_64");
        assert_eq!(
            purl(&ssl, Kind::Rpm, Some("rocky"), Some("9.4")).as_deref(),
            Some("pkg:rpm/rocky/openssl-libs@3.0.7-24.el9?arch=x86_64&distro=rocky-9.4&epoch=1")
        );
        let cxx = package("libstdc++6", "12.2.0-14", "amd64");
        let text = purl(&cxx, Kind::Deb, Some("debian"), None).unwrap_or_default();
        assert_eq!(text, "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian");
        let parsed: packageurl::PackageUrl<'_> = text.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.name(), "libstdc++6");
        assert_eq!(Kind::of_os(Some("rocky")), Kind::Rpm);
        assert_eq!(Kind::of_os(Some("ubuntu")), Kind::Deb);
        assert_eq!(Kind::of_os(None), Kind::Deb);
    }
}
