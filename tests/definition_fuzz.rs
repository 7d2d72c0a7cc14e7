//! `load_str` never panics: random text, and the DESIGN example mutated (bytes flipped, lines
//! deleted or duplicated, truncated). Every outcome is Ok or a DefinitionError with a span
//! inside the text.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata::definition::{DefinitionError, load_str};

fn design_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/definitions/design/images/web.toml")
}

fn design_text() -> String {
    std::fs::read_to_string(design_path()).unwrap_or_else(|error| panic!("{error}"))
}

fn check(text: &str) {
    match load_str(&design_path(), text) {
        Ok(definition) => assert!(!definition.stages.is_empty()),
        Err(DefinitionError::Invalid(invalid)) => {
            for problem in invalid.all() {
                let span = problem.span();
                assert!(span.start <= span.end && span.end <= text.len(), "{span:?}");
                assert!(problem.line() >= 1 && problem.column() >= 1);
                let _ = problem.to_string();
                let _ = problem.problem().help();
            }
            // Rendering must not panic either.
            let _ = strata::report::diagnostic::render(&DefinitionError::Invalid(invalid), false);
        }
        Err(DefinitionError::Read { .. }) => panic!("load_str does not read"),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    DeleteLine(usize),
    DuplicateLine(usize),
    Truncate(usize),
    Insert { at: usize, text: String },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "\"",
                "[",
                "]",
                "{",
                "}",
                "=",
                "\n",
                "[[stage]]\n",
                "parent = \"final\"\n",
                "é",
                "{{",
                "{%",
                "#",
                "'''",
                "\\",
                "0x",
                "name = \"base\"\n",
            ])
        )
            .prop_map(|(at, text)| Mutation::Insert { at, text: text.to_owned() }),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    match mutation {
        Mutation::Flip { at, byte } => {
            let at = at % bytes.len().max(1);
            if let Some(slot) = bytes.get_mut(at) {
                *slot ^= byte | 1;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::DeleteLine(at) => {
            if !lines.is_empty() {
                lines.remove(at % lines.len());
            }
            lines.concat()
        }
        Mutation::DuplicateLine(at) => {
            if !lines.is_empty() {
                let line = lines[at % lines.len()];
                lines.insert(at % lines.len(), line);
            }
            lines.concat()
        }
        Mutation::Truncate(at) => {
            bytes.truncate(at % (bytes.len() + 1));
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Insert { at, text: inserted } => {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            format!("{}{inserted}{}", &text[..at], &text[at..])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn toml_like_text_never_panics(text in "([a-z_]{1,8} = (\"[a-z{}%. /]{0,10}\"|[0-9]{1,3}|true|\\[\\]|\\{ ?\\})\n|\\[\\[?[a-z]{1,7}\\]\\]?\n){0,12}") {
        check(&text);
    }

    #[test]
    fn mutated_design_example_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let mut text = design_text();
        for mutation in &mutations {
            text = apply(&text, mutation);
        }
        check(&text);
    }
}

#[test]
fn the_unmutated_example_is_valid() {
    let text = design_text();
    assert!(load_str(&design_path(), &text).is_ok());
}
