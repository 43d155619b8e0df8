//! Converts the default Cedar schema under `policies/` into Cedar's JSON
//! schema format, which every function compiles in and loads at init, and
//! strictly validates the default policies against it.
//!
//! Cedar's text parsers build their lexer's state machine again on every
//! parse: the schema took about 1.1 ms to parse from text in a warm process
//! and 2.5 ms in a new one (x86_64), against 0.25 ms and 1.3 ms from JSON.
//! The text files stay the source that security teams edit and review. A
//! syntax or validation error in them stops the build here, with the file
//! and line, so the functions do not validate the compiled-in policies again
//! at every cold start.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{PolicySet, Schema, SchemaFragment, ValidationMode, Validator};
use miette::Diagnostic;

#[path = "src/source_line.rs"]
mod source_line;

fn main() {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies_dir = manifest_dir.parent().unwrap_or(manifest_dir).join("policies");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));

    let schema_path = policies_dir.join("schema.cedarschema");
    let schema_text = read(&schema_path);
    let schema_json = match SchemaFragment::from_cedarschema_str(&schema_text) {
        Ok((fragment, _warnings)) => fragment.to_json_string().unwrap_or_else(|error| fail(&schema_path, &schema_text, &error)),
        Err(error) => fail(&schema_path, &schema_text, &error),
    };
    let schema = match Schema::from_json_str(&schema_json) {
        Ok(schema) => schema,
        Err(error) => fail(&schema_path, &schema_text, &error),
    };

    // The policies are compiled in as text, so they are only checked here.
    // Cedar's JSON policy format saved about 0.2 ms of a cold start but added
    // about 200 KB to each zipped bootstrap (x86_64), whose limit is 5 MB.
    // The validation is the same strict one a load from files makes, against
    // the JSON schema the functions load.
    let policies_path = policies_dir.join("policies.cedar");
    let policies_text = read(&policies_path);
    let policies = PolicySet::from_str(&policies_text).unwrap_or_else(|error| fail(&policies_path, &policies_text, &error));
    let validation = Validator::new(schema).validate(&policies, ValidationMode::Strict);
    if let Some(error) = validation.validation_errors().next() {
        fail(&policies_path, &policies_text, error);
    }

    write(&out_dir.join("schema.cedarschema.json"), &schema_json);
}

fn read(path: &Path) -> String {
    println!("cargo:rerun-if-changed={}", path.display());
    std::fs::read_to_string(path).unwrap_or_else(|error| {
        eprintln!("error: failed to read {}: {error}", path.display());
        std::process::exit(1)
    })
}

fn write(path: &Path, text: &str) {
    if let Err(error) = std::fs::write(path, text) {
        eprintln!("error: failed to write {}: {error}", path.display());
        std::process::exit(1)
    }
}

/// Stops the build with the file, the line Cedar points at, and its message.
fn fail<E: Diagnostic + std::fmt::Display + ?Sized>(path: &Path, text: &str, error: &E) -> ! {
    let line = source_line::line_of_diagnostic(text, error);
    eprintln!("error: {}:{line}: {}", path.display(), source_line::message_with_help(error));
    std::process::exit(1)
}
