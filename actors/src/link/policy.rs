//! What a spoke lets its hub do: `[spoke] allow` (verb names) and `[spoke] paths`
//! (subtrees). Checked by the spoke on every verb before it acts, whatever the hub says:
//! a compromised hub cannot make a spoke act outside them.

use super::protocol::Verb;

/// The verbs and subtrees a spoke serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokePolicy {
    allow: Vec<String>,
    /// Normalized subtree roots (`/app`); empty = the whole tree.
    paths: Vec<String>,
}

impl Default for SpokePolicy {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl SpokePolicy {
    /// `allow` (default: every verb) and `paths` (default: the whole tree). Paths are
    /// taken as given apart from a leading `/` added and a trailing one removed.
    pub fn new(allow: Option<Vec<String>>, paths: Option<Vec<String>>) -> Self {
        let allow = allow.unwrap_or_else(|| {
            super::protocol::VERB_NAMES
                .iter()
                .map(|v| (*v).to_owned())
                .collect()
        });
        let paths = paths
            .unwrap_or_default()
            .into_iter()
            .map(|p| normalize(&p))
            .collect();
        Self { allow, paths }
    }

    /// Whether every subtree is open.
    pub fn whole_tree(&self) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p == "/")
    }

    /// Whether the actor at `path` lies in an allowed subtree.
    pub fn covers(&self, path: &str) -> bool {
        if self.whole_tree() {
            return true;
        }
        let path = normalize(path);
        self.paths.iter().any(|root| {
            path == *root
                || path
                    .strip_prefix(root.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Whether the actor at `path` is an ancestor of an allowed subtree (shown in a
    /// pruned tree so the subtree has a place, but not acted on).
    pub fn leads_to(&self, path: &str) -> bool {
        let path = normalize(path);
        self.whole_tree()
            || self.paths.iter().any(|root| {
                path == "/"
                    || root
                        .strip_prefix(path.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// `Ok` if the spoke serves `verb`, else why not (answered 403).
    pub fn check(&self, verb: &Verb) -> Result<(), String> {
        if !self.allow.iter().any(|a| a == verb.name()) {
            return Err(format!(
                "the spoke does not allow the verb {:?} (its [spoke] allow)",
                verb.name()
            ));
        }
        match verb.path() {
            Some(path) if !self.covers(path) => Err(format!(
                "the spoke does not allow acting on {} (its [spoke] paths)",
                normalize(path)
            )),
            _ => Ok(()),
        }
    }
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    format!("/{trimmed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cover_subtrees_not_prefixes() {
        let p = SpokePolicy::new(None, Some(vec!["/app".into()]));
        assert!(p.covers("/app"));
        assert!(p.covers("app/api"));
        assert!(!p.covers("/application"));
        assert!(!p.covers("/"));
        assert!(p.leads_to("/"));
        assert!(!p.leads_to("/web"));
    }

    #[test]
    fn allow_is_checked_before_paths() {
        let p = SpokePolicy::new(Some(vec!["actor".into()]), None);
        assert!(p.check(&Verb::Actor { path: "/x".into() }).is_ok());
        assert!(p.check(&Verb::Stop { path: "/x".into() }).is_err());
    }
}
