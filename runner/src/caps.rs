//! Capabilities: docker's default set of 14 unless `--cap-add`/`--cap-drop` change it, and
//! nothing else.
//!
//! The bounding set is cut down by number (so capabilities newer than this program go too);
//! root's permitted and effective sets become the container's set; inheritable and ambient
//! stay empty (as docker has done since CVE-2022-24769). A non-root user gets no
//! capabilities at all, only the bounding set, like docker.

use caps::{CapSet, Capability, CapsHashSet};

use crate::error::{Result, SysContext};
use crate::sys;

/// docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_MKNOD,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_SETFCAP,
];

/// The bounding set of a container's processes: everything else is dropped, for good.
pub(crate) fn limit_bounding_set(keep: &[Capability]) -> Result<()> {
    let numbers: Vec<u32> = keep.iter().map(|c| u32::from(c.index())).collect();
    sys::drop_bounding_caps(&numbers).sys("drop capabilities from the bounding set")
}

/// Sets this process's permitted and effective sets to `keep` and empties inheritable and
/// ambient. Must follow the change of user: a non-root user has none left to keep.
pub(crate) fn set_process_caps(keep: &[Capability]) -> Result<()> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    // Effective must stay a subset of permitted at every step: shrink effective first.
    caps::set(None, CapSet::Effective, &keep).map_err(|e| caps_err(&e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| caps_err(&e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| caps_err(&e))?;
    // Ambient capabilities need kernel 4.3; on older ones there are none to clear.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| caps_err(&e))?;
    }
    Ok(())
}

fn caps_err(e: &caps::errors::CapsError) -> crate::Error {
    crate::Error::sys("set capabilities", std::io::Error::other(e.to_string()))
}

/// The capability mask docker's default set gives in /proc/PID/status (`CapEff` etc.).
pub fn default_capability_mask() -> u64 {
    DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.bitmask())
        .fold(0, |a, b| a | b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_is_dockers() {
        assert_eq!(default_capability_mask(), 0x0000_0000_a804_25fb);
    }
}
