//! Image references as docker writes them: `busybox` is `docker.io/library/busybox:latest`,
//! `localhost:5000/app:v1`, `name@sha256:…`, `name:tag@sha256:…`. Pure parsing, no I/O; the
//! grammar is the distribution project's reference grammar with docker's normalization.

use std::fmt;

use oci_spec::image::Digest;

/// The registry that a name without a domain belongs to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// Why a reference string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `input` with docker's normalization. A reference with neither tag nor digest gets
    /// the tag `latest`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let err = |reason| ReferenceError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(err("it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => {
                let digest = crate::digest::parse_sha256(d)
                    .ok_or_else(|| err("the digest is not of the form sha256:<64 hex digits>"))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(err(
                "the tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'",
            ));
        }
        if name.is_empty() {
            return Err(err("the name is empty"));
        }
        let (registry, repository) = split_domain(name);
        if let Some(reg) = &registry
            && !valid_domain(reg)
        {
            return Err(err("the registry host is not a valid host[:port]"));
        }
        let registry = match registry {
            None | Some("index.docker.io") => DEFAULT_REGISTRY.to_owned(),
            Some(r) => r.to_owned(),
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("the repository name must be lowercase"));
        }
        if !repository.split('/').all(valid_path_component) {
            return Err(err(
                "the repository name must be lowercase letters, digits and separators (. _ __ -)",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(err("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry domain as written (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to speak the registry API to: `docker.io` is served by `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The tag, or else the digest: what to ask a registry's manifest endpoint for.
    pub fn tag_or_digest(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// This reference with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }

    /// This reference with the digest set and the tag dropped.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The short form docker prints: `busybox:latest`, `localhost:5000/app:v1`.
    pub fn familiar(&self) -> String {
        self.with_suffix(self.familiar_name())
    }

    /// The short form without tag or digest, as docker's REPOSITORY column shows it:
    /// `busybox`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        }
    }

    fn with_suffix(&self, mut s: String) -> String {
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_ref());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(self.name()))
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits `name` into its domain (if the first component looks like one) and the path.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `[a-z0-9]+ ( ([._]|__|-+) [a-z0-9]+ )*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_normalization() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            full("index.docker.io/user/app"),
            "docker.io/user/app:latest"
        );
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/a/b:v1"), "localhost:5000/a/b:v1");
        assert_eq!(full("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(
            full("quay.io/org/app_x.y-z:1.0"),
            "quay.io/org/app_x.y-z:1.0"
        );
        assert_eq!(full("[::1]:5000/app"), "[::1]:5000/app:latest");
    }

    #[test]
    fn digests_and_tags_together() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.tag_or_digest(), d);
        assert_eq!(r.familiar(), format!("busybox@{d}"));
        let r = Reference::parse(&format!("localhost:5000/x:v2@{d}")).unwrap();
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.tag_or_digest(), d);
    }

    #[test]
    fn familiar_form_drops_the_defaults() {
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(
            Reference::parse("user/app:1").unwrap().familiar(),
            "user/app:1"
        );
        assert_eq!(
            Reference::parse("localhost:5000/app").unwrap().familiar(),
            "localhost:5000/app:latest"
        );
        for (input, name) in [
            ("busybox", "busybox"),
            ("localhost:5000/app:v1", "localhost:5000/app"),
            (
                "quay.io/org/tool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "quay.io/org/tool",
            ),
        ] {
            assert_eq!(Reference::parse(input).unwrap().familiar_name(), name);
        }
    }

    #[test]
    fn api_host_of_docker_hub() {
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("localhost:5000/a").unwrap().api_host(),
            "localhost:5000"
        );
    }

    #[test]
    fn malformed_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "a/b/",
            "-a",
            "a..b",
            "a___b",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "host:port/app",
            &format!("a:{}", "t".repeat(129)),
        ] {
            let e = Reference::parse(bad).expect_err(bad);
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains("invalid image reference"), "{e}");
        }
    }
}
