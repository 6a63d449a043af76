//! A stream's tag filter (`?tag=<glob>` on `/events` and the WebSocket endpoints, or a
//! WebSocket's `{"subscribe": ["<glob>", …]}`): an event passes when any of the globs
//! matches its tag, with Salt's glob (Python's `fnmatch`: `*` crosses `/`). The feed applies
//! it before an event is queued for the stream (see [`crate::events::feed`]).

use serde_json::Value;

use crate::error::ApiError;

/// At most this many globs in one filter.
pub const MAX_GLOBS: usize = 64;
/// At most this many bytes in one glob.
pub const MAX_GLOB_BYTES: usize = 1024;

/// The globs of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFilter {
    globs: Vec<String>,
    /// The literal text every glob starts with (up to its first `*`, `?` or `[`), shared by
    /// all of them: a tag that does not start with it matches none (the feed indexes
    /// filtered streams by it, [`crate::events::routes`]).
    prefix: String,
}

impl TagFilter {
    /// A filter from the globs a client sent: 400 when there are too many, or one is empty
    /// or too long. No globs at all is a filter that lets nothing through.
    pub fn new(globs: Vec<String>) -> Result<TagFilter, ApiError> {
        if globs.len() > MAX_GLOBS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_GLOBS} tag globs per stream"
            )));
        }
        for g in &globs {
            if g.is_empty() {
                return Err(ApiError::BadRequest("a tag glob must not be empty".into()));
            }
            if g.len() > MAX_GLOB_BYTES {
                return Err(ApiError::BadRequest(format!(
                    "a tag glob is at most {MAX_GLOB_BYTES} bytes"
                )));
            }
        }
        let prefix = shared_prefix(&globs);
        Ok(TagFilter { globs, prefix })
    }

    /// The filter of a query string's `tag` parameters, if it has any.
    pub fn from_query(query: Option<&str>) -> Result<Option<TagFilter>, ApiError> {
        let Some(q) = query else { return Ok(None) };
        let globs: Vec<String> = form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| v.into_owned())
            .collect();
        if globs.is_empty() {
            return Ok(None);
        }
        TagFilter::new(globs).map(Some)
    }

    /// The filter of a WebSocket text message `{"subscribe": ["<glob>", …]}`; `None` when the
    /// message is something else (rest_cherrypy ignores what clients send).
    pub fn from_message(text: &str) -> Option<Result<TagFilter, ApiError>> {
        let v: Value = serde_json::from_str(text).ok()?;
        let sub = v.as_object()?.get("subscribe")?;
        let Some(list) = sub.as_array() else {
            return Some(Err(ApiError::BadRequest(
                "subscribe takes a list of tag globs".into(),
            )));
        };
        let mut globs = Vec::with_capacity(list.len());
        for g in list {
            match g.as_str() {
                Some(s) => globs.push(s.to_owned()),
                None => {
                    return Some(Err(ApiError::BadRequest(
                        "subscribe takes a list of tag globs".into(),
                    )))
                }
            }
        }
        Some(TagFilter::new(globs))
    }

    /// Whether an event with this tag passes.
    pub fn matches(&self, tag: &str) -> bool {
        self.globs
            .iter()
            .any(|g| salt_wire::fnmatch::fnmatch(tag, g))
    }

    /// The globs, as the client sent them.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }

    /// The literal text every tag this filter lets through starts with (see the field).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The longest text every glob starts with before its first wildcard (`*`, `?` or `[`; a `[`
/// that turns out literal only makes the prefix shorter, never wrong).
fn shared_prefix(globs: &[String]) -> String {
    let literal = |g: &str| -> usize { g.find(['*', '?', '[']).unwrap_or(g.len()) };
    let Some(first) = globs.first() else {
        return String::new();
    };
    let mut prefix = &first[..literal(first)];
    for g in &globs[1..] {
        let lit = &g[..literal(g)];
        let common = prefix
            .char_indices()
            .zip(lit.chars())
            .find(|((_, a), b)| a != b)
            .map(|((i, _), _)| i)
            .unwrap_or(prefix.len().min(lit.len()));
        // `common` is a char boundary of both (the texts are equal up to it).
        prefix = &prefix[..common];
    }
    prefix.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_glob_lets_an_event_through() {
        let f = TagFilter::new(vec!["salt/job/*/ret/*".into(), "salt/auth".into()])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(f.matches("salt/job/20261207/ret/m1"));
        assert!(f.matches("salt/auth"));
        assert!(!f.matches("salt/job/20261207/new"));
        assert!(!f.matches("salt/key"));
        let none = TagFilter::new(vec![]).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!none.matches("salt/auth"));
    }

    #[test]
    fn query_and_message_forms() {
        let q = TagFilter::from_query(Some("tag=salt%2Fjob%2F*&x=1&tag=salt/key"));
        assert_eq!(
            q.ok().flatten().map(|f| f.globs().to_vec()),
            Some(vec!["salt/job/*".to_string(), "salt/key".to_string()])
        );
        assert!(matches!(TagFilter::from_query(Some("x=1")), Ok(None)));
        assert!(matches!(TagFilter::from_query(None), Ok(None)));
        assert!(TagFilter::from_query(Some("tag=")).is_err());
        let m = TagFilter::from_message(r#"{"subscribe": ["salt/job/1/*"]}"#);
        assert!(matches!(m, Some(Ok(f)) if f.globs() == ["salt/job/1/*"]));
        assert!(TagFilter::from_message("websocket client ready").is_none());
        assert!(TagFilter::from_message(r#"{"other": 1}"#).is_none());
        assert!(matches!(
            TagFilter::from_message(r#"{"subscribe": "salt/*"}"#),
            Some(Err(_))
        ));
        assert!(matches!(
            TagFilter::from_message(r#"{"subscribe": [1]}"#),
            Some(Err(_))
        ));
    }

    #[test]
    fn the_prefix_is_the_literal_text_all_globs_start_with() {
        let p = |globs: &[&str]| {
            TagFilter::new(globs.iter().map(|g| g.to_string()).collect())
                .map(|f| f.prefix().to_owned())
                .unwrap_or_else(|e| panic!("{e:?}"))
        };
        assert_eq!(p(&["salt/job/123/*"]), "salt/job/123/");
        assert_eq!(p(&["salt/job/*/new", "salt/run/*/ret"]), "salt/");
        assert_eq!(p(&["salt/auth"]), "salt/auth");
        assert_eq!(p(&["salt/auth", "salt/au"]), "salt/au");
        assert_eq!(p(&["a?c", "a[b]c"]), "a");
        assert_eq!(p(&["*/ret/*", "salt/*"]), "");
        assert_eq!(p(&["é/x", "é/y"]), "é/");
        assert_eq!(p(&["éa", "èa"]), "");
        assert_eq!(p(&[]), "");
    }

    #[test]
    fn limits() {
        assert!(TagFilter::new(vec!["a".into(); MAX_GLOBS + 1]).is_err());
        assert!(TagFilter::new(vec!["a".repeat(MAX_GLOB_BYTES + 1)]).is_err());
        assert!(TagFilter::new(vec!["a".into(); MAX_GLOBS]).is_ok());
    }
}
