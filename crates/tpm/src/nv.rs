//! NV indices: reading the Azure vTPM's HCL report (0x01400001) and GCP's AK template and
//! certificate (0x01c10001, 0x01c10000); writing the report data Azure's paravisor puts into a
//! fresh HCL report (0x01400002). Defining an index is for tests and test doubles (the
//! clouds provision theirs before the guest runs).

use tpm2_protocol::basic::{TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bAuth, Tpm2bDigest, Tpm2bMaxNvBuffer, Tpm2bNvPublic, TpmAlgId, TpmaNv, TpmsNvPublic,
};
use tpm2_protocol::frame::{
    TpmNvDefineSpaceCommand, TpmNvReadCommand, TpmNvReadPublicCommand, TpmNvWriteCommand,
};

use super::ak::check_name;
use super::{
    HEADER_LEN, MAX_NAME, Reader, TPM_RH_OWNER, Tpm, TpmError, Transport, marshal,
    marshal_with_password, session_response,
};

/// TPM_HT_NV_INDEX, the top byte of an NV index handle.
const HT_NV_INDEX: u32 = 0x01;
/// `TPM_PT_NV_BUFFER_MAX`: the most one NV_Read may return.
const TPM_PT_NV_BUFFER_MAX: u32 = 0x100 + 44;
/// Part 2's minimum for TPM_PT_NV_BUFFER_MAX, used when the TPM does not report it.
const DEFAULT_NV_CHUNK: u16 = 1024;
/// A claimed buffer larger than this would not fit a 4096-byte response with its envelope.
const MAX_NV_CHUNK: u16 = 2048;

/// `TPMA_NV_OWNERREAD`, `TPMA_NV_AUTHREAD`, `TPMA_NV_WRITTEN`.
const TPMA_NV_OWNERREAD: u32 = 0x0002_0000;
/// `TPMA_NV_OWNERWRITE`, `TPMA_NV_AUTHWRITE`.
const TPMA_NV_OWNERWRITE: u32 = 0x0000_0002;
const TPMA_NV_AUTHWRITE: u32 = 0x0000_0004;
/// TPM2_NV_Write's data is a TPM2B_MAX_NV_BUFFER: 1024 bytes at most per command.
const NV_WRITE_CHUNK: usize = 1024;
const TPMA_NV_AUTHREAD: u32 = 0x0004_0000;
const TPMA_NV_WRITTEN: u32 = 0x2000_0000;

/// An NV index's public area (TPMS_NV_PUBLIC) and name, as NV_ReadPublic reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    /// TPM_ALG_ID of the name's hash.
    pub name_alg: u16,
    /// TPMA_NV bits.
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    /// The index's size in bytes (at most 64 KiB - 1 by its type).
    pub data_size: u16,
    /// nameAlg followed by the hash of the marshalled TPMS_NV_PUBLIC.
    pub name: Vec<u8>,
}

impl NvPublic {
    /// TPMA_NV_AUTHREAD: the index's own auth value authorizes reading it.
    pub fn auth_read(&self) -> bool {
        self.attributes & TPMA_NV_AUTHREAD != 0
    }

    /// TPMA_NV_OWNERREAD: the owner hierarchy's auth value authorizes reading it.
    pub fn owner_read(&self) -> bool {
        self.attributes & TPMA_NV_OWNERREAD != 0
    }

    /// TPMA_NV_AUTHWRITE: the index's own auth value authorizes writing it.
    pub fn auth_write(&self) -> bool {
        self.attributes & TPMA_NV_AUTHWRITE != 0
    }

    /// TPMA_NV_OWNERWRITE: the owner's auth value authorizes writing it.
    pub fn owner_write(&self) -> bool {
        self.attributes & TPMA_NV_OWNERWRITE != 0
    }

