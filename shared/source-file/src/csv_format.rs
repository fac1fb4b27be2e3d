//! The CSV format: `users.csv` and optionally `groups.csv` (docs/design.md#file-source-format).
//!
//! Cells are text (CSV has no types: an employee number `00123` stays `"00123"`). A cell holding
//! `;` is a list, split on `;` with each item trimmed and empty items dropped; an empty cell is an
//! absent attribute. Standard CSV quoting applies, so a DN such as `"cn=Ann,ou=People,dc=x"`
//! keeps its commas.
//!
//! The cell delimiter (`,` by default, `;` or a tab as Excel writes them in some locales) and the
//! encoding (UTF-8 with or without a byte-order mark, or Windows-1252) are settings of the
//! source; whatever the encoding, the text is read as UTF-8 once decoded.

use std::borrow::Cow;
use std::collections::HashSet;

use csv::{ErrorKind, ReaderBuilder, StringRecord};
use m365_core::config::file_source::CsvEncoding;
use m365_core::{AttrValue, Attributes, SourceError, SourceGroup, SourceUser};

use crate::FileSourceConfig;
use crate::parsed::{Raw, RawError};

/// The header, checked: unique, non-empty names.
fn header(
    name: &str,
    file: &str,
    reader: &mut csv::Reader<&[u8]>,
) -> Result<StringRecord, SourceError> {
    let headers = reader
        .headers()
        .map_err(|e| SourceError::Unreadable(format!("{name} ({file}): header row: {e}")))?
        .clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err(SourceError::Unreadable(format!(
            "{name} ({file}): empty file (no header row)"
        )));
    }
    let mut seen = HashSet::new();
    for (i, column) in headers.iter().enumerate() {
        if column.trim().is_empty() {
            return Err(SourceError::Unreadable(format!(
                "{name} ({file}): column {} of the header has no name",
                i + 1
            )));
        }
        if !seen.insert(column) {
            return Err(SourceError::Unreadable(format!(
                "{name} ({file}): column \"{column}\" appears twice in the header"
            )));
        }
    }
    Ok(headers)
}

fn column(
    headers: &StringRecord,
    wanted: &str,
    key: &str,
    name: &str,
    file: &str,
) -> Result<usize, SourceError> {
    headers.iter().position(|h| h == wanted).ok_or_else(|| {
        // One column whose name holds another likely delimiter: the file is split on another one.
        let hint = match headers.iter().collect::<Vec<_>>().as_slice() {
            [only] if only.contains(';') => "; the header is one column: set `delimiter = \";\"`",
            [only] if only.contains('\t') => {
                "; the header is one column: set `delimiter = \"\\t\"`"
            }
            _ => "",
        };
        SourceError::Unreadable(format!(
            "{name} ({file}): no \"{wanted}\" column in the header (columns: {}){key}{hint}",
            headers.iter().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Each record of the file after the header, or the per-record error of a row that cannot be
/// split into the header's columns. A failure to read at all is the whole file's error.
fn rows(
    name: &str,
    file: &str,
    reader: &mut csv::Reader<&[u8]>,
) -> Result<Vec<Raw<StringRecord>>, SourceError> {
    let mut rows = Vec::new();
    for result in reader.records() {
        match result {
            Ok(record) => {
                let line = record.position().map_or(0, csv::Position::line);
                rows.push(Raw {
                    location: format!("{name} line {line}"),
                    outcome: Ok(record),
                });
            }
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                let message = match e.kind() {
                    // The columns may be shifted: the id cell cannot be trusted, so no source id.
                    ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("expected {expected_len} fields like the header, found {len}"),
                    ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
                    _ => {
                        return Err(SourceError::Unreadable(format!(
                            "{name} ({file}) line {line}: {e}"
                        )));
                    }
                };
                rows.push(Raw {
                    location: format!("{name} line {line}"),
                    outcome: Err(RawError::new(None, message)),
                });
            }
        }
    }
    Ok(rows)
}

/// The file's bytes as UTF-8: a UTF-8 byte-order mark dropped, Windows-1252 decoded (every byte
/// has a character there, so decoding cannot fail).
fn decoded(bytes: &[u8], encoding: CsvEncoding) -> Cow<'_, [u8]> {
    match encoding {
        CsvEncoding::Utf8 => Cow::Borrowed(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)),
        CsvEncoding::Windows1252 => {
            match encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
            {
                Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
                Cow::Owned(text) => Cow::Owned(text.into_bytes()),
            }
        }
    }
}

fn reader<'a>(bytes: &'a [u8], config: &FileSourceConfig) -> csv::Reader<&'a [u8]> {
    // `FileSourceConfig::validate` keeps the delimiter ASCII.
    let delimiter = u8::try_from(config.delimiter).unwrap_or(b',');
    ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .delimiter(delimiter)
        .from_reader(bytes)
}

