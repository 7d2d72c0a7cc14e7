//! Glance v2 over HTTP: list images by property, create one, upload its data as a stream,
//! read it back, delete it. Knows nothing of strata's properties or of the export; every
//! error names the cloud and what was asked.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::PublishError;
use super::clouds::Secret;

/// How long one ordinary call (not an upload) may take.
const CALL_WITHIN: Duration = Duration::from_secs(120);

/// An image as Glance describes it; extra properties in `properties`.
#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub os_hash_algo: Option<String>,
    #[serde(default)]
    pub os_hash_value: Option<String>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(flatten)]
    pub properties: BTreeMap<String, Value>,
}

impl Image {
    /// An extra property's value as text.
    #[must_use]
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }

    #[must_use]
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

#[derive(Deserialize)]
struct ImageList {
    images: Vec<Image>,
    #[serde(default)]
    next: Option<String>,
}

/// A Glance endpoint with a token.
#[derive(Debug, Clone)]
pub struct Glance {
    client: reqwest::Client,
    /// The endpoint's root without a version and a trailing slash.
    root: String,
    token: Secret,
    cloud: String,
}

/// The endpoint's root: a trailing slash and a `/v2` (or `/v2.N`) suffix removed, since the
/// catalog may list either.
#[must_use]
pub fn endpoint_root(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if let Some((head, last)) = trimmed.rsplit_once('/')
        && (last == "v2"
            || last.strip_prefix("v2.").is_some_and(|minor| minor.parse::<u32>().is_ok()))
    {
        return head.to_owned();
    }
    trimmed.to_owned()
}

impl Glance {
    #[must_use]
    pub fn new(client: reqwest::Client, endpoint: &str, token: Secret, cloud: &str) -> Self {
        Glance { client, root: endpoint_root(endpoint), token, cloud: cloud.to_owned() }
    }

    fn http(&self, what: &str, url: &str) -> impl FnOnce(reqwest::Error) -> PublishError {
        let (cloud, what, url) = (self.cloud.clone(), what.to_owned(), url.to_owned());
        move |source| PublishError::Http { cloud, what, url, source }
    }

    async fn failed(&self, what: &str, url: &str, response: reqwest::Response) -> PublishError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        PublishError::Service {
            cloud: self.cloud.clone(),
            what: what.to_owned(),
            url: url.to_owned(),
            status,
            message: self.token.redact(&super::service_message(&body)),
        }
    }

    /// Sends `request` (to `url`) with the token; an answer that is not a success (nor one of
    /// `also_fine`) is [`PublishError::Service`].
    async fn send(
        &self,
        what: &str,
        url: &str,
        request: reqwest::RequestBuilder,
        also_fine: Option<reqwest::StatusCode>,
    ) -> Result<reqwest::Response, PublishError> {
        let response = request
            .header("X-Auth-Token", self.token.expose())
            .send()
            .await
            .map_err(self.http(what, url))?;
        if response.status().is_success() || Some(response.status()) == also_fine {
            return Ok(response);
        }
        Err(self.failed(what, url, response).await)
    }

    /// Every image whose properties match `filters` (Glance filters on any property), all
    /// pages.
    pub async fn list(&self, filters: &[(&str, &str)]) -> Result<Vec<Image>, PublishError> {
        let what = "list images";
        let mut images = Vec::new();
        let mut url = format!("{}/v2/images", self.root);
        let mut query: Vec<(&str, &str)> = filters.to_vec();
        query.push(("limit", "100"));
        let mut request = self.client.get(&url).query(&query);
        loop {
            let response = self.send(what, &url, request.timeout(CALL_WITHIN), None).await?;
            let page: ImageList = response.json().await.map_err(self.http(what, &url))?;
            images.extend(page.images);
            match page.next {
                // `next` is a path from the API's root ("/v2/images?marker=…").
                Some(next) if !next.is_empty() => {
                    url = format!("{}{next}", self.root);
                    request = self.client.get(&url);
                }
                _ => return Ok(images),
            }
        }
    }

    /// `POST /v2/images`: a queued image with these attributes and properties.
    pub async fn create(
        &self,
        body: &serde_json::Map<String, Value>,
    ) -> Result<Image, PublishError> {
        let (what, url) = ("create the image", format!("{}/v2/images", self.root));
        let request = self.client.post(&url).json(body).timeout(CALL_WITHIN);
        let response = self.send(what, &url, request, None).await?;
        response.json().await.map_err(self.http(what, &url))
    }

    /// `PUT /v2/images/ID/file`: the image's data, `bytes` long, from `body` (a stream).
    pub async fn upload(
        &self,
        id: &str,
        bytes: u64,
        body: reqwest::Body,
    ) -> Result<(), PublishError> {
        let url = format!("{}/v2/images/{id}/file", self.root);
        let request = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, bytes)
            .body(body);
        self.send("upload the image's data", &url, request, None).await.map(drop)
    }

    pub async fn get(&self, id: &str) -> Result<Image, PublishError> {
        let (what, url) = ("read the image", format!("{}/v2/images/{id}", self.root));
        let request = self.client.get(&url).timeout(CALL_WITHIN);
        let response = self.send(what, &url, request, None).await?;
        response.json().await.map_err(self.http(what, &url))
    }

    /// `DELETE /v2/images/ID`; an image that is gone already counts as deleted.
    pub async fn delete(&self, id: &str) -> Result<(), PublishError> {
        let url = format!("{}/v2/images/{id}", self.root);
        let request = self.client.delete(&url).timeout(CALL_WITHIN);
        let gone = Some(reqwest::StatusCode::NOT_FOUND);
        self.send("delete the image", &url, request, gone).await.map(drop)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_roots_lose_their_version_and_slash() {
        assert_eq!(endpoint_root("http://127.0.0.1:9292"), "http://127.0.0.1:9292");
        assert_eq!(endpoint_root("http://127.0.0.1:9292/"), "http://127.0.0.1:9292");
        assert_eq!(endpoint_root("https://cloud.example/image/v2/"), "https://cloud.example/image");
        assert_eq!(
            endpoint_root("https://cloud.example/image/v2.16"),
            "https://cloud.example/image"
        );
        assert_eq!(endpoint_root("https://cloud.example/v2x"), "https://cloud.example/v2x");
    }

    #[test]
    fn an_image_keeps_its_extra_properties() {
        let image: Image = serde_json::from_value(serde_json::json!({
            "id": "i1", "name": "demo-final", "status": "active", "owner": "p1",
            "protected": false, "created_at": "2026-12-07T17:45:32Z", "size": 10,
            "os_hash_algo": "sha512", "os_hash_value": "ab", "visibility": "shared",
            "strata_key": "k1", "min_disk": 4, "tags": []
        }))
        .unwrap();
        assert_eq!(image.property("strata_key"), Some("k1"));
        assert_eq!(image.properties["min_disk"], 4);
        assert_eq!(image.size, Some(10));
    }
}
