//! OAuth 2.1 resource server (MCP `basic/authorization`): with an issuer configured, every
//! `/mcp` request carries `Authorization: Bearer <JWT access token>` issued for this server.
//!
//! - Tokens are verified against the issuer's signing keys ([`keys`]: a JWKS file, e.g. mounted
//!   from a Secret, re-read when it changes, or the issuer's `jwks_uri`, cached and fetched
//!   again for a key id not seen yet): signature, `exp`/`nbf`, `iss`, `aud` equal to this
//!   resource (RFC 8707 audience binding, so a token minted for another service is refused),
//!   and `typ` (an explicitly typed JWT that is not an access token, such as a logout or DPoP
//!   proof token, is refused; with `requireAtJwt`, only RFC 9068 `at+jwt` is accepted).
//! - Missing or invalid tokens get `401` with `WWW-Authenticate: Bearer resource_metadata=…`
//!   pointing at the RFC 9728 metadata this server publishes; a token without the required scopes
//!   gets `403` with `error="insufficient_scope"`.
//! - The principal (`iss` + `sub`) owns the sessions it creates: a session id presented by another
//!   principal is unknown (`404`). A session id is never a credential.

pub mod keys;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};

/// How the resource server is configured (all from settings; see README).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthSettings {
    /// The authorization server's issuer identifier (`AUTH_ISSUER`); empty = auth off. Turning
    /// auth on or off changes who owns sessions, so it takes a restart.
    #[schemars(extend("x-abacus-reload" = "restart"))]
    pub issuer: String,
    /// This resource's identifier, the required `aud` (`AUTH_AUDIENCE`), e.g.
    /// `https://mcp.example.com/mcp`.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub audience: String,
    /// JWKS file with the issuer's signing keys (`AUTH_JWKS_FILE`), e.g. a mounted Secret;
    /// re-read when it changes. Either this or `jwksUri`.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub jwks_file: Option<PathBuf>,
    /// The issuer's `jwks_uri` (`AUTH_JWKS_URI`): `https://`, or `http://` to a loopback
    /// address. Cached as its `Cache-Control` says (1 min to 1 h, 5 min without), fetched again
    /// when a token names an unknown key id (at most every 10 s). Either this or `jwksFile`.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub jwks_uri: Option<String>,
    /// Accept only RFC 9068 access tokens (`typ: at+jwt`) (`AUTH_REQUIRE_AT_JWT`). Off by
    /// default, since many issuers type access tokens `JWT`; other explicit `+jwt` types are
    /// refused either way.
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub require_at_jwt: bool,
    /// Scopes every request needs (`AUTH_REQUIRED_SCOPES`, comma list).
    #[schemars(extend("x-abacus-reload" = "live"))]
    pub required_scopes: Vec<String>,
}

/// Why a request is not authorized. Mapped to 401/403 in `http::error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token: 401 without an error code (RFC 6750 §3.1).
    #[error("Unauthorized: a bearer access token is required")]
    Missing,
    /// The token cannot be verified or is not for this resource: 401 `invalid_token`.
    #[error("Unauthorized: invalid access token ({0})")]
    Invalid(String),
    /// The token lacks scopes: 403 `insufficient_scope`.
    #[error("Forbidden: the access token lacks the required scope {0:?}")]
    InsufficientScope(String),
}

/// Why auth cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("AUTH_AUDIENCE is required when AUTH_ISSUER is set")]
    NoAudience,
    #[error("AUTH_JWKS_FILE or AUTH_JWKS_URI is required when AUTH_ISSUER is set")]
    NoKeys,
    #[error("set one of AUTH_JWKS_FILE and AUTH_JWKS_URI, not both")]
    TwoKeySources,
    #[error("signing keys {0}: {1}")]
    Keys(String, String),
}

/// Who made a request: `iss` and `sub` of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub String);

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Value>,
}

impl Claims {
    fn scopes(&self) -> HashSet<&str> {
        let mut out: HashSet<&str> = self
            .scope
            .as_deref()
            .map(|s| s.split_whitespace().collect())
            .unwrap_or_default();
        if let Some(Value::Array(items)) = &self.scp {
            out.extend(items.iter().filter_map(Value::as_str));
        }
        out
    }
}

