//! Initial passwords (docs/design.md#users): where they come from, and generated ones.

use rand::Rng;
use rand::seq::SliceRandom;
use secrecy::SecretString;

use super::MappingError;

/// The password part of a mapped user. Sent on create only, never updated; `Debug` never shows a
/// password (the value is a [`SecretString`]).
#[derive(Debug, Clone)]
pub struct PasswordValue {
    pub origin: PasswordOrigin,
    /// `passwordProfile.forceChangePasswordNextSignIn` (the rule's `reset_password`, default true).
    pub force_change_password_next_sign_in: bool,
}

/// Where the engine gets the password when it creates the user.
#[derive(Debug, Clone)]
pub enum PasswordOrigin {
    /// Mapped from the source record; already checked against the password policy.
    Value(SecretString),
    /// A SecretStore entry of that name: the engine reads it (asynchronously) and checks it with
    /// [`super::validate::password`] before use.
    Secret(String),
    /// The engine calls [`generate_password`] at create time, so a password exists only for the
    /// request that sends it.
    Generate,
    /// The mapped password is missing or breaks the policy. Only a create needs a password, so
    /// this blocks the creation of this user (the engine records the error) and nothing else.
    Unusable(MappingError),
}

/// Length of generated passwords.
pub const GENERATED_LENGTH: usize = 20;

const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
/// A subset of Entra's allowed symbols without quotes, backslash, backtick and space, so that a
/// generated password survives shells, CSV and JSON unchanged.
const SYMBOLS: &[u8] = b"!#$%&*+-=?@^_~.:,()[]{}/|";

/// A random password that meets Entra's policy with certainty: [`GENERATED_LENGTH`] characters,
/// at least one of each of the four classes (one more than the three required), only allowed
/// symbols. Drawn from `rand::rng()`, a ChaCha CSPRNG seeded and periodically reseeded from the OS.
pub fn generate_password() -> SecretString {
    let mut rng = rand::rng();
    let mut pick = |set: &[u8]| char::from(set[rng.random_range(0..set.len())]);
    let mut chars: Vec<char> = vec![pick(LOWER), pick(UPPER), pick(DIGITS), pick(SYMBOLS)];
    let all: Vec<u8> = [LOWER, UPPER, DIGITS, SYMBOLS].concat();
    while chars.len() < GENERATED_LENGTH {
        chars.push(pick(&all));
    }
    chars.shuffle(&mut rand::rng());
    SecretString::from(chars.into_iter().collect::<String>())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use secrecy::ExposeSecret;

    use super::*;
    use crate::mapping::validate;

    #[test]
    fn a_thousand_generated_passwords_are_all_valid_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let pw = generate_password();
            let pw = pw.expose_secret();
            assert_eq!(pw.chars().count(), GENERATED_LENGTH);
            assert!(validate::password(pw).is_ok());
            assert!(pw.chars().any(|c| c.is_ascii_lowercase()));
            assert!(pw.chars().any(|c| c.is_ascii_uppercase()));
            assert!(pw.chars().any(|c| c.is_ascii_digit()));
            assert!(pw.chars().any(|c| SYMBOLS.contains(&(c as u8))));
            assert!(seen.insert(pw.to_owned()), "duplicate password");
        }
    }

    #[test]
    fn generated_symbols_are_allowed_by_the_policy() {
        for &s in SYMBOLS {
            assert!(
                validate::PASSWORD_SYMBOLS.contains(char::from(s)),
                "{}",
                char::from(s)
            );
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let value = PasswordValue {
            origin: PasswordOrigin::Value(SecretString::from("Secret-Pa55word")),
            force_change_password_next_sign_in: true,
        };
        let shown = format!("{value:?}");
        assert!(!shown.contains("Secret-Pa55word"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}
