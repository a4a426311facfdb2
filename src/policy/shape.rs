//! Which `input` document a policy is written against, and building that document from a
//! statement. The choice is made once, from the policy text, so it never depends on the data.

use serde::{Deserialize, Serialize};

/// The shape of `input` a policy sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InputShape {
    /// `input` is the in-toto statement itself: `input.predicate.buildDefinition...`.
    Statement,
    /// `input` is the array Harness SSCA's SLSA verification step passes to OPA:
    /// `input[0].outcome.stepArtifacts.provenanceArtifacts[0]` is the statement.
    Harness,
}

impl InputShape {
    /// `Harness` when the policy indexes `input` like an array (see [`indexes_input`]).
    pub fn detect(source: &str) -> Self {
        if indexes_input(source) {
            Self::Harness
        } else {
            Self::Statement
        }
    }

    /// The `input` document for `statement` in this shape.
    pub fn input_for(self, statement: &serde_json::Value) -> serde_json::Value {
        match self {
            Self::Statement => statement.clone(),
            Self::Harness => serde_json::json!([{
                "outcome": { "stepArtifacts": { "provenanceArtifacts": [statement] } }
            }]),
        }
    }
}

/// True when, outside comments and string literals, the identifier `input` is directly followed
/// by `[` whose subscript is not a string literal (`input[0]`, `input[_]`, `input[i]`).
/// `input["predicate"]` and `data.x.input[0]` do not count.
pub fn indexes_input(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut i = 0;
    // The last significant byte outside comments and strings, to tell `x.input` from `input`.
    let mut previous: u8 = b'\n';
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                previous = b'"';
                continue;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
                previous = b'`';
                continue;
            }
            _ if is_ident_start(b) => {
                let start = i;
                while i < bytes.len() && is_ident_continue(bytes[i]) {
                    i += 1;
                }
                if &bytes[start..i] == b"input"
                    && previous != b'.'
                    && subscript_is_not_string(&bytes[i..])
                {
                    return true;
                }
                previous = bytes[i - 1];
                continue;
            }
            _ => {
                if !b.is_ascii_whitespace() {
                    previous = b;
                }
                i += 1;
            }
        }
    }
    false
}

/// `rest` starts right after `input`: `[` (spaces allowed before and inside) opening a subscript
/// that is not a string literal. A newline ends the term in Rego, so it is not skipped.
fn subscript_is_not_string(rest: &[u8]) -> bool {
    let mut it = rest
        .iter()
        .copied()
        .skip_while(|b| matches!(b, b' ' | b'\t'));
    if it.next() != Some(b'[') {
        return false;
    }
    !matches!(
        it.find(|b| !b.is_ascii_whitespace()),
        Some(b'"' | b'`') | None
    )
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_subscripts_on_input_select_the_harness_shape() {
        for src in [
            "x if input[0].outcome",
            "x if input [ _ ].outcome",
            "some i\nx if input[i].outcome",
            "deny[msg] {\n  input[0].outcome.stepArtifacts != 1\n}",
        ] {
            assert_eq!(InputShape::detect(src), InputShape::Harness, "{src}");
        }
    }

    #[test]
    fn comments_strings_field_access_and_string_keys_keep_the_statement_shape() {
        for src in [
            "# input[0] is the Harness shape\nx if input.predicate",
            "msg := \"input[0] is not used\"",
            "msg := `input[0]`",
            "x if input[\"predicate\"].buildDefinition",
            "x if data.lib.input[0]",
            "x if my_input[0]",
            "x if input\n[0]",
        ] {
            assert_eq!(InputShape::detect(src), InputShape::Statement, "{src}");
        }
    }

    #[test]
    fn harness_input_wraps_the_whole_statement() {
        let statement = serde_json::json!({
            "_type": "t", "subject": [{"name": "n"}], "predicateType": "p", "predicate": {"a": 1}
        });
        let input = InputShape::Harness.input_for(&statement);
        let artifact = &input[0]["outcome"]["stepArtifacts"]["provenanceArtifacts"][0];
        assert_eq!(artifact, &statement);
        assert_eq!(InputShape::Statement.input_for(&statement), statement);
    }
}
