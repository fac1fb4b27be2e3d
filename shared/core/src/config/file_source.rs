//! `[source] type = "file"`: the file source's settings (the adapter is `m365-source-file`).

use serde::{Deserialize, Serialize};

/// Which parser reads the location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// A location ending in `.json` (any case) is JSON; anything else is a CSV directory/prefix.
    #[default]
    Auto,
    Json,
    Csv,
}

/// How a CSV file's bytes are text (`encoding = "…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CsvEncoding {
    /// UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one).
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// Windows-1252, what Excel's plain "CSV" writes on Western-European Windows; ISO-8859-1
    /// files read the same (https://encoding.spec.whatwg.org/#names-and-labels).
    #[serde(
        rename = "windows-1252",
        alias = "cp1252",
        alias = "iso-8859-1",
        alias = "latin1"
    )]
    Windows1252,
}

/// Settings of the file source. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// A `.json` file, or a directory / prefix holding `users.csv` and optionally `groups.csv`.
    /// Local path, or `s3://bucket/key` with a loader that reads S3.
    pub location: String,
    #[serde(default)]
    pub format: FileFormat,
    /// CSV only: the column holding the immutable source id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// CSV only: the column holding the enabled flag.
    #[serde(default = "default_enabled_column")]
    pub enabled_column: String,
    /// Values (compared case-insensitively, after trimming) that mean "enabled", in CSV cells and
    /// in JSON `enabled` strings.
    #[serde(default = "default_enabled_values")]
    pub enabled_values: Vec<String>,
    /// Values that mean "disabled". A value in neither list is a per-record error: guessing either
    /// way could lock someone out or let someone in.
    #[serde(default = "default_disabled_values")]
    pub disabled_values: Vec<String>,
    /// Whether the source has groups. `true` (the default): a JSON file without a `groups`
    /// list, or a CSV location without `groups.csv`, is an incomplete group snapshot: the first
    /// page carries a record error without an id, and no group or membership is deprovisioned
    /// on its strength (users still are). `false`: the source has no groups, which is a
    /// complete answer; a `groups` list or a `groups.csv` then contradicts the setting and the
    /// file is unreadable.
    #[serde(default = "default_groups")]
    pub groups: bool,
    /// CSV only: the character between cells. `,` by default; Excel writes `;` where the
    /// decimal separator is a comma, and "Unicode text" exports use a tab (`"\t"`).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// CSV only: the files' character encoding, `utf-8` (the default) or `windows-1252`.
    #[serde(default)]
    pub encoding: CsvEncoding,
}

fn default_delimiter() -> char {
    ','
}

fn default_groups() -> bool {
    true
}

fn default_id_column() -> String {
    "id".to_owned()
}

fn default_enabled_column() -> String {
    "enabled".to_owned()
}

fn default_enabled_values() -> Vec<String> {
    ["true", "1", "yes", "enabled"].map(str::to_owned).to_vec()
}

fn default_disabled_values() -> Vec<String> {
    ["false", "0", "no", "disabled"].map(str::to_owned).to_vec()
}

/// A setting of [`FileSourceConfig`] that cannot work. Each message names the key and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileSourceConfigError {
    #[error(
        "file source: `location` is empty; set it to a .json file or a directory holding users.csv"
    )]
    EmptyLocation,
    #[error("file source: `{0}` is empty; name a CSV column")]
    EmptyColumn(&'static str),
    #[error(
        "file source: `id_column` and `enabled_column` are both \"{0}\"; they must name different columns"
    )]
    SameColumn(String),
    #[error("file source: `{0}` is empty; list at least one value")]
    EmptyValues(&'static str),
    #[error(
        "file source: \"{0}\" is in both `enabled_values` and `disabled_values`; remove it from one"
    )]
    AmbiguousValue(String),
    #[error(
        "file source: `delimiter` is {0:?}; use one ASCII character other than a quote or a line break, such as \",\", \";\" or \"\\t\""
    )]
    InvalidDelimiter(char),
}

impl FileSourceConfig {
    /// A config with every default and this location.
    pub fn new(location: impl Into<String>) -> Self {
        FileSourceConfig {
            location: location.into(),
            format: FileFormat::Auto,
            id_column: default_id_column(),
            enabled_column: default_enabled_column(),
            enabled_values: default_enabled_values(),
            disabled_values: default_disabled_values(),
            groups: default_groups(),
            delimiter: default_delimiter(),
            encoding: CsvEncoding::Utf8,
        }
    }

    /// Checks the settings; the file source refuses to start without this passing.
    pub fn validate(&self) -> Result<(), FileSourceConfigError> {
        if self.location.trim().is_empty() {
            return Err(FileSourceConfigError::EmptyLocation);
        }
        if self.id_column.is_empty() {
            return Err(FileSourceConfigError::EmptyColumn("id_column"));
        }
        if self.enabled_column.is_empty() {
            return Err(FileSourceConfigError::EmptyColumn("enabled_column"));
        }
        if self.id_column == self.enabled_column {
            return Err(FileSourceConfigError::SameColumn(self.id_column.clone()));
        }
        if self.enabled_values.iter().all(|v| v.trim().is_empty()) {
            return Err(FileSourceConfigError::EmptyValues("enabled_values"));
        }
        if self.disabled_values.iter().all(|v| v.trim().is_empty()) {
            return Err(FileSourceConfigError::EmptyValues("disabled_values"));
        }
        if !self.delimiter.is_ascii() || matches!(self.delimiter, '"' | '\r' | '\n') {
            return Err(FileSourceConfigError::InvalidDelimiter(self.delimiter));
        }
        for value in &self.enabled_values {
            if self
                .disabled_values
                .iter()
                .any(|d| d.trim().eq_ignore_ascii_case(value.trim()))
            {
                return Err(FileSourceConfigError::AmbiguousValue(value.clone()));
            }
        }
        Ok(())
    }

    /// The format this location is read as.
    pub fn resolved_format(&self) -> FileFormat {
        match self.format {
            FileFormat::Auto if self.location.to_ascii_lowercase().ends_with(".json") => {
                FileFormat::Json
            }
            FileFormat::Auto => FileFormat::Csv,
            other => other,
        }
    }

    /// Reads an enabled flag written as text.
    pub fn parse_enabled(&self, raw: &str) -> Result<bool, String> {
        let value = raw.trim();
        let matches = |list: &[String]| list.iter().any(|v| v.trim().eq_ignore_ascii_case(value));
        if matches(&self.enabled_values) {
            Ok(true)
        } else if matches(&self.disabled_values) {
            Ok(false)
        } else {
            Err(format!(
                "enabled value \"{raw}\" is neither true ({}) nor false ({})",
                self.enabled_values.join(", "),
                self.disabled_values.join(", ")
            ))
        }
    }
}
