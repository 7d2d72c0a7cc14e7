//! Host specs as `ssh` takes them (`[USER@]HOST[:PORT]`, IPv6 in brackets) and `--hosts` files.

use std::fmt;
use std::path::Path;

use super::FleetError;

/// The port `ssh` uses when none is given.
pub const SSH_PORT: u16 = 22;

/// One server to check: whom to log in as (the local user when `None`), where, which port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub user: Option<String>,
    /// A name or an address, without brackets (`::1`, not `[::1]`).
    pub host: String,
    pub port: u16,
}

impl HostSpec {
    /// Parses `[USER@]HOST[:PORT]`; an IPv6 address with a port goes in brackets
    /// (`[::1]:2222`), one without may go bare (`::1`). `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<HostSpec, String> {
        let text = text.trim();
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) => (Some(user), rest),
            None => (None, text),
        };
        if let Some(user) = user
            && (user.is_empty() || user.chars().any(|c| c.is_whitespace() || c == ':'))
        {
            return Err(format!("`{user}` is not a user name"));
        }
        let (host, port) = split_port(rest)?;
        if host.is_empty() {
            return Err("no host name or address".to_owned());
        }
        if host.chars().any(|c| c.is_whitespace() || matches!(c, '/' | '[' | ']' | '@')) {
            return Err(format!("`{host}` is not a host name or address"));
        }
        Ok(HostSpec { user: user.map(str::to_owned), host: host.to_owned(), port })
    }

    /// The user to log in as: the one given, else `local_user`.
    #[must_use]
    pub fn user_or<'a>(&'a self, local_user: &'a str) -> &'a str {
        self.user.as_deref().unwrap_or(local_user)
    }

    /// How known_hosts names this host: `host` on port 22, `[host]:port` otherwise.
    #[must_use]
    pub fn known_hosts_name(&self) -> String {
        if self.port == SSH_PORT {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address.
fn split_port(text: &str) -> Result<(&str, u16), String> {
    if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err(format!("`{text}` opens a `[` it does not close"));
        };
        return match after {
            "" => Ok((host, SSH_PORT)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, parse_port(port)?)),
                None => Err(format!("`{after}` after `[{host}]` is not `:PORT`")),
            },
        };
    }
    match text.matches(':').count() {
        0 => Ok((text, SSH_PORT)),
        // More than one colon: a bare IPv6 address, which takes no port.
        1 => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, parse_port(port)?))
        }
        _ if text.parse::<std::net::Ipv6Addr>().is_ok() => Ok((text, SSH_PORT)),
        _ => Err(format!(
            "`{text}` is not HOST:PORT (write an IPv6 address with a port as [ADDR]:PORT)"
        )),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("`{text}` is not a port (1 to 65535)")),
    }
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, SSH_PORT) => write!(f, "[{}]", self.host),
            (true, port) => write!(f, "[{}]:{port}", self.host),
            (false, SSH_PORT) => f.write_str(&self.host),
            (false, port) => write!(f, "{}:{port}", self.host),
        }
    }
}

/// Reads a `--hosts` file: one `[USER@]HOST[:PORT]` a line; blank lines and `#` comments (whole
/// lines or after a host) are skipped. A bad line fails the whole file, naming it and the line.
pub fn read_hosts_file(path: &Path) -> Result<Vec<HostSpec>, FleetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| FleetError::ReadHosts { path: path.to_owned(), source })?;
    let hosts = parse_hosts(&text).map_err(|(line, why)| FleetError::BadHostsLine {
        path: path.to_owned(),
        line,
        why,
    })?;
    if hosts.is_empty() {
        return Err(FleetError::NoHosts { path: path.to_owned() });
    }
    Ok(hosts)
}

/// The hosts of a `--hosts` file's text; `Err((line number, why))` at the first bad line.
fn parse_hosts(text: &str) -> Result<Vec<HostSpec>, (usize, String)> {
    let mut hosts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        if line.split_whitespace().count() > 1 {
            return Err((index + 1, format!("`{line}` holds more than one host: one a line")));
        }
        hosts.push(HostSpec::parse(line).map_err(|why| (index + 1, why))?);
    }
    Ok(hosts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(user: Option<&str>, host: &str, port: u16) -> HostSpec {
        HostSpec { user: user.map(str::to_owned), host: host.to_owned(), port }
    }

    #[test]
    fn host_specs_read_as_ssh_reads_them() {
        let cases = [
            ("web1", spec(None, "web1", 22)),
            ("admin@web1", spec(Some("admin"), "web1", 22)),
            ("admin@web1.example.org:2222", spec(Some("admin"), "web1.example.org", 2222)),
            ("10.0.0.5:22", spec(None, "10.0.0.5", 22)),
            ("[::1]:2222", spec(None, "::1", 2222)),
            ("root@[fe80::1]", spec(Some("root"), "fe80::1", 22)),
            ("::1", spec(None, "::1", 22)),
            ("  deploy@db  ", spec(Some("deploy"), "db", 22)),
        ];
        for (text, expected) in cases {
            assert_eq!(HostSpec::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn host_specs_print_back_as_given() {
        for text in ["web1", "admin@web1:2222", "[::1]:2222", "root@[fe80::1]"] {
            assert_eq!(HostSpec::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(HostSpec::parse("web1:2222").unwrap().known_hosts_name(), "[web1]:2222");
        assert_eq!(HostSpec::parse("web1:22").unwrap().known_hosts_name(), "web1");
    }

    #[test]
    fn bad_host_specs_say_what_is_wrong() {
        for (text, why) in [
            ("", "no host"),
            ("@web1", "not a user name"),
            ("web1:", "not a port"),
            ("web1:0", "not a port"),
            ("web1:99999", "not a port"),
            ("web1:ssh", "not a port"),
            ("[::1", "does not close"),
            ("[::1]2222", "is not `:PORT`"),
            ("fe80::1::2:22", "[ADDR]:PORT"),
            ("a/b", "not a host name"),
        ] {
            let error = HostSpec::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn hosts_files_skip_comments_and_blanks_and_name_the_bad_line() {
        let text = "# the web tier\nweb1\n\n  admin@web2:2222  # moved\n[::1]:2200\n";
        let hosts = parse_hosts(text).unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[1], spec(Some("admin"), "web2", 2222));
        assert_eq!(parse_hosts("web1\n\nweb2:x\n").unwrap_err().0, 3);
        assert_eq!(parse_hosts("web1 web2\n").unwrap_err().0, 1);
    }

    #[test]
    fn a_hosts_file_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.txt");
        std::fs::write(&path, "web1\nweb2:port\n").unwrap();
        let message = read_hosts_file(&path).unwrap_err().to_string();
        assert!(message.contains("fleet.txt") && message.contains("line 2"), "{message}");
        std::fs::write(&path, "# nobody\n\n").unwrap();
        let message = read_hosts_file(&path).unwrap_err().to_string();
        assert!(message.contains("no hosts"), "{message}");
    }
}
