//! The cloud clients (`cvm_agent::cloud`) against the fake services of `cvm-testkit`, on the
//! host: what each protocol requires of a request, what the agent accepts of an answer, and
//! that the fakes themselves refuse what the real services refuse (a fake that accepted
//! anything would prove nothing in the VM tests).

use std::time::Duration;

use base64::Engine as _;
use cvm_agent::cloud::{self, Cloud, Served, azure, wireserver};
use cvm_agent::stage::error_chain as chain;
use cvm_testkit::metadata::{self, Aws, Response};

const DEADLINE: Duration = Duration::from_secs(10);

fn get(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = ureq::get(url);
    for (n, v) in headers {
        req = req.set(n, v);
    }
    match req.call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn gcp_attribute_with_the_flavor_both_ways() {
    let fake = metadata::gcp(Some(b"version = \"0.1.0\"\n".to_vec()));
    let path = "/computeMetadata/v1/instance/attributes/cvm-initdata";
    // The fake is GCP's server: no header, no answer; a forwarded request, no answer.
    assert_eq!(get(&format!("{}{path}", fake.url()), &[]), 403);
    let flavor = ("Metadata-Flavor", "Google");
    assert_eq!(
        get(
            &format!("{}{path}", fake.url()),
            &[flavor, ("X-Forwarded-For", "1.2.3.4")]
        ),
        403
    );
    let got = cloud::fetch_initdata(Cloud::Gcp, &fake.url(), DEADLINE).unwrap();
    assert_eq!(
        got.served,
        Served::Document(b"version = \"0.1.0\"\n".to_vec())
    );
    assert_eq!(got.requests, 1);
    assert_eq!(fake.count("GET", path, 200), 1);

    let unset = metadata::gcp(None);
    let got = cloud::fetch_initdata(Cloud::Gcp, &unset.url(), DEADLINE).unwrap();
    assert!(matches!(got.served, Served::NotConfigured(ref w) if w.contains("cvm-initdata")));

    // Something else on the address (no Metadata-Flavor on its answer) is refused.
    let impostor = metadata::serve(|_| Response::new(200, "version = \"0.1.0\"\n"));
    let err = chain(&cloud::fetch_initdata(Cloud::Gcp, &impostor.url(), DEADLINE).unwrap_err());
    assert!(err.contains("not GCP's metadata server"), "{err}");

    let big = metadata::gcp(Some(vec![b'#'; 256 * 1024 + 1]));
    let err = chain(&cloud::fetch_initdata(Cloud::Gcp, &big.url(), DEADLINE).unwrap_err());
    assert!(err.contains("larger than 262144 bytes"), "{err}");
    // An oversized answer is not retried.
    assert_eq!(big.seen().len(), 1);
}

#[test]
fn aws_imdsv2_only() {
    let fake = Aws::imdsv2(Some(b"user data".to_vec()));
    // The fake is IMDSv2: no token, 401; no TTL header on the token request, 400.
    assert_eq!(get(&format!("{}/latest/user-data", fake.url()), &[]), 401);
    let put = ureq::put(&format!("{}/latest/api/token", fake.url())).send_bytes(&[]);
    assert!(matches!(put, Err(ureq::Error::Status(400, _))));
    let got = cloud::fetch_initdata(Cloud::Aws, &fake.url(), DEADLINE).unwrap();
    assert_eq!(got.served, Served::Document(b"user data".to_vec()));
    assert_eq!(fake.count("GET", "/latest/user-data", 200), 1);
    let seen = fake.seen();
    let (token_req, _) = seen.iter().rev().find(|(r, _)| r.method == "PUT").unwrap();
    assert_eq!(
        token_req.header("X-aws-ec2-metadata-token-ttl-seconds"),
        Some("300")
    );

    let none = Aws::imdsv2(None);
    let got = cloud::fetch_initdata(Cloud::Aws, &none.url(), DEADLINE).unwrap();
    assert!(matches!(got.served, Served::NotConfigured(_)));

    // IMDSv1 only: refused at the token, and the user data is never asked for.
    let v1 = Aws::imdsv1_only(Some(b"user data".to_vec()));
    assert_eq!(get(&format!("{}/latest/user-data", v1.url()), &[]), 200);
    let before = v1.seen().len();
    let err = chain(&cloud::fetch_initdata(Cloud::Aws, &v1.url(), DEADLINE).unwrap_err());
    assert!(err.contains("no IMDSv2 session token (HTTP 403"), "{err}");
    assert!(err.contains("IMDSv1 is never used"), "{err}");
    let after: Vec<_> = v1.seen().into_iter().skip(before).collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0.method, "PUT");

    let big = Aws::imdsv2(Some(vec![b'#'; 16 * 1024 + 1]));
    let err = chain(&cloud::fetch_initdata(Cloud::Aws, &big.url(), DEADLINE).unwrap_err());
    assert!(err.contains("larger than 16384 bytes"), "{err}");
}

