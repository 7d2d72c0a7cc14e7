//! Keystone v3: one `POST /v3/auth/tokens` (password or application credential) for a
//! project-scoped token and the service catalog, and the image endpoint picked from that
//! catalog by interface and region. The token is a [`Secret`]; nothing here logs.

use serde::Deserialize;
use serde_json::{Value, json};

use super::PublishError;
use super::clouds::{AppCredRef, Cloud, Credential, DomainRef, Named, Secret};

/// A logged-in session: the token, whose project it is, and where the services are.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: Secret,
    pub project_id: String,
    pub project_name: String,
    pub catalog: Vec<CatalogService>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogService {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CatalogEndpoint {
    pub interface: String,
    #[serde(default)]
    pub region_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    pub url: String,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    #[serde(default)]
    catalog: Vec<CatalogService>,
    #[serde(default)]
    project: Option<ProjectInfo>,
}

#[derive(Deserialize)]
struct ProjectInfo {
    id: String,
    #[serde(default)]
    name: String,
}

fn domain_json(domain: &DomainRef) -> Value {
    match domain {
        DomainRef::Id(id) => json!({ "id": id }),
        DomainRef::Name(name) => json!({ "name": name }),
    }
}

fn named_json(named: &Named) -> Value {
    match named {
        Named::Id(id) => json!({ "id": id }),
        Named::Name { name, domain } => json!({ "name": name, "domain": domain_json(domain) }),
    }
}

/// The body of `POST /v3/auth/tokens` (it holds the secret: sent, never kept).
#[must_use]
pub fn auth_body(credential: &Credential) -> Value {
    match credential {
        Credential::Password { user, password, project } => {
            let mut user = named_json(user);
            user["password"] = Value::String(password.expose().to_owned());
            let mut auth = json!({
                "identity": { "methods": ["password"], "password": { "user": user } }
            });
            if let Some(project) = project {
                auth["scope"] = json!({ "project": named_json(project) });
            }
            json!({ "auth": auth })
        }
        Credential::ApplicationCredential { credential, secret } => {
            let mut body = match credential {
                AppCredRef::Id(id) => json!({ "id": id }),
                AppCredRef::Name { name, user } => {
                    json!({ "name": name, "user": named_json(user) })
                }
            };
            body["secret"] = Value::String(secret.expose().to_owned());
            json!({ "auth": { "identity": {
                "methods": ["application_credential"],
                "application_credential": body,
            } } })
        }
    }
}

/// Logs in to the cloud's Keystone; a refusal (401) is [`PublishError::Refused`], naming the
/// cloud and who, never the secret.
pub async fn authenticate(
    client: &reqwest::Client,
    cloud: &Cloud,
) -> Result<Session, PublishError> {
    let url = format!("{}/auth/tokens", cloud.auth_url);
    let http = |source| PublishError::Http {
        cloud: cloud.name.clone(),
        what: "log in to Keystone".to_owned(),
        url: url.clone(),
        source,
    };
    let response = client
        .post(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&auth_body(&cloud.credential))
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let body = response.text().await.unwrap_or_default();
        return Err(PublishError::Refused {
            cloud: cloud.name.clone(),
            origin: cloud.origin.clone(),
            who: cloud.who(),
            url: cloud.auth_url.clone(),
            status: status.as_u16(),
            message: cloud.secret().redact(&super::service_message(&body)),
        });
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(PublishError::Service {
            cloud: cloud.name.clone(),
            what: format!("log in to Keystone as {}", cloud.who()),
            url,
            status: status.as_u16(),
            message: cloud.secret().redact(&super::service_message(&body)),
        });
    }
    let token = response
        .headers()
        .get("x-subject-token")
        .and_then(|value| value.to_str().ok())
        .map(Secret::new)
        .ok_or_else(|| PublishError::Service {
            cloud: cloud.name.clone(),
            what: "log in to Keystone".to_owned(),
            url: url.clone(),
            status: status.as_u16(),
            message: "the answer has no X-Subject-Token header".to_owned(),
        })?;
    let body: TokenBody = response.json().await.map_err(http)?;
    let project = body.token.project.ok_or_else(|| PublishError::Service {
        cloud: cloud.name.clone(),
        what: "log in to Keystone".to_owned(),
        url: url.clone(),
        status: status.as_u16(),
        message: "the token is not scoped to a project: name one (project_name)".to_owned(),
    })?;
    Ok(Session {
        token,
        project_id: project.id,
        project_name: project.name,
        catalog: body.token.catalog,
    })
}

