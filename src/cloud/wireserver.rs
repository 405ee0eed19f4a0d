//! Azure's WireServer: a VM that never reports "Ready" is rebooted by Azure as a failed
//! provisioning. The agent does what Azure documents for images without the Linux agent: `GET
//! /machine/?comp=goalstate` (`x-ms-version: 2012-11-30`) for the goal state's incarnation,
//! container id and role instance id, then `POST /machine?comp=health` with a Health document
//! whose state is `Ready`.
//!
//! The goal state is the host's XML. It is read bounded and strictly: one `GoalState` root,
//! well nested, no DTD, CDATA or processing instruction past the declaration, and each of the
//! three values exactly once, as plain text of a narrow character set — they go back into the
//! Health document, so nothing in them may be markup.

use std::time::Duration;

use super::imds::{Http, printable};
use super::{CloudError, Request, send_with_retries};

pub const GOAL_STATE: &str = "/machine/?comp=goalstate";
pub const HEALTH: &str = "/machine?comp=health";
const VERSION: (&str, &str) = ("x-ms-version", "2012-11-30");
/// A goal state is a few KiB.
const MAX_GOAL_STATE: usize = 64 * 1024;
const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 4096;
const MAX_ANSWER: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireServerError {
    #[error(transparent)]
    Service(#[from] CloudError),
    #[error("the goal state XML: {0}")]
    Xml(String),
}

fn xml(why: impl Into<String>) -> WireServerError {
    WireServerError::Xml(why.into())
}

/// What the Health report must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoalState {
    pub incarnation: u64,
    pub container_id: String,
    pub instance_id: String,
}

/// Reads the goal state and reports Ready for it, within `deadline`.
pub fn report_ready(base: &str, deadline: Duration) -> Result<GoalState, WireServerError> {
    let http = Http::new(base);
    let goal_state = Request {
        method: "GET",
        path: GOAL_STATE,
        headers: &[VERSION],
        body: None,
        max_body: MAX_GOAL_STATE,
        accept: 200..=200,
    };
    // One deadline for both requests: PID 1 waits on this after the workload started.
    let started = std::time::Instant::now();
    let body = send_with_retries(&http, &goal_state, deadline)?;
    let goal = parse_goal_state(&body)?;
    let document = health_ready(&goal);
    let health = Request {
        method: "POST",
        path: HEALTH,
        headers: &[
            VERSION,
            ("x-ms-agent-name", "cvm-agent"),
            ("Content-Type", "text/xml;charset=utf-8"),
        ],
        body: Some(document.as_bytes()),
        max_body: MAX_ANSWER,
        accept: 200..=299,
    };
    // Any 2xx is the report taken; what the answer says does not matter.
    send_with_retries(&http, &health, deadline.saturating_sub(started.elapsed()))?;
    Ok(goal)
}

/// The Health document that reports the role instance Ready.
pub fn health_ready(goal: &GoalState) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
         <Health xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\n\
         \x20 <GoalStateIncarnation>{}</GoalStateIncarnation>\n\
         \x20 <Container>\n\
         \x20   <ContainerId>{}</ContainerId>\n\
         \x20   <RoleInstanceList>\n\
         \x20     <Role>\n\
         \x20       <InstanceId>{}</InstanceId>\n\
         \x20       <Health>\n\
         \x20         <State>Ready</State>\n\
         \x20       </Health>\n\
         \x20     </Role>\n\
         \x20   </RoleInstanceList>\n\
         \x20 </Container>\n\
         </Health>\n",
        goal.incarnation, goal.container_id, goal.instance_id
    )
}

const INCARNATION: &str = "GoalState/Incarnation";
const CONTAINER_ID: &str = "GoalState/Container/ContainerId";
const INSTANCE_ID: &str = "GoalState/Container/RoleInstanceList/RoleInstance/InstanceId";

