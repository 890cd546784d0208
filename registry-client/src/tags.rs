//! Tags: the tags of a repository in a registry (skopeo's `list-tags`, crane's `ls`).
//!
//! `GET /v2/NAME/tags/list`, page after page as the registry's `Link: <…>; rel="next"` headers
//! lead, in the order the registry gives them (the distribution spec says lexical). A next link
//! must stay on the registry: one pointing elsewhere would carry the credentials there.

use layerfs::reference::Reference;
use reqwest::Method;
use reqwest::header::LINK;
use serde::Deserialize;

use crate::client::{Client, ConnectOptions, read_limited};
use crate::error::Result;
use crate::events::Reporter;

/// The largest page of tags strata reads.
const MAX_PAGE_SIZE: usize = 16 << 20;
/// More pages than this is a registry going round in circles.
const MAX_PAGES: usize = 10_000;

#[derive(Deserialize)]
struct TagPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// Every tag of the repository `repository` names (its tag or digest, if any, plays no part).
pub async fn tags_async(
    repository: &Reference,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    let repo = repository.repository();
    let scopes = vec![format!("repository:{repo}:pull")];
    let client = Client::connect(repository, scopes, opts, None, reporter).await?;
    let mut tags = Vec::new();
    let mut next = Some(format!("/v2/{repo}/tags/list"));
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(client.protocol(
                format!("the tags of {repo}"),
                format!("more than {MAX_PAGES} pages"),
            ));
        }
        let url = client.url(&path);
        let resp = client.send(Method::GET, &url, true, |rb| rb).await?;
        let what = format!("the tags of {repo}");
        if !resp.status().is_success() {
            return Err(client.status_error(&what, resp).await);
        }
        if let Some(link) = resp.headers().get(LINK).and_then(|v| v.to_str().ok()) {
            next = next_link(link).map_err(|r| client.protocol(&what, r))?;
        }
        let body = read_limited(resp, MAX_PAGE_SIZE)
            .await
            .map_err(|r| client.protocol(&what, r))?;
        let page: TagPage =
            serde_json::from_slice(&body).map_err(|e| client.protocol(&what, e.to_string()))?;
        tags.extend(page.tags.unwrap_or_default());
    }
    Ok(tags)
}

/// Blocking [`tags_async`], on a runtime of its own (not to be called from async code).
pub fn tags(
    repository: &Reference,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<String>> {
    crate::runtime()?.block_on(tags_async(repository, opts, reporter))
}

/// The path of the `rel="next"` link of a `Link` header (`None`: the last page); an error when
/// it leads off the registry.
fn next_link(header: &str) -> Result<Option<String>, String> {
    let next = header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|v| v.trim_matches('"') == "next")
        });
        is_next.then(|| target.trim())
    });
    let Some(target) = next else {
        return Ok(None);
    };
    match target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        Some(path) if path.starts_with('/') && !path.starts_with("//") => Ok(Some(path.to_owned())),
        _ => Err(format!(
            "the next page is at {target}, not a path on this registry"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn next_links_are_paths_on_the_same_registry() {
        assert_eq!(
            next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#),
            Ok(Some("/v2/app/tags/list?last=b&n=2".to_owned()))
        );
        assert_eq!(
            next_link(r#"</x>; rel="prev", </v2/a/tags/list?last=c>; rel=next"#),
            Ok(Some("/v2/a/tags/list?last=c".to_owned()))
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), Ok(None));
        assert_eq!(next_link("garbage"), Ok(None));
        for elsewhere in [
            r#"<https://elsewhere.example/v2/a/tags/list>; rel="next""#,
            r#"<//elsewhere.example/v2/a>; rel="next""#,
            r#"v2/a; rel="next""#,
        ] {
            let err = next_link(elsewhere).unwrap_err();
            assert!(err.contains("not a path on this registry"), "{err}");
        }
    }
}
