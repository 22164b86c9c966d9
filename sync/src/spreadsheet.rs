//! Cells of the CSV files that people open in spreadsheets: the back
//! office's lines export, the batch reports' tables and `verdicts --format
//! csv`.
//!
//! Much of what these files hold came from subscribers' devices over the
//! internet (accounts, installation ids, declared cities, agent versions).
//! A cell that starts like a formula — `=`, `+`, `-`, `@`, or a tab or
//! carriage return that a spreadsheet skips before one — is run as a formula
//! when the compliance team opens the file in a spreadsheet (CSV injection), so
//! every text cell goes through [`text`]. Numbers the program wrote
//! itself are left alone: a negative change must stay a number.

/// `text` as a CSV cell a spreadsheet shows as typed and never runs: with a
/// leading apostrophe when it starts like a formula (spreadsheets hide the
/// apostrophe and keep the rest as text).
pub(crate) fn text(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_starts_like_a_formula_is_defused() {
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+86",
            "-1+cmd|' /C calc'!A0",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(text(formula), format!("'{formula}"));
        }
        for plain in ["account:0755", "深圳", "0.1.0", "", "a=b", "install-1"] {
            assert_eq!(text(plain), plain);
        }
    }
}
