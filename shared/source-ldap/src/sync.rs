//! LDAP Content Synchronization, refreshOnly mode ([RFC 4533](https://www.rfc-editor.org/rfc/rfc4533)),
//! as OpenLDAP's syncprov overlay serves it: a search carrying the Sync Request control and the
//! cookie of the last one returns the entries added or changed since (with their attributes),
//! the ids of the entries deleted since, and a new cookie.
//!
//! The server says how it knows the deletions (section 3.3.1): explicitly (Sync State `delete`,
//! or a Sync Info `syncIdSet` with `refreshDeletes`, the "delete phase"), or by listing every
//! entry still present (the "present phase"), where anything unlisted is gone. Only the first is
//! taken as a change report: a present phase means the server could not replay its deletions
//! (no session log, or a cookie older than the log), and the engine then reads the whole
//! directory, whose sweep finds them. The control values are decoded here, with errors rather
//! than the panics of ldap3's own parsers, so that a server answering oddly costs a full pass,
//! never the process.

use ldap3::asn1::{StructureTag, TagClass, Types, parse_tag};

/// The Sync Request control ([RFC 4533 section 2.2](https://www.rfc-editor.org/rfc/rfc4533#section-2.2)).
pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
/// The Sync State control, on each entry.
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
/// The Sync Done control, on the search result.
pub const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
/// The Sync Info intermediate message.
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// `e-syncRefreshRequired` ([RFC 4533 section 2.6](https://www.rfc-editor.org/rfc/rfc4533#section-2.6)):
/// the server cannot continue from this cookie; the client must start over.
pub const SYNC_REFRESH_REQUIRED: u32 = 4096;

/// The state of an entry in a sync answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Present,
    Add,
    Modify,
    Delete,
}

/// A decoded Sync State control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    pub state: EntryState,
    /// The entry's `entryUUID`, in its string form.
    pub entry_uuid: String,
    pub cookie: Option<Vec<u8>>,
}

/// A decoded Sync Done control.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncDone {
    pub cookie: Option<Vec<u8>>,
    pub refresh_deletes: bool,
}

/// A decoded Sync Info message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncInfo {
    NewCookie(Vec<u8>),
    /// The end of a delete phase (`present = false`) or of a present phase (`present = true`).
    PhaseEnd {
        present: bool,
        cookie: Option<Vec<u8>>,
    },
    /// Many entries at once: deleted (`refresh_deletes`), else present.
    IdSet {
        cookie: Option<Vec<u8>>,
        refresh_deletes: bool,
        uuids: Vec<String>,
    },
}

/// What one refreshOnly search answered.
#[derive(Debug, Default)]
pub struct SyncAnswer {
    /// Entries added or changed since the cookie (all of them without one), with attributes.
    pub changed: Vec<ldap3::SearchEntry>,
    /// `entryUUID`s of entries deleted, or no longer matching the search, since the cookie.
    pub deleted: Vec<String>,
    /// The server answered with a present phase: what it did not list is gone, so its
    /// deletions are known only against a complete copy.
    pub present_phase: bool,
    /// The cookie to continue from; `None` when the server gave none (nothing changed).
    pub cookie: Option<Vec<u8>>,
    /// The server answered with Sync Done: it offers content synchronization on this search.
    pub synchronized: bool,
}

