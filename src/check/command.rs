//! The shell text that runs one check inside the guest, as root, with stdout and stderr
//! merged so a failure's output reads in order. Retried kinds loop in the guest until their
//! timeout (one round trip, not one per attempt: a new command costs a second under TCG) and
//! print the last attempt's output, plus a diagnosis, when they give up.
//! Only POSIX sh, coreutils, awk and what Debian's cloud image has are assumed.

use super::{Check, CheckKind};
use crate::process::shell_quote as quote;

/// Seconds between attempts of a retried check.
const RETRY_EVERY: &str = "1";

/// The command that runs `check` in the guest: exit 0 when it passes.
#[must_use]
pub fn guest_command(check: &Check) -> String {
    let seconds = check.timeout().as_secs().max(1);
    match check.kind() {
        CheckKind::Shell { command } => format!("exec 2>&1\n{command}"),
        CheckKind::Service { unit } => service(unit, seconds),
        CheckKind::Port { port } => port_command(*port, seconds),
        CheckKind::Http { url, status, contains } => {
            http(url, *status, contains.as_deref(), seconds)
        }
    }
}

/// Runs the shell function `strata_attempt` until it succeeds or `seconds` have passed; then
/// prints its last output and runs `diagnose`.
fn retry(seconds: u64, attempt: &str, diagnose: &str) -> String {
    format!(
        r#"strata_attempt() {{
{attempt}
}}
strata_end=$(( $(date +%s) + {seconds} ))
while :; do
  if strata_out=$(strata_attempt 2>&1); then printf '%s\n' "$strata_out"; exit 0; fi
  if [ "$(date +%s)" -ge "$strata_end" ]; then
    printf '%s\n' "$strata_out"
    {diagnose}
    exit 1
  fi
  sleep {RETRY_EVERY}
done"#
    )
}

fn service(unit: &str, seconds: u64) -> String {
    let unit = quote(unit);
    let attempt = format!(
        r#"  strata_state=$(systemctl is-active -- {unit})
  echo "{unit} is ${{strata_state:-unknown}}"
  [ "$strata_state" = active ]"#
    );
    let diagnose = format!("systemctl status --no-pager --lines=20 -- {unit} || true");
    format!("exec 2>&1\n{}", retry(seconds, &attempt, &diagnose))
}

/// /proc/net/tcp{,6} need nothing installed: a listening socket has state 0A, and its local
/// address ends in `:PORT` in upper-case hex.
fn port_command(port: u16, seconds: u64) -> String {
    let attempt = format!(
        r#"  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    awk -v port=":{port:04X}" '$4 == "0A" && substr($2, length($2) - 4) == port {{ found = 1 }} END {{ exit !found }}'
  then echo "something listens on TCP port {port}"
  else echo "nothing listens on TCP port {port}"; false
  fi"#
    );
    let diagnose =
        r#"if command -v ss >/dev/null 2>&1; then echo "listening TCP sockets:"; ss -Hltn; fi"#;
    format!("exec 2>&1\n{}", retry(seconds, &attempt, diagnose))
}

/// Python's urllib first (Debian's cloud image has python3 but maybe no curl), with its own
/// retry loop: one interpreter start, not one per attempt. No proxies (the check is about the
/// guest's own answer) and no redirects (a 301 is what a `status = 301` check wants to see).
const HTTP_PY: &str = r#"import sys, time, urllib.request, urllib.error
url, want, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
needle = sys.argv[4] if len(sys.argv) > 4 else None
end = time.monotonic() + secs
class Keep(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Keep)
while True:
    wait = max(1.0, min(10.0, end - time.monotonic()))
    status, body = None, b""
    try:
        with opener.open(url, timeout=wait) as answer:
            status, body = answer.status, answer.read(1 << 20)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(1 << 20)
    except Exception as error:
        note = f"GET {url}: {error}"
    text = body.decode("utf-8", "replace")
    if status is not None:
        if status != want:
            note = f"GET {url}: status {status} (expected {want})"
        elif needle is not None and needle not in text:
            note = f"GET {url}: status {status}, but the body does not contain {needle!r}"
        else:
            print(f"GET {url}: status {status}")
            sys.exit(0)
    if time.monotonic() >= end:
        print(note)
        if text:
            print(text[:2000])
        sys.exit(1)
    time.sleep(1)
"#;

/// Without python3: curl, else wget, one attempt per loop round.
const HTTP_SH_ATTEMPT: &str = r#"  strata_body=$(mktemp) || return 1
  if command -v curl >/dev/null 2>&1; then
    strata_got=$(curl -sS --noproxy '*' --max-time 10 -o "$strata_body" -w '%{http_code}' -- "$strata_url")
  elif command -v wget >/dev/null 2>&1; then
    wget --no-proxy -q -S -T 10 --max-redirect=0 -O "$strata_body" -- "$strata_url" 2>"$strata_body.h"
    strata_got=$(awk '$1 ~ /^HTTP\// { s = $2 } END { print s }' "$strata_body.h")
    rm -f "$strata_body.h"
  else
    rm -f "$strata_body"
    echo "the guest has neither python3, curl nor wget to fetch $strata_url"
    return 1
  fi
  strata_rc=1
  if [ "$strata_got" != "$strata_status" ]; then
    echo "GET $strata_url: status ${strata_got:-none} (expected $strata_status)"
  elif [ -n "$strata_contains" ] && ! grep -qF -- "$strata_contains" "$strata_body"; then
    echo "GET $strata_url: status $strata_got, but the body does not contain '$strata_contains'"
    head -c 2000 "$strata_body"; echo
  else
    echo "GET $strata_url: status $strata_got"; strata_rc=0
  fi
  rm -f "$strata_body"
  return $strata_rc"#;

fn http(url: &str, status: u16, contains: Option<&str>, seconds: u64) -> String {
    let needle = contains.map(|text| format!(" {}", quote(text))).unwrap_or_default();
    format!(
        "exec 2>&1\nstrata_url={url}; strata_status={status}; strata_contains={contains}\n\
         if command -v python3 >/dev/null 2>&1; then\n  \
         exec python3 -c {py} \"$strata_url\" {status} {seconds}{needle}\nfi\n{loop}",
        url = quote(url),
        contains = quote(contains.unwrap_or("")),
        py = quote(HTTP_PY),
        loop = retry(seconds, HTTP_SH_ATTEMPT, ":"),
    )
}