    /// TPMA_NV_WRITTEN: the index has been written since it was defined; reading one that
    /// has not fails with TPM_RC_NV_UNINITIALIZED.
    pub fn is_written(&self) -> bool {
        self.attributes & TPMA_NV_WRITTEN != 0
    }
}

impl<T: Transport> Tpm<T> {
    /// TPM2_NV_ReadPublic of NV index `index`. An index that is not defined answers
    /// TPM_RC_HANDLE.
    pub fn nv_read_public(&mut self, index: u32) -> Result<NvPublic, TpmError> {
        self.read_nv_public(index)
            .map_err(|e| e.in_command("NV_ReadPublic"))
    }

    /// The whole contents of NV index `index` (at most 64 KiB by the index's size type),
    /// read with TPM2_NV_Read in chunks of TPM_PT_NV_BUFFER_MAX (1024 bytes when the TPM
    /// does not say). Authorized with an empty password: as the index itself when it allows
    /// that (TPMA_NV_AUTHREAD), else as the owner when the index allows that
    /// (TPMA_NV_OWNERREAD; the Azure HCL report and AK certificate indices are read this
    /// way).
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>, TpmError> {
        let public = self.nv_read_public(index)?;
        if public.data_size == 0 {
            return Ok(Vec::new());
        }
        let chunk = match self
            .tpm_property(TPM_PT_NV_BUFFER_MAX)
            .map_err(|e| e.in_command("GetCapability"))?
        {
            Some(0) | None => DEFAULT_NV_CHUNK,
            Some(n) => u16::try_from(n).unwrap_or(u16::MAX).min(MAX_NV_CHUNK),
        };
        self.read_nv(&public, chunk)
            .map_err(|e| e.in_command("NV_Read"))
    }

    /// TPM2_NV_Write of `data` at offset 0 of NV index `index` (ordinary index: at most its
    /// size), in chunks of 1024 bytes, authorized with an empty password as the index
    /// (TPMA_NV_AUTHWRITE) or else as the owner (TPMA_NV_OWNERWRITE). Azure's paravisor makes
    /// a new HCL report when the guest writes its report data to 0x01400002 this way.
    pub fn nv_write(&mut self, index: u32, data: &[u8]) -> Result<(), TpmError> {
        let public = self.nv_read_public(index)?;
        if data.len() > usize::from(public.data_size) {
            return Err(TpmError::InvalidArgument(format!(
                "{} bytes for NV index {index:#010x} of {} bytes",
                data.len(),
                public.data_size
            )));
        }
        let auth = if !public.auth_write() && public.owner_write() {
            TPM_RH_OWNER
        } else {
            index
        };
        for (i, chunk) in data.chunks(NV_WRITE_CHUNK).enumerate() {
            let offset = u16::try_from(i * NV_WRITE_CHUNK)
                .map_err(|_| TpmError::InvalidArgument("NV offset beyond 64 KiB".to_string()))?;
            self.write_nv(auth, index, chunk, offset)
                .map_err(|e| e.in_command("NV_Write"))?;
        }
        Ok(())
    }

    /// TPM2_NV_DefineSpace of an ordinary index of `size` bytes with TPMA_NV `attributes`,
    /// nameAlg SHA-256, an empty auth value and no policy, authorized by the owner (empty
    /// password). For tests and test doubles: the agent never defines indices.
    pub fn nv_define_space(
        &mut self,
        index: u32,
        attributes: u32,
        size: u16,
    ) -> Result<(), TpmError> {
        check_nv_index(index)?;
        let command = marshal_with_password(&TpmNvDefineSpaceCommand {
            handles: [TpmUint32::new(TPM_RH_OWNER)],
            auth: Tpm2bAuth::default(),
            public_info: Tpm2bNvPublic {
                inner: TpmsNvPublic {
                    nv_index: TpmUint32::new(index),
                    name_alg: TpmAlgId::Sha256,
                    attributes: TpmaNv::from_bits_truncate(attributes),
                    auth_policy: Tpm2bDigest::default(),
                    data_size: TpmUint16::new(size),
                },
            },
        })
        .map_err(|e| e.in_command("NV_DefineSpace"))?;
        let frame = self
            .execute_authorized(&command)
            .map_err(|e| e.in_command("NV_DefineSpace"))?;
        let (_, params) =
            session_response(&frame, 0).map_err(|e| e.in_command("NV_DefineSpace"))?;
        params.finish().map_err(|e| e.in_command("NV_DefineSpace"))
    }

