//! Checks made on every S3 request before s3s verifies its signature: what the signature must
//! cover (every `x-amz-*` header, `host`), the region it is scoped to, and how long a presigned
//! URL may live.
//!
//! s3s verifies a SigV4 signature over the headers the request *says* it signed and nothing
//! else, then builds the operation from every header, signed or not. With only a presigned
//! PUT URL (signed headers: `host`), an added `x-amz-copy-source` turned the PUT into a copy of
//! another bucket's object. As AWS does, a SigV4 request here must sign every `x-amz-*` header
//! it carries, and `host`.
//!
//! Which signature s3s checks is decided the way s3s decides it (`SignatureContext::check` in
//! s3s 0.14): a `Signature` query parameter (SigV2 presigned), then an `Authorization` header
//! that reads as SigV2 (`AWS key:signature`), then an `X-Amz-Signature` query parameter (SigV4
//! presigned), then any other `Authorization` header, read as SigV4 whatever its algorithm
//! word. A request that carries more than one of these is refused, so the check here and
//! s3s's can never look at different signatures. SigV2 is refused, as AWS refuses it in every
//! region opened since 2014: s3s checks no freshness of a SigV2 request (a captured one replays
//! forever) and no lifetime of a SigV2 presigned URL. A browser form upload (POST with
//! `multipart/form-data`) is refused before s3s reads it: the gateway serves no PostObject, and
//! s3s would buffer the whole form, up to gigabytes, before finding that out.

use std::collections::BTreeSet;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::config::{ANY_REGION, Config};

/// The only SigV4 algorithm S3 knows.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The longest life AWS gives a presigned URL: 7 days, in seconds.
pub const MAX_PRESIGNED_EXPIRES: u64 = 604_800;

/// `x-amz-*` headers a header-signed (`Authorization`) request may leave out of
/// `SignedHeaders`, because the signature covers their values anyway:
/// - `x-amz-date`: s3s takes the string-to-sign's timestamp and the signing key's date from
///   it, so another value gives another signature;
/// - `x-amz-content-sha256`: its value is the canonical request's payload hash line (a hex
///   digest, `UNSIGNED-PAYLOAD` or a `STREAMING-…` word, each written as a different line), so
///   another value gives another signature.
const HEADER_AUTH_EXEMPT: &[&str] = &["x-amz-date", "x-amz-content-sha256"];

/// `x-amz-*` headers a presigned request may leave out of `X-Amz-SignedHeaders`:
/// - `x-amz-content-sha256`: a presigned signature covers `UNSIGNED-PAYLOAD`, not this header;
///   s3s only uses it to check the body against the digest it names (and refuses a
///   `STREAMING-…` value). It can make s3s refuse a body, never choose another operation or
///   change what is stored. `x-amz-date` is not exempt here: the presigned timestamp is the
///   `X-Amz-Date` query parameter, and the header is signed by nothing.
const PRESIGNED_EXEMPT: &[&str] = &["x-amz-content-sha256"];

/// Query parameters that are the presigned signature itself, never presented as headers.
const PRESIGN_PARAMETERS: &[&str] = &[
    "x-amz-algorithm",
    "x-amz-credential",
    "x-amz-date",
    "x-amz-expires",
    "x-amz-signedheaders",
    "x-amz-signature",
    "x-amz-security-token",
];

/// AWS's message for a presigned URL that lacks one of its parameters (or repeats one).
const PRESIGN_REQUIRES: &str = "Query-string authentication version 4 requires the \
     X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
     X-Amz-Expires parameters.";

/// What the gateway accepts of a request's signature, from its configuration.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// The region every SigV4 credential scope must name; `None` accepts any.
    region: Option<String>,
}

impl AuthPolicy {
    /// The policy `config` asks for.
    pub fn from_config(config: &Config) -> Self {
        AuthPolicy {
            region: (config.region != ANY_REGION).then(|| config.region.clone()),
        }
    }
}

