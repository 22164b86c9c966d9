//! Environment overrides of a TOML configuration, as both servers take
//! them: `<PREFIX>SECTION__KEY=value` sets `section.key` before the
//! configuration is checked, so that a deployment can change one key
//! without editing the file.

/// A variable that cannot be applied: the programs report it as a
/// configuration error of theirs, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct EnvOverrideError {
    /// The whole variable name.
    pub key: String,
    /// What is wrong and how to write it.
    pub reason: String,
}

/// Sets `path` (the variable's name after its prefix, `SECTION__KEY`,
/// case-insensitive) in `table` to `value`, read as a TOML value when it
/// parses as one (numbers, booleans, arrays) and as a string otherwise.
/// `name` is the whole variable name, for the error; `example` a whole
/// variable name of the same program that shows how to write one.
///
/// # Errors
///
/// [`EnvOverrideError`] naming the variable when the path has an empty part
/// (`A____B`, a trailing `__`) or goes through a key that is not a section.
pub fn apply_env_override(
    table: &mut toml::Table,
    name: &str,
    path: &str,
    value: &str,
    example: &str,
) -> Result<(), EnvOverrideError> {
    let problem = |reason: String| EnvOverrideError {
        key: name.to_owned(),
        reason,
    };
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) {
        return Err(problem(format!(
            "write the key path with double underscores, e.g. {example}"
        )));
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| problem("name a key after the prefix".to_owned()))?;
    let mut at = table;
    for k in parents {
        let entry = at
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| problem(format!("`{k}` is not a section")))?;
    }
    at.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "LP_PUBLIC__LISTEN";

    fn apply(table: &mut toml::Table, path: &str, value: &str) -> Result<(), EnvOverrideError> {
        apply_env_override(table, &format!("LP_{path}"), path, value, EXAMPLE)
    }

    #[test]
    fn values_are_toml_when_they_parse_and_text_otherwise() {
        let mut table: toml::Table = "[public]\nlisten = \"0.0.0.0:443\"\n".parse().unwrap();
        apply(&mut table, "PUBLIC__LISTEN", "127.0.0.1:8443").unwrap();
        apply(&mut table, "Limits__Max_Body_Bytes", "4096").unwrap();
        apply(&mut table, "TLS__ENABLED", "false").unwrap();
        apply(&mut table, "PUBLIC__PATHS", "[\"/a/*\", \"/b\"]").unwrap();
        apply(&mut table, "NODE_ID", "dmz-1").unwrap();
        let expected: toml::Table = "node_id = \"dmz-1\"\n\
             [public]\nlisten = \"127.0.0.1:8443\"\npaths = [\"/a/*\", \"/b\"]\n\
             [limits]\nmax_body_bytes = 4096\n[tls]\nenabled = false\n"
            .parse()
            .unwrap();
        assert_eq!(table, expected);
    }

    #[test]
    fn a_bad_path_is_an_error_that_names_the_variable_and_changes_nothing() {
        let mut table: toml::Table = "node_id = \"n\"\n".parse().unwrap();
        let before = table.clone();
        for (path, says) in [
            ("PUBLIC____LISTEN", EXAMPLE),
            ("PUBLIC__", EXAMPLE),
            ("NODE_ID__X", "`node_id` is not a section"),
        ] {
            let Err(EnvOverrideError { key, reason }) = apply(&mut table, path, "1") else {
                panic!("{path} was accepted");
            };
            assert_eq!(key, format!("LP_{path}"));
            assert!(reason.contains(says), "{path}: {reason}");
        }
        assert_eq!(table, before);
    }
}
