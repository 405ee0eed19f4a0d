//! The boot mode and where the init-data comes from: the two launch choices the kernel command
//! line makes (`cvm.mode=`, `cvm.initdata=`), measured and checked by guest and host alike.

use std::fmt;

/// Production fails closed and powers off; debug keeps the VM up after the workload or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Production,
    Debug,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Production => "production",
            Mode::Debug => "debug",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the launch configuration (init-data) comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InitDataSource {
    #[default]
    Auto,
    File(String),
    Disk,
    FwCfg,
    Gcp,
    Azure,
    Aws,
}
