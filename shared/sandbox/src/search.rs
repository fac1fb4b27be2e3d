//! `$search` on users and groups (docs/graph-behaviour.md#advanced-queries), as
//! <https://learn.microsoft.com/graph/search-query-parameter> describes it for directory objects:
//!
//! * clauses `"property:text"`, each inside double quotes (`\"` and `\\` escape inside), joined by
//!   upper-case `AND`/`OR` outside the quotes (or side by side, which is `AND`), with parentheses;
//! * `displayName` and `description` match by token: both texts are split into words (spaces,
//!   a change from lower to upper case, letters next to digits, and each symbol on its own, plus
//!   the words of a symbol-joined run glued together), and every word of the search text must
//!   start some word of the property, in any order and any case;
//! * the other properties `startsWith` works on match when the property starts with the text.
//!
//! The search text is parsed by Graph's OData layer first: a character other than a letter
//! outside double quotes fails as that layer's lexer does ("Syntax error: character ':' is not
//! valid at position 11 in 'displayName:foo'.", code `BadRequest`, the message Graph sends for an
//! unquoted `$search` on messages).

use http::StatusCode;
use serde_json::{Map, Value};

use crate::filter;
use crate::wire::GraphError;

/// How a clause compares its text with the property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Matching {
    /// Word by word (`displayName`, `description`).
    Tokens,
    /// The property starts with the text.
    Prefix,
}

/// A parsed and checked `$search`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Search {
    Clause {
        property: &'static str,
        matching: Matching,
        text: String,
    },
    And(Box<Search>, Box<Search>),
    Or(Box<Search>, Box<Search>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A double-quoted clause, unescaped.
    Quoted(String),
    And,
    Or,
    LParen,
    RParen,
}

fn odata_error(message: String) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn expression_expected(pos: usize, text: &str) -> GraphError {
    odata_error(format!(
        "Expression expected at position {pos} in '{text}'."
    ))
}

/// A clause that is not `property:text`. Graph's text for it is not documented; the sandbox
/// answers with the code the directory uses for queries it cannot serve.
fn not_a_clause(clause: &str) -> GraphError {
    GraphError::unsupported_query(format!(
        "Invalid $search clause '{clause}': each clause must be \"property:text\" inside double quotes."
    ))
}

/// Splits the `$search` value into quoted clauses, operators and parentheses, with the position
/// of each (in characters).
fn lex(text: &str) -> Result<Vec<(usize, Tok)>, GraphError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' => {
                out.push((i, if c == '(' { Tok::LParen } else { Tok::RParen }));
                i += 1;
            }
            '"' => {
                let start = i;
                let mut clause = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(odata_error(format!(
                                "There is an unterminated string literal at position {} in '{text}'.",
                                chars.len()
                            )));
                        }
                        Some('\\') => {
                            clause.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            clause.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Quoted(clause)));
            }
            _ => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|&ch| !ch.is_whitespace() && !"()\"".contains(ch))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // The OData search lexer takes only letters in an unquoted word.
                if let Some(bad) = word.chars().position(|ch| !ch.is_alphabetic()) {
                    let ch = chars[start + bad];
                    return Err(odata_error(format!(
                        "Syntax error: character '{ch}' is not valid at position {} in '{text}'.",
                        start + bad
                    )));
                }
                match word.as_str() {
                    "AND" => out.push((start, Tok::And)),
                    "OR" => out.push((start, Tok::Or)),
                    _ => return Err(not_a_clause(&word)),
                }
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    text: &'a str,
    entity: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn here(&self) -> usize {
        self.toks
            .get(self.pos)
            .map_or(self.text.chars().count(), |(p, _)| *p)
    }

    fn or_expr(&mut self) -> Result<Search, GraphError> {
        let mut left = self.and_expr()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Search::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Search, GraphError> {
        let mut left = self.primary()?;
        loop {
            match self.peek() {
                Some(Tok::And) => self.pos += 1,
                // Clauses side by side are joined by AND, as in OData's search syntax.
                Some(Tok::Quoted(_) | Tok::LParen) => {}
                _ => return Ok(left),
            }
            let right = self.primary()?;
            left = Search::And(Box::new(left), Box::new(right));
        }
    }

    fn primary(&mut self) -> Result<Search, GraphError> {
        let here = self.here();
        match self.toks.get(self.pos).map(|(_, t)| t.clone()) {
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.or_expr()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(odata_error(format!(
                        "')' or operator expected at position {} in '{}'.",
                        self.here(),
                        self.text
                    )));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Tok::Quoted(clause)) => {
                self.pos += 1;
                clause_of(self.entity, &clause)
            }
            _ => Err(expression_expected(here, self.text)),
        }
    }
}

/// A quoted clause checked against what `entity` lets `$search` use.
fn clause_of(entity: &str, clause: &str) -> Result<Search, GraphError> {
    let Some((name, text)) = clause.split_once(':') else {
        return Err(not_a_clause(clause));
    };
    let name = name.trim();
    let tokenized = ["displayName", "description"]
        .into_iter()
        .filter(|p| crate::schema::has_property(entity, p))
        .find(|p| p.eq_ignore_ascii_case(name));
    let (property, matching) = match tokenized {
        Some(p) => (p, Matching::Tokens),
        None => match filter::starts_with_properties(entity)
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
        {
            Some(p) => (*p, Matching::Prefix),
            None if crate::schema::has_property(entity, name) => {
                return Err(filter::unsupported_property(entity, name));
            }
            None => return Err(filter::unknown_property(name)),
        },
    };
    Ok(Search::Clause {
        property,
        matching,
        text: text.to_owned(),
    })
}

