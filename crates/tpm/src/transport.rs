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
use std::sync::{Arc, mpsc};
use std::time::Duration;

use nix::fcntl::OFlag;

use super::{HEADER_LEN, MAX_BUFFER, TpmError};

/// Sends one marshalled command and returns the raw response bytes.
pub trait Transport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError>;

    /// The same for a command that may legitimately run much longer (key generation);
    /// transports with a deadline allow it more time.
    fn transact_slow(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.transact(command)
    }
}

/// A borrowed transport, so a test double can wrap one and still talk to it itself.
impl<T: Transport + ?Sized> Transport for &mut T {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        (**self).transact(command)
    }

    fn transact_slow(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        (**self).transact_slow(command)
    }
}

/// How long an ordinary command may take on the device before PID 1 gives up on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The same for key generation (TPM2_CreatePrimary of an RSA key): a vTPM needs well under a
/// second, a discrete TPM can need tens of seconds.
pub const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(120);

/// `/dev/tpmrm0` (or `/dev/tpm0`): the kernel takes a whole command per write(2) and hands
/// back the whole response per read(2), so no framing is needed.
///
/// Every command has a deadline, so a TPM (or a host's vTPM) that never answers fails the
/// boot with an error instead of blocking PID 1 forever. The exchange runs on a short-lived
/// thread doing plain blocking write(2) and read(2), and the caller waits for it with a
/// timeout. Non-blocking mode would not give that bound: the kernel's TPM character device
/// does support `O_NONBLOCK` since Linux 5.0 (write(2) queues the command, poll(2) reports
/// the answer), but its poll handler takes the same per-file mutex that the queued command
/// holds while the TPM works, so poll(2) itself sleeps, uninterruptibly and past its
/// timeout, for as long as the TPM does. A thread works the same on every kernel.
///
/// A command that times out is still running in the kernel, and the device refuses a new
/// one until its answer has been read, so while that thread is still waiting every further
/// `transact` fails with [`TpmError::Busy`]; once it has its answer, the stale answer is
/// dropped and the device is usable again.
#[derive(Debug)]
pub struct DeviceTransport {
    file: Arc<File>,
    timeout: Duration,
    slow_timeout: Duration,
    /// The answer to a command that timed out, still to come.
    stale: Option<mpsc::Receiver<Result<Vec<u8>, TpmError>>>,
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
        Ok(Self::from_file(file))
    }

    /// Wraps an already open blocking descriptor that speaks the character device's
    /// protocol: one whole command per write, one whole response per read.
    pub fn from_file(file: File) -> Self {
        DeviceTransport {
            file: Arc::new(file),
            timeout: DEFAULT_TIMEOUT,
            slow_timeout: DEFAULT_SLOW_TIMEOUT,
            stale: None,
        }
    }

    /// Deadlines for ordinary commands and for key generation.
    pub fn set_timeouts(&mut self, timeout: Duration, slow_timeout: Duration) {
        self.timeout = timeout;
        self.slow_timeout = slow_timeout;
    }

    fn transact_within(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, TpmError> {
        check_command_len(command)?;
        if let Some(stale) = &self.stale {
            match stale.try_recv() {
                // Its answer (or error) is of no use to anyone now.
                Ok(_) | Err(mpsc::TryRecvError::Disconnected) => self.stale = None,
                Err(mpsc::TryRecvError::Empty) => return Err(TpmError::Busy),
            }
        }
        let (answer, receiver) = mpsc::channel();
        let file = Arc::clone(&self.file);
        let command = command.to_vec();
        std::thread::Builder::new()
            .name("tpm-io".to_string())
            .spawn(move || {
                // The receiver may have given up already; then nobody wants the answer.
                let _ = answer.send(exchange(&file, &command));
            })
            .map_err(|source| TpmError::Io {
                op: "start the TPM I/O thread",
                source,
            })?;
        match receiver.recv_timeout(timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stale = Some(receiver);
                Err(TpmError::Timeout { timeout })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(TpmError::Io {
                op: "read from TPM",
                source: io::Error::other("the TPM I/O thread ended without an answer"),
            }),
        }
    }
}

/// One blocking command/response exchange on the device.
fn exchange(mut file: &File, command: &[u8]) -> Result<Vec<u8>, TpmError> {
    // The driver rejects partial commands, so a short write is an error rather
    // than something to continue; EINTR means nothing was sent yet.
    let written = retry_eintr(|| file.write(command)).map_err(|source| TpmError::Io {
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
    let n = retry_eintr(|| file.read(&mut buf)).map_err(|source| TpmError::Io {
        op: "read from TPM",
        source,
    })?;
    let response = buf.get(..n).ok_or(TpmError::TooLarge { len: n as u64 })?;
    Ok(response.to_vec())
}

impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.transact_within(command, self.timeout)
    }

    fn transact_slow(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.transact_within(command, self.slow_timeout)
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
