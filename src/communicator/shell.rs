//! The command line a step runs as: `sudo`, `timeout`, `env`, `sh -c`. Owns only text; it runs
//! nothing. Quoting and the `sudo -n` prefix are `process.rs`'s (see there why).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{CommunicatorError, ExecSpec, KILL_AFTER};

use crate::process::shell_quote as quote;

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn no_nul(text: &str, what: impl FnOnce() -> String) -> Result<(), CommunicatorError> {
    if text.contains('\0') { Err(CommunicatorError::Nul { what: what() }) } else { Ok(()) }
}

/// Whole seconds for `timeout(1)`, rounded up, at least 1.
fn seconds(timeout: Duration) -> u64 {
    timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)
}

/// The text the login shell gets for `spec`:
/// `[sudo -n --] [timeout --kill-after=10s SECSs] [env K=v…] /bin/sh -c 'COMMAND'`.
/// `timeout` runs inside `sudo` so that, as root, it can kill everything the command started.
/// The environment goes through `env` rather than `export`, which `sudo` would reset.
pub fn command_line(spec: &ExecSpec<'_>, login_is_root: bool) -> Result<String, CommunicatorError> {
    no_nul(spec.command, || format!("the command `{}`", spec.command.replace('\0', "\\0")))?;
    let mut words: Vec<String> = Vec::new();
    if spec.as_root && !login_is_root {
        words.push(crate::process::SUDO.to_owned());
    }
    if spec.guest_timeout {
        words.push(format!(
            "timeout --kill-after={}s {}s",
            KILL_AFTER.as_secs(),
            seconds(spec.timeout)
        ));
    }
    // Without variables, no `env`: one process less, and each costs 50-100 ms in an emulated
    // guest that has not run it yet.
    if !spec.env.is_empty() {
        words.push("env".to_owned());
        words.extend(env_words(spec.env)?);
    }
    words.push("/bin/sh -c".to_owned());
    words.push(quote(spec.command));
    Ok(words.join(" "))
}

/// `K=v` words for `env` (quoted where the value needs it), names checked.
pub fn env_words(env: &BTreeMap<String, String>) -> Result<Vec<String>, CommunicatorError> {
    env.iter()
        .map(|(name, value)| {
            if !valid_name(name) {
                return Err(CommunicatorError::EnvName { name: name.clone() });
            }
            no_nul(value, || format!("the value of environment variable {name}"))?;
            Ok(quote(&format!("{name}={value}")))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sh(script: &str) -> String {
        let output = std::process::Command::new("/bin/sh").arg("-c").arg(script).output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn quoting_round_trips_through_a_real_shell() {
        for text in
            ["", "plain", "it's", "a b", "$HOME `id` $(id) \\ \" ' ''", "new\nline", "*?[]~#!&;|<>"]
        {
            assert_eq!(sh(&format!("printf %s {}", quote(text))), text, "{text}");
        }
    }

    #[test]
    fn command_line_sets_env_and_runs_through_sh() {
        let mut env = BTreeMap::new();
        env.insert("NASTY".to_owned(), "it's $HOME `x` \"q\"\n2".to_owned());
        env.insert("EMPTY".to_owned(), String::new());
        let spec = ExecSpec {
            command: "printf '%s|%s' \"$NASTY\" \"$EMPTY\"",
            env: &env,
            timeout: Duration::from_millis(1500),
            as_root: true,
            guest_timeout: true,
        };
        let line = command_line(&spec, true).unwrap();
        assert!(line.starts_with("timeout --kill-after=10s 2s env "), "{line}");
        assert_eq!(sh(&line), "it's $HOME `x` \"q\"\n2|");
        let as_user = command_line(&spec, false).unwrap();
        assert!(as_user.starts_with("sudo -n -- timeout"), "{as_user}");
        let bare = BTreeMap::new();
        let spec = ExecSpec { env: &bare, ..spec };
        let line = command_line(&spec, true).unwrap();
        assert!(line.starts_with("timeout --kill-after=10s 2s /bin/sh -c "), "{line}");
        assert_eq!(sh(&line), "|");
        let own = ExecSpec { guest_timeout: false, ..spec };
        assert!(command_line(&own, false).unwrap().starts_with("sudo -n -- /bin/sh -c "));
    }

    #[test]
    fn bad_names_and_nul_bytes_are_refused() {
        let mut env = BTreeMap::new();
        env.insert("1X".to_owned(), "v".to_owned());
        let spec = ExecSpec {
            command: "true",
            env: &env,
            timeout: Duration::from_secs(1),
            as_root: false,
            guest_timeout: true,
        };
        assert!(matches!(command_line(&spec, false), Err(CommunicatorError::EnvName { .. })));
        let empty = BTreeMap::new();
        let spec = ExecSpec {
            command: "a\0b",
            env: &empty,
            timeout: Duration::from_secs(1),
            as_root: false,
            guest_timeout: true,
        };
        assert!(matches!(command_line(&spec, false), Err(CommunicatorError::Nul { .. })));
    }
}
