//! Unit ids: generated ones (`<node id alphanumerics><8 random chars>`, as Go receptor
//! 1.6.9 makes them) and caller-supplied ones (`workUnitID`), which name a folder and are
//! therefore checked here (Go accepts `../evil` and creates a folder outside its datadir).

use rand::Rng;

/// Characters of the random part of a unit id.
const ID_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Length of the random part of a unit id.
pub const RANDOM_LEN: usize = 8;

/// Longest unit id accepted from a client (a folder name is limited to 255 bytes).
pub const MAX_ID_LEN: usize = 200;

/// The node id with every character outside `[A-Za-z0-9]` removed.
pub fn sanitize_node_id(node_id: &str) -> String {
    node_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// A fresh unit id for `node_id` (cryptographically random suffix).
///
/// The random bytes come from the OS in one call (not one per character): a byte below
/// the largest multiple of 62 that fits picks a character uniformly, others are skipped.
pub fn generate(node_id: &str) -> String {
    let mut id = sanitize_node_id(node_id);
    let limit = (256 / ID_CHARS.len() * ID_CHARS.len()) as u8;
    let mut rng = rand::rngs::OsRng;
    let mut chosen = 0;
    while chosen < RANDOM_LEN {
        let mut bytes = [0u8; 2 * RANDOM_LEN];
        rng.fill(&mut bytes);
        for b in bytes.into_iter().filter(|b| *b < limit) {
            if chosen == RANDOM_LEN {
                break;
            }
            id.push(char::from(ID_CHARS[usize::from(b) % ID_CHARS.len()]));
            chosen += 1;
        }
    }
    id
}

/// Checks an id given by a client: letters, digits, `_`, `.` and `-` only, no `..`,
/// not empty and at most [`MAX_ID_LEN`] bytes, so it always names a folder inside the
/// node's folder.
pub fn validate(id: &str) -> Result<(), InvalidUnitId> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if id.is_empty() || id.len() > MAX_ID_LEN || !ok_chars || id.contains("..") || id == "." {
        return Err(InvalidUnitId(id.to_owned()));
    }
    Ok(())
}

/// A unit id given by a client that cannot name a unit folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid work unit ID {0:?}: use 1 to {MAX_ID_LEN} letters, digits, '_', '.' or '-' (no '..')"
)]
pub struct InvalidUnitId(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_node_prefix() {
        let id = generate("hop-1.example_X");
        assert!(id.starts_with("hop1exampleX"), "{id}");
        assert_eq!(id.len(), "hop1exampleX".len() + RANDOM_LEN);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(generate("foo"), generate("foo"));
        assert!(validate(&id).is_ok());
        let seen: std::collections::HashSet<u8> =
            (0..2000).flat_map(|_| generate("").into_bytes()).collect();
        assert_eq!(seen.len(), ID_CHARS.len(), "every character is used");
    }

    #[test]
    fn caller_ids_are_checked() {
        for ok in ["MyUnit01", "a.b-c_d", "x"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["../evil", "..", ".", "a/b", "", "a b", "é", "a..b", "/abs"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        assert!(validate(&"a".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
