//! Source lines of Cedar diagnostics, for the crate and for its build
//! script, which converts the default schema and checks the policies.

use miette::Diagnostic;

/// Returns the line number (1-based) of the first source label of `error`
/// in `text`, looking into related diagnostics too, or 1 without a label.
pub fn line_of_diagnostic<E: Diagnostic + ?Sized>(text: &str, error: &E) -> usize {
    line_of(text, first_label_offset(error).unwrap_or(0))
}

/// Returns the line number (1-based) of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// Returns Cedar's message, followed by its help when it has one.
pub fn message_with_help<E: Diagnostic + std::fmt::Display + ?Sized>(error: &E) -> String {
    match error.help() {
        Some(help) => format!("{error}; {help}"),
        None => error.to_string(),
    }
}

fn first_label_offset<E: Diagnostic + ?Sized>(error: &E) -> Option<usize> {
    if let Some(offset) = error.labels().and_then(|mut labels| labels.next()).map(|label| label.offset()) {
        return Some(offset);
    }
    error.related().and_then(|mut related| related.find_map(first_label_offset))
}