/// Why a request was refused before it reached s3s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Headers the signature must cover and does not (`x-amz-*` headers, `host`), sorted.
    #[error("headers not signed: {}", .0.join(", "))]
    NotSigned(Vec<String>),
    /// The credential scope names a region other than the gateway's.
    #[error("signature scoped to region {got:?}, the gateway's is {expected:?}")]
    WrongRegion {
        /// The region in the credential scope.
        got: String,
        /// The gateway's region.
        expected: String,
        /// Whether the credential came in a presigned URL's query.
        presigned: bool,
    },
    /// The `Authorization` header cannot be read; what is wrong with it.
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(&'static str),
    /// A presigned URL's parameters are missing, repeated or out of range; AWS's message.
    #[error("bad presigned URL: {0}")]
    MalformedQuery(&'static str),
    /// An `Authorization` header with an algorithm other than AWS4-HMAC-SHA256.
    #[error("unsupported Authorization type")]
    UnsupportedAuthorization,
    /// More than one of: a SigV4 or SigV2 presigned query, an `Authorization` header.
    #[error("more than one authentication mechanism")]
    SeveralMechanisms,
    /// A SigV2 signature (`AWS key:signature`, or a `Signature` query parameter).
    #[error("SigV2 signatures are not accepted: sign with AWS4-HMAC-SHA256")]
    SigV2,
    /// A browser form upload (PostObject), which this gateway does not serve.
    #[error("browser form uploads (POST object) are not supported")]
    FormUpload,
    /// A credential scoped to a service other than `s3`.
    #[error("signature scoped to service {got:?}, not s3")]
    WrongService {
        /// The service in the credential scope.
        got: String,
        /// Whether the credential came in a presigned URL's query.
        presigned: bool,
    },
    /// A presigned URL's `x-amz-*` query parameter that cannot be sent as a header.
    #[error("query parameter {0:?} cannot be a header")]
    BadQueryHeader(String),
}

impl Refusal {
    /// S3 error code, message and extra element of the error document.
    fn document(&self) -> (&'static str, String, Option<(&'static str, String)>) {
        let argument = |name: &str| Some(("ArgumentName", name.to_string()));
        let (malformed_query, malformed_header) = (
            "AuthorizationQueryParametersError",
            "AuthorizationHeaderMalformed",
        );
        match self {
            Refusal::NotSigned(names) => {
                let message = "There were headers present in the request which were not signed";
                let names = Some(("HeadersNotSigned", names.join(", ")));
                ("AccessDenied", message.into(), names)
            }
            Refusal::WrongRegion {
                got,
                expected,
                presigned,
            } => {
                let wrong = format!("the region '{got}' is wrong; expecting '{expected}'");
                let region = Some(("Region", expected.clone()));
                if *presigned {
                    let message = format!("Error parsing the X-Amz-Credential parameter; {wrong}");
                    (malformed_query, message, region)
                } else {
                    let message = format!("The authorization header is malformed; {wrong}");
                    (malformed_header, message, region)
                }
            }
            Refusal::MalformedHeader(what) => {
                let message = format!("The authorization header is malformed; {what}");
                (malformed_header, message, None)
            }
            Refusal::MalformedQuery(message) => (malformed_query, (*message).into(), None),
            Refusal::UnsupportedAuthorization => {
                let message = "Unsupported Authorization Type".into();
                ("InvalidArgument", message, argument("Authorization"))
            }
            Refusal::SeveralMechanisms => {
                let message = "Only one auth mechanism allowed; only the X-Amz-Algorithm query \
                               parameter, Signature query string parameter or the Authorization \
                               header should be specified";
                ("InvalidArgument", message.into(), argument("Authorization"))
            }
            Refusal::SigV2 => {
                let message = "The authorization mechanism you have provided is not supported. \
                               Please use AWS4-HMAC-SHA256.";
                ("InvalidRequest", message.into(), None)
            }
            Refusal::FormUpload => {
                let message = "Browser form uploads (POST object) are not supported by this \
                               gateway: use PUT, or a presigned PUT URL";
                ("NotImplemented", message.into(), None)
            }
            Refusal::WrongService { got, presigned } => {
                let wrong = format!("the service '{got}' is wrong; expecting 's3'");
                if *presigned {
                    let message = format!("Error parsing the X-Amz-Credential parameter; {wrong}");
                    (malformed_query, message, None)
                } else {
                    let message = format!("The authorization header is malformed; {wrong}");
                    (malformed_header, message, None)
                }
            }
            Refusal::BadQueryHeader(name) => {
                let message = format!("The query parameter {name} cannot be sent as a header");
                ("InvalidArgument", message, argument(name))
            }
        }
    }

    /// The S3 error answer for this refusal.
    pub fn into_response(self) -> http::Response<s3s::Body> {
        let status = match self {
            Refusal::NotSigned(_) => StatusCode::FORBIDDEN,
            Refusal::FormUpload => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        };
        let (code, message, extra) = self.document();
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message>",
            escape(&message)
        );
        if let Some((element, value)) = extra {
            xml.push_str(&format!("<{element}>{}</{element}>", escape(&value)));
        }
        xml.push_str("</Error>");
        let length = HeaderValue::from(xml.len());
        let mut resp = http::Response::new(s3s::Body::from(xml));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        headers.insert(CONTENT_LENGTH, length);
        resp
    }
}

