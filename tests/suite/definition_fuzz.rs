//! Definitions fuzzed (issue 16, "keep it so"): every definition of the project
//! (images/*.toml, tests/fixtures/definitions/**) mutated: bytes flipped, lines deleted,
//! duplicated or made 70,000 characters long, values swapped for other types, huge and
//! negative numbers, unicode and control characters, long strings, path traversal and
//! devices, template bombs and deep nesting. Every case ends Ok or invalid (exit 0 or 2),
//! never panics, within its time; most run in-process through `load_str` (and the miette
//! rendering), a share through the real `strata validate` under `prlimit --as` (bounded
//! memory). `STRATA_FUZZ_CASES` sets the in-process cases (default 3000; CI may raise it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use strata::definition::{DefinitionError, load_str};

/// What one in-process case may take (the issue's bound).
const CASE_DEADLINE: Duration = Duration::from_secs(2);
/// What one run of the binary may take: process start included, on a busy 2-core machine.
const BINARY_DEADLINE: Duration = Duration::from_secs(5);
/// The address space `strata validate` gets: far above what a definition needs.
const BINARY_MEMORY: &str = "1073741824";
const BINARY_CASES: u32 = 120;

/// Every definition of the project, with its path (relative files resolve from there).
fn seeds() -> &'static [(PathBuf, String)] {
    static SEEDS: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        for dir in ["images", "tests/fixtures/definitions"] {
            collect_toml(&root.join(dir), &mut found);
        }
        found.sort();
        assert!(found.len() >= 5, "seed definitions not found: {found:?}");
        found
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
                (path, text)
            })
            .collect()
    })
}

fn collect_toml(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_toml(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            found.push(path);
        }
    }
}

/// One in-process case: Ok or invalid with sane spans, rendered without panic, in time.
fn check(path: &Path, text: &str) {
    let started = Instant::now();
    match load_str(path, text) {
        Ok(definition) => assert!(!definition.stages.is_empty()),
        Err(DefinitionError::Invalid(invalid)) => {
            for problem in invalid.all().take(200) {
                let span = problem.span();
                assert!(span.start <= span.end && span.end <= text.len(), "{span:?}");
                assert!(problem.line() >= 1 && problem.column() >= 1);
                let _ = problem.to_string();
                let _ = problem.problem().help();
            }
            let _ = strata::report::diagnostic::render(&DefinitionError::Invalid(invalid), false);
        }
        Err(DefinitionError::Read { .. }) => panic!("load_str does not read"),
    }
    let took = started.elapsed();
    assert!(took < CASE_DEADLINE, "took {took:?} for {} bytes", text.len());
}

/// One case through the binary, with bounded memory: exit 0 or 2, in time.
fn check_binary(dir: &Path, text: &str) {
    let file = dir.join("fuzzed.toml");
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    check_binary_at(&file, text);
}

/// `strata validate FILE` (holding `text`) under the memory limit: exit 0 or 2, in time.
fn check_binary_at(file: &Path, text: &str) {
    let mut child = Command::new("prlimit")
        .arg(format!("--as={BINARY_MEMORY}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg("validate")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("prlimit (util-linux) is needed: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if started.elapsed() > BINARY_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strata validate ran over {BINARY_DEADLINE:?} on {} bytes", text.len());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let code = status.code();
    assert!(matches!(code, Some(0 | 2)), "exit {status} (0 or 2 expected) for:\n{text:.2000}");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        byte: u8,
    },
    DeleteLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
    Insert {
        at: usize,
        text: String,
    },
    /// The value of a `key = value` line replaced.
    SwapValue {
        line: usize,
        value: String,
    },
    /// A line padded to past column 65,535.
    LongLine(usize),
}

/// Values of every type and none: wrong types, numbers at and past the edges, paths out of
/// the tree and into devices, unicode and control characters, long strings, template bombs.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "0",
        "-1",
        "-9223372036854775808",
        "9223372036854775807",
        "18446744073709551615",
        "99999999999999999999999999",
        "1e309",
        "nan",
        "-inf",
        "true",
        "[]",
        "{}",
        "\"\"",
        "\" \"",
        "[\"qcow2\", \"qcow2\", \"QCOW2\"]",
        "\"18446744073709551615s\"",
        "\"99999999999999999999w\"",
        "\"16384T\"",
        "\"18446744073709551615\"",
        "\"-1G\"",
        "\"0s\"",
        "\"../../../../../../../../etc/passwd\"",
        "\"/etc/shadow\"",
        "\"/dev/zero\"",
        "\"/dev/urandom\"",
        "\"/proc/self/environ\"",
        "\"/proc/kcore\"",
        "\"file:///dev/zero\"",
        "\"file://../../x\"",
        "\"ftp://example.org/x\"",
        "\"https://user:token@/x\"",
        "\"\\u0000\"",
        "\"\\u001b[31mred\"",
        "\"\\u202egnp.exe\"",
        "\"\u{feff}é\u{1F600}\u{0301}\"",
        "'''\u{7}\u{8}\r'''",
        "\"{{ \\\"a\\\" * 100000000 }}\"",
        "\"{% for i in range(10**9) %}x{% endfor %}\"",
        "\"{{ range(999999999) | join }}\"",
        "\"{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}\"",
        "\"{{ vars.nope }}{{ nope }}{{ vars }}\"",
        "\"{% include 'x' %}{% import 'y' as z %}\"",
        "\"{{\"",
        "\"{% if %}\"",
    ]
    .iter()
    .map(|value| (*value).to_owned())
    .collect();
    values.push(format!("\"{}\"", "a".repeat(100_000)));
    values.push(format!("\"{{{{ {}1{} }}}}\"", "(".repeat(5_000), ")".repeat(5_000)));
    values.push(format!("\"{}{}\"", "{% if true %}".repeat(2_000), "{% endif %}".repeat(2_000)));
    values.push(format!("\"{}\"", "{{ [".repeat(3_000)));
    values.push(format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)));
    values.push(format!("{}{}", "{ a = ".repeat(2_000), "1 }".repeat(2_000)));
    values
}

