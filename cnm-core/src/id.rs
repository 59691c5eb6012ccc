//! Object ids: 64 random hex digits, like Docker's, shown as 12.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A 256-bit random id written as 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// A fresh random id (from the kernel's `getrandom`, which needs no
    /// file descriptor).
    pub fn random() -> Result<Id> {
        let mut b = [0u8; 32];
        crate::random::fill(&mut b)?;
        Ok(Id(b.iter().map(|x| format!("{x:02x}")).collect()))
    }

    /// The full 64-digit form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, as `docker network ls` shows them.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// Whether `prefix` (at least one digit) is a prefix of this id.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        !prefix.is_empty() && self.0.starts_with(prefix)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Id> {
        if s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            Ok(Id(s.to_string()))
        } else {
            Err(Error::invalid("id", format!("{s:?} is not 64 lowercase hex digits")))
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Finds the one object whose name equals `key`, or whose id equals or
/// starts with `key`, as Docker resolves `NAME|ID` arguments: an exact name
/// wins, then an exact id, then a unique id prefix.
pub fn resolve<'a, T>(
    what: &'static str,
    key: &str,
    items: impl IntoIterator<Item = &'a T>,
    name: impl Fn(&T) -> &str,
    id: impl Fn(&T) -> &Id,
) -> Result<&'a T>
where
    T: 'a,
{
    let items: Vec<&T> = items.into_iter().collect();
    if let Some(t) = items.iter().find(|t| name(t) == key) {
        return Ok(t);
    }
    if let Some(t) = items.iter().find(|t| id(t).as_str() == key) {
        return Ok(t);
    }
    let hits: Vec<&&T> = items.iter().filter(|t| id(t).matches_prefix(key)).collect();
    match hits.len() {
        0 => Err(Error::NotFound { what, name: key.to_string() }),
        1 => Ok(hits[0]),
        n => Err(Error::Ambiguous { what, prefix: key.to_string(), matches: n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_64_hex_and_distinct() {
        let a = Id::random().unwrap();
        let b = Id::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 64);
        assert_eq!(a.short().len(), 12);
        assert_eq!(a.as_str().parse::<Id>().unwrap(), a);
        assert!("xyz".parse::<Id>().is_err());
        assert!(a.as_str().to_uppercase().parse::<Id>().is_err());
    }

    #[test]
    fn resolve_by_name_id_and_unique_prefix() {
        let items: Vec<(String, Id)> = (0..50).map(|i| (format!("n{i}"), Id::random().unwrap())).collect();
        let by = |k: &str| resolve("network", k, &items, |t| t.0.as_str(), |t| &t.1).map(|t| t.0.clone());
        assert_eq!(by("n7").unwrap(), "n7");
        assert_eq!(by(items[3].1.as_str()).unwrap(), "n3");
        assert_eq!(by(items[9].1.short()).unwrap(), "n9");
        assert_eq!(by("zz").unwrap_err().kind(), crate::ErrorKind::NotFound);
        // With 50 random ids every hex digit is almost surely the start of two.
        let first = items[0].1.as_str()[..1].to_string();
        if items.iter().filter(|t| t.1.as_str().starts_with(&first)).count() > 1 {
            assert!(matches!(by(&first).unwrap_err(), Error::Ambiguous { .. }));
        }
    }
}
