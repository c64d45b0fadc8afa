//! Akeneo asset and option codes (`^[a-zA-Z0-9_]+$`, at most 255 chars) from arbitrary DAM text.

use sha2::{Digest, Sha256};

/// Akeneo's limit on asset codes.
pub const MAX_CODE_LEN: usize = 255;
/// Hex chars of the raw value's hash appended to altered codes (40 bits: collisions between
/// distinct altered ids of one DAM are negligible).
const HASH_CHARS: usize = 10;

/// The Akeneo asset code for a raw DAM value.
///
/// Characters outside `[A-Za-z0-9_]` become `_`. Since that is lossy (`a-b` and `a_b` would
/// collide), a code that differs from the raw value or is too long gets `_` + the first 10 hex
/// chars of sha256(raw) appended, truncating the normalised part so the total stays ≤ 255.
/// Codes that are already valid are kept as they are, so existing PIM assets keep their code.
pub fn asset_code(raw: &str) -> String {
    let mut code = replace_invalid(raw);
    if !code.is_empty() && code.len() <= MAX_CODE_LEN && code == raw {
        return code;
    }
    // Normalised text is ASCII, so byte truncation cannot split a char.
    code.truncate(MAX_CODE_LEN - HASH_CHARS - 1);
    code.push('_');
    code.push_str(&sha256_hex(raw.as_bytes())[..HASH_CHARS]);
    code
}

/// An option code for a DAM value: invalid chars become `_`, lower-cased (option values are
/// human words such as `Red` or `Dark blue`, which Akeneo matches case-insensitively anyway).
pub fn option_code(raw: &str) -> String {
    let mut code = replace_invalid(raw.trim());
    code.make_ascii_lowercase();
    code.truncate(MAX_CODE_LEN);
    code
}

pub(super) fn is_valid_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CODE_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn replace_invalid(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_are_kept() {
        assert_eq!(asset_code("abc_123"), "abc_123");
        assert_eq!(asset_code("3f2a9c"), "3f2a9c");
    }

    #[test]
    fn altered_codes_get_a_hash_so_they_do_not_collide() {
        let dashed = asset_code("a-b");
        assert!(dashed.starts_with("a_b_"), "{dashed}");
        assert_eq!(dashed.len(), 3 + 1 + HASH_CHARS);
        assert_ne!(dashed, asset_code("a_b"));
        assert_ne!(dashed, asset_code("a.b"));
        assert!(is_valid_code(&dashed));
        // Non-ASCII chars become one `_` each.
        let accented = asset_code("café/crème");
        assert!(accented.starts_with("caf__cr_me_"), "{accented}");
        assert!(is_valid_code(&accented));
    }

    #[test]
    fn codes_are_stable_across_runs() {
        // Pinned: sha256("a-b") starts with these hex chars, on every platform.
        assert_eq!(
            &sha256_hex(b"a-b")[..HASH_CHARS],
            &asset_code("a-b")[4..],
            "suffix is the raw value's hash"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn long_ids_are_truncated_to_255_with_a_hash() {
        let long = "x".repeat(300);
        let code = asset_code(&long);
        assert_eq!(code.len(), MAX_CODE_LEN);
        assert!(is_valid_code(&code));
        assert_eq!(code, asset_code(&long), "stable");
        let other = format!("{}y", "x".repeat(299));
        assert_ne!(code, asset_code(&other), "same prefix, different id");
        assert_eq!(asset_code(&"y".repeat(255)), "y".repeat(255));
    }

    #[test]
    fn option_codes_are_lowercased_and_cleaned() {
        assert_eq!(option_code("Dark Blue"), "dark_blue");
        assert_eq!(option_code(" Red "), "red");
        assert_eq!(option_code("100% cotton"), "100__cotton");
    }
}
