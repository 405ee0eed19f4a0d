//! GCP: the init-data is the instance attribute `cvm-initdata`
//! (`GET /computeMetadata/v1/instance/attributes/cvm-initdata`, `Metadata-Flavor: Google`).
//! The metadata server marks every answer with `Metadata-Flavor: Google`; an answer without it
//! is not from the metadata server and is refused. A 404 means the attribute is not set.

use std::time::Duration;

use cvm_initdata::cloud::{GCP_ATTRIBUTE, GCP_MAX};

use super::imds::Http;
use super::{Served, http_failure, is_transient_status, refused, with_retries};

const FLAVOR: (&str, &str) = ("Metadata-Flavor", "Google");

pub fn path() -> String {
    format!("/computeMetadata/v1/instance/attributes/{GCP_ATTRIBUTE}")
}

pub fn fetch(http: &Http, deadline: Duration) -> Result<Served, super::CloudError> {
    let path = path();
    let what = format!("GET {}{path}", http.base());
    with_retries(&what, deadline, |left| {
        let reply = http
            .send("GET", &path, &[FLAVOR], None, GCP_MAX, left)
            .map_err(http_failure)?;
        if is_transient_status(reply.status) {
            return Err(super::Failure::Transient(format!("HTTP {}", reply.status)));
        }
        if !matches!(reply.status, 200 | 404) {
            return Err(refused(
                &what,
                format!("HTTP {}: {}", reply.status, reply.detail()),
            ));
        }
        match reply.header(FLAVOR.0) {
            Some(v) if v == FLAVOR.1 => {}
            other => {
                return Err(refused(
                    &what,
                    format!(
                        "the answer (HTTP {}) carries {}: {}, not {}: {} (not GCP's metadata server)",
                        reply.status,
                        FLAVOR.0,
                        other.map_or("(none)".into(), |v| super::imds::printable(v.as_bytes())),
                        FLAVOR.0,
                        FLAVOR.1
                    ),
                ));
            }
        }
        Ok(match reply.status {
            200 => Served::Document(reply.body),
            _ => Served::NotConfigured(format!("no instance attribute {GCP_ATTRIBUTE} (HTTP 404)")),
        })
    })
}