/// Parses and checks a `$search` value for `entity` (`user`, `group`).
pub(crate) fn parse(entity: &str, text: &str) -> Result<Search, GraphError> {
    let toks = lex(text)?;
    let mut parser = Parser {
        toks,
        pos: 0,
        text,
        entity,
    };
    let search = parser.or_expr()?;
    if parser.pos < parser.toks.len() {
        return Err(expression_expected(parser.here(), text));
    }
    Ok(search)
}

/// The words Graph's directory search splits a text into, lower-cased
/// (<https://learn.microsoft.com/graph/search-query-parameter>, "Using $search on directory
/// object collections").
pub(crate) fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        let mut words: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut symbol = false;
        let mut previous: Option<char> = None;
        for ch in chunk.chars() {
            let boundary = match previous {
                _ if current.is_empty() => false,
                Some(p) if ch.is_alphabetic() => {
                    p.is_numeric() || (p.is_lowercase() && ch.is_uppercase())
                }
                Some(p) if ch.is_numeric() => p.is_alphabetic(),
                _ => false,
            };
            if !ch.is_alphanumeric() {
                words.extend((!current.is_empty()).then(|| std::mem::take(&mut current)));
                out.push(ch.to_lowercase().collect());
                symbol = true;
            } else {
                if boundary {
                    words.push(std::mem::take(&mut current));
                }
                current.push(ch);
            }
            previous = Some(ch);
        }
        words.extend((!current.is_empty()).then_some(current));
        // "Tokenization logic also combines words that are separated only by symbols".
        if symbol && words.len() > 1 {
            out.push(words.concat().to_lowercase());
        }
        out.extend(words.iter().map(|w| w.to_lowercase()));
    }
    out
}

/// Whether an object's stored properties match the search.
pub(crate) fn matches(search: &Search, props: &Map<String, Value>) -> bool {
    match search {
        Search::And(a, b) => matches(a, props) && matches(b, props),
        Search::Or(a, b) => matches(a, props) || matches(b, props),
        Search::Clause {
            property,
            matching,
            text,
        } => {
            let Some(value) = props.get(*property).and_then(Value::as_str) else {
                return false;
            };
            match matching {
                Matching::Prefix => value.to_lowercase().starts_with(&text.to_lowercase()),
                Matching::Tokens => {
                    let words = tokens(value);
                    tokens(text)
                        .iter()
                        .all(|t| words.iter().any(|w| w.starts_with(t.as_str())))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut t = tokens(text);
        t.sort();
        t
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    }

    /// The examples of the search-query-parameter page.
    #[test]
    fn tokenizes_as_graph_documents() {
        assert_eq!(words("hello world"), sorted(&["hello", "world"]));
        assert_eq!(words("HelloWorld"), sorted(&["hello", "world"]));
        assert_eq!(words("helloWORLD"), sorted(&["hello", "world"]));
        assert_eq!(words("HELLOworld"), sorted(&["helloworld"]));
        assert_eq!(words("HelloWORld"), sorted(&["hello", "world"]));
        assert_eq!(
            words("hello.world"),
            sorted(&["hello", ".", "world", "helloworld"])
        );
        assert_eq!(words("hello123world"), sorted(&["hello", "123", "world"]));
    }

    fn user(display_name: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("displayName".into(), Value::String(display_name.into()));
        m.insert("mail".into(), Value::String("guthrie@x.com".into()));
        m
    }

    #[test]
    fn matches_words_by_prefix_in_any_order() {
        let search = |s: &str| parse("user", s).unwrap_or_else(|e| panic!("{s}: {}", e.message));
        let cases = [
            ("李四(David Li)", "\"displayName:李四\"", true),
            ("李四(David Li)", "\"displayName:David)\"", true),
            ("李四(David Li)", "\"displayName:(李四\"", true),
            ("李四(David Li)", "\"displayName:Li 李\"", true),
            ("hello-world", "\"displayName:helloworld\"", true),
            ("Sales OneVideo team", "\"displayName:OneVideo\"", true),
            ("Sales Video One", "\"displayName:OneVideo\"", true),
            ("Sales OneVideo team", "\"displayName:onevideo\"", false),
            ("SfBMailUser", "\"displayName:us\"", true),
            ("Guthrie", "\"displayName:uth\"", false),
            ("Guthrie", "\"mail:guth\"", true),
            ("Guthrie", "\"mail:x.com\"", false),
            ("Ann", "\"displayName:bob\" OR \"mail:gu\"", true),
            ("Ann", "\"displayName:bob\" AND \"mail:gu\"", false),
            (
                "Ann Lee",
                "\"displayName:ann\" (\"displayName:x\" OR \"displayName:lee\")",
                true,
            ),
        ];
        for (name, text, expected) in cases {
            assert_eq!(
                matches(&search(text), &user(name)),
                expected,
                "{name} / {text}"
            );
        }
    }

    #[test]
    fn refuses_what_graph_refuses() {
        let err = |s: &str| parse("user", s).unwrap_err();
        let e = err("displayName:foo");
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                "BadRequest",
                "Syntax error: character ':' is not valid at position 11 in 'displayName:foo'."
            )
        );
        assert_eq!(err("\"displayName:foo").code, "BadRequest");
        assert_eq!(err("\"displayName:a\" AND").code, "BadRequest");
        assert_eq!(err("(\"displayName:a\"").code, "BadRequest");
        assert_eq!(err("\"officeLocation:x\"").code, "Request_UnsupportedQuery");
        assert_eq!(err("\"nope:x\"").code, "Request_UnsupportedQuery");
        assert_eq!(err("\"description:x\"").code, "Request_UnsupportedQuery");
        assert!(parse("group", "\"description:x\"").is_ok());
        assert_eq!(err("\"foo\"").code, "Request_UnsupportedQuery");
    }
}
