//! Passwords: the strength rules, generated passwords, Argon2id hashing. (Checking a
//! password is the login's hashing pool's work, `backend::auth::hasher`.)

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;

use super::error::AccountError;

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The most bytes a password may have (what the login accepts).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Common passwords of at least [`MIN_PASSWORD_CHARS`] characters (shorter ones fail the
/// length rule anyway), one per line, compared without regard to case.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Why a password is refused: the rule it breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("it must have at least 12 characters")]
    Short,
    /// In the bundled list of common passwords.
    #[error("it is too common (in the list of common passwords)")]
    Common,
    /// More than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("it may have at most 1024 bytes")]
    Long,
}

/// Check `password` against the rules: long enough, not too long, not common.
pub fn check_strength(password: &str) -> Result<(), WeakPassword> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(WeakPassword::Long);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::Short);
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .any(|common| !common.is_empty() && common == lower)
    {
        return Err(WeakPassword::Common);
    }
    Ok(())
}

/// The alphabet of generated passwords: lower-case letters and digits without the
/// look-alikes (0/o, 1/l/i), so one can be read aloud or typed from a screen.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A new random password: four groups of five characters (`xxxxx-xxxxx-xxxxx-xxxxx`),
/// about 99 bits, from the thread's CSPRNG.
pub fn generate() -> String {
    let mut rng = rand::rng();
    let groups: Vec<String> = (0..4)
        .map(|_| {
            (0..5)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        })
        .collect();
    groups.join("-")
}

/// Argon2id hashing with the gateway's costs.
#[derive(Clone)]
pub struct PasswordHashing {
    argon2: Argon2<'static>,
}

impl std::fmt::Debug for PasswordHashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHashing")
            .field("params", self.argon2.params())
            .finish()
    }
}

impl PasswordHashing {
    /// Argon2id with `memory_kib` of memory and `iterations` passes, one lane.
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, AccountError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| AccountError::Hashing(format!("argon2 parameters: {e}")))?;
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        })
    }

    /// The PHC string of `password` with a random salt. Takes the memory cost and tens
    /// of milliseconds: run it on the hashing pool or a blocking thread.
    pub fn hash(&self, password: &str) -> Result<String, AccountError> {
        let mut salt = [0u8; 16];
        rand::rng().fill(&mut salt);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| AccountError::Hashing(e.to_string()))?;
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| AccountError::Hashing(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_say_which_one_is_broken() {
        assert_eq!(check_strength("short"), Err(WeakPassword::Short));
        // Eleven characters, however exotic, are too few; twelve are enough.
        assert_eq!(check_strength("äöü€ß漢字🙂ab1"), Err(WeakPassword::Short));
        assert_eq!(check_strength("correct horse"), Ok(()));
        assert_eq!(check_strength("Password1234"), Err(WeakPassword::Common));
        assert_eq!(check_strength("QWERTYUIOPAS"), Err(WeakPassword::Common));
        assert_eq!(
            check_strength(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(WeakPassword::Long)
        );
        assert!(
            WeakPassword::Short
                .to_string()
                .contains("at least 12 characters")
        );
        assert!(WeakPassword::Common.to_string().contains("too common"));
    }

    #[test]
    fn generated_passwords_pass_the_rules_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 23);
        assert_eq!(check_strength(&a), Ok(()));
    }

    #[test]
    fn every_listed_password_is_long_enough_to_need_the_list() {
        for common in COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            assert!(common.chars().count() >= MIN_PASSWORD_CHARS, "{common}");
            assert_eq!(common, common.to_lowercase(), "{common}");
        }
    }

    #[test]
    fn hashes_are_argon2id_phc_strings() {
        let hashing = PasswordHashing::new(1024, 1).unwrap();
        let hash = hashing.hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert_ne!(hash, hashing.hash("correct horse").unwrap());
    }
}