/// A cell as an attribute value: absent when empty, a list when it holds `;`.
fn cell_value(cell: &str) -> Option<AttrValue> {
    if cell.is_empty() {
        None
    } else if cell.contains(';') {
        Some(AttrValue::List(split_list(cell)))
    } else {
        Some(AttrValue::Text(cell.to_owned()))
    }
}

fn split_list(cell: &str) -> Vec<String> {
    cell.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn id_cell(record: &StringRecord, index: usize, column: &str) -> Result<String, RawError> {
    match record.get(index) {
        Some(id) if !id.trim().is_empty() => Ok(id.to_owned()),
        _ => Err(RawError::new(
            None,
            format!("empty id (column \"{column}\")"),
        )),
    }
}

pub(crate) fn parse_users(
    file: &str,
    bytes: &[u8],
    config: &FileSourceConfig,
) -> Result<Vec<Raw<SourceUser>>, SourceError> {
    const NAME: &str = "users.csv";
    let text = decoded(bytes, config.encoding);
    let mut reader = reader(&text, config);
    let headers = header(NAME, file, &mut reader)?;
    let id_index = column(
        &headers,
        &config.id_column,
        "; set `id_column` to the id column's name",
        NAME,
        file,
    )?;
    // Without the enabled column every user would have to be guessed enabled or disabled.
    let enabled_index = column(
        &headers,
        &config.enabled_column,
        "; set `enabled_column` to the enabled column's name",
        NAME,
        file,
    )?;
    let rows = rows(NAME, file, &mut reader)?;
    Ok(rows
        .into_iter()
        .map(|Raw { location, outcome }| {
            let outcome = outcome.and_then(|record| {
                let id = id_cell(&record, id_index, &config.id_column)?;
                let enabled = match record.get(enabled_index) {
                    Some(raw) if !raw.trim().is_empty() => config
                        .parse_enabled(raw)
                        .map_err(|m| RawError::new(Some(&id), m))?,
                    _ => {
                        return Err(RawError::new(
                            Some(&id),
                            format!("empty enabled value (column \"{}\")", config.enabled_column),
                        ));
                    }
                };
                let mut attributes = Attributes::new();
                for (i, (column, cell)) in headers.iter().zip(record.iter()).enumerate() {
                    if i == id_index || i == enabled_index {
                        continue;
                    }
                    if let Some(value) = cell_value(cell) {
                        attributes.insert(column.to_owned(), value);
                    }
                }
                Ok(SourceUser {
                    id,
                    enabled,
                    attributes,
                })
            });
            Raw { location, outcome }
        })
        .collect())
}

pub(crate) fn parse_groups(
    file: &str,
    bytes: &[u8],
    config: &FileSourceConfig,
) -> Result<Vec<Raw<SourceGroup>>, SourceError> {
    const NAME: &str = "groups.csv";
    let text = decoded(bytes, config.encoding);
    let mut reader = reader(&text, config);
    let headers = header(NAME, file, &mut reader)?;
    let id_index = column(&headers, "id", "", NAME, file)?;
    let name_index = column(&headers, "name", "", NAME, file)?;
    let members_index = column(&headers, "members", "", NAME, file)?;
    let rows = rows(NAME, file, &mut reader)?;
    Ok(rows
        .into_iter()
        .map(|Raw { location, outcome }| {
            let outcome = outcome.and_then(|record| {
                let id = id_cell(&record, id_index, "id")?;
                let name = match record.get(name_index) {
                    Some(n) if !n.trim().is_empty() => n.to_owned(),
                    _ => return Err(RawError::new(Some(&id), "empty name")),
                };
                let members = split_list(record.get(members_index).unwrap_or_default());
                let mut attributes = Attributes::new();
                for (i, (column, cell)) in headers.iter().zip(record.iter()).enumerate() {
                    if i == id_index || i == name_index || i == members_index {
                        continue;
                    }
                    if let Some(value) = cell_value(cell) {
                        attributes.insert(column.to_owned(), value);
                    }
                }
                Ok(SourceGroup {
                    id,
                    name,
                    members,
                    attributes,
                })
            });
            Raw { location, outcome }
        })
        .collect())
}
