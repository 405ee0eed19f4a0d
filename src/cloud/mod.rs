//! The clouds' link-local services: init-data from GCP's, Azure's and AWS's instance metadata
//! ([`fetch_initdata`]), Azure's host services for evidence (the VCEK and its chain from THIM, a
//! TD quote for a TDREPORT: [`azure`]) and Azure's WireServer, which must hear "Ready" or it
//! reboots the VM ([`wireserver`]).
//!
//! Everything these services say is the host's: answers are bounded, checked against the
//! documented protocol and never retried into a second document once one was served. The
//! init-data is trusted only through the digest the agent measures into PCR 8 (and the TEE's
//! HOST_DATA / MRCONFIGID), exactly as when it comes from fw_cfg.

pub mod aws;
pub mod azure;
pub mod gcp;
pub mod imds;
pub mod wireserver;

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

pub use cvm_initdata::cloud::Cloud;

use crate::net::retry::{self, GaveUp};
use imds::{Http, ImdsError};

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Http(ImdsError),
    #[error("{what}: {detail}")]
    Refused { what: String, detail: String },
    #[error(
        "{what}: no usable answer within {} s ({attempts} attempts; last: {last})",
        .deadline.as_secs()
    )]
    Deadline {
        what: String,
        deadline: Duration,
        attempts: u32,
        last: String,
    },
}

pub(crate) type Failure = retry::Failure<CloudError>;

/// A transport failure is worth another attempt; an oversized answer is not.
pub(crate) fn http_failure(e: ImdsError) -> Failure {
    if e.is_transient() {
        Failure::Transient(e.to_string())
    } else {
        Failure::Fatal(CloudError::Http(e))
    }
}

pub(crate) fn refused(what: &str, detail: String) -> Failure {
    Failure::Fatal(CloudError::Refused {
        what: what.to_string(),
        detail,
    })
}

/// Statuses that say "not now" rather than "no": overload, a server error, and Azure's 410
/// during platform maintenance (Azure's guidance: retry for up to 70 s).
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 410 || status == 429 || (500..600).contains(&status)
}

/// `attempt` until it succeeds, fails for good, or `deadline` passes.
pub(crate) fn with_retries<T>(
    what: &str,
    deadline: Duration,
    attempt: impl FnMut(Duration) -> Result<T, Failure>,
) -> Result<T, CloudError> {
    retry::run(what, deadline, attempt).map_err(|gave_up| match gave_up {
        GaveUp::Fatal(e) => e,
        GaveUp::Deadline { attempts, last } => CloudError::Deadline {
            what: what.to_string(),
            deadline,
            attempts,
            last,
        },
    })
}

/// One request to a link-local service, as [`send_with_retries`] sends it: [`Http::send`]'s
/// arguments but the time left, and the statuses that count as the answer.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
    pub max_body: usize,
    pub accept: RangeInclusive<u16>,
}

/// `request` until an `accept`ed status answers (its body), or until [`with_retries`] gives up:
/// transport failures and "not now" statuses ([`is_transient_status`]) are tried again, any
/// other status is refused with the host's note. The shape of every call to these services
/// that needs no more than the answer's status.
pub(crate) fn send_with_retries(
    http: &Http,
    request: &Request<'_>,
    deadline: Duration,
) -> Result<Vec<u8>, CloudError> {
    let what = format!("{} {}{}", request.method, http.base(), request.path);
    with_retries(&what, deadline, |left| {
        let reply = http
            .send(
                request.method,
                request.path,
                request.headers,
                request.body,
                request.max_body,
                left,
            )
            .map_err(http_failure)?;
        match reply.status {
            s if request.accept.contains(&s) => Ok(reply.body),
            s if is_transient_status(s) => Err(Failure::Transient(format!("HTTP {s}"))),
            s => Err(refused(&what, format!("HTTP {s}: {}", reply.detail()))),
        }
    })
}

/// What the metadata service holds for the init-data.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// The document as served (Azure: still base64): [`Cloud::decode`] comes next.
    Document(Vec<u8>),
    /// The service answered, and it has none (why, for the console).
    NotConfigured(String),
}

#[derive(Debug)]
pub struct Fetched {
    pub served: Served,
    /// Requests sent, answered or not.
    pub requests: u32,
    pub elapsed: Duration,
    /// The URL of the document.
    pub url: String,
}

/// The init-data document from `cloud`'s metadata service at `base` ([`imds::METADATA`] in the
/// agent): one document, the first one served; transient failures (and Azure's empty userData
/// of a first boot) are retried until `deadline`.
pub fn fetch_initdata(cloud: Cloud, base: &str, deadline: Duration) -> Result<Fetched, CloudError> {
    let started = Instant::now();
    let http = Http::new(base);
    let (served, path) = match cloud {
        Cloud::Gcp => (gcp::fetch(&http, deadline)?, gcp::path()),
        Cloud::Azure => (
            azure::fetch_user_data(&http, deadline)?,
            azure::USER_DATA.into(),
        ),
        Cloud::Aws => (aws::fetch(&http, deadline)?, aws::USER_DATA.into()),
    };
    Ok(Fetched {
        served,
        requests: http.requests(),
        elapsed: started.elapsed(),
        url: format!("{}{path}", http.base()),
    })
}
