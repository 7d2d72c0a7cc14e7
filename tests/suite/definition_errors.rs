//! Malformed definitions: each test checks the message and where it points (line:col of the
//! span and the text underlined). Plus the full DESIGN §1 example, parsed into typed values.
//! Files that definitions name live under tests/fixtures/definitions/design/.

use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::Diagnostic;
use strata::definition::{
    AccelChoice, Checksum, CommunicatorKind, Compression, DefinitionError, ExportFormat,
    ExportTarget, Firmware, HashAlgo, ImageDefinition, Invalid, Location, Problem, StageName,
    StepAction, load, load_str,
};
use strata::units::ByteSize;

const SHA256: &str = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";

fn design() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/definitions/design")
}

/// The definition's path: in design/images/, so "../scripts/harden.sh" exists.
fn def_path() -> PathBuf {
    design().join("images/test.toml")
}

/// A valid head (name and source) followed by `rest`.
fn with_head(rest: &str) -> String {
    format!(
        "name = \"t\"\n\n[source]\nurl = \"https://example.org/base.qcow2\"\nchecksum = \
         \"sha256:{SHA256}\"\n\n{rest}"
    )
}

const ONE_STAGE: &str = "[[stage]]\nname = \"base\"\nsteps = [{ shell = \"true\" }]\n";

fn ok(text: &str) -> ImageDefinition {
    match load_str(&def_path(), text) {
        Ok(definition) => definition,
        Err(error) => panic!("expected a valid definition, got: {error:?}\n{text}"),
    }
}

fn invalid(text: &str) -> Invalid {
    match load_str(&def_path(), text) {
        Err(DefinitionError::Invalid(invalid)) => *invalid,
        Err(other) => panic!("expected an invalid definition, got {other:?}"),
        Ok(_) => panic!("expected an error for:\n{text}"),
    }
}

/// 1-based line and column of the `nth` (0-based) occurrence of `needle` in `text`.
fn position(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .map_or_else(|| panic!("`{needle}` not in the text"), |(at, _)| at);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
    (line, column)
}

/// Asserts the message contains `message`, and the error points at `needle` (its `nth` match).
#[track_caller]
fn assert_at(error: &Invalid, text: &str, message: &str, needle: &str, nth: usize) {
    let shown = error.to_string();
    assert!(shown.contains(message), "message {shown:?} lacks {message:?}");
    assert_eq!(
        (error.line(), error.column()),
        position(text, needle, nth),
        "location of {shown:?}"
    );
    assert!(error.snippet().starts_with(needle), "snippet {:?} for {needle:?}", error.snippet());
    let help = error.help().map(|help| help.to_string()).unwrap_or_default();
    assert!(!help.is_empty(), "no help for {shown}");
    let labels: Vec<_> = error.labels().into_iter().flatten().collect();
    assert!(!labels.is_empty(), "no label for {shown}");
}

// ---- TOML and shape ----

#[test]
fn toml_syntax_error() {
    let text = "name = \"t\"\n[source\nurl = \"x\"\n";
    let error = invalid(text);
    assert!(matches!(error.problem(), Problem::Syntax { .. }));
    assert!(error.to_string().starts_with("invalid TOML"), "{error}");
    assert_eq!(error.line(), 2, "{error}");
}

#[test]
fn unterminated_string_is_a_syntax_error() {
    let text = with_head("[[stage]]\nname = \"base\nsteps = []\n");
    let error = invalid(&text);
    assert!(matches!(error.problem(), Problem::Syntax { .. }));
    assert_eq!(error.line(), position(&text, "\"base", 0).0);
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let text = with_head("[machine]\ncpus = 2\ncpus = 4\n");
    let error = invalid(&text);
    assert!(matches!(error.problem(), Problem::Syntax { .. }), "{error}");
    assert_eq!(error.line(), position(&text, "cpus = 4", 0).0);
}

#[test]
fn unknown_top_level_key_suggests() {
    let text = format!("descripton = \"x\"\n{}", with_head(ONE_STAGE));
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "unknown key `descripton` in the top level: did you mean `description`?",
        "descripton",
        0,
    );
}