/// Verifies access tokens; `None` in the app when auth is off.
pub struct Authenticator {
    settings: AuthSettings,
    keys: Arc<keys::KeyStore>,
}

/// Signature algorithms accepted (asymmetric only: the server holds no secret).
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

impl Authenticator {
    /// Builds the verifier; `Ok(None)` when no issuer is configured (auth off).
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<Self>, AuthConfigError> {
        if settings.issuer.is_empty() {
            return Ok(None);
        }
        if settings.audience.is_empty() {
            return Err(AuthConfigError::NoAudience);
        }
        let source = match (&settings.jwks_file, &settings.jwks_uri) {
            (Some(_), Some(_)) => return Err(AuthConfigError::TwoKeySources),
            (Some(path), None) => keys::Source::File(path.clone()),
            (None, Some(uri)) => keys::Source::Uri(uri.clone()),
            (None, None) => return Err(AuthConfigError::NoKeys),
        };
        let shown = match &source {
            keys::Source::File(p) => format!("file {}", p.display()),
            keys::Source::Uri(u) => format!("URI {u}"),
        };
        let keys = keys::KeyStore::open(source).map_err(|e| AuthConfigError::Keys(shown, e))?;
        Ok(Some(Self {
            settings: settings.clone(),
            keys: Arc::new(keys),
        }))
    }

    /// Starts keeping the signing keys current (file checks or fetches) for as long as this
    /// verifier is in use.
    pub fn start(&self) {
        self.keys.start();
    }

    /// Verifies the request's `Authorization` header value.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let invalid = |why: &str| AuthError::Invalid(why.to_owned());
        let header = decode_header(token).map_err(|_| invalid("malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("unsupported algorithm"));
        }
        if !self.type_allowed(header.typ.as_deref()) {
            return Err(invalid("not an access token"));
        }
        let mut keys = self.keys.current();
        if find_key(&keys, header.kid.as_deref()).is_none() {
            // A key id not seen yet: the issuer may have rotated its keys.
            self.keys.refresh(keys::MIN_REFRESH_GAP).await;
            keys = self.keys.current();
        }
        let jwk =
            find_key(&keys, header.kid.as_deref()).ok_or_else(|| invalid("unknown signing key"))?;
        if !usable_for(jwk, header.alg) {
            return Err(invalid("signing key not for this algorithm"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid("unusable signing key"))?;
        let mut validation = Validation::new(header.alg);
        // `Validation::new` leaves `nbf` unchecked: a token is not valid before its time.
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let claims = decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?
            .claims;
        let scopes = claims.scopes();
        if let Some(missing) = self
            .settings
            .required_scopes
            .iter()
            .find(|s| !scopes.contains(s.as_str()))
        {
            return Err(AuthError::InsufficientScope(missing.clone()));
        }
        Ok(Principal(format!("{}#{}", claims.iss, claims.sub)))
    }

    /// The JOSE `typ` rule (RFC 8725 §3.11, RFC 9068 §2.1): `at+jwt` (or
    /// `application/at+jwt`) always passes; an untyped or `JWT` token passes unless
    /// `requireAtJwt`; any other explicit type is another kind of token.
    fn type_allowed(&self, typ: Option<&str>) -> bool {
        let Some(typ) = typ else {
            return !self.settings.require_at_jwt;
        };
        let typ = typ.to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        match typ {
            "at+jwt" => true,
            "jwt" => !self.settings.require_at_jwt,
            _ => false,
        }
    }

    /// The RFC 9728 protected-resource metadata document.
    pub fn metadata(&self) -> Value {
        let mut doc = json!({
            "resource": self.settings.audience,
            "authorization_servers": [self.settings.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "Abacus MCP server",
        });
        if !self.settings.required_scopes.is_empty() {
            doc["scopes_supported"] = json!(self.settings.required_scopes);
        }
        doc
    }

    /// Where the metadata lives (RFC 9728 §3.1: the well-known path inserted before the
    /// resource's path), for `WWW-Authenticate`.
    pub fn metadata_url(&self) -> String {
        metadata_url(&self.settings.audience)
    }

    /// The scopes to name in an `insufficient_scope` challenge.
    pub fn required_scopes(&self) -> String {
        self.settings.required_scopes.join(" ")
    }
}

/// The key a token names by `kid`; without one, the only key there is.
fn find_key<'a>(
    keys: &'a jsonwebtoken::jwk::JwkSet,
    kid: Option<&str>,
) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
}

/// Whether a JWK may verify a signature made with `alg`: a key published for encryption
/// (`use: enc`) never signs, and a key that names its algorithm (`alg`) is used with that one
/// only, so the same RSA key cannot be replayed under another padding (RS256 vs PS256).
fn usable_for(jwk: &jsonwebtoken::jwk::Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::PublicKeyUse;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return false;
    }
    match jwk.common.key_algorithm {
        None => true,
        Some(named) => named.to_string().parse::<Algorithm>().ok() == Some(alg),
    }
}