fn hostile_inserts() -> Vec<String> {
    let mut inserts: Vec<String> = [
        "\"",
        "[",
        "]",
        "{",
        "}",
        "=",
        "\n",
        "[[stage]]\n",
        "[[stage]]\nname = \"base\"\nsteps = [{ shell = \"x\" }]\n",
        "parent = \"final\"\n",
        "parent = \"base\"\n",
        "é",
        "\u{0}",
        "\u{7}",
        "\u{1b}[2J",
        "\u{202e}",
        "\u{feff}",
        "\r",
        "\t",
        "{{",
        "{%",
        "#",
        "'''",
        "\\",
        "0x",
        "name = \"base\"\n",
        "[vars]\nx = \"{{ \\\"a\\\" * 100000000 }}\"\n",
        "[[stage]]\nname = \"bomb\"\nsteps = [{ shell = \"x\", env = { A = \"{% for i in \
         range(10**9) %}{{ i }}{% endfor %}\" } }]\n",
        "[[stage]]\nname = \"up\"\nsteps = [{ upload = \"../../../../../../\", to = \"/\" }]\n",
    ]
    .iter()
    .map(|text| (*text).to_owned())
    .collect();
    inserts.push(format!("[vars]\n{} = \"1\"\n", "v".repeat(20_000)));
    inserts.push(format!("[[stage]]\nname = \"s\"\nsteps = [{}]\n", "{},".repeat(3_000)));
    inserts
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop::sample::select(hostile_inserts()))
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
        3 => (any::<usize>(), prop::sample::select(hostile_values()))
            .prop_map(|(line, value)| Mutation::SwapValue { line, value }),
        1 => any::<usize>().prop_map(Mutation::LongLine),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let count = lines.len().max(1);
    match mutation {
        Mutation::Flip { at, byte } => {
            let at = at % bytes.len().max(1);
            if let Some(slot) = bytes.get_mut(at) {
                *slot ^= byte | 1;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::Truncate(at) => {
            bytes.truncate(at % (bytes.len() + 1));
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::Insert { at, text: inserted } => {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            return format!("{}{inserted}{}", &text[..at], &text[at..]);
        }
        Mutation::DeleteLine(at) if !lines.is_empty() => {
            lines.remove(at % count);
        }
        Mutation::DuplicateLine(at) if !lines.is_empty() => {
            let line = lines[at % count].clone();
            lines.insert(at % count, line);
        }
        Mutation::SwapValue { line, value } => {
            // The n-th `key = value` line, counted among those that have one.
            let assignments: Vec<usize> =
                (0..lines.len()).filter(|&index| lines[index].contains(" = ")).collect();
            if let Some(&index) = assignments.get(line % assignments.len().max(1)) {
                let key = lines[index].split(" = ").next().unwrap_or_default().to_owned();
                lines[index] = format!("{key} = {value}\n");
            }
        }
        Mutation::LongLine(at) if !lines.is_empty() => {
            let line = &mut lines[at % count];
            let indent = " ".repeat(70_000);
            match line.find(" = ") {
                Some(equals) => line.insert_str(equals + 3, &indent),
                None => line.insert_str(0, &indent),
            }
        }
        Mutation::DeleteLine(_) | Mutation::DuplicateLine(_) | Mutation::LongLine(_) => {}
    }
    lines.concat()
}

fn fuzzed() -> impl Strategy<Value = (usize, Vec<Mutation>)> {
    (0..seeds().len(), prop::collection::vec(mutation(), 1..5))
}

fn mutate(seed: usize, mutations: &[Mutation]) -> (&'static Path, String) {
    let (path, text) = &seeds()[seed];
    let text = mutations.iter().fold(text.clone(), |text, mutation| apply(&text, mutation));
    (path, text)
}

fn cases() -> u32 {
    std::env::var("STRATA_FUZZ_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(3000)
}

/// Runs `case` on `cases` values of `strategy`; a failure panics with proptest's shrunk input.
fn run_cases<S: Strategy>(cases: u32, strategy: &S, case: impl Fn(S::Value)) {
    let mut runner = TestRunner::new(Config { cases, ..Config::default() });
    if let Err(failure) = runner.run(strategy, |value| {
        case(value);
        Ok(())
    }) {
        panic!("{failure}");
    }
}

#[test]
fn mutated_definitions_are_ok_or_invalid_in_process() {
    run_cases(cases(), &fuzzed(), |(seed, mutations)| {
        let (path, text) = mutate(seed, &mutations);
        check(path, &text);
    });
}

#[test]
fn mutated_definitions_through_the_binary_exit_zero_or_two() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    run_cases(BINARY_CASES, &fuzzed(), |(seed, mutations)| {
        let (_, text) = mutate(seed, &mutations);
        check_binary(dir.path(), &text);
    });
}

/// Every hostile value in every assignment of every seed, and every insert at the end: the
/// cases random choice might miss.
#[test]
fn every_hostile_value_in_every_seed() {
    for seed in 0..seeds().len() {
        let assignments = seeds()[seed].1.matches(" = ").count();
        for value in hostile_values() {
            for line in 0..assignments {
                let (path, text) =
                    mutate(seed, &[Mutation::SwapValue { line, value: value.clone() }]);
                check(path, &text);
            }
        }
        for text in hostile_inserts() {
            let (path, text) = mutate(seed, &[Mutation::Insert { at: usize::MAX, text }]);
            check(path, &text);
        }
    }
}

/// The worst of the bombs through the binary, under the memory limit.
#[test]
fn bombs_through_the_binary() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let seed = seeds().iter().position(|(path, _)| path.ends_with("web.toml")).unwrap_or(0);
    for value in hostile_values().into_iter().filter(|value| value.len() > 1000) {
        for line in [0, 3, 7, 12, 20] {
            let (_, text) = mutate(seed, &[Mutation::SwapValue { line, value: value.clone() }]);
            check_binary(dir.path(), &text);
        }
    }
}

#[test]
fn random_text_is_ok_or_invalid() {
    let path = &seeds()[0].0;
    run_cases(256, &"\\PC{0,300}", |text: String| check(path, &text));
}

#[test]
fn the_unmutated_seeds_load() {
    for (path, text) in seeds() {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned());
        let expected_bad = name.is_some_and(|name| name.starts_with("bad-"));
        assert_eq!(load_str(path, text).is_err(), expected_bad, "{}", path.display());
    }
}

