//! What a webhook source may attest: repository patterns over `host[:port]/repository`.
//!
//! Syntax, checked when the configuration is loaded:
//! - the host (with its port, if any) is literal and compared without regard to ASCII case;
//! - each `/`-separated segment of the repository part is literal text in which `*` stands for
//!   any run of characters inside that one segment (`acme/*`, `acme/app-*`, `*/app`);
//! - a final `/**` matches one or more further segments at any depth (`acme/**` matches
//!   `acme/app` and `acme/team/app`, never `acme` itself);
//! - `**` anywhere else, an empty segment, or a wildcard in the host is an error.

use std::fmt;
use std::str::FromStr;

use super::ImageRef;

/// One `repositories` entry of a webhook source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryPattern {
    host: String,
    segments: Vec<String>,
    any_depth: bool,
    text: String,
}

impl RepositoryPattern {
    /// The `host[:port]` the pattern is about.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every repository under `host`: what the zero-setup development source may attest.
    pub fn whole_registry(host: &str) -> Self {
        Self {
            host: host.to_ascii_lowercase(),
            segments: Vec::new(),
            any_depth: true,
            text: format!("{host}/**"),
        }
    }

    /// Whether `image`'s `host/repository` is covered (the tag plays no part).
    pub fn matches(&self, image: &ImageRef) -> bool {
        if !self.host.eq_ignore_ascii_case(&image.registry) {
            return false;
        }
        let parts: Vec<&str> = image.repository.split('/').collect();
        let fixed = self.segments.len();
        let depth_ok = if self.any_depth {
            parts.len() > fixed
        } else {
            parts.len() == fixed
        };
        depth_ok
            && self
                .segments
                .iter()
                .zip(&parts)
                .all(|(pattern, part)| segment_matches(pattern, part))
    }
}

/// `*` matches any run of characters; everything else is literal.
fn segment_matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole segment is literal.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl FromStr for RepositoryPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, repository) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' must be host[:port]/repository-pattern"))?;
        if host.is_empty() || host.contains('*') {
            return Err(format!(
                "'{s}': the registry host must be written out, without wildcards"
            ));
        }
        let mut segments: Vec<String> = repository.split('/').map(str::to_owned).collect();
        let any_depth = segments.last().is_some_and(|last| last == "**");
        if any_depth {
            segments.pop();
        }
        for segment in &segments {
            if segment.is_empty() {
                return Err(format!("'{s}' has an empty path segment"));
            }
            if segment.contains("**") {
                return Err(format!(
                    "'{s}': `**` may only be the last segment, as `/**`"
                ));
            }
            if segment.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("'{s}' contains whitespace"));
            }
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            segments,
            any_depth,
            text: s.to_owned(),
        })
    }
}

impl fmt::Display for RepositoryPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A set of patterns; empty means nothing is covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryScope(Vec<RepositoryPattern>);

impl RepositoryScope {
    pub fn new(patterns: Vec<RepositoryPattern>) -> Self {
        Self(patterns)
    }

    pub fn allows(&self, image: &ImageRef) -> bool {
        self.0.iter().any(|p| p.matches(image))
    }

    pub fn patterns(&self) -> &[RepositoryPattern] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, image: &str) -> bool {
        let p: RepositoryPattern = pattern.parse().unwrap();
        p.matches(&image.parse().unwrap())
    }

    #[test]
    fn star_stays_inside_one_segment() {
        assert!(allows(
            "reg.example.com/acme/*",
            "reg.example.com/acme/app:1"
        ));
        assert!(!allows(
            "reg.example.com/acme/*",
            "reg.example.com/acme/team/app"
        ));
        assert!(!allows("reg.example.com/acme/*", "reg.example.com/acme"));
        assert!(!allows(
            "reg.example.com/acme/*",
            "reg.example.com/acmex/app"
        ));
        assert!(allows(
            "reg.example.com/acme/app-*",
            "reg.example.com/acme/app-web"
        ));
        assert!(allows(
            "reg.example.com/acme/app*",
            "reg.example.com/acme/app"
        ));
        assert!(!allows(
            "reg.example.com/acme/app-*",
            "reg.example.com/acme/ap"
        ));
        assert!(allows("reg.example.com/*/app", "reg.example.com/acme/app"));
        assert!(allows("reg.example.com/a*b*c", "reg.example.com/abxbc"));
        assert!(!allows("reg.example.com/a*b*c", "reg.example.com/acb"));
    }

    #[test]
    fn double_star_matches_any_depth_below_its_prefix() {
        assert!(allows(
            "reg.example.com/acme/**",
            "reg.example.com/acme/app"
        ));
        assert!(allows(
            "reg.example.com/acme/**",
            "reg.example.com/acme/a/b/c"
        ));
        assert!(!allows("reg.example.com/acme/**", "reg.example.com/acme"));
        assert!(!allows(
            "reg.example.com/acme/**",
            "reg.example.com/globex/app"
        ));
        assert!(allows(
            "reg.example.com/**",
            "reg.example.com/anything/at/all"
        ));
    }

    #[test]
    fn literal_patterns_and_hosts_match_exactly() {
        assert!(allows(
            "reg.example.com/acme/app",
            "reg.example.com/acme/app:v1"
        ));
        assert!(!allows(
            "reg.example.com/acme/app",
            "reg.example.com/acme/app2"
        ));
        assert!(allows(
            "Reg.Example.com:5000/acme/app",
            "reg.example.com:5000/acme/app"
        ));
        assert!(!allows(
            "reg.example.com/acme/app",
            "reg.example.com:5000/acme/app"
        ));
        assert!(!allows(
            "reg.example.com/acme/app",
            "evil.example.com/acme/app"
        ));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in [
            "reg.example.com",
            "*.example.com/acme/app",
            "reg.example.com/acme//app",
            "reg.example.com/**/app",
            "reg.example.com/acme/a**",
            "reg.example.com/",
            "/acme/app",
        ] {
            assert!(bad.parse::<RepositoryPattern>().is_err(), "{bad}");
        }
    }
}
