//! A parsed file: records in file order, each a user/group or a per-record error, plus the
//! cross-record checks (duplicate ids, unknown members) that need the whole file.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use m365_core::{ObjectKind, RecordError, SourceGroup, SourceUser};

use crate::{FileSourceConfig, json};

/// One record as a format parser read it, before the cross-record checks.
pub(crate) struct Raw<T> {
    /// `users[3]`, `users.csv line 12`.
    pub location: String,
    pub outcome: Result<T, RawError>,
}

/// A user record as the format parser left it.
pub(crate) enum RawUser {
    Read(SourceUser),
    /// A JSON record located but not converted yet: its id and its bytes in the file. It is
    /// converted when its page is asked for, so a large file is held as its bytes rather than
    /// as its users (at 100k users, the users take four times the file).
    Deferred {
        id: String,
        range: Range<usize>,
    },
}

impl RawUser {
    fn id(&self) -> &str {
        match self {
            RawUser::Read(user) => &user.id,
            RawUser::Deferred { id, .. } => id,
        }
    }
}

/// Every record of a file, as the format parser read it.
pub(crate) struct RawFile {
    pub users: Vec<Raw<RawUser>>,
    /// `None`: the file says nothing about groups (no `groups` list, no `groups.csv`) although
    /// the source is configured to have them.
    pub groups: Option<Vec<Raw<SourceGroup>>>,
}

/// Why the groups of a file are unknown: where they were looked for, and the message.
#[derive(Debug, Clone)]
pub(crate) struct MissingGroups {
    pub location: String,
    pub message: String,
}

/// Why a record could not be read, and its id when it had one.
pub(crate) struct RawError {
    pub id: Option<String>,
    pub message: String,
}

