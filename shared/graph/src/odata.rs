//! OData query building: literal escaping, percent-encoding, filters, chunking
//! (docs/graph-behaviour.md#queries-and-filters).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as-is in a query value: RFC 3986 unreserved plus `'` (harmless in Graph
/// filters) and `,()` (sub-delimiters). Everything else — `#`, `&`, `+`, space, `=`, `$`, `/`, non-ASCII — is encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'\'')
    .remove(b',')
    .remove(b'(')
    .remove(b')');

/// Characters left as-is in a path segment: unreserved plus `@` (UPNs address users directly).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@')
    .remove(b'\'');

/// Most values in one `in (...)` clause (docs/graph-behaviour.md#queries-and-filters).
pub const MAX_IN_VALUES: usize = 15;
/// Most requests in one `$batch` and references in one `members@odata.bind`
/// (docs/graph-behaviour.md#group-membership, #json-batching).
pub const MAX_BATCH: usize = 20;
pub const MAX_BIND: usize = 20;
/// Longest value Graph matches with `eq` (without advanced query).
pub const MAX_EQ_VALUE_CHARS: usize = 120;

/// An OData string literal: single quotes doubled and the whole thing quoted (`'O''Brien'`).
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes a query parameter value (after OData escaping).
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// Percent-encodes one path segment (an id or UPN; `#EXT#` becomes `%23EXT%23`).
pub fn encode_path_segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// `attr eq 'value'` with the value escaped.
pub fn filter_eq(attribute: &str, value: &str) -> String {
    format!("{attribute} eq {}", quote(value))
}

/// `attr in ('a','b')` with each value escaped. Callers chunk to ≤ 15 values.
pub fn filter_in<S: AsRef<str>>(attribute: &str, values: &[S]) -> String {
    let list: Vec<String> = values.iter().map(|v| quote(v.as_ref())).collect();
    format!("{attribute} in ({})", list.join(","))
}

/// Validates an attribute name used in a filter (it is not quoted, so it must be a plain
/// property path such as `userPrincipalName` or `onPremisesExtensionAttributes/extensionAttribute1`).
pub fn is_valid_attribute(attribute: &str) -> bool {
    !attribute.is_empty()
        && attribute.len() <= 128
        && attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '/')
        && !attribute.starts_with('/')
        && !attribute.ends_with('/')
}

/// Builder for a query string: keys kept as given (`$filter`), values percent-encoded.
#[derive(Debug, Default, Clone)]
pub struct Query {
    parts: Vec<(String, String)>,
}

impl Query {
    pub fn new() -> Self {
        Query::default()
    }

    pub fn push(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.parts
            .push((key.to_string(), encode_query_value(value.as_ref())));
        self
    }

    pub fn select<S: AsRef<str>>(self, fields: &[S]) -> Self {
        if fields.is_empty() {
            return self;
        }
        let joined: Vec<&str> = fields.iter().map(|f| f.as_ref()).collect();
        self.push("$select", joined.join(","))
    }

    pub fn filter(self, filter: impl AsRef<str>) -> Self {
        self.push("$filter", filter)
    }

    pub fn top(self, n: u32) -> Self {
        self.push("$top", n.to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// `?a=b&c=d`, or an empty string.
    pub fn to_query_string(&self) -> String {
        if self.parts.is_empty() {
            return String::new();
        }
        let joined: Vec<String> = self.parts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("?{}", joined.join("&"))
    }
}

/// Splits `items` into chunks of at most `size` (size 0 is treated as 1).
pub fn chunks<T: Clone>(items: &[T], size: usize) -> Vec<Vec<T>> {
    items.chunks(size.max(1)).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote("O'Brien"), "'O''Brien'");
        assert_eq!(quote("''"), "''''''");
        assert_eq!(filter_eq("surname", "O'Brien"), "surname eq 'O''Brien'");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let f = filter_eq("userPrincipalName", "jo#EXT#&x+y z@contoso.com");
        assert_eq!(
            encode_query_value(&f),
            "userPrincipalName%20eq%20'jo%23EXT%23%26x%2By%20z%40contoso.com'"
        );
        assert_eq!(encode_query_value("Zoë"), "Zo%C3%AB");
        let q = Query::new()
            .filter(filter_eq("displayName", "R&D"))
            .select(&["id", "displayName"])
            .top(999);
        assert_eq!(
            q.to_query_string(),
            "?$filter=displayName%20eq%20'R%26D'&$select=id,displayName&$top=999"
        );
    }

    #[test]
    fn path_segments_keep_at_but_encode_hash() {
        assert_eq!(
            encode_path_segment("ann_x.com#EXT#@contoso.onmicrosoft.com"),
            "ann_x.com%23EXT%23@contoso.onmicrosoft.com"
        );
        assert_eq!(encode_path_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn in_filter_and_chunking() {
        assert_eq!(
            filter_in("userPrincipalName", &["a@x.com", "o'b@x.com"]),
            "userPrincipalName in ('a@x.com','o''b@x.com')"
        );
        let values: Vec<u32> = (0..31).collect();
        let c = chunks(&values, MAX_IN_VALUES);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![15, 15, 1]);
        let c = chunks(&values[..20], MAX_BIND);
        assert_eq!(c.len(), 1);
        assert!(chunks::<u32>(&[], 20).is_empty());
    }

    #[test]
    fn attribute_names_are_checked() {
        assert!(is_valid_attribute("userPrincipalName"));
        assert!(is_valid_attribute(
            "onPremisesExtensionAttributes/extensionAttribute1"
        ));
        assert!(!is_valid_attribute("mail eq 'x' or 1"));
        assert!(!is_valid_attribute(""));
    }
}
