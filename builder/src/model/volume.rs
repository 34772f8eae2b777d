//! A guest's data volume: the object store's data directory on a volume of
//! its own, so that an upgrade can replace the guest's system and keep the
//! data. Declared on the object-store role, on by default:
//!
//! ```yaml
//! object_store:
//!   data_dir: /var/lib/minio
//!   data_volume: {size: 32GiB, storage: local-lvm}   # default: 16GiB on the node's images storage
//!   # data_volume: none                              # keep the data on the system disk
//! ```
//!
//! On Proxmox it is `mp0` of a container (PVE formats and mounts it) or the
//! second disk `scsi1` of a VM (serial `imgbuild-data`, formatted by firstboot
//! when blank and mounted by label at the data directory).

use super::types::Size;
use super::yaml::{Ctx, Field};

/// The default size of a data volume.
pub const DEFAULT_SIZE_GIB: u64 = 16;

/// A data volume of a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolume {
    /// Whole GiB, at least 1.
    pub size: Size,
    /// Storage id; None = the node's `images` storage.
    pub storage: Option<String>,
}

impl Default for DataVolume {
    fn default() -> Self {
        DataVolume {
            size: Size::from_bytes(DEFAULT_SIZE_GIB * Size::GIB),
            storage: None,
        }
    }
}

/// Parses `data_volume:` (absent: the default volume; `none`/`false`: no volume).
pub(crate) fn parse(ctx: &mut Ctx, f: Option<Field<'_>>) -> Option<Option<DataVolume>> {
    let Some(f) = f else {
        return Some(Some(DataVolume::default()));
    };
    if let marked_yaml::Node::Scalar(_) = f.node {
        return ctx.scalar(&f, |s| match s {
            "none" | "false" | "off" => Ok(None),
            _ => Err(format!(
                "`{s}`: expected `{{size: 32GiB, storage: local-lvm}}`, or `none` to keep the data on the system disk"
            )),
        });
    }
    let m = ctx.map(f, &["size", "storage"])?;
    let size = match m.opt("size") {
        None => Some(DataVolume::default().size),
        Some(f) => ctx.scalar(&f, |s| {
            let z: Size = s.parse()?;
            if z.bytes() < Size::GIB || z.bytes() % Size::GIB != 0 {
                return Err(format!(
                    "`{s}`: a data volume is a whole number of GiB, at least 1GiB (e.g. 32GiB)"
                ));
            }
            Ok(z)
        }),
    };
    let storage = match m.opt("storage") {
        None => Some(None),
        Some(f) => ctx.scalar(&f, super::lab_parse::parse_storage_id).map(Some),
    };
    Some(Some(DataVolume {
        size: size?,
        storage: storage?,
    }))
}
