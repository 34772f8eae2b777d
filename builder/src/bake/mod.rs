//! Turning a base image plus a payload tree into a golden image.
pub mod ext4;
pub mod gpt;
pub mod vm;

pub mod assemble;
pub mod lxc;
pub mod manifest;
pub mod personalize;
