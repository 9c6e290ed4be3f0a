//! A shared bearer token for the agent and generator services: servers check it on every call,
//! clients attach it. Agents and generators that listen beyond loopback require one.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer <token>` on every call (or lets every call through when built
/// without a token, for a server that listens on loopback only).
#[derive(Clone)]
pub struct RequireToken(Option<Arc<str>>);

impl std::fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireToken(..)")
    }
}

impl RequireToken {
    pub fn new(token: &str) -> Self {
        Self(Some(token.into()))
    }

    /// Requires `token` when there is one; without one, every call passes.
    pub fn when_given(token: Option<&str>) -> Self {
        Self(token.map(Into::into))
    }
}

/// Compares without leaking where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(request),
            Some(_) => Err(Status::unauthenticated("wrong token")),
            None => Err(Status::unauthenticated("this service needs a bearer token")),
        }
    }
}

/// Attaches the token to every call a client makes.
#[derive(Clone)]
pub struct AttachToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for AttachToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachToken(..)")
    }
}

impl AttachToken {
    /// `None` attaches nothing (a loopback service without a token).
    pub fn new(token: Option<&str>) -> Result<Self, Status> {
        let value = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("the token must be printable ASCII"))
            })
            .transpose()?;
        Ok(Self(value))
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Reads a token file: its first line, trimmed; empty files are refused.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "token in {} must be printable ASCII without spaces",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(token: Option<&str>) -> Request<()> {
        let mut attach = AttachToken::new(token).unwrap();
        attach.call(Request::new(())).unwrap()
    }

    #[test]
    fn only_the_right_token_passes() {
        let mut check = RequireToken::new("s3cret");
        assert!(check.call(request_with(Some("s3cret"))).is_ok());
        let wrong = check.call(request_with(Some("guess"))).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let missing = check.call(request_with(None)).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        let mut open = RequireToken::when_given(None);
        assert!(open.call(request_with(None)).is_ok());
        let mut given = RequireToken::when_given(Some("s3cret"));
        assert!(given.call(request_with(None)).is_err());
    }

    #[test]
    fn token_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("loadlab-token-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "abc123\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap(), "abc123");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_token_file(&file).unwrap_err().contains("empty"));
        std::fs::write(&file, "a b\n").unwrap();
        assert!(read_token_file(&file).is_err());
        assert!(
            read_token_file(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