    fn write_nv(
        &mut self,
        auth: u32,
        index: u32,
        data: &[u8],
        offset: u16,
    ) -> Result<(), TpmError> {
        let data =
            Tpm2bMaxNvBuffer::try_from(data).map_err(|e| TpmError::Marshal(super::describe(e)))?;
        let command = marshal_with_password(&TpmNvWriteCommand {
            handles: [TpmUint32::new(auth), TpmUint32::new(index)],
            data,
            offset: TpmUint16::new(offset),
        })?;
        let frame = self.execute_authorized(&command)?;
        let (_, params) = session_response(&frame, 0)?;
        params.finish()
    }

    fn read_nv_public(&mut self, index: u32) -> Result<NvPublic, TpmError> {
        check_nv_index(index)?;
        let command = marshal(&TpmNvReadPublicCommand {
            handles: [TpmUint32::new(index)],
        })?;
        let frame = self.execute(&command)?;
        let mut r = Reader::new(&frame, HEADER_LEN)?;
        let area = r.tpm2b(MAX_NAME + 64, "nvPublic")?;
        let name = r.tpm2b(MAX_NAME, "nvName")?;
        r.finish()?;

        let mut a = Reader {
            rest: area,
            offset: HEADER_LEN + 2,
        };
        let reported = a.u32("nvIndex")?;
        let name_alg = a.u16("nameAlg")?;
        let attributes = a.u32("attributes")?;
        let auth_policy = a.tpm2b(64, "authPolicy")?.to_vec();
        let data_size = a.u16("dataSize")?;
        a.finish()?;
        if reported != index {
            return Err(TpmError::Malformed(format!(
                "asked for NV index {index:#010x}, got {reported:#010x}"
            )));
        }
        check_name(name_alg, area, name)?;
        Ok(NvPublic {
            index,
            name_alg,
            attributes,
            auth_policy,
            data_size,
            name: name.to_vec(),
        })
    }

    fn read_nv(&mut self, public: &NvPublic, chunk: u16) -> Result<Vec<u8>, TpmError> {
        let index = public.index;
        let auth = if !public.auth_read() && public.owner_read() {
            TPM_RH_OWNER
        } else {
            index
        };
        let total = public.data_size;
        let mut data = Vec::with_capacity(usize::from(total));
        let mut offset: u16 = 0;
        while offset < total {
            let size = (total - offset).min(chunk.max(1));
            let command = marshal_with_password(&TpmNvReadCommand {
                handles: [TpmUint32::new(auth), TpmUint32::new(index)],
                size: TpmUint16::new(size),
                offset: TpmUint16::new(offset),
            })?;
            let frame = self.execute_authorized(&command)?;
            let (_, mut r) = session_response(&frame, 0)?;
            let got = r.tpm2b(usize::from(size), "data")?;
            r.finish()?;
            if got.len() != usize::from(size) {
                return Err(TpmError::Malformed(format!(
                    "{} bytes at offset {offset}, asked for {size}",
                    got.len()
                )));
            }
            data.extend_from_slice(got);
            offset += size;
        }
        Ok(data)
    }
}

fn check_nv_index(index: u32) -> Result<(), TpmError> {
    if index >> 24 != HT_NV_INDEX {
        return Err(TpmError::InvalidArgument(format!(
            "{index:#010x} is not an NV index handle (0x01xxxxxx)"
        )));
    }
    Ok(())
}
