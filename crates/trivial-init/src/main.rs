//! The baseline for `cvmctl bench boot`: a static init that prints a result line and powers off
//! at once, so the difference to cvm-agent's boot is the agent's own work.
#![forbid(unsafe_code)]

use std::io::Write;

fn main() {
    if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = console.write_all(b"cvm-agent: result {\"exit_code\":0}\n");
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