impl SyncAnswer {
    /// Takes in one message of the answer: an entry with its Sync State, or a Sync Info.
    pub fn take_in(&mut self, message: ldap3::ResultEntry) -> Result<(), String> {
        if message.is_intermediate() {
            return match parse_info(message.0)? {
                Some(SyncInfo::NewCookie(cookie)) => {
                    self.cookie = Some(cookie);
                    Ok(())
                }
                Some(SyncInfo::PhaseEnd { cookie, .. }) => {
                    self.cookie = cookie.or(self.cookie.take());
                    Ok(())
                }
                Some(SyncInfo::IdSet {
                    cookie,
                    refresh_deletes,
                    uuids,
                }) => {
                    self.cookie = cookie.or(self.cookie.take());
                    if refresh_deletes {
                        self.deleted.extend(uuids);
                    } else {
                        self.present_phase = true;
                    }
                    Ok(())
                }
                None => Ok(()),
            };
        }
        if message.is_ref() {
            return Ok(());
        }
        let state = message
            .1
            .iter()
            .find(|control| control.1.ctype == SYNC_STATE_OID)
            .map(|control| parse_state(control.1.val.as_deref().unwrap_or_default()))
            .transpose()?;
        let Some(state) = state else {
            // The server ignored the (non-critical) request: a plain search answer.
            self.changed.push(ldap3::SearchEntry::construct(message));
            return Ok(());
        };
        if state.cookie.is_some() {
            self.cookie = state.cookie;
        }
        match state.state {
            EntryState::Add | EntryState::Modify => {
                self.changed.push(ldap3::SearchEntry::construct(message));
            }
            EntryState::Delete => self.deleted.push(state.entry_uuid),
            EntryState::Present => self.present_phase = true,
        }
        Ok(())
    }

    /// Takes in the Sync Done control of the search result, if there is one.
    pub fn finish(&mut self, controls: &[ldap3::controls::Control]) -> Result<(), String> {
        let Some(done) = controls.iter().find(|c| c.1.ctype == SYNC_DONE_OID) else {
            return Ok(());
        };
        let done = parse_done(done.1.val.as_deref())?;
        self.synchronized = true;
        if done.cookie.is_some() {
            self.cookie = done.cookie;
        }
        if !done.refresh_deletes {
            self.present_phase = true;
        }
        Ok(())
    }
}

/// The Sync Request control value: refreshOnly, with the cookie of the last sync if any.
pub fn request_value(cookie: Option<&[u8]>) -> Vec<u8> {
    // SEQUENCE { mode ENUMERATED refreshOnly(1), cookie OCTET STRING OPTIONAL }
    let mut body = vec![Types::Enumerated as u8, 1, 1];
    if let Some(cookie) = cookie {
        body.push(Types::OctetString as u8);
        push_length(&mut body, cookie.len());
        body.extend_from_slice(cookie);
    }
    let mut value = vec![0x30];
    push_length(&mut value, body.len());
    value.extend(body);
    value
}

/// A BER definite length.
fn push_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
        return;
    }
    let bytes = length.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// The string form of a 16-byte `syncUUID` (RFC 4530's `entryUUID` syntax, lower case).
