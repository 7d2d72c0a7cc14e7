//! JUnit XML for CI (GitLab, Jenkins and GitHub read it): one testsuite, one testcase per
//! check with its time; a failed check gets a `<failure>` with its output and, when given, the
//! guest console's last lines in `<system-out>`.

use std::time::{Duration, SystemTime};

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::{CheckError, CheckResult};
use crate::units::format_utc;

/// The report for `results`, run as suite `suite` (say `demo.final`).
pub fn junit_xml(
    suite: &str,
    results: &[CheckResult],
    console_tail: Option<&str>,
) -> Result<String, CheckError> {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_report(&mut writer, suite, results, console_tail).map_err(CheckError::Junit)?;
    let mut xml = String::from_utf8(writer.into_inner())
        .map_err(|error| CheckError::Junit(std::io::Error::other(error)))?;
    xml.push('\n');
    Ok(xml)
}

fn write_report(
    writer: &mut Writer<Vec<u8>>,
    suite: &str,
    results: &[CheckResult],
    console_tail: Option<&str>,
) -> std::io::Result<()> {
    let suite = xml_safe(suite);
    let tests = results.len().to_string();
    let failures = results.iter().filter(|result| !result.passed).count().to_string();
    let time = seconds(results.iter().map(|result| result.seconds).sum());
    let started =
        results.first().map_or(0, |first| first.when.saturating_sub(first.seconds as u64));
    // The JUnit schema's timestamp has no zone designator; it is UTC.
    let utc = format_utc(SystemTime::UNIX_EPOCH + Duration::from_secs(started));
    let timestamp = utc.trim_end_matches('Z');
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    writer
        .create_element("testsuites")
        .with_attributes([
            ("name", "strata"),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("time", time.as_str()),
        ])
        .write_inner_content(|writer| {
            writer
                .create_element("testsuite")
                .with_attributes([
                    ("name", suite.as_str()),
                    ("tests", tests.as_str()),
                    ("failures", failures.as_str()),
                    ("errors", "0"),
                    ("skipped", "0"),
                    ("time", time.as_str()),
                    ("timestamp", timestamp),
                ])
                .write_inner_content(|writer| {
                    for result in results {
                        write_case(writer, &suite, result, console_tail)?;
                    }
                    Ok(())
                })?;
            Ok(())
        })?;
    Ok(())
}

fn write_case(
    writer: &mut Writer<Vec<u8>>,
    suite: &str,
    result: &CheckResult,
    console_tail: Option<&str>,
) -> std::io::Result<()> {
    let name = xml_safe(&result.name);
    let time = seconds(result.seconds);
    let case = writer.create_element("testcase").with_attributes([
        ("name", name.as_str()),
        ("classname", suite),
        ("time", time.as_str()),
    ]);
    if result.passed {
        case.write_empty()?;
        return Ok(());
    }
    let output = xml_safe(&result.output);
    let message = output.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("failed");
    let message = format!("{} check failed: {}", result.kind, message.trim());
    case.write_inner_content(|writer| {
        writer
            .create_element("failure")
            .with_attributes([("message", message.as_str()), ("type", result.kind.as_str())])
            .write_text_content(BytesText::new(&output))?;
        if let Some(tail) = console_tail.filter(|tail| !tail.is_empty()) {
            writer
                .create_element("system-out")
                .write_text_content(BytesText::new(&xml_safe(tail)))?;
        }
        Ok(())
    })?;
    Ok(())
}

fn seconds(value: f64) -> String {
    format!("{:.3}", value.max(0.0))
}

