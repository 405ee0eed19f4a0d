//! `cvmctl relay PORT`: the host end of a QEMU `guestfwd=…-cmd:` forward. QEMU runs one relay
//! per guest connection with the connection on stdin/stdout, and the relay joins it to
//! 127.0.0.1:PORT — the only place guest traffic may go on a test host. (The chardev form
//! `guestfwd=…-tcp:HOST:PORT` connects once when QEMU starts and carries every guest
//! connection over that one stream, so a KBS that is not up yet, or that closes a connection,
//! breaks the forward for the rest of the boot.)
//!
//! stdout and stderr are the guest's socket: the relay prints nothing, and ends when either side
//! is done.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::os::fd::AsFd as _;

/// Relay stdin/stdout to 127.0.0.1:`port` until either side closes.
pub fn relay(port: u16) -> std::io::Result<()> {
    let server = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    // Unbuffered ends: a reply must reach the guest as soon as it arrives.
    let mut guest_in = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let mut guest_out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let mut to_server = server.try_clone()?;
    std::thread::spawn(move || {
        let _ = pump(&mut guest_in, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let mut from_server = server;
    pump(&mut from_server, &mut guest_out)
}

fn pump(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}