/// The URL of `kind`'s endpoint for `interface`, in `region` (any region when `None`: the
/// first listed). The error says what the catalog has instead.
pub fn endpoint(
    catalog: &[CatalogService],
    kind: &str,
    interface: &str,
    region: Option<&str>,
) -> Result<String, String> {
    let services: Vec<&CatalogService> =
        catalog.iter().filter(|service| service.kind == kind).collect();
    if services.is_empty() {
        let kinds: Vec<&str> = catalog.iter().map(|service| service.kind.as_str()).collect();
        return Err(format!(
            "the catalog has no `{kind}` service (it has: {})",
            if kinds.is_empty() { "nothing".to_owned() } else { kinds.join(", ") }
        ));
    }
    let in_region = |endpoint: &CatalogEndpoint| {
        region.is_none_or(|region| {
            endpoint.region_id.as_deref() == Some(region)
                || endpoint.region.as_deref() == Some(region)
        })
    };
    let found = services
        .iter()
        .flat_map(|service| service.endpoints.iter())
        .find(|endpoint| endpoint.interface == interface && in_region(endpoint));
    if let Some(endpoint) = found {
        return Ok(endpoint.url.clone());
    }
    let offered: Vec<String> = services
        .iter()
        .flat_map(|service| service.endpoints.iter())
        .map(|endpoint| {
            format!(
                "{} in {}",
                endpoint.interface,
                endpoint.region_id.as_deref().or(endpoint.region.as_deref()).unwrap_or("no region")
            )
        })
        .collect();
    Err(format!(
        "the catalog has no {interface} `{kind}` endpoint{} (it has: {}): set interface or region_name",
        region.map(|region| format!(" in region {region}")).unwrap_or_default(),
        if offered.is_empty() { "none".to_owned() } else { offered.join(", ") }
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn catalog() -> Vec<CatalogService> {
        serde_json::from_value(json!([
            { "type": "identity", "name": "keystone", "endpoints": [
                { "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://k/v3" }
            ]},
            { "type": "image", "name": "glance", "endpoints": [
                { "interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": "http://glance-int:9292" },
                { "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "https://glance.one/" },
                { "interface": "public", "region_id": "RegionTwo", "region": "RegionTwo", "url": "https://glance.two/image" }
            ]}
        ]))
        .unwrap()
    }

    #[test]
    fn the_image_endpoint_by_interface_and_region() {
        let catalog = catalog();
        assert_eq!(endpoint(&catalog, "image", "public", None).unwrap(), "https://glance.one/");
        assert_eq!(
            endpoint(&catalog, "image", "public", Some("RegionTwo")).unwrap(),
            "https://glance.two/image"
        );
        assert_eq!(
            endpoint(&catalog, "image", "internal", Some("RegionOne")).unwrap(),
            "http://glance-int:9292"
        );
        let error = endpoint(&catalog, "image", "admin", Some("RegionOne")).unwrap_err();
        assert!(error.contains("no admin `image` endpoint in region RegionOne"), "{error}");
        assert!(error.contains("public in RegionTwo"), "{error}");
        let error = endpoint(&catalog[..1], "image", "public", None).unwrap_err();
        assert!(error.contains("no `image` service (it has: identity)"), "{error}");
    }

    #[test]
    fn auth_bodies_for_password_and_application_credential() {
        let password = Credential::Password {
            user: Named::Name { name: "member".into(), domain: DomainRef::Name("Default".into()) },
            password: Secret::new("pw"),
            project: Some(Named::Id("p1".into())),
        };
        assert_eq!(
            auth_body(&password),
            json!({ "auth": {
                "identity": { "methods": ["password"], "password": { "user": {
                    "name": "member", "domain": { "name": "Default" }, "password": "pw"
                } } },
                "scope": { "project": { "id": "p1" } }
            } })
        );
        let by_name = Credential::ApplicationCredential {
            credential: AppCredRef::Name {
                name: "ci".into(),
                user: Named::Name { name: "bot".into(), domain: DomainRef::Id("default".into()) },
            },
            secret: Secret::new("s"),
        };
        assert_eq!(
            auth_body(&by_name),
            json!({ "auth": { "identity": {
                "methods": ["application_credential"],
                "application_credential": {
                    "name": "ci", "user": { "name": "bot", "domain": { "id": "default" } }, "secret": "s"
                }
            } } })
        );
    }
}
