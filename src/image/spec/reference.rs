//! Image references: `host/repo:tag`, `host/repo@sha256:…`, `host/repo:tag@sha256:…`.
//!
//! Parsed here by hand, following the distribution grammar, rather than with oci-spec's
//! parser: that one compiles a large regular expression on first use, which alone cost a
//! warm `berth run` about 50 ms (more than running the container).

use std::fmt;

use super::digest::Digest;
use super::error::ImageError;

const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty reference".to_owned());
        }
        if s.len() > 4096 {
            return Err("reference is too long".to_owned());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/' (a ':' before it is
        // a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(format!("invalid tag {t:?}"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        validate_registry(&registry)?;
        for component in repository.split('/') {
            validate_component(component)?;
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host berth speaks to for this reference's registry: Docker Hub's images are
    /// named `docker.io/…` but served by `index.docker.io`.
    pub fn registry_host(&self) -> &str {
        match self.registry.as_str() {
            DEFAULT_REGISTRY => "index.docker.io",
            other => other,
        }
    }
}

/// Whether `reference` names no registry host (`alpine`, `acme/app:1`): a short name,
/// which registries.conf resolves (podman's enforcing mode) before it is parsed; parsed
/// as is it would mean Docker Hub, which berth never assumes.
pub fn is_short_name(reference: &str) -> bool {
    let name = short_name_parts(reference.trim()).0;
    match name.split_once('/') {
        Some((first, _)) => !(first.contains('.') || first.contains(':') || first == "localhost"),
        None => true,
    }
}

/// `reference` split into its name and what follows it (`:tag`, `@digest`, both, or "").
pub fn short_name_parts(reference: &str) -> (&str, &str) {
    let end = reference.find('@').unwrap_or(reference.len());
    let last_slash = reference[..end].rfind('/').map_or(0, |i| i + 1);
    let end = reference[last_slash..end]
        .find(':')
        .map_or(end, |i| last_slash + i);
    reference.split_at(end)
}

/// Parses `host/repo:tag`, `host/repo@sha256:…` or `host/repo:tag@sha256:…`.
pub fn parse_reference(reference: &str) -> Result<ImageRef, ImageError> {
    ImageRef::parse(reference).map_err(|message| ImageError::Reference {
        reference: reference.to_owned(),
        message,
    })
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn validate_registry(r: &str) -> Result<(), String> {
    let host = match r.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => r.rsplit_once(':').map_or(r, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() {
                h
            } else {
                r
            }
        }),
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry {r:?}"))
    }
}

/// A path component: lowercase letters and digits, separated by `.`, `_`, `__` or dashes.
fn validate_component(c: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid repository name component {c:?}"));
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return bad();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_three_forms() {
        let r = ImageRef::parse("127.0.0.1:5000/acme/hello:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "acme/hello", Some("1.0"))
        );
        assert_eq!(r.digest, None);
        let r = ImageRef::parse(&format!("127.0.0.1:5000/acme/hello@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().to_string(), D);
        let r = ImageRef::parse(&format!("127.0.0.1:5000/acme/hello:1.0@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/acme/hello:1.0@{D}"));
    }

    #[test]
    fn defaults_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("localhost:5000/a").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        let r = ImageRef::parse("localhost/a:b").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost", Some("b"))
        );
    }

    #[test]
    fn short_names_are_those_without_a_host() {
        for s in ["busybox", "acme/app:1", &format!("acme/app@{D}"), "a/b/c"] {
            assert!(is_short_name(s), "{s}");
        }
        for s in [
            "docker.io/library/alpine",
            "127.0.0.1:5000/a:1",
            "localhost/a",
            "localhost:5000/a",
        ] {
            assert!(!is_short_name(s), "{s}");
        }
        assert_eq!(short_name_parts("acme/app:1"), ("acme/app", ":1"));
        assert_eq!(
            short_name_parts(&format!("app:1@{D}")),
            ("app", format!(":1@{D}").as_str())
        );
        assert_eq!(short_name_parts("app"), ("app", ""));
    }

    #[test]
    fn agrees_with_oci_spec_on_valid_references() {
        for s in [
            "127.0.0.1:5000/acme/hello:1.0",
            "registry.example.com/a/b/c:v1.2-rc_3",
            "quay.io/x__y/z.w:t",
            "docker.io/library/busybox:latest",
        ] {
            let ours = ImageRef::parse(s).unwrap();
            let theirs: oci_spec::distribution::Reference = s.parse().unwrap();
            assert_eq!(ours.registry, theirs.registry(), "{s}");
            assert_eq!(ours.repository, theirs.repository(), "{s}");
            assert_eq!(ours.tag.as_deref(), theirs.tag(), "{s}");
            assert_eq!(ours.registry_host(), theirs.resolve_registry(), "{s}");
            assert_eq!(ours.to_string(), theirs.whole(), "{s}");
        }
    }

    #[test]
    fn invalid_references() {
        for s in [
            "",
            "a b",
            "Acme/x",
            "host:5000/a:",
            "host/a:t@sha256:abc",
            "host/a@md5:00",
            "host/-a",
            "host/a..b",
            "host/a:.bad",
            "bad host/a",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} accepted");
        }
    }
}