/// Template bombs where validate parses templates: step env values and seed (user_data)
/// files. Validate only parses (never renders), so a bomb must cost no more than its text.
#[test]
fn template_bombs_in_envs_and_seeds() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("bomb.toml");
    let head = "name = \"t\"\n[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \
                \"sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881\"\n";
    let templates = hostile_values()
        .into_iter()
        .filter(|value| value.starts_with('"') && value.contains(['{', '(']))
        .collect::<Vec<_>>();
    assert!(templates.len() >= 8);
    for (index, template) in templates.iter().enumerate() {
        let env = format!(
            "{head}[[stage]]\nname = \"a\"\nsteps = [{{ shell = \"x\", env = {{ A = {template} }} \
             }}]\n"
        );
        check(&path, &env);
        check_binary(dir.path(), &env);
        let seed_file = dir.path().join(format!("seed{index}.j2"));
        let unquoted = template.trim_matches('"').replace("\\\"", "\"");
        std::fs::write(&seed_file, unquoted).unwrap_or_else(|e| panic!("{e}"));
        let seed = format!(
            "{head}[[stage]]\nname = \"a\"\nuser_data = \"seed{index}.j2\"\nsteps = [{{ shell = \
             \"x\" }}]\n"
        );
        check(&path, &seed);
        std::fs::write(&path, &seed).unwrap_or_else(|e| panic!("{e}"));
        check_binary_at(&path, &seed);
    }
}