pub fn uuid_string(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() != 16 {
        return Err(format!("a syncUUID has 16 bytes, this one {}", bytes.len()));
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn parse_whole(bytes: &[u8], what: &str) -> Result<StructureTag, String> {
    match parse_tag(bytes) {
        Ok(([], tag)) => Ok(tag),
        Ok(_) => Err(format!("{what}: trailing bytes after the value")),
        Err(_) => Err(format!("{what}: not a BER value")),
    }
}

fn constructed(tag: StructureTag, what: &str) -> Result<Vec<StructureTag>, String> {
    tag.expect_constructed()
        .ok_or_else(|| format!("{what}: expected a sequence"))
}

fn primitive(tag: StructureTag, what: &str) -> Result<Vec<u8>, String> {
    tag.expect_primitive()
        .ok_or_else(|| format!("{what}: expected a primitive value"))
}

fn is_universal(tag: &StructureTag, kind: Types) -> bool {
    tag.class == TagClass::Universal && tag.id == kind as u64
}

fn boolean(tag: StructureTag, what: &str) -> Result<bool, String> {
    let bytes = primitive(tag, what)?;
    Ok(bytes.first().is_some_and(|b| *b != 0))
}

/// Decodes a Sync State control value.
pub fn parse_state(value: &[u8]) -> Result<SyncState, String> {
    let what = "Sync State control";
    let mut parts = constructed(parse_whole(value, what)?, what)?.into_iter();
    let state = parts
        .next()
        .filter(|t| is_universal(t, Types::Enumerated))
        .ok_or_else(|| format!("{what}: no state"))?;
    let state = match primitive(state, what)?.as_slice() {
        [0] => EntryState::Present,
        [1] => EntryState::Add,
        [2] => EntryState::Modify,
        [3] => EntryState::Delete,
        other => return Err(format!("{what}: unknown state {other:?}")),
    };
    let uuid = parts
        .next()
        .ok_or_else(|| format!("{what}: no entryUUID"))?;
    let entry_uuid = uuid_string(&primitive(uuid, what)?)?;
    let cookie = parts.next().map(|t| primitive(t, what)).transpose()?;
    Ok(SyncState {
        state,
        entry_uuid,
        cookie,
    })
}

/// Decodes a Sync Done control value (absent value: no cookie, `refreshDeletes` false).
pub fn parse_done(value: Option<&[u8]>) -> Result<SyncDone, String> {
    let what = "Sync Done control";
    let Some(value) = value else {
        return Ok(SyncDone::default());
    };
    let mut done = SyncDone::default();
    for part in constructed(parse_whole(value, what)?, what)? {
        if is_universal(&part, Types::OctetString) {
            done.cookie = Some(primitive(part, what)?);
        } else if is_universal(&part, Types::Boolean) {
            done.refresh_deletes = boolean(part, what)?;
        } else {
            return Err(format!("{what}: unexpected element (tag {})", part.id));
        }
    }
    Ok(done)
}

/// Decodes an intermediate response: `Ok(None)` when it is not a Sync Info message.
pub fn parse_info(message: StructureTag) -> Result<Option<SyncInfo>, String> {
    let what = "Sync Info message";
    let mut name = None;
    let mut value = None;
    for part in constructed(message, what)? {
        match (part.class, part.id) {
            (TagClass::Context, 0) => name = Some(primitive(part, what)?),
            (TagClass::Context, 1) => value = Some(primitive(part, what)?),
            _ => {}
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
        return Ok(None);
    }
    let value = value.ok_or_else(|| format!("{what}: no value"))?;
    let choice = parse_whole(&value, what)?;
    if choice.class != TagClass::Context {
        return Err(format!("{what}: not a Sync Info choice"));
    }
    match choice.id {
        0 => Ok(Some(SyncInfo::NewCookie(primitive(choice, what)?))),
        id @ (1 | 2) => {
            let mut cookie = None;
            for part in constructed(choice, what)? {
                if is_universal(&part, Types::OctetString) {
                    cookie = Some(primitive(part, what)?);
                }
            }
            Ok(Some(SyncInfo::PhaseEnd {
                present: id == 2,
                cookie,
            }))
        }
        3 => parse_id_set(choice).map(Some),
        other => Err(format!("{what}: unknown choice [{other}]")),
    }
}

fn parse_id_set(choice: StructureTag) -> Result<SyncInfo, String> {
    let what = "Sync Info syncIdSet";
    let mut cookie = None;
    let mut refresh_deletes = false;
    let mut uuids = Vec::new();
    for part in constructed(choice, what)? {
        if is_universal(&part, Types::OctetString) {
            cookie = Some(primitive(part, what)?);
        } else if is_universal(&part, Types::Boolean) {
            refresh_deletes = boolean(part, what)?;
        } else if is_universal(&part, Types::Set) {
            for uuid in constructed(part, what)? {
                uuids.push(uuid_string(&primitive(uuid, what)?)?);
            }
        } else {
            return Err(format!("{what}: unexpected element (tag {})", part.id));
        }
    }
    Ok(SyncInfo::IdSet {
        cookie,
        refresh_deletes,
        uuids,
    })
}

/// The content of a payload, for tests that build messages by hand.
#[cfg(test)]
fn encode(tag: StructureTag) -> Vec<u8> {
    let mut buffer = bytes::BytesMut::new();
    ldap3::asn1::write::encode_into(&mut buffer, tag).unwrap_or_default();
    buffer.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::PL;

    fn tag(class: TagClass, id: u64, payload: PL) -> StructureTag {
        StructureTag { class, id, payload }
    }

    fn octets(bytes: &[u8]) -> StructureTag {
        tag(
            TagClass::Universal,
            Types::OctetString as u64,
            PL::P(bytes.to_vec()),
        )
    }

    const UUID: [u8; 16] = [
        0x5e, 0x2a, 0x1b, 0x3c, 0x01, 0x02, 0x40, 0x03, 0x80, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
        0x0a,
    ];

    #[test]
    fn a_request_with_and_without_a_cookie_is_valid_ber() {
        assert_eq!(request_value(None), vec![0x30, 3, 0x0a, 1, 1]);
        let cookie = vec![b'c'; 200];
        let value = request_value(Some(&cookie));
        let parts = constructed(parse_whole(&value, "t").unwrap(), "t").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].clone().expect_primitive().unwrap(), cookie);
    }

    #[test]
    fn states_and_done_decode_and_garbage_is_an_error() {
        let state = encode(tag(
            TagClass::Universal,
            Types::Sequence as u64,
            PL::C(vec![
                tag(
                    TagClass::Universal,
                    Types::Enumerated as u64,
                    PL::P(vec![3]),
                ),
                octets(&UUID),
            ]),
        ));
        assert_eq!(
            parse_state(&state).unwrap(),
            SyncState {
                state: EntryState::Delete,
                entry_uuid: "5e2a1b3c-0102-4003-8004-05060708090a".into(),
                cookie: None,
            }
        );
        let done = encode(tag(
            TagClass::Universal,
            Types::Sequence as u64,
            PL::C(vec![
                octets(b"rid=001,csn=x"),
                tag(
                    TagClass::Universal,
                    Types::Boolean as u64,
                    PL::P(vec![0xff]),
                ),
            ]),
        ));
        assert_eq!(
            parse_done(Some(&done)).unwrap(),
            SyncDone {
                cookie: Some(b"rid=001,csn=x".to_vec()),
                refresh_deletes: true,
            }
        );
        assert_eq!(parse_done(None).unwrap(), SyncDone::default());
        assert!(parse_state(b"\x30\x03\x0a\x01\x09").is_err());
        assert!(parse_state(b"garbage").is_err());
        assert!(parse_done(Some(b"\x30")).is_err());
    }

    #[test]
    fn an_id_set_of_deletes_decodes() {
        let value = encode(tag(
            TagClass::Context,
            3,
            PL::C(vec![
                octets(b"cookie"),
                tag(TagClass::Universal, Types::Boolean as u64, PL::P(vec![1])),
                tag(
                    TagClass::Universal,
                    Types::Set as u64,
                    PL::C(vec![octets(&UUID)]),
                ),
            ]),
        ));
        let message = tag(
            TagClass::Application,
            25,
            PL::C(vec![
                tag(
                    TagClass::Context,
                    0,
                    PL::P(SYNC_INFO_OID.as_bytes().to_vec()),
                ),
                tag(TagClass::Context, 1, PL::P(value)),
            ]),
        );
        assert_eq!(
            parse_info(message).unwrap(),
            Some(SyncInfo::IdSet {
                cookie: Some(b"cookie".to_vec()),
                refresh_deletes: true,
                uuids: vec!["5e2a1b3c-0102-4003-8004-05060708090a".into()],
            })
        );
        let other = tag(
            TagClass::Application,
            25,
            PL::C(vec![tag(TagClass::Context, 0, PL::P(b"1.2.3".to_vec()))]),
        );
        assert_eq!(parse_info(other).unwrap(), None);
    }
}