/// `s` as XML character data.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Checks `req` against `policy`. A presigned SigV4 request that passes gets its `x-amz-*`
/// query parameters (covered by its signature) as headers, where s3s reads them.
pub fn check<B>(req: &mut http::Request<B>, policy: &AuthPolicy) -> Result<(), Refusal> {
    if is_form_upload(req) {
        return Err(Refusal::FormUpload);
    }
    let query = req.uri().query().map(decode_query).unwrap_or_default();
    // s3s looks these names up exactly as written (decoded, case-sensitive).
    let has = |name: &str| query.iter().any(|(n, _)| n == name);
    let presigned_v4 = has("X-Amz-Signature");
    let presigned_v2 = has("Signature");
    let authorizations = req.headers().get_all(AUTHORIZATION).iter().count();
    match (presigned_v4, presigned_v2, authorizations) {
        // Anonymous: s3s answers AccessDenied to every operation (a browser form POST carries
        // its own policy signature in the body, which s3s checks).
        (false, false, 0) => Ok(()),
        (false, true, 0) => Err(Refusal::SigV2),
        (true, false, 0) => {
            let signed = check_presigned(&query, policy)?;
            check_signed(req.headers(), &signed, PRESIGNED_EXEMPT)?;
            promote_query(req, &query, &signed)
        }
        (false, false, 1) => {
            let Some(value) = req.headers().get(AUTHORIZATION) else {
                return Ok(());
            };
            // s3s reads header values as UTF-8 and skips those that are not.
            let text = std::str::from_utf8(value.as_bytes())
                .map_err(|_| Refusal::MalformedHeader("it is not UTF-8 text"))?;
            if is_sigv2(text) {
                return Err(Refusal::SigV2);
            }
            let auth = parse_authorization(text).map_err(Refusal::MalformedHeader)?;
            if auth.algorithm != ALGORITHM {
                return Err(Refusal::UnsupportedAuthorization);
            }
            check_scope(&auth.credential, policy, false)?;
            check_signed(req.headers(), &auth.signed_headers, HEADER_AUTH_EXEMPT)
        }
        (false, false, _) => Err(Refusal::MalformedHeader(
            "a request may carry only one Authorization header",
        )),
        _ => Err(Refusal::SeveralMechanisms),
    }
}

/// Whether s3s reads `authorization` as SigV2 (`AWS <key>:<signature>`), as it does first.
fn is_sigv2(authorization: &str) -> bool {
    authorization
        .strip_prefix("AWS ")
        .is_some_and(|rest| rest.contains(':'))
}

/// A SigV4 credential: `<access key>/<YYYYMMDD>/<region>/<service>/aws4_request`.
#[derive(Debug, PartialEq, Eq)]
struct Credential<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// Reads a credential off the front of `s`, as s3s does: four `/`-terminated fields (none of
/// which can hold a `/`), then `aws4_request`. Returns it and what follows.
fn split_credential(s: &str) -> Option<(Credential<'_>, &str)> {
    let (access_key, s) = s.split_once('/')?;
    let (date, s) = s.split_once('/')?;
    let (region, s) = s.split_once('/')?;
    let (service, s) = s.split_once('/')?;
    let rest = s.strip_prefix("aws4_request")?;
    let credential = Credential {
        access_key,
        date,
        region,
        service,
    };
    Some((credential, rest))
}

/// A SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    algorithm: &'a str,
    credential: Credential<'a>,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// Whitespace where s3s's parser allows it (nom's `multispace`).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parses `ALGORITHM Credential=…, SignedHeaders=a;b, Signature=…` with the grammar s3s
/// uses, so the list read here is the list s3s signs with: fields in this order, whitespace
/// only after the algorithm and after each comma, `SignedHeaders` ending at the first comma.
fn parse_authorization(s: &str) -> Result<Authorization<'_>, &'static str> {
    let end = s
        .find(|c: char| c.is_ascii_whitespace())
        .ok_or("expected \"AWS4-HMAC-SHA256 Credential=...\"")?;
    let (algorithm, rest) = s.split_at(end);
    let rest = rest.trim_start_matches(is_space);
    let (credential, rest) = rest
        .strip_prefix("Credential=")
        .and_then(split_credential)
        .ok_or("expected Credential=<access key>/<YYYYMMDD>/<region>/<service>/aws4_request")?;
    let rest = rest
        .strip_prefix(',')
        .map(|r| r.trim_start_matches(is_space))
        .and_then(|r| r.strip_prefix("SignedHeaders="))
        .ok_or("expected a comma, then SignedHeaders=")?;
    let (list, rest) = rest
        .split_once(',')
        .ok_or("expected a comma after SignedHeaders")?;
    let rest = rest
        .trim_start_matches(is_space)
        .strip_prefix("Signature=")
        .ok_or("expected Signature= after SignedHeaders")?;
    let end = rest
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let (signature, rest) = rest.split_at(end);
    if algorithm.is_empty() || !rest.trim_start_matches(is_space).is_empty() {
        return Err("unexpected text around the fields");
    }
    Ok(Authorization {
        algorithm,
        credential,
        signed_headers: list.split(';').collect(),
        signature,
    })
}

/// Checks a presigned URL's own parameters; its signed header names.
fn check_presigned<'q>(
    query: &'q [(String, String)],
    policy: &AuthPolicy,
) -> Result<Vec<&'q str>, Refusal> {
    // s3s needs each exactly once; so does this check, so both read the same values.
    let one = |name: &str| {
        let mut values = query.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Ok(v.as_str()),
            _ => Err(Refusal::MalformedQuery(PRESIGN_REQUIRES)),
        }
    };
    let algorithm = one("X-Amz-Algorithm")?;
    let credential = one("X-Amz-Credential")?;
    let expires = one("X-Amz-Expires")?;
    let signed = one("X-Amz-SignedHeaders")?;
    one("X-Amz-Date")?;
    one("X-Amz-Signature")?;
    if algorithm != ALGORITHM {
        return Err(Refusal::MalformedQuery(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let credential = match split_credential(credential) {
        Some((c, "")) => c,
        _ => {
            return Err(Refusal::MalformedQuery(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; \
                 expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".",
            ));
        }
    };
    check_scope(&credential, policy, true)?;
    check_expires(expires)?;
    Ok(signed.split(';').collect())
}

/// Whether `req` is a browser form upload: a POST whose body is `multipart/form-data`.
fn is_form_upload<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::POST
        && req.headers().get_all(CONTENT_TYPE).iter().any(|v| {
            v.as_bytes()
                .trim_ascii_start()
                .get(..19)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"multipart/form-data"))
        })
}