#[test]
fn unknown_stage_key_suggests() {
    let text = with_head("[[stage]]\nnmae = \"base\"\nsteps = []\n");
    let error = invalid(&text);
    assert_at(&error, &text, "unknown key `nmae` in [[stage]]: did you mean `name`?", "nmae", 0);
    assert_eq!(error.help().map(|h| h.to_string()), Some("rename it to `name`".into()));
}

#[test]
fn unknown_step_key_suggests() {
    let text = with_head("[[stage]]\nname = \"base\"\nsteps = [{ shel = \"true\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "unknown key `shel` in a step: did you mean `shell`?", "shel", 0);
}

#[test]
fn unknown_key_without_close_match_lists_keys() {
    let text = with_head(&format!("[machine]\ngpu = true\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown key `gpu` in [machine]", "gpu", 0);
    let help = error.help().map(|h| h.to_string()).unwrap_or_default();
    assert!(help.contains("`cpus`") && help.contains("`memory`"), "{help}");
}

#[test]
fn stages_instead_of_stage() {
    let text = with_head("[[stages]]\nname = \"base\"\n");
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "unknown key `stages`: did you mean `stage`?"
            .replace(": did", " in the top level: did")
            .as_str(),
        "stages",
        0,
    );
}

#[test]
fn wrong_type_for_memory() {
    let text = with_head(&format!("[machine]\nmemory = 2048\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "wrong type: invalid type: integer `2048`, expected a string",
        "2048",
        0,
    );
    assert!(error.help().map(|h| h.to_string()).unwrap_or_default().contains("double quotes"));
}

#[test]
fn wrong_type_for_network() {
    let text = with_head("[[stage]]\nname = \"base\"\nnetwork = \"no\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "expected a boolean", "\"no\"", 0);
}

#[test]
fn keep_package_caches_must_be_a_boolean() {
    let text = with_head("[[stage]]\nname = \"base\"\nkeep_package_caches = \"yes\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "expected a boolean", "\"yes\"", 0);
    let text = with_head("[[stage]]\nname = \"base\"\nkeep_package_cache = true\n");
    let error = invalid(&text);
    assert!(error.to_string().contains("did you mean `keep_package_caches`"), "{error}");
    let kept = ok(&with_head(&ONE_STAGE.replace("steps", "keep_package_caches = true\nsteps")));
    assert!(kept.stages[0].keep_package_caches);
    assert!(!ok(&with_head(ONE_STAGE)).stages[0].keep_package_caches, "removed by default");
}

#[test]
fn steps_as_a_table_is_the_wrong_type() {
    let text = with_head("[[stage]]\nname = \"base\"\nsteps = \"apt-get update\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "expected a sequence", "\"apt-get update\"", 0);
}

// ---- values ----

#[test]
fn bad_size() {
    let text = with_head(&format!("[machine]\ndisk_size = \"8 gigs\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "`disk_size` is not a size: \"8 gigs\"", "\"8 gigs\"", 0);
}

#[test]
fn bad_duration() {
    let text = with_head("[[stage]]\nname = \"base\"\nrefresh = \"weekly\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "`refresh` is not a duration: \"weekly\"", "\"weekly\"", 0);
}

#[test]
fn bad_step_timeout() {
    let text =
        with_head("[[stage]]\nname = \"base\"\nsteps = [{ shell = \"true\", timeout = \"15\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "`timeout` is not a duration: \"15\"", "\"15\"", 0);
}

#[test]
fn zero_ready_timeout() {
    let text = with_head(&format!("[communicator]\nready_timeout = \"0s\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "`ready_timeout` must be longer than zero", "\"0s\"", 0);
}

#[test]
fn cpus_zero() {
    let text = with_head(&format!("[machine]\ncpus = 0\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_eq!(error.to_string(), "`cpus` must be from 1 to 255, not 0");
    let (line, column) = position(&text, "cpus = 0", 0);
    assert_eq!((error.line(), error.column()), (line, column + 7));
    assert_eq!(error.snippet(), "0");
}

#[test]
fn memory_too_small() {
    let text = with_head(&format!("[machine]\nmemory = \"128M\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "`memory` \"128M\" is below the minimum of 256M", "\"128M\"", 0);
}

#[test]
fn unknown_firmware_suggests() {
    let text = with_head(&format!("[machine]\nfirmware = \"efi\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown firmware \"efi\": did you mean `uefi`?", "\"efi\"", 0);
}

#[test]
fn unknown_accel() {
    let text = with_head(&format!("[machine]\naccel = \"hvf\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown accel \"hvf\"", "\"hvf\"", 0);
    assert!(error.help().map(|h| h.to_string()).unwrap_or_default().contains("\"tcg\""));
}

#[test]
fn unknown_export_format_in_list() {
    let text = with_head(&format!("{ONE_STAGE}[export]\nformats = [\"qcow2\", \"vdi\"]\n"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown export format \"vdi\"", "\"vdi\"", 0);
}

#[test]
fn empty_export_targets() {
    let text = with_head(&format!("{ONE_STAGE}[export]\ntargets = []\n"));
    let error = invalid(&text);
    assert_at(&error, &text, "`targets` is an empty list", "[]", 0);
}

#[test]
fn unknown_communicator_kind() {
    let text = with_head(&format!("[communicator]\nkind = \"winrm\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown communicator kind \"winrm\"", "\"winrm\"", 0);
}

#[test]
fn root_user_is_refused() {
    let text = with_head(&format!("[communicator]\nuser = \"root\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "the communicator user must not be root", "\"root\"", 0);
}

#[test]
fn bad_user_name() {
    let text = with_head(&format!("[communicator]\nuser = \"Bob Smith\"\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "bad user name \"Bob Smith\"", "\"Bob Smith\"", 0);
}

#[test]
fn network_false_needs_guest_agent() {
    let text = with_head("[[stage]]\nname = \"base\"\nnetwork = false\n");
    let error = invalid(&text);
    assert_at(&error, &text, "`network = false` needs the guest-agent communicator", "false", 0);
}

#[test]
fn network_false_with_guest_agent_is_fine() {
    let text = with_head(
        "[communicator]\nkind = \"guest-agent\"\n[[stage]]\nname = \"base\"\nnetwork = false\n",
    );
    let definition = ok(&text);
    assert!(!definition.stages[0].network);
    assert_eq!(definition.communicator.kind, CommunicatorKind::GuestAgent);
}

// ---- source ----

#[test]
fn checksum_with_wrong_length() {
    let short = &SHA256[..63];
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \"sha256:{short}\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(&error, &text, "a sha256 digest has 64 hex digits, this one has 63", "\"sha256:", 0);
}

#[test]
fn checksum_with_unknown_algorithm() {
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \"md5:abc\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(&error, &text, "unknown algorithm `md5`", "\"md5:abc\"", 0);
}

#[test]
fn checksum_not_hex() {
    let bad = format!("{}zz", &SHA256[..62]);
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \"sha256:{bad}\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(&error, &text, "`z` is not a hex digit", "\"sha256:", 0);
}

#[test]
fn checksum_without_algorithm() {
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \"{SHA256}\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(&error, &text, "expected ALGO:HEX", &format!("\"{SHA256}"), 0);
}

#[test]
fn both_checksum_and_checksum_url() {
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \"sha256:{SHA256}\"\n\
         checksum_url = \"https://example.org/SHA256SUMS\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "both `checksum` and `checksum_url`",
        "\"https://example.org/SHA256SUMS\"",
        0,
    );
    assert_eq!(error.labels().into_iter().flatten().count(), 2);
}

#[test]
fn neither_checksum_nor_checksum_url() {
    let text = format!("[source]\nurl = \"https://example.org/x.qcow2\"\n{ONE_STAGE}");
    let error = invalid(&text);
    assert_at(&error, &text, "neither `checksum` nor `checksum_url`", "[source]", 0);
}

#[test]
fn missing_source_table() {
    let text = ONE_STAGE.to_owned();
    let error = invalid(&text);
    assert_eq!(error.to_string(), "missing [source] table");
    assert_eq!((error.line(), error.column()), (1, 1));
}

#[test]
fn missing_url() {
    let text = format!("[source]\nchecksum = \"sha256:{SHA256}\"\n{ONE_STAGE}");
    let error = invalid(&text);
    assert_at(&error, &text, "missing key `url` in [source]", "[source]", 0);
}

#[test]
fn unsupported_url_scheme() {
    let text = format!(
        "[source]\nurl = \"ftp://example.org/x.qcow2\"\nchecksum = \"sha256:{SHA256}\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(&error, &text, "not `ftp`", "\"ftp://", 0);
}

#[test]
fn relative_file_url() {
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum_url = \"file://sums.txt\"\n{ONE_STAGE}"
    );
    let error = invalid(&text);
    assert_at(&error, &text, "a file:// URL needs an absolute path", "\"file://sums.txt\"", 0);
}

// ---- stages ----

#[test]
fn bad_stage_name() {
    let text = with_head("[[stage]]\nname = \"Base Stage\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "bad stage name \"Base Stage\"", "\"Base Stage\"", 0);
}

#[test]
fn stage_without_name() {
    let text = with_head("[[stage]]\nsteps = [{ shell = \"true\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "missing key `name` in [[stage]]", "[[stage]]", 0);
}

#[test]
fn no_stages() {
    let text = with_head("");
    let error = invalid(&text);
    assert_eq!(error.to_string(), "the definition has no [[stage]]");
    assert_eq!((error.line(), error.column()), (1, 1));
}

#[test]
fn duplicate_stage_names() {
    let text = with_head(&format!("{ONE_STAGE}\n{ONE_STAGE}"));
    let error = invalid(&text);
    let first_line = position(&text, "\"base\"", 0).0;
    assert_at(
        &error,
        &text,
        &format!("duplicate stage name \"base\" (first defined on line {first_line})"),
        "\"base\"",
        1,
    );
    assert_eq!(error.labels().into_iter().flatten().count(), 2);
}

#[test]
fn unknown_parent_suggests() {
    let text = with_head(&format!("{ONE_STAGE}[[stage]]\nname = \"app\"\nparent = \"bsae\"\n"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown parent stage \"bsae\": did you mean `base`?", "\"bsae\"", 0);
}

#[test]
fn parent_cycle() {
    let text = with_head(
        "[[stage]]\nname = \"a\"\nparent = \"c\"\n[[stage]]\nname = \"b\"\n[[stage]]\nname = \"c\"\n",
    );
    let error = invalid(&text);
    assert_at(&error, &text, "stage parents form a cycle: a -> c -> b -> a", "\"c\"", 0);
}

#[test]
fn stage_that_is_its_own_parent() {
    let text = with_head("[[stage]]\nname = \"a\"\nparent = \"a\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "stage parents form a cycle: a -> a", "\"a\"", 1);
}

// ---- steps ----

#[test]
fn step_without_action() {
    let text = with_head("[[stage]]\nname = \"base\"\nsteps = [{ timeout = \"5m\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "step has no action", "{ timeout", 0);
}

#[test]
fn step_with_two_actions() {
    let text = with_head(
        "[[stage]]\nname = \"base\"\nsteps = [\n  { shell = \"true\", reboot = true },\n]\n",
    );
    let error = invalid(&text);
    assert_at(&error, &text, "step has 2 actions: `shell`, `reboot`", "{ shell", 0);
}

#[test]
fn upload_without_to() {
    let text = with_head("[[stage]]\nname = \"base\"\nsteps = [{ upload = \"../app/\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "upload step without `to`", "{ upload", 0);
}

#[test]
fn to_on_a_shell_step() {
    let text =
        with_head("[[stage]]\nname = \"base\"\nsteps = [{ shell = \"true\", to = \"/x\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "`to` on a `shell` step", "\"/x\"", 0);
}

#[test]
fn relative_upload_destination() {
    let text = with_head(
        "[[stage]]\nname = \"base\"\nsteps = [{ upload = \"../app/\", to = \"opt/app\" }]\n",
    );
    let error = invalid(&text);
    assert_at(&error, &text, "upload destination \"opt/app\" is not absolute", "\"opt/app\"", 0);
}

#[test]
fn reboot_false() {
    let text = with_head("[[stage]]\nname = \"base\"\nsteps = [{ reboot = false }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "`reboot = false` is not a step", "false", 0);
}

#[test]
fn missing_script() {
    let text =
        with_head("[[stage]]\nname = \"base\"\nsteps = [{ run = \"../scripts/nope.sh\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "script ", "\"../scripts/nope.sh\"", 0);
    assert!(error.to_string().ends_with("scripts/nope.sh does not exist"), "{error}");
    // The path shown is absolute, resolved against the definition's folder.
    assert!(error.to_string().contains(&design().join("scripts/nope.sh").display().to_string()));
}

#[test]
fn script_that_is_a_directory() {
    let text = with_head("[[stage]]\nname = \"base\"\nsteps = [{ run = \"../scripts\" }]\n");
    let error = invalid(&text);
    assert_at(&error, &text, "is not a file", "\"../scripts\"", 0);
}

#[test]
fn missing_upload_source() {
    let text = with_head(
        "[[stage]]\nname = \"base\"\nsteps = [{ upload = \"../nothing/\", to = \"/opt\" }]\n",
    );
    let error = invalid(&text);
    assert_at(&error, &text, "upload source ", "\"../nothing/\"", 0);
    assert!(error.to_string().ends_with("does not exist"), "{error}");
}

#[test]
fn missing_user_data_template() {
    let text = with_head("[[stage]]\nname = \"base\"\nuser_data = \"../seeds/missing.yaml.j2\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "user_data template ", "\"../seeds/missing.yaml.j2\"", 0);
    assert!(error.to_string().ends_with("does not exist"), "{error}");
}

#[test]
fn user_data_template_syntax_error() {
    let text = with_head("[[stage]]\nname = \"base\"\nuser_data = \"../seeds/broken.yaml.j2\"\n");
    let error = invalid(&text);
    assert_at(&error, &text, "at template line 4: unexpected end of input", "\"../seeds/broken", 0);
    assert!(error.to_string().contains("broken.yaml.j2"), "{error}");
}

#[test]
fn user_data_unknown_template_variable() {
    let text = with_head(
        "[[stage]]\nname = \"base\"\nuser_data = \"../seeds/unknown-variable.yaml.j2\"\n",
    );
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "unknown template variable `hostnme`: did you mean `hostname`?",
        "\"../seeds/unknown-variable",
        0,
    );
}

#[test]
fn user_data_unknown_var() {
    let text = with_head(
        "[vars]\nmissing_pot = \"1\"\n[[stage]]\nname = \"base\"\nuser_data = \"../seeds/unknown-var.yaml.j2\"\n",
    );
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "unknown variable `vars.missing_port`: did you mean `missing_pot`?",
        "\"../seeds/unknown-var",
        0,
    );
}

#[test]
fn env_template_syntax_error() {
    let text = with_head(
        "[[stage]]\nname = \"base\"\nsteps = [{ shell = \"env\", env = { PORT = \"{{ vars.port\" } }]\n",
    );
    let error = invalid(&text);
    assert_at(&error, &text, "syntax error in env value `PORT`", "\"{{ vars.port\"", 0);
}

#[test]
fn env_unknown_var() {
    let text = with_head(
        "[vars]\nport = \"1\"\n[[stage]]\nname = \"base\"\nsteps = [{ shell = \"env\", env = { PORT = \"{{ vars.prot }}\" } }]\n",
    );
    let error = invalid(&text);
    assert_at(
        &error,
        &text,
        "unknown variable `vars.prot`: did you mean `port`?",
        "\"{{ vars.prot }}\"",
        0,
    );
}

#[test]
fn bad_env_name() {
    let text = with_head(
        "[[stage]]\nname = \"base\"\nsteps = [{ shell = \"env\", env = { \"APP-PORT\" = \"1\" } }]\n",
    );
    let error = invalid(&text);
    assert_at(&error, &text, "bad environment variable name \"APP-PORT\"", "\"APP-PORT\"", 0);
}

#[test]
fn several_problems_are_all_reported_in_file_order() {
    let text = with_head(
        "[machine]\ncpus = 0\nmemory = \"1X\"\n[[stage]]\nname = \"base\"\nsteps = [{}]\n",
    );
    let error = invalid(&text);
    let all: Vec<String> = error.all().map(ToString::to_string).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all[0].contains("`cpus`"), "{all:?}");
    assert!(all[1].contains("`memory` is not a size"), "{all:?}");
    assert!(all[2].contains("step has no action"), "{all:?}");
    assert_eq!(error.related().into_iter().flatten().count(), 2);
}

#[test]
fn unreadable_file_is_a_read_error() {
    let path = design().join("images/does-not-exist.toml");
    let error = load(&path).err().unwrap_or_else(|| panic!("loaded a missing file"));
    assert!(matches!(error, DefinitionError::Read { .. }));
    assert!(error.to_string().starts_with("failed to read definition "), "{error}");
    assert!(error.help().is_some());
}

// ---- positive ----

#[test]
fn the_design_example_parses_into_typed_values() {
    let path = design().join("images/web.toml");
    let definition = match load(&path) {
        Ok(definition) => definition,
        Err(error) => panic!("{error:?}"),
    };
    assert_eq!(definition.path, path);
    assert_eq!(definition.name, "web");
    assert_eq!(definition.description.as_deref(), Some("nginx on hardened Debian 12"));
    assert_eq!(
        definition.source.location,
        Location::Http(
            "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
                .into()
        )
    );
    assert_eq!(definition.source.location.file_name(), "debian-12-genericcloud-amd64.qcow2");
    let Checksum::Inline(digest) = &definition.source.checksum else {
        panic!("expected an inline checksum");
    };
    assert_eq!(digest.algo(), HashAlgo::Sha512);
    assert_eq!(digest.hex().len(), 128);

    let machine = &definition.machine;
    assert_eq!(machine.cpus, 2);
    assert_eq!(machine.memory, ByteSize(2 * ByteSize::GIB));
    assert_eq!(machine.disk_size, Some(ByteSize(8 * ByteSize::GIB)));
    assert_eq!(machine.firmware, Firmware::Bios);
    assert_eq!(machine.accel, AccelChoice::Auto);
    assert!(machine.extra_args.is_empty());

    assert_eq!(definition.communicator.kind, CommunicatorKind::Ssh);
    assert_eq!(definition.communicator.user, "debian");
    assert_eq!(definition.communicator.ready_timeout, Duration::from_secs(20 * 60));
    assert_eq!(definition.vars.get("app_port").map(String::as_str), Some("8080"));

    let names: Vec<&str> = definition.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["base", "app-base", "final"]);
    let parents: Vec<Option<&str>> =
        definition.stages.iter().map(|s| s.parent.as_ref().map(StageName::as_str)).collect();
    assert_eq!(parents, [None, Some("base"), Some("app-base")]);

    let base = &definition.stages[0];
    let seeds = design().join("seeds/base.yaml.j2");
    assert_eq!(base.user_data.as_deref(), Some(seeds.as_path()));
    assert_eq!(base.refresh, Some(Duration::from_secs(7 * 86_400)));
    assert!(base.network);
    assert_eq!(
        base.steps[0].action,
        StepAction::Run { script: design().join("scripts/harden.sh") }
    );
    assert_eq!(base.steps[0].timeout, Duration::from_secs(30 * 60));
    assert_eq!(base.steps[1].timeout, Duration::from_secs(15 * 60));
    assert!(
        matches!(&base.steps[1].action, StepAction::Shell { command } if command.starts_with("apt-get"))
    );

    let last = &definition.stages[2];
    assert_eq!(
        last.steps[0].action,
        StepAction::Upload { from: design().join("app/"), to: "/opt/app/".into() }
    );
    assert_eq!(last.steps[1].env.get("APP_PORT").map(String::as_str), Some("{{ vars.app_port }}"));
    assert_eq!(last.steps[2].action, StepAction::Reboot);
    assert_eq!(definition.chain_to("final").len(), 3);

    assert_eq!(definition.export.formats, [ExportFormat::Qcow2]);
    assert_eq!(definition.export.compression, Compression::Zstd);
    assert_eq!(definition.export.targets, [ExportTarget::Openstack, ExportTarget::Proxmox]);
}

#[test]
fn defaults_fill_a_minimal_definition() {
    let definition = ok(&with_head(ONE_STAGE));
    assert_eq!(definition.machine.cpus, 2);
    assert_eq!(definition.machine.memory, ByteSize(2 * ByteSize::GIB));
    assert_eq!(definition.machine.disk_size, None);
    assert_eq!(definition.machine.firmware, Firmware::Bios);
    assert_eq!(definition.communicator.user, "strata");
    assert_eq!(definition.communicator.kind, CommunicatorKind::Ssh);
    assert_eq!(definition.export.formats, [ExportFormat::Qcow2]);
    assert_eq!(definition.export.compression, Compression::Zstd);
    assert_eq!(definition.export.targets, [ExportTarget::Generic]);
    assert_eq!(definition.stages[0].parent, None);
    assert!(definition.stages[0].network);
}

#[test]
fn name_defaults_to_the_file_stem() {
    let text = format!(
        "[source]\nurl = \"https://example.org/x.qcow2\"\nchecksum = \"sha256:{SHA256}\"\n{ONE_STAGE}"
    );
    assert_eq!(ok(&text).name, "test");
}

#[test]
fn local_sources_resolve_against_the_definition_folder() {
    let text = format!(
        "[source]\nurl = \"../cache/base.qcow2\"\nchecksum_url = \"file:///srv/SHA256SUMS\"\n{ONE_STAGE}"
    );
    let definition = ok(&text);
    assert_eq!(definition.source.location, Location::File(design().join("cache/base.qcow2")));
    assert_eq!(
        definition.source.checksum,
        Checksum::File(Location::File(PathBuf::from("/srv/SHA256SUMS")))
    );
}

#[test]
fn explicit_parents_are_ordered_parents_first() {
    let text = with_head(
        "[[stage]]\nname = \"app\"\nparent = \"base\"\n\
         [[stage]]\nname = \"base\"\nparent = \"root\"\n\
         [[stage]]\nname = \"root\"\nparent = \"root2\"\n\
         [[stage]]\nname = \"root2\"\nparent = \"zero\"\n\
         [[stage]]\nname = \"zero\"\nparent = \"zero0\"\n\
         [[stage]]\nname = \"zero0\"\n",
    );
    // zero0 has the stage above (zero) as its parent by default: a cycle.
    let error = invalid(&text);
    assert!(matches!(error.problem(), Problem::ParentCycle { .. }), "{error}");

    let text = with_head(
        "[[stage]]\nname = \"base\"\n\
         [[stage]]\nname = \"app\"\nparent = \"web\"\n\
         [[stage]]\nname = \"web\"\nparent = \"base\"\n\
         [[stage]]\nname = \"db\"\nparent = \"base\"\n",
    );
    let definition = ok(&text);
    let names: Vec<&str> = definition.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["base", "web", "app", "db"]);
    assert_eq!(
        definition.stage("app").and_then(|s| s.parent.clone()).map(|p| p.to_string()),
        Some("web".into())
    );
    let chain: Vec<&str> = definition.chain_to("app").iter().map(|s| s.name.as_str()).collect();
    assert_eq!(chain, ["base", "web", "app"]);
}

#[test]
fn definition_error_display_leads_with_the_location() {
    let text = with_head("[[stage]]\nname = \"Bad\"\n");
    let error = load_str(&def_path(), &text).err().unwrap_or_else(|| panic!("no error"));
    let (line, column) = position(&text, "\"Bad\"", 0);
    let expected = format!("{}:{line}:{column}: bad stage name \"Bad\"", def_path().display());
    assert_eq!(error.to_string(), expected);
    assert_eq!(error.problems().count(), 1);
}

// Issue 16, item 2: "did you mean" against a 20,000-character [vars] key once needed ~3 GB.
#[test]
fn huge_var_names_get_no_suggestion_quickly() {
    let name = "v".repeat(20_000);
    let text = with_head(&format!(
        "[vars]\n{name} = \"1\"\n\n[[stage]]\nname = \"base\"\nsteps = [{{ shell = \"x\", env = \
         {{ A = \"{{{{ vars.{name}w }}}}\" }} }}]\n"
    ));
    let started = std::time::Instant::now();
    let error = invalid(&text);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(error.problem(), Problem::UnknownVar { suggestion: None, .. }), "{error}");
}

// Issue 16, item 3: what QEMU or the clock cannot do is refused at validate, with its place.
#[test]
fn durations_beyond_a_week_are_refused() {
    for (table, key, value) in [
        ("[communicator]", "ready_timeout", "18446744073709551615s"),
        ("[communicator]", "ready_timeout", "8d"),
    ] {
        let text = with_head(&format!("{table}\n{key} = \"{value}\"\n\n{ONE_STAGE}"));
        let error = invalid(&text);
        assert_at(&error, &text, "is above the maximum of 7d", &format!("\"{value}\""), 0);
    }
    let text = with_head(
        "[[stage]]\nname = \"base\"\nsteps = [{ shell = \"x\", timeout = \"99999999999999999h\" }]\n",
    );
    assert_at(&invalid(&text), &text, "`timeout`", "\"99999999999999999h\"", 0);
    let text = with_head(&ONE_STAGE.replace("steps", "refresh = \"36500d\"\nsteps"));
    assert_at(&invalid(&text), &text, "`refresh`", "\"36500d\"", 0);
    assert_eq!(
        ok(&with_head(&format!("[communicator]\nready_timeout = \"7d\"\n\n{ONE_STAGE}")))
            .communicator
            .ready_timeout,
        Duration::from_secs(7 * 86_400)
    );
}

#[test]
fn machine_sizes_beyond_qemu_are_refused() {
    for (line, message) in [
        ("memory = \"18446744073709551615\"", "above the maximum of 1T"),
        ("disk_size = \"16384T\"", "above the maximum of 64T"),
        ("cpus = 1000", "`cpus` must be from 1 to 255, not 1000"),
    ] {
        let text = with_head(&format!("[machine]\n{line}\n\n{ONE_STAGE}"));
        let value = line.split_once(" = ").map_or("", |(_, value)| value);
        assert_at(&invalid(&text), &text, message, value, 0);
    }
    let biggest = "[machine]\ncpus = 255\nmemory = \"1T\"\ndisk_size = \"64T\"\n\n";
    let machine = ok(&with_head(&format!("{biggest}{ONE_STAGE}"))).machine;
    assert_eq!((machine.cpus, machine.disk_size), (255, Some(ByteSize(64 * ByteSize::TIB))));
}

// ---- [drift] ----

#[test]
fn drift_defaults_and_a_definitions_own_roots_and_patterns() {
    let plain = ok(&with_head(ONE_STAGE));
    let roots: Vec<&str> = plain.drift.roots.as_slice().iter().map(String::as_str).collect();
    assert_eq!(roots, strata::drift::DEFAULT_ROOTS);
    assert!(plain.drift.ignore.is_ignored("/etc/machine-id"));
    let text = with_head(&format!(
        "[drift]\nroots = [\"/etc\", \"/home/app/\"]\nignore = [\"/etc/app/cache/*\"]\n\n{ONE_STAGE}"
    ));
    let own = ok(&text);
    assert_eq!(own.drift.roots.as_slice(), ["/etc", "/home/app"]);
    assert!(
        own.drift.ignore.is_ignored("/etc/app/cache/x")
            && own.drift.ignore.is_ignored("/etc/hostname")
    );
}

#[test]
fn drift_relative_root_points_at_it() {
    let text = with_head(&format!("[drift]\nroots = [\"/etc\", \"srv\"]\n\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert!(matches!(error.problem(), Problem::BadDrift { .. }), "{error}");
    assert_at(&error, &text, "[drift] roots: `srv`", "\"srv\"", 0);
}

#[test]
fn drift_unknown_key_names_the_table() {
    let text = with_head(&format!("[drift]\nroot = [\"/etc\"]\n\n{ONE_STAGE}"));
    let error = invalid(&text);
    assert_at(&error, &text, "unknown key `root` in [drift]", "root", 0);
}