#[test]
fn azure_user_data_empty_then_present() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(b"the init-data");
    let fake = metadata::azure(metadata::Azure {
        user_data: b64.clone(),
        empty_first: 2,
        ..Default::default()
    });
    let url = format!("{}{}", fake.url(), azure::USER_DATA);
    // Azure's rules: Metadata: true, and an api-version.
    assert_eq!(get(&url, &[]), 400);
    assert_eq!(
        get(
            &format!("{}{}", fake.url(), metadata::AZURE_USER_DATA),
            &[("Metadata", "true")]
        ),
        400
    );
    let got = cloud::fetch_initdata(Cloud::Azure, &fake.url(), DEADLINE).unwrap();
    assert_eq!(got.served, Served::Document(b64.clone().into_bytes()));
    assert_eq!(got.requests, 3, "two empty answers, then the document");
    assert_eq!(fake.count("GET", metadata::AZURE_USER_DATA, 200), 3);
    assert_eq!(
        Cloud::Azure.decode(b64.as_bytes()).unwrap(),
        b"the init-data"
    );

    let empty = metadata::azure(metadata::Azure {
        empty_first: usize::MAX,
        ..Default::default()
    });
    let got = cloud::fetch_initdata(Cloud::Azure, &empty.url(), Duration::from_secs(2)).unwrap();
    assert!(
        matches!(got.served, Served::NotConfigured(ref w) if w.contains("stayed empty")),
        "{:?}",
        got.served
    );
}

#[test]
fn azure_host_services() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let pem = std::fs::read_to_string(format!("{fixtures}az-snp-vtpm/vcek.pem")).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let split = pem.find(end).unwrap() + end.len();
    let thim = serde_json::json!({
        "vcekCert": &pem[..split],
        "certificateChain": &pem[split..],
        "tcbm": "DB18000000000004",
        "cacheControl": "86400",
    })
    .to_string();
    let quote = std::fs::read(format!("{fixtures}tdx/tdx_quote_4.dat")).unwrap();
    let fake = metadata::azure(metadata::Azure {
        thim: Some(thim),
        td_quote: Some(quote.clone()),
        ..Default::default()
    });
    assert_eq!(
        get(&format!("{}{}", fake.url(), azure::THIM_CERTIFICATION), &[]),
        400
    );
    let certs = azure::amd_certification(&fake.url(), DEADLINE).unwrap();
    assert_eq!(certs.chain.len(), 2);
    assert_eq!(certs.tcbm, "DB18000000000004");
    let got = azure::td_quote(&fake.url(), &[7; 1024], DEADLINE).unwrap();
    assert_eq!(got, quote);
    let err = azure::td_quote(&fake.url(), &[7; 1000], DEADLINE).unwrap_err();
    assert!(err.to_string().contains("1024 bytes, not 1000"), "{err}");
}

#[test]
fn wireserver_hears_ready() {
    let fake = metadata::wireserver();
    assert_eq!(
        get(&format!("{}/machine/?comp=goalstate", fake.url()), &[]),
        400
    );
    let goal = wireserver::report_ready(&fake.url(), DEADLINE).unwrap();
    assert_eq!(goal.container_id, metadata::CONTAINER_ID);
    assert_eq!(goal.instance_id, metadata::INSTANCE_ID);
    assert_eq!(goal.incarnation, metadata::INCARNATION);
    let reports = metadata::health_reports(&fake);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    for needle in [
        format!(
            "<GoalStateIncarnation>{}</GoalStateIncarnation>",
            metadata::INCARNATION
        ),
        format!("<ContainerId>{}</ContainerId>", metadata::CONTAINER_ID),
        format!("<InstanceId>{}</InstanceId>", metadata::INSTANCE_ID),
        "<State>Ready</State>".to_string(),
    ] {
        assert!(r.contains(&needle), "{needle} missing from\n{r}");
    }

    // A goal state with two role instances is refused, and nothing is reported.
    let hostile = metadata::serve(|req| {
        if req.method == "GET" {
            Response::new(
                200,
                "<GoalState><Incarnation>1</Incarnation><Container><ContainerId>a</ContainerId>\
                 <RoleInstanceList><RoleInstance><InstanceId>x</InstanceId></RoleInstance>\
                 <RoleInstance><InstanceId>y</InstanceId></RoleInstance></RoleInstanceList>\
                 </Container></GoalState>",
            )
        } else {
            Response::new(200, "")
        }
    });
    let err = chain(&wireserver::report_ready(&hostile.url(), DEADLINE).unwrap_err());
    assert!(err.contains("more than once"), "{err}");
    assert!(hostile.seen().iter().all(|(r, _)| r.method == "GET"));
}

#[test]
fn transient_failures_are_retried_within_the_deadline() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = AtomicUsize::new(0);
    let flaky = metadata::serve(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) < 2 {
            Response::new(503, "busy").with("Metadata-Flavor", "Google")
        } else {
            Response::new(200, "doc").with("Metadata-Flavor", "Google")
        }
    });
    let got = cloud::fetch_initdata(Cloud::Gcp, &flaky.url(), DEADLINE).unwrap();
    assert_eq!(got.served, Served::Document(b"doc".to_vec()));
    assert_eq!(got.requests, 3);
    let down = metadata::serve(|_| Response::new(500, "down"));
    let err =
        chain(&cloud::fetch_initdata(Cloud::Gcp, &down.url(), Duration::from_secs(1)).unwrap_err());
    assert!(err.contains("no usable answer within 1 s"), "{err}");
    // A 403 is an answer, not a hiccup: not retried.
    let no = metadata::serve(|_| Response::new(403, "no").with("Metadata-Flavor", "Google"));
    assert!(cloud::fetch_initdata(Cloud::Gcp, &no.url(), DEADLINE).is_err());
    assert_eq!(no.seen().len(), 1);
}