/// Refuses a credential scoped to another service than `s3` (s3s also takes `sts`, and reads
/// such a request's body before it checks the signature) or to another region.
fn check_scope(
    credential: &Credential<'_>,
    policy: &AuthPolicy,
    presigned: bool,
) -> Result<(), Refusal> {
    if credential.service != "s3" {
        return Err(Refusal::WrongService {
            got: credential.service.into(),
            presigned,
        });
    }
    check_region(credential.region, policy, presigned)
}

/// Refuses a credential scoped to a region other than the policy's.
fn check_region(region: &str, policy: &AuthPolicy, presigned: bool) -> Result<(), Refusal> {
    match &policy.region {
        Some(expected) if expected != region => Err(Refusal::WrongRegion {
            got: region.into(),
            expected: expected.clone(),
            presigned,
        }),
        _ => Ok(()),
    }
}

/// `X-Amz-Expires`: whole seconds, at most a week (AWS's messages).
fn check_expires(value: &str) -> Result<(), Refusal> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if value.strip_prefix('-').is_some_and(digits) {
        return Err(Refusal::MalformedQuery(
            "X-Amz-Expires must be non-negative",
        ));
    }
    if !digits(value) {
        return Err(Refusal::MalformedQuery("X-Amz-Expires should be a number"));
    }
    match value.parse::<u64>() {
        Ok(secs) if secs <= MAX_PRESIGNED_EXPIRES => Ok(()),
        // Too many digits for a u64 is longer than a week too.
        _ => Err(Refusal::MalformedQuery(
            "X-Amz-Expires must be less than a week (in seconds) that is; 604800",
        )),
    }
}

/// Refuses a request whose signature leaves out `host` or an `x-amz-*` header it carries
/// (other than `exempt`). `signed` names match exactly: SignedHeaders is lowercase and s3s
/// looks each name up as written, so an `X-Amz-Meta-A` entry signs nothing. A header whose
/// value is not UTF-8 is not signed either: s3s leaves such values out of the canonical request.
fn check_signed(headers: &HeaderMap, signed: &[&str], exempt: &[&str]) -> Result<(), Refusal> {
    let utf8 = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .all(|v| std::str::from_utf8(v.as_bytes()).is_ok())
    };
    let covered = |name: &str| signed.contains(&name) && utf8(name);
    let mut unsigned = BTreeSet::new();
    if !covered("host") {
        unsigned.insert("host".to_string());
    }
    for name in headers.keys() {
        let name = name.as_str();
        if name.starts_with("x-amz-") && !exempt.contains(&name) && !covered(name) {
            unsigned.insert(name.to_string());
        }
    }
    if unsigned.is_empty() {
        Ok(())
    } else {
        Err(Refusal::NotSigned(unsigned.into_iter().collect()))
    }
}

/// Adds a presigned request's `x-amz-*` query parameters (covered by its signature, being in
/// the canonical query string) as headers, where s3s reads them: `x-amz-meta-color=blue` in a
/// presigned PUT's query sets that metadata. The presigned URL's own parameters are not added.
/// A signed header is never overridden; an unsigned one (only an exempt `x-amz-content-sha256`
/// gets this far) is replaced by the signed query value, so a URL that names its body's digest
/// cannot be sent with another.
fn promote_query<B>(
    req: &mut http::Request<B>,
    query: &[(String, String)],
    signed: &[&str],
) -> Result<(), Refusal> {
    let (mut added, mut replaced) = (Vec::new(), Vec::new());
    for (name, value) in query {
        let lower = name.to_ascii_lowercase();
        if !lower.starts_with("x-amz-") || PRESIGN_PARAMETERS.contains(&lower.as_str()) {
            continue;
        }
        let bad = || Refusal::BadQueryHeader(name.clone());
        let header = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| bad())?;
        if req.headers().contains_key(&header) {
            if signed.contains(&header.as_str()) {
                continue;
            }
            replaced.push(header.clone());
        }
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| bad())?;
        added.push((header, value));
    }
    for header in replaced {
        req.headers_mut().remove(header);
    }
    for (header, value) in added {
        req.headers_mut().append(header, value);
    }
    Ok(())
}

