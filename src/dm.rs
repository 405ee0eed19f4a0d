//! Device-mapper devices through the `devicemapper` crate's ioctls (no libdevmapper, no
//! dmsetup/veritysetup in the guest), with no udev: the node is devtmpfs's /dev/dm-<minor>.

use devicemapper::{DM, DevId, DmFlags, DmName, DmOptions, DmUuid};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("cannot open /dev/mapper/control")]
    Control(#[source] devicemapper::DmError),
    #[error("invalid device-mapper name {0}")]
    Name(String),
    #[error("cannot create device-mapper device {name}")]
    Create {
        name: String,
        #[source]
        source: devicemapper::DmError,
    },
    #[error("the kernel refused the {target} table for {name}")]
    Table {
        name: String,
        target: String,
        #[source]
        source: devicemapper::DmError,
    },
    #[error("cannot activate device-mapper device {name}")]
    Resume {
        name: String,
        #[source]
        source: devicemapper::DmError,
    },
}

/// One target line: start and length in 512-byte sectors, target type, parameters.
pub struct Target {
    pub sectors: u64,
    pub kind: &'static str,
    /// Wiped on drop: a dm-crypt table carries the volume key.
    pub params: zeroize::Zeroizing<String>,
}

/// An active device.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub name: String,
    pub path: PathBuf,
    pub devno: String,
}

/// Create, load and activate a single-target device. `secret` marks tables that carry key
/// material (dm-crypt): the kernel then wipes its copies of the ioctl buffers.
pub fn create(
    name: &str,
    uuid: &str,
    target: &Target,
    read_only: bool,
    secret: bool,
) -> Result<Mapped, DmError> {
    let dm = DM::new().map_err(DmError::Control)?;
    let dm_name = DmName::new(name).map_err(|_| DmError::Name(name.to_string()))?;
    let dm_uuid = DmUuid::new(uuid).map_err(|_| DmError::Name(uuid.to_string()))?;
    let ro = if read_only {
        DmFlags::DM_READONLY
    } else {
        DmFlags::empty()
    };
    let info = dm
        .device_create(dm_name, Some(dm_uuid), DmOptions::default().set_flags(ro))
        .map_err(|source| DmError::Create {
            name: name.to_string(),
            source,
        })?;
    let id = DevId::Name(dm_name);
    let mut flags = ro;
    if secret {
        flags |= DmFlags::DM_SECURE_DATA;
    }
    let mut table = [(
        0u64,
        target.sectors,
        target.kind.to_string(),
        String::clone(&target.params),
    )];
    let loaded = dm
        .table_load(&id, &table, DmOptions::default().set_flags(flags))
        .map_err(|source| DmError::Table {
            name: name.to_string(),
            target: target.kind.to_string(),
            source,
        });
    // Our copy of the table; the crate's ioctl buffer is its own (DM_SECURE_DATA makes the
    // kernel wipe its side).
    zeroize::Zeroize::zeroize(&mut table[0].3);
    let loaded = loaded.and_then(|_| {
        // Without DM_SUSPEND this is a resume: the loaded table goes live.
        dm.device_suspend(&id, DmOptions::default())
            .map_err(|source| DmError::Resume {
                name: name.to_string(),
                source,
            })
    });
    if let Err(e) = loaded {
        // Leave no half-made device behind for a later stage to trip over.
        let _ = dm.device_remove(&id, DmOptions::default());
        return Err(e);
    }
    let dev = info.device();
    Ok(Mapped {
        name: name.to_string(),
        path: PathBuf::from(format!("/dev/dm-{}", dev.minor)),
        devno: format!("{}:{}", dev.major, dev.minor),
    })
}

/// Removes a device by name, best effort (cleanup paths; nothing to report to).
pub fn remove(name: &str) {
    if let (Ok(dm), Ok(dm_name)) = (DM::new(), DmName::new(name)) {
        let _ = dm.device_remove(&DevId::Name(dm_name), DmOptions::default());
    }
}