impl RawError {
    pub fn new(id: Option<&str>, message: impl Into<String>) -> Self {
        RawError {
            id: id.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// A user record after all checks: a user, or the error standing in its place (so that errors are
/// reported on the page where the record sits).
#[derive(Debug, Clone)]
pub(crate) enum UserSlot {
    User(SourceUser),
    Error(RecordError),
    /// A JSON record converted when it is read ([`RawUser::Deferred`]): its bytes in
    /// [`Parsed::text`]. Its id is valid and unique.
    Deferred(Range<usize>),
}

/// The whole file, ready to page through.
pub(crate) struct Parsed {
    pub version: String,
    /// The JSON file's bytes when some of its records are [`UserSlot::Deferred`]; else empty.
    text: Vec<u8>,
    pub users: Vec<UserSlot>,
    pub groups: Vec<SourceGroup>,
    pub group_errors: Vec<RecordError>,
    /// Set when the file has no groups although the source should: the group snapshot is
    /// incomplete and no group can be looked up.
    missing_groups: Option<MissingGroups>,
    /// Valid users by id (index into `users`).
    user_index: HashMap<String, usize>,
    /// Valid groups by id (index into `groups`).
    group_index: HashMap<String, usize>,
    /// The first error of each id that has one, as `location: message`.
    user_errors_by_id: HashMap<String, String>,
    group_errors_by_id: HashMap<String, String>,
    /// Records that failed without an id: any id could be one of them.
    anonymous_user_errors: usize,
    anonymous_group_errors: usize,
}

/// The answer of a lookup by id.
pub(crate) enum Lookup<T> {
    Found(T),
    /// The record exists but is in error (`location: message`).
    InError(String),
    /// Not in the file, and no id-less error record could be it.
    Absent,
    /// Not found, but this many records have no readable id.
    Unprovable(usize),
}

fn record_error(kind: ObjectKind, location: String, error: RawError) -> RecordError {
    RecordError {
        kind,
        location,
        source_id: error.id,
        message: error.message,
    }
}

/// The locations of every record carrying an id that more than one record carries. Only the
/// duplicates are kept: at 100k records, a map of every id's locations would be built for nothing.
fn duplicate_locations<T>(
    records: &[Raw<T>],
    id_of: impl Fn(&T) -> &str,
) -> HashMap<String, Vec<String>> {
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(records.len());
    let mut repeated: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        let id = match &record.outcome {
            Ok(item) => Some(id_of(item)),
            Err(e) => e.id.as_deref(),
        };
        if let Some(id) = id {
            match first.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    repeated.entry(id).or_insert_with(|| vec![*e.get()]).push(i);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
    }
    repeated
        .into_iter()
        .map(|(id, at)| {
            let locations = at.iter().map(|&i| records[i].location.clone()).collect();
            (id.to_owned(), locations)
        })
        .collect()
}

fn duplicate_message(id: &str, here: &str, all: &[String]) -> String {
    let others: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|l| *l != here)
        .collect();
    format!(
        "duplicate id \"{id}\" (also at {}); every record with this id is skipped and the identity \
         is left unchanged until the file has only one",
        others.join(", ")
    )
}

impl Parsed {
    /// From this many records a page's deferred records are converted on every core.
    pub const PARALLEL_PAGE: usize = 256;

    /// `groups` is `Err` when the file has none although the source should (see [`RawFile`]);
    /// `text` is the file the deferred user records are ranges of.
    pub fn build(
        version: String,
        users: Vec<Raw<RawUser>>,
        groups: Result<Vec<Raw<SourceGroup>>, MissingGroups>,
        text: Vec<u8>,
    ) -> Self {
        let (groups, missing_groups) = match groups {
            Ok(groups) => (groups, None),
            Err(missing) => (Vec::new(), Some(missing)),
        };
        let user_duplicates = duplicate_locations(&users, RawUser::id);
        let group_duplicates = duplicate_locations(&groups, |g| g.id.as_str());
        let mut parsed = Parsed {
            version,
            text,
            users: Vec::with_capacity(users.len()),
            groups: Vec::new(),
            group_errors: Vec::new(),
            missing_groups: None,
            user_index: HashMap::new(),
            group_index: HashMap::new(),
            user_errors_by_id: HashMap::new(),
            group_errors_by_id: HashMap::new(),
            anonymous_user_errors: 0,
            anonymous_group_errors: 0,
        };

        {
            // A member is known when any user record carries its id, even one in error: that
            // user is left unchanged, and so is its membership.
            let known_users: HashSet<&str> = users
                .iter()
                .filter_map(|r| match &r.outcome {
                    Ok(user) => Some(user.id()),
                    Err(e) => e.id.as_deref(),
                })
                .collect();
            parsed.add_groups(groups, &group_duplicates, &known_users);
        }
        parsed.add_users(users, &user_duplicates);
        if let Some(missing) = missing_groups {
            // No id: the planner reads it as "some group may be missing", so nothing of the
            // groups is swept.
            parsed.group_errors.push(RecordError {
                kind: ObjectKind::Group,
                location: missing.location.clone(),
                source_id: None,
                message: missing.message.clone(),
            });
            parsed.missing_groups = Some(missing);
        }
        parsed
    }

    /// The user records: each by its id, or its error (a duplicate id is an error of every
    /// record carrying it).
    fn add_users(&mut self, users: Vec<Raw<RawUser>>, locations: &HashMap<String, Vec<String>>) {
        for Raw { location, outcome } in users {
            let error = match outcome {
                Ok(user) => match locations.get(user.id()) {
                    Some(all) if all.len() > 1 => RecordError {
                        kind: ObjectKind::User,
                        message: duplicate_message(user.id(), &location, all),
                        source_id: Some(user.id().to_owned()),
                        location,
                    },
                    _ => {
                        let slot = match user {
                            RawUser::Read(user) => {
                                self.user_index.insert(user.id.clone(), self.users.len());
                                UserSlot::User(user)
                            }
                            RawUser::Deferred { id, range } => {
                                self.user_index.insert(id, self.users.len());
                                UserSlot::Deferred(range)
                            }
                        };
                        self.users.push(slot);
                        continue;
                    }
                },
                Err(e) => record_error(ObjectKind::User, location, e),
            };
            match &error.source_id {
                Some(id) => {
                    self.user_errors_by_id
                        .entry(id.clone())
                        .or_insert_with(|| format!("{}: {}", error.location, error.message));
                }
                None => self.anonymous_user_errors += 1,
            }
            self.users.push(UserSlot::Error(error));
        }
    }

    /// The group records: each by its id with its known members, or its error.
    fn add_groups(
        &mut self,
        groups: Vec<Raw<SourceGroup>>,
        locations: &HashMap<String, Vec<String>>,
        known_users: &HashSet<&str>,
    ) {
        for Raw { location, outcome } in groups {
            let error = match outcome {
                Ok(mut group) => match locations.get(group.id.as_str()) {
                    Some(all) if all.len() > 1 => RecordError {
                        kind: ObjectKind::Group,
                        message: duplicate_message(&group.id, &location, all),
                        source_id: Some(group.id),
                        location,
                    },
                    _ => {
                        self.keep_known_members(&mut group, &location, known_users);
                        self.group_index.insert(group.id.clone(), self.groups.len());
                        self.groups.push(group);
                        continue;
                    }
                },
                Err(e) => record_error(ObjectKind::Group, location, e),
            };
            match &error.source_id {
                Some(id) => {
                    self.group_errors_by_id
                        .entry(id.clone())
                        .or_insert_with(|| format!("{}: {}", error.location, error.message));
                }
                None => self.anonymous_group_errors += 1,
            }
            self.group_errors.push(error);
        }
    }

    /// A group's members, each once, among the known users; an unknown member is an error of
    /// the group, which is synced without it.
    fn keep_known_members(
        &mut self,
        group: &mut SourceGroup,
        location: &str,
        known_users: &HashSet<&str>,
    ) {
        let mut seen = HashSet::new();
        let mut members = Vec::with_capacity(group.members.len());
        for member in std::mem::take(&mut group.members) {
            if !seen.insert(member.clone()) {
                continue;
            }
            if known_users.contains(member.as_str()) {
                members.push(member);
            } else {
                self.group_errors.push(RecordError {
                    kind: ObjectKind::Group,
                    location: location.to_owned(),
                    source_id: Some(group.id.clone()),
                    message: format!(
                        "group \"{}\" ({}): unknown member \"{member}\" (no user has this id); \
                         the group is synced without it",
                        group.id, group.name
                    ),
                });
            }
        }
        group.members = members;
    }

    pub fn user(&self, id: &str, config: &FileSourceConfig) -> Lookup<SourceUser> {
        if let Some(message) = self.user_errors_by_id.get(id) {
            return Lookup::InError(message.clone());
        }
        match self.user_index.get(id) {
            Some(&i) => match self.read_user(i, config) {
                Ok(user) => Lookup::Found(user),
                Err(error) => Lookup::InError(format!("{}: {}", error.location, error.message)),
            },
            None if self.anonymous_user_errors > 0 => {
                Lookup::Unprovable(self.anonymous_user_errors)
            }
            None => Lookup::Absent,
        }
    }

    /// The user record at `index`, converted when it was deferred.
    fn read_user(
        &self,
        index: usize,
        config: &FileSourceConfig,
    ) -> Result<SourceUser, RecordError> {
        match self.users.get(index) {
            Some(UserSlot::User(user)) => Ok(user.clone()),
            Some(UserSlot::Error(error)) => Err(error.clone()),
            Some(UserSlot::Deferred(range)) => {
                let bytes = self.text.get(range.clone()).unwrap_or_default();
                json::user_record(bytes, config)
                    .map_err(|e| record_error(ObjectKind::User, format!("users[{index}]"), e))
            }
            None => Err(RecordError {
                kind: ObjectKind::User,
                location: format!("users[{index}]"),
                source_id: None,
                message: "no such record".into(),
            }),
        }
    }

    /// The user records `range`, each a user or its error. Deferred records are converted on
    /// every core when there are many (the conversion is most of a large page's reading).
    pub fn user_page(
        &self,
        range: Range<usize>,
        config: &FileSourceConfig,
    ) -> Vec<Result<SourceUser, RecordError>> {
        let indices: Vec<usize> = range.collect();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        if threads < 2 || indices.len() < Self::PARALLEL_PAGE {
            return indices.iter().map(|&i| self.read_user(i, config)).collect();
        }
        let chunk = indices.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = indices
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|&i| self.read_user(i, config))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    pub fn group(&self, id: &str) -> Lookup<SourceGroup> {
        // Without groups in the file, "not found" would read as "deleted at the source".
        if let Some(missing) = &self.missing_groups {
            return Lookup::InError(missing.message.clone());
        }
        // Unknown-member errors are not in this map: such a group is still found.
        if let Some(message) = self.group_errors_by_id.get(id) {
            return Lookup::InError(message.clone());
        }
        match self.group_index.get(id).and_then(|i| self.groups.get(*i)) {
            Some(group) => Lookup::Found(group.clone()),
            None if self.anonymous_group_errors > 0 => {
                Lookup::Unprovable(self.anonymous_group_errors)
            }
            None => Lookup::Absent,
        }
    }

    /// Records known to be in error. A deferred record's own errors are found when its page is
    /// read, and are not counted here.
    pub fn error_count(&self) -> usize {
        self.group_errors.len()
            + self
                .users
                .iter()
                .filter(|s| matches!(s, UserSlot::Error(_)))
                .count()
    }
}