/// A query string decoded as s3s decodes it (`application/x-www-form-urlencoded`, as
/// `serde_urlencoded` does): pairs split on `&` (empty ones skipped) and the first `=`, `+` read
/// as a space, `%XX` as a byte, anything else kept, then read as UTF-8 (lossily).
fn decode_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(name), decode_component(value))
        })
        .collect()
}

/// One `application/x-www-form-urlencoded` name or value, decoded.
pub(crate) fn decode_component(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (b, escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRED: &str = "AKID/20260101/us-east-1/s3/aws4_request";
    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SDK: &str = "host;x-amz-content-sha256;x-amz-date";
    /// What [`verdict`] says of an accepted request.
    const OK: &str = "ok";

    fn policy(region: &str) -> AuthPolicy {
        let mut config = Config::new_random().unwrap();
        config.region = region.into();
        AuthPolicy::from_config(&config)
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().method("PUT").uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    /// `check`'s answer as text: "ok", or the refusal.
    fn verdict(r: Result<(), Refusal>) -> String {
        r.map_or_else(|e| e.to_string(), |()| OK.into())
    }

    /// [`verdict`] of `check` with the gateway's default region.
    fn run(uri: &str, headers: &[(&str, &str)]) -> String {
        verdict(check(&mut request(uri, headers), &policy("us-east-1")))
    }

    fn authorization(signed: &str, region: &str) -> String {
        format!(
            "{ALGORITHM} Credential=AKID/20260101/{region}/s3/aws4_request, \
             SignedHeaders={signed}, Signature={SIG}"
        )
    }

    /// [`run`] on a header-signed request: `signed`, in `region`, with `extra` headers.
    fn run_signed(signed: &str, region: &str, extra: &[(&str, &str)]) -> String {
        let auth = authorization(signed, region);
        let mut h = headers("x-amz-date: 20260101T000000Z, x-amz-content-sha256: UNSIGNED-PAYLOAD");
        h.push(("authorization", &auth));
        h.extend_from_slice(extra);
        run("/b/k", &h)
    }

    /// A presigned URL for `/b/k` with `signed` headers and `extra` query text.
    fn presigned(signed: &str, expires: &str, extra: &str) -> String {
        format!(
            "/b/k?X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date=20260101T000000Z\
             &X-Amz-Expires={expires}&X-Amz-SignedHeaders={}&X-Amz-Signature={SIG}{extra}",
            CRED.replace('/', "%2F"),
            signed.replace(';', "%3B"),
        )
    }

    #[test]
    fn authorization_is_read_as_s3s_reads_it() {
        let text = authorization("host;x-amz-date", "us-east-1");
        let a = parse_authorization(&text).unwrap();
        let c = &a.credential;
        let read = format!(
            "{} {}/{}/{}/{} {}",
            a.algorithm, c.access_key, c.date, c.region, c.service, a.signature
        );
        assert_eq!(
            read,
            format!(
                "{ALGORITHM} {} {SIG}",
                CRED.trim_end_matches("/aws4_request")
            )
        );
        assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
        let list = |s: &str| parse_authorization(s).map(|a| a.signed_headers.join("|"));
        // Whitespace where s3s allows it (also none after commas, and trailing); SignedHeaders
        // ends at the first comma, its entries kept as written; any algorithm word.
        let tight = format!("X\tCredential={CRED},SignedHeaders=Host;;x y,Signature={SIG}\t ");
        assert_eq!(list(&tight), Ok("Host||x y".into()));
        // An access key may hold a comma: the credential is read up to its fourth '/'.
        let comma = "A Credential=k,SignedHeaders=x-amz-a/20260101/r/s3/aws4_request, \
                     SignedHeaders=host, Signature=s";
        assert_eq!(list(comma), Ok("host".into()));
        let empty = "A Credential=k/20260101//s3/aws4_request, SignedHeaders=, Signature=";
        assert_eq!(
            parse_authorization(empty).map(|a| a.credential.region),
            Ok("")
        );
        for bad in [
            "",
            ALGORITHM,
            " Credential=k/20260101/r/s3/aws4_request, SignedHeaders=host, Signature=s",
            "A Credential=k/20260101/r/s3, SignedHeaders=host, Signature=s",
            "A Credential=k/20260101/r/s3/aws4_request SignedHeaders=host, Signature=s",
            "A Credential=k/20260101/r/s3/aws4_request, Signature=s, SignedHeaders=host",
            "A Credential=k/20260101/r/s3/aws4_request, SignedHeaders=host Signature=s",
            "A Credential=k/20260101/r/s3/aws4_request, SignedHeaders=host, Signature=s x",
        ] {
            assert!(list(bad).is_err(), "{bad:?}");
        }
        assert!(is_sigv2("AWS AKID:c2lnbmF0dXJl"));
        assert!(!is_sigv2(
            "AWS Credential=k/20260101/r/s3/aws4_request, SignedHeaders=h"
        ));
    }

    #[test]
    fn queries_are_decoded_as_s3s_decodes_them() {
        let pairs = decode_query("a=1&&b&c=x%3By+z%2&%41%zz=%e2%82%ac&d=1=2");
        let pairs: Vec<String> = pairs.into_iter().map(|(n, v)| format!("{n}:{v}")).collect();
        assert_eq!(pairs, ["a:1", "b:", "c:x;y z%2", "A%zz:€", "d:1=2"]);
        assert_eq!(decode_component("%ff%"), "\u{fffd}%");
        assert_eq!(decode_component("X%2DAmz%2DSignature"), "X-Amz-Signature");
    }

    /// Headers written `"name: value, name: value"` ("" for none).
    fn headers(s: &str) -> Vec<(&str, &str)> {
        s.split(", ").filter_map(|h| h.split_once(": ")).collect()
    }

    #[test]
    fn header_auth_must_sign_every_x_amz_header_and_host() {
        // Each case: SignedHeaders (SDK: what SDKs sign) | other headers | verdict.
        for case in [
            "SDK | content-type: text/plain | ok",
            "SDK | x-amz-copy-source: /o/s | headers not signed: x-amz-copy-source",
            "SDK | X-Amz-Meta-A: 1, x-amz-tagging: a=b | headers not signed: x-amz-meta-a, x-amz-tagging",
            "SDK;x-amz-meta-a | x-amz-meta-a: 1 | ok",
            // Names match exactly: s3s would look `X-Amz-Meta-A` up, find nothing, sign nothing.
            "SDK;X-Amz-Meta-A | x-amz-meta-a: 1 | headers not signed: x-amz-meta-a",
            // x-amz-date and x-amz-content-sha256 are bound into the signature, listed or not.
            "host |  | ok",
            "x-amz-date |  | headers not signed: host",
            "x-amz-date | x-amz-security-token: t | headers not signed: host, x-amz-security-token",
            "host;x-amz-security-token | x-amz-security-token: t | ok",
        ] {
            let [signed, extra, expected] = case.split(" | ").collect::<Vec<_>>()[..] else {
                panic!("{case}")
            };
            let got = run_signed(&signed.replace("SDK", SDK), "us-east-1", &headers(extra));
            assert_eq!(got, expected, "{case}");
        }
        // A value that is not UTF-8 is left out of s3s's canonical request: not signed.
        let auth = authorization("host;x-amz-meta-a", "us-east-1");
        let mut req = request("/b/k", &[("authorization", auth.as_str())]);
        let binary = HeaderValue::from_bytes(b"\xff").unwrap();
        req.headers_mut().insert("x-amz-meta-a", binary);
        let refused = check(&mut req, &policy("us-east-1"));
        assert_eq!(verdict(refused), "headers not signed: x-amz-meta-a");
    }

    #[test]
    fn presigned_urls_must_sign_every_x_amz_header_and_host() {
        // Each case: X-Amz-SignedHeaders (none: not presigned) | headers | verdict.
        for case in [
            "host | range: bytes=0-1 | ok",
            "host | x-amz-copy-source: /o/s | headers not signed: x-amz-copy-source",
            "host | x-amz-meta-a: 1 | headers not signed: x-amz-meta-a",
            // The presigned timestamp is a query parameter: the header is signed by nothing.
            "host | x-amz-date: 20260101T000000Z | headers not signed: x-amz-date",
            // x-amz-content-sha256 only makes s3s check the body against it.
            "host | x-amz-content-sha256: UNSIGNED-PAYLOAD | ok",
            "host;x-amz-meta-a | x-amz-meta-a: 1 | ok",
            "x-amz-meta-a | x-amz-meta-a: 1 | headers not signed: host",
            // Anonymous requests are left to s3s, which refuses them; SigV2 is refused here.
            "none | x-amz-copy-source: /o/s | ok",
            "none | authorization: AWS AKID:sig, x-amz-copy-source: /o/s | SigV2 signatures are not accepted: sign with AWS4-HMAC-SHA256",
        ] {
            let [signed, h, expected] = case.split(" | ").collect::<Vec<_>>()[..] else {
                panic!("{case}")
            };
            let uri = match signed {
                "none" => "/b/k".to_string(),
                signed => presigned(signed, "300", ""),
            };
            assert_eq!(run(&uri, &headers(h)), expected, "{case}");
        }
        let copy = [("x-amz-copy-source", "/o/s")];
        assert_eq!(
            run("/b/k?Signature=x&Expires=1", &copy),
            "SigV2 signatures are not accepted: sign with AWS4-HMAC-SHA256"
        );
    }

    #[test]
    fn form_uploads_sigv2_and_other_services_are_refused_before_s3s() {
        let form = |method: &str, ct: &str| {
            let mut req = request("/bucket", &[("content-type", ct)]);
            *req.method_mut() = method.parse().unwrap();
            verdict(check(&mut req, &policy("us-east-1")))
        };
        let refused = "browser form uploads (POST object) are not supported";
        assert_eq!(form("POST", "multipart/form-data; boundary=x"), refused);
        assert_eq!(form("POST", "  Multipart/Form-Data;boundary=x"), refused);
        assert_eq!(form("POST", "application/xml"), OK);
        assert_eq!(form("PUT", "multipart/form-data; boundary=x"), OK);
        let answer = Refusal::FormUpload.into_response();
        assert_eq!(answer.status(), StatusCode::NOT_IMPLEMENTED);

        let v2 = "SigV2 signatures are not accepted: sign with AWS4-HMAC-SHA256";
        assert_eq!(run("/b/k", &[("authorization", "AWS AKID:c2ln")]), v2);
        assert_eq!(run("/b/k?AWSAccessKeyId=A&Signature=x&Expires=1", &[]), v2);

        let sts = authorization("host", "us-east-1").replace("/s3/", "/sts/");
        assert_eq!(
            run("/b/k", &[("authorization", sts.as_str()), ("host", "h")]),
            "signature scoped to service \"sts\", not s3"
        );
        let url = presigned("host", "300", "").replace("%2Fs3%2F", "%2Fsts%2F");
        assert!(url.contains("sts"), "{url}");
        assert_eq!(
            run(&url, &[]),
            "signature scoped to service \"sts\", not s3"
        );
    }

    #[test]
    fn one_mechanism_at_a_time_and_a_readable_authorization() {
        let url = presigned("host", "300", "");
        let auth = authorization("host", "us-east-1");
        let several = "more than one authentication mechanism";
        assert_eq!(run(&url, &[("authorization", auth.as_str())]), several);
        // A percent-encoded parameter name is the same name to s3s.
        let encoded = url.replace("X-Amz-Signature", "X%2DAmz%2DSignature");
        assert_eq!(run(&encoded, &[("authorization", auth.as_str())]), several);
        assert_eq!(run(&format!("{url}&Signature=x"), &[]), several);
        let v2 = [("authorization", "AWS k:s")];
        assert_eq!(run("/b/k?Signature=x", &v2), several);
        let malformed = "malformed Authorization header: ";
        let twice = run("/b/k", &[("authorization", auth.as_str()); 2]);
        assert!(twice.starts_with(malformed), "{twice}");
        let bearer = run("/b/k", &[("authorization", "Bearer x")]);
        assert!(bearer.starts_with(malformed), "{bearer}");
        let mut req = request("/b/k", &[]);
        let value = HeaderValue::from_bytes(b"AWS4-HMAC-SHA256 \xff").unwrap();
        req.headers_mut().insert(AUTHORIZATION, value);
        let binary = check(&mut req, &policy("us-east-1"));
        assert_eq!(verdict(binary), format!("{malformed}it is not UTF-8 text"));
        // s3s reads any first word as the algorithm and does not check it.
        let other = auth.replacen(ALGORITHM, "AWS4-HMAC-SHA512", 1);
        let other = run("/b/k", &[("authorization", other.as_str())]);
        assert_eq!(other, "unsupported Authorization type");
    }

    #[test]
    fn presigned_parameters_are_all_there_once_in_range_and_well_formed() {
        let url = presigned("host", "300", "");
        let says = |uri: &str, what: &str| {
            let v = run(uri, &[]);
            assert!(
                v.starts_with("bad presigned URL: ") && v.contains(what),
                "{uri}: {v}"
            );
        };
        for name in "Algorithm Credential Date Expires SignedHeaders".split(' ') {
            let missing = url.replace(&format!("X-Amz-{name}="), "Other=");
            says(&missing, PRESIGN_REQUIRES);
        }
        says(&format!("{url}&X-Amz-SignedHeaders=host"), PRESIGN_REQUIRES);
        let credential = url.replace("aws4_request", "aws5");
        says(&credential, "X-Amz-Credential parameter");
        let algorithm = url.replace("Algorithm=AWS4-HMAC-SHA256", "Algorithm=AWS4");
        says(&algorithm, "X-Amz-Algorithm");
        // A week at most, in whole seconds (AWS's messages).
        let expires = |e: &str| presigned("host", e, "");
        for ok in ["604800", "0", "1"] {
            assert_eq!(run(&expires(ok), &[]), OK);
        }
        let week = "X-Amz-Expires must be less than a week (in seconds) that is; 604800";
        says(&expires("604801"), week);
        says(&expires("99999999999999999999999"), week);
        says(&expires("-1"), "X-Amz-Expires must be non-negative");
        for nan in ["", "ten", "1.5", "+5", "-", "1e3"] {
            says(&expires(nan), "X-Amz-Expires should be a number");
        }
    }

    #[test]
    fn signatures_are_scoped_to_the_gateway_region() {
        let wrong = |presigned| {
            let (got, expected) = ("eu-west-9".into(), "us-east-1".into());
            verdict(Err(Refusal::WrongRegion {
                got,
                expected,
                presigned,
            }))
        };
        assert_eq!(run_signed("host", "eu-west-9", &[]), wrong(false));
        let url = presigned("host", "300", "").replace("us-east-1", "eu-west-9");
        assert_eq!(run(&url, &[]), wrong(true));
        let empty = run_signed("host", "", &[]);
        assert!(empty.starts_with("signature scoped to region \"\""));
        let auth = authorization("host", "eu-west-9");
        for accepting in [ANY_REGION, "eu-west-9"] {
            let header = check(
                &mut request("/b/k", &[("authorization", auth.as_str())]),
                &policy(accepting),
            );
            let query = check(&mut request(&url, &[]), &policy(accepting));
            assert_eq!((header, query), (Ok(()), Ok(())), "{accepting}");
        }
    }

    #[test]
    fn a_presigned_query_can_carry_x_amz_headers() {
        let extra = "&x-amz-meta-color=blue%20sky&X-Amz-Meta-Size=3&x-amz-acl=public-read\
                     &x-amz-meta-color=red&X-Amz-Security-Token=t&other=1";
        let url = presigned("host;x-amz-acl", "300", extra);
        let mut req = request(&url, &[("x-amz-acl", "private")]);
        let p = policy("us-east-1");
        check(&mut req, &p).unwrap();
        let h = req.headers();
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-amz-meta-color"), ["blue sky", "red"]);
        assert_eq!(all("x-amz-meta-size"), ["3"]);
        // A header sent (and signed) wins; the presigned URL's own parameters stay in the query.
        assert_eq!(all("x-amz-acl"), ["private"]);
        for name in "x-amz-signature x-amz-date x-amz-security-token other".split(' ') {
            assert!(!h.contains_key(name), "{name}");
        }
        // The signed query value replaces an unsigned (exempt) header of the same name.
        let digest = presigned("host", "300", &format!("&X-Amz-Content-Sha256={SIG}"));
        let unsigned = [("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
        let mut req = request(&digest, &unsigned);
        check(&mut req, &p).unwrap();
        assert_eq!(req.headers()["x-amz-content-sha256"], SIG);
        let mut req = request(&url, &[("x-amz-acl", "private")]);
        check(&mut req, &p).unwrap();
        // They are added after the check: checked again, they are headers nothing signed.
        let again = verdict(check(&mut req, &p));
        assert_eq!(
            again,
            "headers not signed: x-amz-meta-color, x-amz-meta-size"
        );
        // Only presigned requests get them.
        let auth = authorization("host", "us-east-1");
        for headers in [&[("authorization", auth.as_str())][..], &[]] {
            let mut req = request("/b/k?x-amz-meta-color=blue", headers);
            check(&mut req, &p).unwrap();
            assert!(!req.headers().contains_key("x-amz-meta-color"));
        }
        // What cannot be a header is refused.
        for extra in ["&x-amz-meta-a=x%0Ay", "&x-amz-meta%20a=1"] {
            let v = run(&presigned("host", "300", extra), &[]);
            assert!(v.starts_with("query parameter"), "{extra}: {v}");
        }
    }

    #[test]
    fn refusals_are_s3_error_documents() {
        let body = |r: Refusal| {
            let resp = r.into_response();
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/xml");
            let len = resp.headers()[CONTENT_LENGTH].to_str().unwrap().to_string();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().bytes().unwrap();
            assert_eq!(bytes.len().to_string(), len);
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        };
        let names = vec!["host".into(), "x-amz-tagging".into()];
        let (status, xml) = body(Refusal::NotSigned(names));
        assert_eq!(status, 403);
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
             <Message>There were headers present in the request which were not signed</Message>\
             <HeadersNotSigned>host, x-amz-tagging</HeadersNotSigned></Error>"
        );
        let (got, expected) = ("<a&b>".into(), "us-east-1".into());
        let (status, xml) = body(Refusal::WrongRegion {
            got,
            expected,
            presigned: false,
        });
        let region = "<Code>AuthorizationHeaderMalformed</Code><Message>The authorization header \
                      is malformed; the region &apos;&lt;a&amp;b&gt;&apos; is wrong; expecting \
                      &apos;us-east-1&apos;</Message><Region>us-east-1</Region>";
        assert!(status == 400 && xml.contains(region), "{xml}");
        let (got, expected) = ("x".into(), "y".into());
        let presigned = Refusal::WrongRegion {
            got,
            expected,
            presigned: true,
        };
        let query = "<Code>AuthorizationQueryParametersError</Code><Message>Error parsing the \
                     X-Amz-Credential parameter; the region &apos;x&apos; is wrong";
        assert!(body(presigned).1.contains(query));
        let (status, xml) = body(Refusal::MalformedQuery("X-Amz-Expires should be a number"));
        assert!(status == 400 && xml.contains("<Code>AuthorizationQueryParametersError</Code>"));
        let bad_name = Refusal::BadQueryHeader("x-amz-<".into());
        for r in [
            Refusal::SeveralMechanisms,
            Refusal::UnsupportedAuthorization,
            bad_name,
        ] {
            let (status, xml) = body(r);
            let invalid = xml.contains("<Code>InvalidArgument</Code>") && !xml.contains("x-amz-<");
            assert!(status == 400 && invalid, "{xml}");
        }
        // The gateway's error explainer leaves these messages as they are.
        let (_, xml) = body(Refusal::MalformedHeader("x"));
        let (doc, replaced) = crate::error::explain(xml.as_bytes()).unwrap();
        assert!(doc.code == "AuthorizationHeaderMalformed" && replaced.is_none());
    }
}
