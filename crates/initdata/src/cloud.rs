//! Init-data from a cloud's instance metadata: which cloud a VM runs on (its SMBIOS vendor), how
//! large each cloud lets the document be, and how each one encodes it. The agent fetches; the
//! bounds and the decoding live here so host tools and tests hold documents to the same rules.
//!
//! | cloud | where | limit (as served) | encoding |
//! | --- | --- | --- | --- |
//! | GCP | instance attribute [`GCP_ATTRIBUTE`] (`Metadata-Flavor: Google`) | 256 KiB, GCP's own limit for one value | the TOML as is |
//! | Azure | `compute/userData` (`Metadata: true`, `format=text`) | 64 KiB of base64, Azure's limit | standard base64 with padding |
//! | AWS | `/latest/user-data` (IMDSv2 only) | 16 KiB, EC2's limit | the TOML as is (no gzip) |
//!
//! The digest the TEE binds is taken over the decoded TOML: the bytes a host tool hashes when it
//! writes the document to the instance.

use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;

use crate::InitDataError;

/// The GCP instance attribute (`gcloud compute instances create … --metadata-from-file
/// cvm-initdata=initdata.toml`). Instance attributes only: a project-wide one would apply to
/// every VM of the project.
pub const GCP_ATTRIBUTE: &str = "cvm-initdata";
/// The SMBIOS system vendor, relative to the root (the kernel's DMI id).
pub const SYS_VENDOR_PATH: &str = "sys/class/dmi/id/sys_vendor";
/// GCP's limit for one metadata value.
pub const GCP_MAX: usize = 256 * 1024;
/// Azure's limit for userData, base64 as served.
pub const AZURE_MAX: usize = 64 * 1024;
/// EC2's limit for user data.
pub const AWS_MAX: usize = 16 * 1024;
/// sysfs attributes are one line; a vendor string is short.
const MAX_VENDOR_LEN: usize = 256;

/// A cloud whose metadata service can hold the init-data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    Gcp,
    Azure,
    Aws,
}

impl Cloud {
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
            Cloud::Aws => "aws",
        }
    }

    /// The cloud whose hypervisor reports `vendor` (`/sys/class/dmi/id/sys_vendor`, trimmed).
    /// Exact names only: `Microsoft Corporation` is also any Hyper-V VM, where the metadata
    /// service is simply not there and the fetch fails with a clear error.
    pub fn from_sys_vendor(vendor: &str) -> Option<Cloud> {
        match vendor {
            "Google" => Some(Cloud::Gcp),
            "Microsoft Corporation" => Some(Cloud::Azure),
            "Amazon EC2" => Some(Cloud::Aws),
            _ => None,
        }
    }

    /// The largest document the metadata service may serve, as served (Azure: base64).
    pub fn max_served(self) -> usize {
        match self {
            Cloud::Gcp => GCP_MAX,
            Cloud::Azure => AZURE_MAX,
            Cloud::Aws => AWS_MAX,
        }
    }

    /// The init-data bytes from what the metadata service served: the size bound, then the
    /// cloud's encoding. The result still goes through [`crate::InitData::parse`].
    pub fn decode(self, served: &[u8]) -> Result<Vec<u8>, InitDataError> {
        if served.len() > self.max_served() {
            return Err(InitDataError::CloudTooLarge {
                cloud: self.name(),
                len: served.len(),
                max: self.max_served(),
            });
        }
        match self {
            Cloud::Gcp | Cloud::Aws => Ok(served.to_vec()),
            // Strict: the standard alphabet, canonical padding, no whitespace or line breaks.
            Cloud::Azure => base64::engine::general_purpose::STANDARD
                .decode(served)
                .map_err(|e| InitDataError::CloudEncoding {
                    cloud: self.name(),
                    why: format!("userData is not base64: {e}"),
                }),
        }
    }
}

/// Where `cvm.initdata=` sends the agent, decided before anything is read from a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Read locally (a file or fw_cfg): the bytes.
    Local(Vec<u8>),
    /// Fetch from this cloud's metadata service. `required`: the source was named on the
    /// command line, so a service without init-data is an error; under `auto` it means "none
    /// there", and the image's own file (if any) is used instead.
    Cloud { cloud: Cloud, required: bool },
    /// `auto` found nothing and this is no known cloud.
    None,
}

/// The plan for `source`. `auto`: fw_cfg if the host passed one; else the metadata service of
/// the cloud the SMBIOS vendor names; else the file baked into the image; else nothing.
pub fn plan(source: &crate::InitDataSource, root: &Path) -> Result<Plan, InitDataError> {
    use crate::InitDataSource as S;
    let required = |cloud| {
        Ok(Plan::Cloud {
            cloud,
            required: true,
        })
    };
    match source {
        S::Gcp => required(Cloud::Gcp),
        S::Azure => required(Cloud::Azure),
        S::Aws => required(Cloud::Aws),
        S::Auto => {
            if let Some(raw) = crate::read_if_present(&root.join(crate::FW_CFG_PATH))? {
                return Ok(Plan::Local(raw));
            }
            if let Some(cloud) = sys_vendor(root)?
                .as_deref()
                .and_then(Cloud::from_sys_vendor)
            {
                return Ok(Plan::Cloud {
                    cloud,
                    required: false,
                });
            }
            Ok(image_file(root)?.map_or(Plan::None, Plan::Local))
        }
        other => Ok(crate::load(other, root)?.map_or(Plan::None, Plan::Local)),
    }
}

