//! Interface-name validation, done before the kernel is asked.

use crate::error::{Error, Result};

/// The longest interface name the kernel accepts (`IFNAMSIZ` − 1).
pub const IFNAME_MAX: usize = 15;

/// Checks a name the way the kernel's `dev_valid_name` does, and rejects `:`
/// as iproute2 does (it denotes an alias label): 1 to 15 bytes, not `.` or
/// `..`, no `/`, no whitespace.
pub fn validate_ifname(op: &'static str, name: &str) -> Result<()> {
    let object = format!("{name:?}");
    let reason = if name.is_empty() {
        "an interface name must not be empty".to_string()
    } else if name.len() > IFNAME_MAX {
        format!("an interface name has at most {IFNAME_MAX} bytes, this one has {}", name.len())
    } else if name == "." || name == ".." {
        "an interface name must not be \".\" or \"..\"".to_string()
    } else if name.contains('/') {
        "an interface name must not contain '/'".to_string()
    } else if name.contains(':') {
        "an interface name must not contain ':'".to_string()
    } else if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        "an interface name must not contain whitespace".to_string()
    } else {
        return Ok(());
    };
    Err(Error::invalid(op, object, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["eth0", "br-0123456789ab", "veth1234567", "a"] {
            validate_ifname("link_add", ok).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "0123456789abcdef", "a/b", "a b", "a\tb", ".", "..", "eth0:1"] {
            let e = validate_ifname("link_add", bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.to_string().starts_with("link_add "), "{e}");
        }
    }
}