pub fn parse_goal_state(body: &[u8]) -> Result<GoalState, WireServerError> {
    if body.len() > MAX_GOAL_STATE {
        return Err(xml(format!("longer than {MAX_GOAL_STATE} bytes")));
    }
    let text = std::str::from_utf8(body).map_err(|_| xml("not UTF-8"))?;
    let mut found: [(&str, Option<String>); 3] = [
        (INCARNATION, None),
        (CONTAINER_ID, None),
        (INSTANCE_ID, None),
    ];
    walk(text, |path, value| {
        if let Some((_, slot)) = found.iter_mut().find(|(p, _)| *p == path) {
            if slot.is_some() {
                return Err(xml(format!("{path} appears more than once")));
            }
            // Entities are not decoded: the values are identifiers, never escaped text.
            if value.contains('&') {
                return Err(xml(format!("{path} holds an entity reference")));
            }
            *slot = Some(value.to_string());
        }
        Ok(())
    })?;
    let [(_, incarnation), (_, container), (_, instance)] = found;
    let need = |v: Option<String>, path: &str| v.ok_or_else(|| xml(format!("no {path}")));
    let incarnation = need(incarnation, INCARNATION)?;
    let container_id = need(container, CONTAINER_ID)?;
    let instance_id = need(instance, INSTANCE_ID)?;
    let incarnation = (!incarnation.is_empty()
        && incarnation.len() <= 19
        && incarnation.bytes().all(|b| b.is_ascii_digit()))
    .then(|| incarnation.parse().ok())
    .flatten()
    .ok_or_else(|| xml(format!("{INCARNATION} is not a number")))?;
    let ok_id = |v: &str, max: usize, extra: &[u8]| {
        !v.is_empty()
            && v.len() <= max
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
    };
    if !ok_id(&container_id, 64, b"") {
        return Err(xml(format!("{CONTAINER_ID} is not 1-64 of A-Z a-z 0-9 -")));
    }
    if !ok_id(&instance_id, 128, b"._") {
        return Err(xml(format!(
            "{INSTANCE_ID} is not 1-128 of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(GoalState {
        incarnation,
        container_id,
        instance_id,
    })
}

/// Walks a small XML document strictly, calling `leaf(path, text)` for every element that holds
/// only text (trimmed, entities not decoded; `path` is the element names from the root joined
/// with `/`).
fn walk(
    text: &str,
    mut leaf: impl FnMut(&str, &str) -> Result<(), WireServerError>,
) -> Result<(), WireServerError> {
    let mut rest = text.trim_start_matches('\u{feff}');
    if let Some(after) = rest.strip_prefix("<?xml") {
        let end = after
            .find("?>")
            .ok_or_else(|| xml("unterminated XML declaration"))?;
        rest = &after[end + 2..];
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut path = String::new();
    // The text of the innermost open element so far (comments split it, nothing else).
    let mut text = String::new();
    let mut has_children = false;
    let mut elements = 0;
    let mut root_done = false;
    loop {
        let lt = rest.find('<');
        let chunk = &rest[..lt.unwrap_or(rest.len())];
        if stack.is_empty() && !chunk.trim().is_empty() {
            return Err(xml("text outside the root element"));
        }
        if chunk.contains('>') {
            return Err(xml("a stray '>'"));
        }
        let Some(lt) = lt else { break };
        if text.len() + chunk.len() > MAX_GOAL_STATE {
            return Err(xml("too much text"));
        }
        text.push_str(chunk);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .ok_or_else(|| xml("unterminated comment"))?;
            rest = &after[end + 3..];
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            return Err(xml("a DTD, CDATA section or processing instruction"));
        }
        let gt = rest.find('>').ok_or_else(|| xml("an unterminated tag"))?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim_end();
            let open = stack
                .pop()
                .ok_or_else(|| xml(format!("</{}> closes nothing", printable(name.as_bytes()))))?;
            if open != name {
                // `open` passed valid_name; `name` is the host's, unchecked.
                return Err(xml(format!(
                    "<{open}> closed by </{}>",
                    printable(name.as_bytes())
                )));
            }
            if !has_children {
                leaf(&path, text.trim())?;
            }
            text.clear();
            has_children = true;
            path.truncate(path.rfind('/').unwrap_or(0));
            if stack.is_empty() {
                root_done = true;
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag
            .split(|c: char| c.is_ascii_whitespace())
            .next()
            .unwrap_or("");
        if !valid_name(name) {
            return Err(xml(format!(
                "invalid element name {}",
                printable(name.as_bytes())
            )));
        }
        if root_done || (stack.is_empty() && name != "GoalState") {
            return Err(xml(format!(
                "the root must be one <GoalState>, found <{name}>"
            )));
        }
        elements += 1;
        if elements > MAX_ELEMENTS || stack.len() >= MAX_DEPTH {
            return Err(xml("too many or too deeply nested elements"));
        }
        has_children = true;
        text.clear();
        if self_closing {
            continue;
        }
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(name);
        stack.push(name);
        has_children = false;
    }
    if !stack.is_empty() {
        return Err(xml(format!("<{}> is never closed", stack[stack.len() - 1])));
    }
    if !root_done {
        return Err(xml("no <GoalState> element"));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape Azure documents (trimmed of configuration URLs).
    pub(crate) const GOAL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>3</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <LBProbePorts>
      <Port>16001</Port>
    </LBProbePorts>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <!-- one role instance: this VM -->
    <ContainerId>9f1d1c4e-2b3a-4c5d-8e9f-0a1b2c3d4e5f</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>896c1b2a-aaaa-bbbb-cccc-0123456789ab._cvm-test</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/x?comp=config&amp;type=hostingEnvironmentConfig</HostingEnvironmentConfig>
          <Certificates/>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"#;

    #[test]
    fn goal_state() {
        let g = parse_goal_state(GOAL.as_bytes()).unwrap();
        assert_eq!(
            g,
            GoalState {
                incarnation: 3,
                container_id: "9f1d1c4e-2b3a-4c5d-8e9f-0a1b2c3d4e5f".into(),
                instance_id: "896c1b2a-aaaa-bbbb-cccc-0123456789ab._cvm-test".into(),
            }
        );
        let health = health_ready(&g);
        assert!(health.contains("<GoalStateIncarnation>3</GoalStateIncarnation>"));
        assert!(health.contains("<State>Ready</State>"));
        assert!(
            health.contains(
                "<InstanceId>896c1b2a-aaaa-bbbb-cccc-0123456789ab._cvm-test</InstanceId>"
            )
        );
    }

    #[test]
    fn hostile_goal_states() {
        let err = |doc: &str| parse_goal_state(doc.as_bytes()).unwrap_err().to_string();
        let two = GOAL.replace(
            "</RoleInstanceList>",
            "<RoleInstance><InstanceId>b</InstanceId></RoleInstance></RoleInstanceList>",
        );
        assert!(err(&two).contains("more than once"), "{}", err(&two));
        assert!(
            err(&GOAL.replace("<Incarnation>3</Incarnation>", ""))
                .contains("no GoalState/Incarnation")
        );
        assert!(err(&GOAL.replace(">3<", ">-3<")).contains("not a number"));
        assert!(err(&GOAL.replace(">3<", ">99999999999999999999<")).contains("not a number"));
        let inject = GOAL.replace("._cvm-test<", "</InstanceId><State>x<");
        assert!(err(&inject).contains("closed by"), "{}", err(&inject));
        let entity = GOAL.replace("._cvm-test<", "&lt;x&gt;<");
        assert!(err(&entity).contains("entity"), "{}", err(&entity));
        let dtd = GOAL.replace("<GoalState ", "<!DOCTYPE x [<!ENTITY a \"b\">]><GoalState ");
        assert!(err(&dtd).contains("DTD"));
        assert!(err(&GOAL.replace("</GoalState>", "")).contains("never closed"));
        assert!(err(&format!("{GOAL}<GoalState></GoalState>")).contains("one <GoalState>"));
        assert!(err(&format!("{GOAL}x")).contains("outside the root"));
        assert!(err("<Other/>").contains("one <GoalState>"));
        assert!(err("").contains("no <GoalState>"));
        assert!(err(&GOAL.replace("9f1d1c4e-", "9f1d 1c4e-")).contains("ContainerId"));
        let deep = format!(
            "<GoalState>{}{}</GoalState>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert!(err(&deep).contains("deeply"));
        assert!(parse_goal_state(&vec![b' '; MAX_GOAL_STATE + 1]).is_err());
        assert!(err("<GoalState><a>x</b></GoalState>").contains("closed by"));
        // A hostile close tag cannot forge console lines or run on: escaped and cut.
        let forged = format!(
            "<GoalState><a>x</a></GoalState></x\ncvm-agent: result {{}}\u{1b}[2J{}>",
            "y".repeat(5000)
        );
        let e = err(&forged);
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e}");
        assert!(e.len() < 400, "{}", e.len());
        assert!(parse_goal_state(b"\xff").is_err());
    }
}