/// The image's own init-data file, if there is one: `auto`'s last resort.
pub fn image_file(root: &Path) -> Result<Option<Vec<u8>>, InitDataError> {
    crate::read_if_present(&root.join(crate::IMAGE_PATH))
}

/// The SMBIOS system vendor, trimmed; `None` without DMI (no SMBIOS, or not x86).
pub fn sys_vendor(root: &Path) -> Result<Option<String>, InitDataError> {
    let path = root.join(SYS_VENDOR_PATH);
    let io = |source| InitDataError::Io {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut raw = Vec::new();
    file.take(MAX_VENDOR_LEN as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() > MAX_VENDOR_LEN {
        return Err(InitDataError::Vendor("longer than 256 bytes".into()));
    }
    let text = std::str::from_utf8(&raw)
        .map_err(|_| InitDataError::Vendor("not UTF-8".into()))?
        .trim();
    Ok((!text.is_empty()).then(|| text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InitDataSource;

    #[test]
    fn vendors() {
        assert_eq!(Cloud::from_sys_vendor("Google"), Some(Cloud::Gcp));
        assert_eq!(
            Cloud::from_sys_vendor("Microsoft Corporation"),
            Some(Cloud::Azure)
        );
        assert_eq!(Cloud::from_sys_vendor("Amazon EC2"), Some(Cloud::Aws));
        for other in ["QEMU", "google", "Amazon", "", "Microsoft"] {
            assert_eq!(Cloud::from_sys_vendor(other), None, "{other:?}");
        }
    }

    #[test]
    fn bounds_and_encodings() {
        // 19 bytes: the base64 form ends in padding.
        let toml = b"version = \"0.1.0\"\n\n";
        assert_eq!(Cloud::Gcp.decode(toml).unwrap(), toml);
        assert_eq!(Cloud::Aws.decode(toml).unwrap(), toml);
        let b64 = base64::engine::general_purpose::STANDARD.encode(toml);
        assert_eq!(Cloud::Azure.decode(b64.as_bytes()).unwrap(), toml);
        // Azure: whitespace, the url-safe alphabet and missing padding are refused.
        for bad in [format!("{b64}\n"), b64.replace('=', ""), "a-b_".into()] {
            let e = Cloud::Azure.decode(bad.as_bytes()).unwrap_err();
            assert!(matches!(e, InitDataError::CloudEncoding { .. }), "{bad:?}");
        }
        for (cloud, max) in [
            (Cloud::Gcp, GCP_MAX),
            (Cloud::Azure, AZURE_MAX),
            (Cloud::Aws, AWS_MAX),
        ] {
            let e = cloud.decode(&vec![b'A'; max + 1]).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "init-data from the {} metadata service is {} bytes (limit {max})",
                    cloud.name(),
                    max + 1
                )
            );
            // Exactly the limit passes the bound (Azure: 65536 is a multiple of 4).
            assert!(cloud.decode(&vec![b'A'; max]).is_ok(), "{cloud:?}");
        }
    }

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn auto_prefers_fw_cfg_then_the_cloud_then_the_image() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(plan(&InitDataSource::Auto, r).unwrap(), Plan::None);
        write(r, crate::IMAGE_PATH, b"image");
        assert_eq!(
            plan(&InitDataSource::Auto, r).unwrap(),
            Plan::Local(b"image".to_vec())
        );
        write(r, SYS_VENDOR_PATH, b"QEMU\n");
        assert_eq!(
            plan(&InitDataSource::Auto, r).unwrap(),
            Plan::Local(b"image".to_vec())
        );
        write(r, SYS_VENDOR_PATH, b"Amazon EC2\n");
        assert_eq!(
            plan(&InitDataSource::Auto, r).unwrap(),
            Plan::Cloud {
                cloud: Cloud::Aws,
                required: false
            }
        );
        write(r, crate::FW_CFG_PATH, b"fw");
        assert_eq!(
            plan(&InitDataSource::Auto, r).unwrap(),
            Plan::Local(b"fw".to_vec())
        );
        // Named sources do not look at the vendor.
        assert_eq!(
            plan(&InitDataSource::Gcp, r).unwrap(),
            Plan::Cloud {
                cloud: Cloud::Gcp,
                required: true
            }
        );
        assert_eq!(
            plan(&InitDataSource::FwCfg, r).unwrap(),
            Plan::Local(b"fw".to_vec())
        );
        assert_eq!(image_file(r).unwrap().as_deref(), Some(&b"image"[..]));
    }

    #[test]
    fn vendor_is_read_bounded() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(sys_vendor(r).unwrap(), None);
        write(r, SYS_VENDOR_PATH, b"  Google \n");
        assert_eq!(sys_vendor(r).unwrap().as_deref(), Some("Google"));
        write(r, SYS_VENDOR_PATH, &[b'x'; 300]);
        assert!(matches!(sys_vendor(r), Err(InitDataError::Vendor(_))));
        write(r, SYS_VENDOR_PATH, b"\xff\xfe");
        assert!(matches!(sys_vendor(r), Err(InitDataError::Vendor(_))));
    }
}
