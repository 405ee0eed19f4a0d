//! How command bytes reach a TPM: the kernel's resource-managed character device in the
//! guest, or swtpm's TCP data channel on the host (tests, `cvmctl`).
//!
//! A transport only moves bytes and bounds them; whether the answer makes sense is decided
//! by `Tpm`, which treats every response as hostile input.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::OFlag;

use super::{HEADER_LEN, MAX_BUFFER, TpmError};

/// Sends one marshalled command and returns the raw response bytes.
pub trait Transport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError>;
}

/// `/dev/tpmrm0` (or `/dev/tpm0`): the kernel takes a whole command per write(2) and hands
/// back the whole response per read(2), so no framing is needed.
#[derive(Debug)]
pub struct DeviceTransport {
    file: File,
}

impl DeviceTransport {
    pub fn open(path: &Path) -> Result<Self, TpmError> {
        // std already adds O_CLOEXEC; spelling it out keeps the workload from ever
        // inheriting the TPM descriptor even if that default changes.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OFlag::O_CLOEXEC.bits())
            .open(path)
            .map_err(|source| TpmError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(DeviceTransport { file })
    }
}

impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        check_command_len(command)?;
        // The driver rejects partial commands, so a short write is an error rather
        // than something to continue; EINTR means nothing was sent yet.
        let written = retry_eintr(|| self.file.write(command)).map_err(|source| TpmError::Io {
            op: "write to TPM",
            source,
        })?;
        if written != command.len() {
            return Err(TpmError::ShortWrite {
                written,
                len: command.len(),
            });
        }
        // The kernel's buffer is TPM_BUFSIZE (4096) too; a smaller buffer here would
        // make it drop the tail of a long response.
        let mut buf = [0u8; MAX_BUFFER];
        let n = retry_eintr(|| self.file.read(&mut buf)).map_err(|source| TpmError::Io {
            op: "read from TPM",
            source,
        })?;
        let response = buf.get(..n).ok_or(TpmError::TooLarge { len: n as u64 })?;
        Ok(response.to_vec())
    }
}

/// swtpm's `socket --server type=tcp` data channel: raw TPM frames on a byte stream,
/// so the response length comes from its header.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
}

/// How long to wait for the TCP connection itself.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Long enough for swtpm's slowest operation (RSA key generation under TCG emulation),
/// short enough that a wedged swtpm fails a test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

impl TcpTransport {
    /// Connects to exactly `addr`; no name resolution, no fallback addresses.
    pub fn connect(addr: SocketAddr) -> Result<Self, TpmError> {
        let connect_err = |source| TpmError::Connect { addr, source };
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(connect_err)?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(connect_err)?;
        // One small command per round trip: Nagle would only add latency.
        stream.set_nodelay(true).map_err(connect_err)?;
        Ok(TcpTransport { stream })
    }
}

impl Transport for TcpTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        check_command_len(command)?;
        self.stream
            .write_all(command)
            .map_err(|source| TpmError::Io {
                op: "write to TPM",
                source,
            })?;
        let read_err = |source| TpmError::Io {
            op: "read from TPM",
            source,
        };
        let mut header = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut header).map_err(read_err)?;
        let [_, _, s0, s1, s2, s3, ..] = header;
        let declared = u32::from_be_bytes([s0, s1, s2, s3]);
        // Bound the claimed size before allocating anything for it.
        let total = usize::try_from(declared)
            .ok()
            .filter(|&n| n <= MAX_BUFFER)
            .ok_or(TpmError::TooLarge {
                len: u64::from(declared),
            })?;
        if total < HEADER_LEN {
            return Err(TpmError::Malformed(format!(
                "response header declares {declared} bytes, less than the header itself"
            )));
        }
        let mut response = header.to_vec();
        response.resize(total, 0);
        if let Some(rest) = response.get_mut(HEADER_LEN..) {
            self.stream.read_exact(rest).map_err(read_err)?;
        }
        Ok(response)
    }
}

fn check_command_len(command: &[u8]) -> Result<(), TpmError> {
    if command.len() > MAX_BUFFER {
        return Err(TpmError::CommandTooLarge { len: command.len() });
    }
    Ok(())
}

/// PID 1 installs signal handlers; an interrupted syscall on the TPM device has
/// transferred nothing and is simply repeated.
fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