/// `https://host/mcp` → `https://host/.well-known/oauth-protected-resource/mcp`.
pub fn metadata_url(resource: &str) -> String {
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    let Some((scheme, rest)) = resource.split_once("://") else {
        return WELL_KNOWN.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = path.trim_end_matches('/');
    format!("{scheme}://{authority}{WELL_KNOWN}{path}")
}

/// A short, safe reason (never the token or its claims).
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not yet valid",
        K::InvalidAudience => "issued for another resource",
        K::InvalidIssuer => "issued by another authorization server",
        K::InvalidSignature => "bad signature",
        K::MissingRequiredClaim(_) => "missing a required claim",
        _ => "malformed",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_insert_the_well_known_path() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:1453"),
            "http://127.0.0.1:1453/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn auth_is_off_without_an_issuer_and_refuses_half_configurations() {
        assert!(Authenticator::from_settings(&AuthSettings::default())
            .unwrap()
            .is_none());
        let mut s = AuthSettings {
            issuer: "https://as".into(),
            ..Default::default()
        };
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthConfigError::NoAudience)
        ));
        s.audience = "https://rs/mcp".into();
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthConfigError::NoKeys)
        ));
    }

    #[test]
    fn keys_verify_only_signatures_of_their_own_algorithm() {
        let jwk = |extra: Value| -> jsonwebtoken::jwk::Jwk {
            let mut k = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
            k.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(k).unwrap()
        };
        assert!(usable_for(&jwk(json!({})), Algorithm::PS256));
        assert!(usable_for(
            &jwk(json!({"use": "sig", "alg": "RS256"})),
            Algorithm::RS256
        ));
        assert!(!usable_for(&jwk(json!({"alg": "RS256"})), Algorithm::PS256));
        assert!(!usable_for(&jwk(json!({"use": "enc"})), Algorithm::RS256));
    }

    fn authenticator(require_at_jwt: bool) -> Authenticator {
        Authenticator {
            settings: AuthSettings {
                issuer: "i".into(),
                audience: "a".into(),
                require_at_jwt,
                ..Default::default()
            },
            keys: Arc::new(
                keys::KeyStore::open(keys::Source::Uri("http://127.0.0.1:9/jwks".into())).unwrap(),
            ),
        }
    }

    #[tokio::test]
    async fn bearer_headers_are_parsed_strictly() {
        let a = authenticator(false);
        assert_eq!(a.verify(None).await, Err(AuthError::Missing));
        assert_eq!(a.verify(Some("Basic abc")).await, Err(AuthError::Missing));
        assert_eq!(a.verify(Some("Bearer ")).await, Err(AuthError::Missing));
        assert!(matches!(
            a.verify(Some("Bearer not.a.jwt")).await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn only_access_token_types_pass() {
        let lax = authenticator(false);
        for ok in [
            None,
            Some("JWT"),
            Some("at+jwt"),
            Some("application/AT+JWT"),
        ] {
            assert!(lax.type_allowed(ok), "{ok:?}");
        }
        for refused in [
            Some("logout+jwt"),
            Some("dpop+jwt"),
            Some("secevent+jwt"),
            Some("x"),
        ] {
            assert!(!lax.type_allowed(refused), "{refused:?}");
        }
        let strict = authenticator(true);
        assert!(strict.type_allowed(Some("at+jwt")));
        assert!(!strict.type_allowed(Some("JWT")));
        assert!(!strict.type_allowed(None));
    }
}
