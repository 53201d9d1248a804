//! Actor names and paths: `/` is the root, `/app/api` is `api` under `app`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid actor name or path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The name is empty.
    #[error("actor name is empty")]
    EmptyName,
    /// The name has a character outside `[A-Za-z0-9_.-]`.
    #[error("actor name {0:?} has a character outside [A-Za-z0-9_.-]")]
    BadCharacter(String),
    /// The name is `.` or `..`, which would read as a step in a file path (actor paths
    /// name log files and sockets).
    #[error("actor name {0:?} is not allowed: `.` and `..` would read as path steps")]
    DotName(String),
}

/// The name of one actor among its siblings: `[A-Za-z0-9_.-]+`, and neither `.` nor `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorName(Arc<str>);

impl ActorName {
    /// Checks `name` and wraps it.
    pub fn new(name: &str) -> Result<Self, PathError> {
        if name.is_empty() {
            return Err(PathError::EmptyName);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(PathError::BadCharacter(name.to_owned()));
        }
        if name == "." || name == ".." {
            return Err(PathError::DotName(name.to_owned()));
        }
        Ok(Self(name.into()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The absolute path of an actor in the tree. Always starts with `/`; the root is `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorPath(Arc<str>);

impl ActorPath {
    /// The root supervisor's path, `/`.
    pub fn root() -> Self {
        Self("/".into())
    }

    /// Parses `/a/b`, `a/b` or `/` (empty segments are refused, a trailing `/` is ignored).
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let trimmed = text.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        let mut path = Self::root();
        for segment in trimmed.split('/') {
            path = path.child(&ActorName::new(segment)?);
        }
        Ok(path)
    }

    /// The path of the child `name` of this actor.
    pub fn child(&self, name: &ActorName) -> Self {
        if self.is_root() {
            Self(format!("/{name}").into())
        } else {
            Self(format!("{}/{name}", self.0).into())
        }
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        &*self.0 == "/"
    }

    /// The parent's path; `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) => Some(Self::root()),
            Some(i) => Some(Self(self.0[..i].into())),
            None => None,
        }
    }

    /// The last segment; empty for the root.
    pub fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// Whether `self` is `other` or below it.
    pub fn is_within(&self, other: &ActorPath) -> bool {
        other.is_root()
            || *self == *other
            || (self.0.starts_with(&*other.0)
                && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments below the root, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }
}

impl fmt::Display for ActorPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ActorPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ActorPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ActorPath::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_navigate() {
        let p = ActorPath::parse("app/api").unwrap();
        assert_eq!(p.as_str(), "/app/api");
        assert_eq!(p.name(), "api");
        assert_eq!(p.parent().unwrap().as_str(), "/app");
        assert_eq!(p.parent().unwrap().parent().unwrap(), ActorPath::root());
        assert!(ActorPath::root().parent().is_none());
        assert!(p.is_within(&ActorPath::parse("/app").unwrap()));
        assert!(!ActorPath::parse("/apple")
            .unwrap()
            .is_within(&ActorPath::parse("/app").unwrap()));
        assert!(ActorPath::parse("/a//b").is_err());
        assert!(ActorPath::parse("/a b").is_err());
    }

    #[test]
    fn dot_names_and_slashes_are_refused() {
        for bad in [".", "..", "a/b", "/"] {
            assert!(ActorName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            ActorName::new("..").unwrap_err(),
            PathError::DotName("..".into())
        );
        assert!(ActorPath::parse("/app/../etc").is_err());
        assert!(ActorPath::parse("/./x").is_err());
        assert!(ActorName::new("a.b").is_ok());
        assert!(ActorName::new("...").is_ok());
    }
}
