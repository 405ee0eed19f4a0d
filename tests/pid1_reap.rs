//! PID 1's duties, on the host: as a child subreaper this test process stands in for init, so
//! orphans are reparented to it exactly as they would be to PID 1.
//! One test per binary: it blocks signals process-wide.

use cvm_agent::pid1::{ChildEvent, Pid1, Request};
use nix::sys::pthread::{pthread_kill, pthread_self};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
// The children are reaped by Pid1 (the point of the test), not by std's wait().
#[allow(clippy::zombie_processes)]
fn reaps_children_and_orphans_and_turns_sigterm_into_power_off() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let mut pid1 = Pid1::signals().expect("block signals, signalfd");

    // sh exits at once and leaves its background sleep behind: an orphan that is now ours.
    let child = Command::new("sh")
        .args(["-c", "sleep 0.3 & echo $!"])
        .output()
        .expect("run sh");
    // `output()` waited for sh itself; the orphan is left for us.
    let orphan: i32 = String::from_utf8_lossy(&child.stdout)
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reaped = Vec::new();
    while !reaped.contains(&orphan) {
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} never reaped: {reaped:?}"
        );
        assert_eq!(pid1.wait(Some(Duration::from_millis(100))), None);
        reaped.extend(pid1.reap().iter().map(|r| r.pid.as_raw()));
        // wait() reaps too; a pid that is gone from /proc was reaped by one of the two.
        if !std::path::Path::new(&format!("/proc/{orphan}")).exists() {
            break;
        }
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{orphan}")).exists(),
        "orphan {orphan} is still a zombie"
    );

    // SIGTERM is blocked and queued, then read as an orderly power-off request. The test
    // harness runs this on a thread of its own and only this thread blocks the signal, so it
    // is sent to this thread (in the agent, PID 1 blocks it before any thread exists).
    pthread_kill(pthread_self(), Signal::SIGTERM).unwrap();
    assert_eq!(
        pid1.wait(Some(Duration::from_secs(5))),
        Some(Request::PowerOff(Signal::SIGTERM))
    );
    assert_eq!(pid1.poll(), None);

    // Waiting for one child (the workload) reaps the others as they end and returns its own
    // status, however many siblings end first.
    let sibling = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    let workload = Command::new("sh")
        .args(["-c", "sleep 0.3; exit 7"])
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(workload.id() as i32);
    match pid1.wait_for(pid) {
        ChildEvent::Exited(WaitStatus::Exited(p, 7)) => assert_eq!(p, pid),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{}", sibling.id())).exists(),
        "the sibling was reaped too"
    );
    // A power-off request ends the wait while the child still runs.
    let long = Command::new("sleep").arg("30").spawn().unwrap();
    pthread_kill(pthread_self(), Signal::SIGTERM).unwrap();
    let pid = nix::unistd::Pid::from_raw(long.id() as i32);
    assert_eq!(pid1.wait_for(pid), ChildEvent::PowerOff(Signal::SIGTERM));
    nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
    assert!(matches!(
        pid1.wait_for(pid),
        ChildEvent::Exited(WaitStatus::Signaled(_, Signal::SIGKILL, _))
    ));
}
