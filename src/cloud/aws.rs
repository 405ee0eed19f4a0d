//! AWS: the init-data is the instance's user data, read with IMDSv2 only: `PUT
//! /latest/api/token` (with `X-aws-ec2-metadata-token-ttl-seconds`) for a session token, then
//! `GET /latest/user-data` with `X-aws-ec2-metadata-token`. A service that gives no token is
//! refused, never asked the IMDSv1 way: IMDSv1 answers any GET, including one a workload or a
//! server-side request forgery makes, and a configuration that allows it is not one to trust.
//! A 404 on the user data means none is set.

use std::time::Duration;

use cvm_initdata::cloud::AWS_MAX;

use super::imds::Http;
use super::{Failure, Served, http_failure, is_transient_status, refused, with_retries};

pub const TOKEN: &str = "/latest/api/token";
pub const USER_DATA: &str = "/latest/user-data";
const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Long enough for one read; the token dies with the boot's need for it.
const TOKEN_TTL_SECS: &str = "300";
/// EC2's tokens are ~56 characters; anything far longer is not one.
const MAX_TOKEN: usize = 512;

pub fn fetch(http: &Http, deadline: Duration) -> Result<Served, super::CloudError> {
    let what = format!("IMDSv2 user data from {}", http.base());
    with_retries(&what, deadline, |left| {
        let token_what = format!("PUT {}{TOKEN}", http.base());
        let reply = http
            .send(
                "PUT",
                TOKEN,
                &[(TTL_HEADER, TOKEN_TTL_SECS)],
                Some(&[]),
                MAX_TOKEN,
                left,
            )
            .map_err(http_failure)?;
        if is_transient_status(reply.status) {
            return Err(Failure::Transient(format!(
                "{token_what}: HTTP {}",
                reply.status
            )));
        }
        if reply.status != 200 {
            return Err(refused(
                &token_what,
                format!(
                    "no IMDSv2 session token (HTTP {}: {}); IMDSv1 is never used",
                    reply.status,
                    reply.detail()
                ),
            ));
        }
        let token = valid_token(&reply.body).ok_or_else(|| {
            refused(
                &token_what,
                "the session token is empty, too long or not printable ASCII; IMDSv1 is never used"
                    .into(),
            )
        })?;
        let data_what = format!("GET {}{USER_DATA}", http.base());
        let reply = http
            .send(
                "GET",
                USER_DATA,
                &[(TOKEN_HEADER, token)],
                None,
                AWS_MAX,
                left,
            )
            .map_err(http_failure)?;
        match reply.status {
            200 => Ok(Served::Document(reply.body)),
            404 => Ok(Served::NotConfigured("no user data (HTTP 404)".into())),
            s if is_transient_status(s) => {
                Err(Failure::Transient(format!("{data_what}: HTTP {s}")))
            }
            s => Err(refused(&data_what, format!("HTTP {s}: {}", reply.detail()))),
        }
    })
}

/// A token goes back as a header value: visible ASCII only, so it cannot smuggle a line break.
fn valid_token(body: &[u8]) -> Option<&str> {
    let ok = !body.is_empty() && body.len() <= MAX_TOKEN && body.iter().all(u8::is_ascii_graphic);
    ok.then(|| std::str::from_utf8(body).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(valid_token(b"AQAEAx-_==").unwrap(), "AQAEAx-_==");
        for bad in [
            &b""[..],
            b"a b",
            b"a\r\nX-Evil: 1",
            b"\xff",
            &[b'a'; MAX_TOKEN + 1],
        ] {
            assert_eq!(valid_token(bad), None, "{bad:?}");
        }
    }
}
