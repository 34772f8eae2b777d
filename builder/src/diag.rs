//! Diagnostics for bad input: every problem names the file, line, column and
//! field path, and says what was expected. A `BadInput` error makes the CLI exit 2.

use std::fmt;
use std::path::PathBuf;

/// One problem found in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted field path, e.g. `guests.minio.roles.object_store.buckets[1]`.
    pub field: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

/// The input given to imgbuild is wrong; the user must fix it. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub struct BadInput(pub Vec<Diagnostic>);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the input",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl BadInput {
    /// A single diagnostic without a position inside a file (e.g. a missing file).
    pub fn whole_file(file: impl Into<PathBuf>, field: &str, message: impl Into<String>) -> Self {
        BadInput(vec![Diagnostic {
            file: file.into(),
            line: 1,
            column: 1,
            field: field.to_string(),
            message: message.into(),
        }])
    }
}