/// Text XML 1.0 can hold: characters it forbids (controls other than tab, newline and
/// carriage return; U+FFFE and U+FFFF) are written as `\xNN`, visible instead of fatal to
/// the reader. `<`, `&` and `>` (and so `]]>`) are escaped by the writer.
fn xml_safe(text: &str) -> String {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' | '\n' | '\r' => safe.push(c),
            c if c < ' ' => safe.push_str(&format!("\\x{:02x}", u32::from(c))),
            '\u{fffe}' | '\u{ffff}' => safe.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => safe.push(c),
        }
    }
    safe
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use quick_xml::Reader;
    use quick_xml::escape::resolve_predefined_entity;

    use super::*;

    fn result(name: &str, passed: bool, output: &str) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            kind: "shell".to_owned(),
            passed,
            seconds: 1.25,
            output: output.to_owned(),
            when: 1_795_906_865,
        }
    }

    /// An element as a reader sees it: its path from the root, attributes and text.
    #[derive(Debug, Default)]
    struct Seen {
        path: String,
        attributes: Vec<(String, String)>,
        text: String,
    }

    /// Reads `xml` back with quick-xml, entity by entity, as a CI server's parser would.
    fn read_back(xml: &str) -> Vec<Seen> {
        let mut reader = Reader::from_str(xml);
        let mut stack: Vec<String> = Vec::new();
        let mut seen: Vec<Seen> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        loop {
            match reader.read_event().unwrap() {
                Event::Start(start) => {
                    stack.push(String::from_utf8(start.name().as_ref().to_vec()).unwrap());
                    seen.push(Seen {
                        path: stack.join("/"),
                        attributes: attributes(&start),
                        ..Seen::default()
                    });
                    open.push(seen.len() - 1);
                }
                Event::Empty(start) => {
                    let name = String::from_utf8(start.name().as_ref().to_vec()).unwrap();
                    let path = format!("{}/{name}", stack.join("/"));
                    seen.push(Seen { path, attributes: attributes(&start), ..Seen::default() });
                }
                Event::End(_) => {
                    stack.pop();
                    open.pop();
                }
                Event::Text(text) => {
                    if let Some(&at) = open.last() {
                        seen[at].text.push_str(&text.decode().unwrap());
                    }
                }
                Event::GeneralRef(entity) => {
                    let name = entity.decode().unwrap();
                    let resolved = resolve_predefined_entity(&name).unwrap();
                    if let Some(&at) = open.last() {
                        seen[at].text.push_str(resolved);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        seen
    }

    fn attributes(start: &quick_xml::events::BytesStart<'_>) -> Vec<(String, String)> {
        start
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                (key, a.unescape_value().unwrap().into_owned())
            })
            .collect()
    }

    fn attribute<'a>(seen: &'a Seen, key: &str) -> &'a str {
        seen.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap()
    }

    const NASTY: &str = "a <b> & c ]]> d \u{1b}[31mred\u{0} \"q\" 'a'\nlast line";

    #[test]
    fn one_suite_one_case_per_check_and_failures_carry_their_output() {
        let results = [result("passes", true, "fine\n"), result("fails <&>", false, NASTY)];
        let xml = junit_xml("demo.final", &results, Some("login: \u{7}\nconsole end")).unwrap();
        let seen = read_back(&xml);
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "testsuites",
                "testsuites/testsuite",
                "testsuites/testsuite/testcase",
                "testsuites/testsuite/testcase",
                "testsuites/testsuite/testcase/failure",
                "testsuites/testsuite/testcase/system-out",
            ],
            "{xml}"
        );
        let suite = &seen[1];
        assert_eq!(attribute(suite, "name"), "demo.final");
        assert_eq!(attribute(suite, "tests"), "2");
        assert_eq!(attribute(suite, "failures"), "1");
        assert_eq!(attribute(suite, "time"), "2.500");
        assert_eq!(attribute(suite, "timestamp"), "2026-11-28T23:01:04");
        assert_eq!(attribute(&seen[2], "name"), "passes");
        assert_eq!(attribute(&seen[2], "time"), "1.250");
        assert_eq!(attribute(&seen[3], "name"), "fails <&>");
        assert_eq!(attribute(&seen[3], "classname"), "demo.final");
        let failure = &seen[4];
        assert_eq!(attribute(failure, "message"), "shell check failed: last line");
        assert_eq!(failure.text, "a <b> & c ]]> d \\x1b[31mred\\x00 \"q\" 'a'\nlast line");
        assert_eq!(seen[5].text, "login: \\x07\nconsole end");
        assert!(!xml.contains("]]>"), "{xml}");
    }

    /// Python's parser is as strict about XML 1.0 as the JVM's that Jenkins uses.
    #[test]
    fn a_strict_parser_accepts_it() {
        let results = [result("fails", false, NASTY), result("passes", true, "")];
        let xml = junit_xml("x", &results, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("junit.xml");
        std::fs::write(&file, &xml).unwrap();
        let script = "import sys, xml.etree.ElementTree as E\n\
            root = E.parse(sys.argv[1]).getroot()\n\
            suite = root.find('testsuite')\n\
            print(root.tag, suite.get('failures'), len(suite.findall('testcase')))\n\
            print(suite.find('testcase/failure').text.splitlines()[-1])";
        crate::process::require_tool("python3", "apt-get install python3");
        let output = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}\n{xml}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(stdout, "testsuites 1 2\nlast line\n");
    }

    #[test]
    fn no_checks_is_an_empty_suite() {
        let xml = junit_xml("x", &[], None).unwrap();
        let seen = read_back(&xml);
        assert_eq!(seen.len(), 2);
        assert_eq!(attribute(&seen[1], "tests"), "0");
    }
}
